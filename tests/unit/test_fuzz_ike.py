"""Issue 7, hostile input to both IKE cores through `IkeEndpoints` (as the daemon calls them).

Mutations of real exchanges (every message of Main/Quick Mode, IKE_SA_INIT, IKE_AUTH,
CREATE_CHILD_SA, INFORMATIONAL) go to a responder with an SA up: from an address no
connection names, from the peer's address on 500 and 4500, as datagrams under the live
SA's SPIs or cookies, as requests sealed with the live SA's keys (so the payloads behind
the encryption reach the exchange handlers), and as IKE_AUTH / Main Mode message 5 to a
half-open SA.  After each: nothing escaped the core (``internal_error`` stays 0, the
catch-all is not what saved us), the input was counted, answered or logged, and garbage
from anyone did not tear the SA down.  The targets live in ``fuzz_targets.py``; the long
runs in ``tests/fuzz/run.py`` use the same ones.
"""

from __future__ import annotations

import struct

from fuzz_targets import HQ, Ike1Target, Ike2Target, Target, drain
from fuzzing import Edit, apply, edits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ike.events import Note
from gateway.ike.v1.constants import ExchangeType, PayloadType
from gateway.ike.v1.message import FragmentPayload, Header, encode_payloads

_FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_TARGETS: dict[str, Target] = {}


def target(cls: type[Target]) -> Target:
    if cls.name not in _TARGETS:
        _TARGETS[cls.name] = cls()
    return _TARGETS[cls.name]


def of_mode(cls: type[Target], *modes: int) -> st.SearchStrategy[bytes]:
    return st.sampled_from([s for s in target(cls).seeds() if s[0] in modes])


def feed(cls: type[Target], seed: bytes, changes: list[Edit]) -> None:
    t = target(cls)
    t.feed(seed[:1] + apply(seed[1:], changes, [s[1:] for s in t.seeds()]))


# -- IKEv2 ----------------------------------------------------------------------------------


@_FUZZ
@given(of_mode(Ike2Target, 0, 1, 2), edits())
def test_ikev2_mutated_datagrams_are_accounted_for(seed: bytes, changes: list[Edit]) -> None:
    feed(Ike2Target, seed, changes)


@_FUZZ
@given(st.sampled_from([0, 1, 2]), st.binary(max_size=200))
def test_ikev2_random_datagrams_are_accounted_for(mode: int, data: bytes) -> None:
    target(Ike2Target).feed(bytes([mode]) + data)


@_FUZZ
@given(of_mode(Ike2Target, 3), edits())
def test_ikev2_authentic_requests_with_mutated_payloads(seed: bytes, changes: list[Edit]) -> None:
    feed(Ike2Target, seed, changes)


@settings(_FUZZ, max_examples=60)
@given(of_mode(Ike2Target, 4), edits())
def test_ikev2_mutated_ike_auth_to_a_half_open_sa(seed: bytes, changes: list[Edit]) -> None:
    feed(Ike2Target, seed, changes)


# -- IKEv1 ----------------------------------------------------------------------------------


@_FUZZ
@given(of_mode(Ike1Target, 0, 1, 2), edits())
def test_ikev1_mutated_datagrams_are_accounted_for(seed: bytes, changes: list[Edit]) -> None:
    feed(Ike1Target, seed, changes)


@_FUZZ
@given(st.sampled_from([0, 1, 2]), st.binary(max_size=200))
def test_ikev1_random_datagrams_are_accounted_for(mode: int, data: bytes) -> None:
    target(Ike1Target).feed(bytes([mode]) + data)


@_FUZZ
@given(of_mode(Ike1Target, 3), edits())
def test_ikev1_authentic_quick_mode_and_informational_with_mutated_payloads(
        seed: bytes, changes: list[Edit]) -> None:
    feed(Ike1Target, seed, changes)


@settings(_FUZZ, max_examples=60)
@given(of_mode(Ike1Target, 4), edits())
def test_ikev1_mutated_main_mode_message_5_to_a_half_open_sa(seed: bytes, changes: list[Edit]) -> None:
    feed(Ike1Target, seed, changes)


def test_every_seed_passes_unchanged() -> None:
    """The seeds themselves (valid messages, some authentic) keep every invariant."""
    for cls in (Ike2Target, Ike1Target):
        t = target(cls)
        for seed in t.seeds():
            t.feed(seed)


# -- regressions found by the fuzzing --------------------------------------------------------


def _live_v1() -> tuple[Ike1Target, bytes, bytes]:
    t = Ike1Target()
    sa = t._live()
    return t, sa.icookie, sa.rcookie


def test_regression_ikev1_unexpected_main_mode_message_is_logged() -> None:
    """A clear Main Mode message for an established ISAKMP SA used to vanish without a
    counter, an answer or a log line; now it is a debug note like IKEv2's."""
    t, icookie, rcookie = _live_v1()
    mm2 = Header(icookie, rcookie, PayloadType.NONE, ExchangeType.MAIN, 0, 0, 28).encode()
    t.deliver(mm2, 500, (HQ, 500), garbage=True)  # raises Finding if nothing shows
    t.ep.receive(mm2, 500, (HQ, 500), t.now)
    notes = [e for e in drain(t.ep) if isinstance(e, Note)]
    assert [n.what for n in notes] == ["ikev1.unexpected_message"]
    assert dict(notes[0].fields)["state"] == "established"


def test_regression_ikev1_undecryptable_message_is_logged() -> None:
    """Ciphertext that is not a whole number of blocks used to be dropped silently."""
    t, icookie, rcookie = _live_v1()
    bad = Header(icookie, rcookie, PayloadType.HASH, ExchangeType.QUICK, 0x01, 7, 28 + 5).encode() + bytes(5)
    t.deliver(bad, 500, (HQ, 500), garbage=True)


def test_regression_ikev1_forged_last_fragments_do_not_pile_up() -> None:
    """Each fragment id whose "last" fragment came stayed remembered after its pieces were
    evicted: a peer (or anyone with the cookies) could grow that table to 65536 entries."""
    t, icookie, rcookie = _live_v1()
    sa = next(iter(t.w.b._sas.values()))
    for fragment_id in range(1, 200):
        first, body = encode_payloads([FragmentPayload(fragment_id, 2, True, b"x" * 20)])
        data = Header(icookie, rcookie, first, ExchangeType.MAIN, 0, 0, 28 + len(body)).encode() + body
        t.ep.receive(data, 500, (HQ, 500), t.now)
    assert len(sa._fragments) <= 2 and len(sa._fragment_last) <= 2
    assert t.ep.counters.get("internal_error", 0) == 0


def test_regression_ikev1_unusable_fragment_is_logged() -> None:
    t, icookie, rcookie = _live_v1()
    body = struct.pack("!BBH", 0, 0, 6) + b"\x00\x01"  # a fragment payload too short to read
    data = Header(icookie, rcookie, PayloadType.FRAGMENT, ExchangeType.MAIN, 0, 0, 28 + len(body)).encode()
    t.deliver(data + body, 500, (HQ, 500), garbage=True)
