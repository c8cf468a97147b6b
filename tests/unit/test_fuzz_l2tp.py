"""Issue 7, hostile input to L2TP: mutations of a whole LAC/LNS conversation (with a
shared secret, hidden AVPs and data sequencing) into live endpoints of both roles, from
the peer and from a stranger, and into the dial-up service that carries PPP over it.
Nothing escapes ``receive``; each input is counted, answered, reported or acknowledged
later; a stranger never tears the tunnel down (``fuzz_targets.L2tpTarget``, ``DialupTarget``)."""

from __future__ import annotations

import struct

from fuzz_targets import DialupTarget, L2tpTarget
from fuzzing import Edit, apply, edits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

L2TP = L2tpTarget()
DIALUP = DialupTarget()


def feed(target: L2tpTarget | DialupTarget, seed: bytes, changes: list[Edit]) -> None:
    target.feed(seed[:1] + apply(seed[1:], changes, [s[1:] for s in target.seeds()]))


@_FUZZ
@given(st.sampled_from(L2TP.seeds()), edits())
def test_mutated_l2tp_conversation(seed: bytes, changes: list[Edit]) -> None:
    feed(L2TP, seed, changes)


@st.composite
def avp_lists(draw: st.DrawFn) -> bytes:
    """Control messages whose AVP headers lie: M/H bits, lengths past the end or short of
    the header, vendor ids, attribute types around the defined ones."""
    avps = b""
    for _ in range(draw(st.integers(0, 6))):
        value = draw(st.binary(max_size=24))
        length = 6 + len(value) + draw(st.sampled_from([0, 0, 0, -1, 1, -6, 100]))
        flags = draw(st.sampled_from([0x8000, 0x0000, 0x4000, 0xC000]))
        vendor = draw(st.sampled_from([0, 0, 0, 311, 0xFFFF]))
        attribute = draw(st.integers(0, 45))
        avps += struct.pack("!HHH", flags | (max(0, length) & 0x3FF), vendor, attribute) + value
    message_type = struct.pack("!HHHH", 0x8008, 0, 0, draw(st.integers(0, 20)))
    body = message_type + avps
    tunnel, session = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 3))
    return struct.pack("!HHHHHH", 0xC802, 12 + len(body), tunnel, session, draw(st.integers(0, 5)),
                       draw(st.integers(0, 5))) + body


@_FUZZ
@given(st.integers(0, 2), avp_lists())
def test_lying_avp_headers(mode: int, data: bytes) -> None:
    L2TP.feed(bytes([mode]) + data)


@_FUZZ
@given(st.integers(0, 2), st.binary(max_size=100))
def test_random_l2tp_datagrams(mode: int, data: bytes) -> None:
    L2TP.feed(bytes([mode]) + data)


@settings(_FUZZ, max_examples=150)
@given(st.sampled_from(DIALUP.seeds()), edits())
def test_mutated_l2tp_into_the_dialup_service(seed: bytes, changes: list[Edit]) -> None:
    feed(DIALUP, seed, changes)


def test_every_seed_passes_unchanged() -> None:
    for target in (L2TP, DIALUP):
        for seed in target.seeds():
            target.feed(seed)
