"""Issue 7, hostile packets into the dataplane with real SAs installed: mutations of
authentic ESP (AES-GCM; AES-CBC + HMAC with ESN), AH and UDP-encapsulated ESP carrying
L2TP, and of packets from the TUN.  Every call returns; each rejected packet is exactly
one counted drop; a packet dropped before its ICV verified never moves the replay window;
and each SA still takes the peer's next packet afterwards (``fuzz_targets.DataplaneTarget``)."""

from __future__ import annotations

from fuzz_targets import DataplaneTarget
from fuzzing import Edit, apply, edits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TARGET = DataplaneTarget()


def of_mode(mode: int) -> st.SearchStrategy[bytes]:
    return st.sampled_from([s for s in TARGET.seeds() if s[0] == mode])


def feed(seed: bytes, changes: list[Edit]) -> None:
    TARGET.feed(seed[:1] + apply(seed[1:], changes, [s[1:] for s in TARGET.seeds()]))


@_FUZZ
@given(of_mode(0), edits())
def test_mutated_esp_and_ah_packets(seed: bytes, changes: list[Edit]) -> None:
    feed(seed, changes)


@_FUZZ
@given(of_mode(1), edits())
def test_mutated_udp_4500_datagrams(seed: bytes, changes: list[Edit]) -> None:
    feed(seed, changes)


@_FUZZ
@given(of_mode(2), edits())
def test_mutated_packets_from_the_tun(seed: bytes, changes: list[Edit]) -> None:
    feed(seed, changes)


@_FUZZ
@given(st.integers(0, 2), st.binary(max_size=120))
def test_random_octets_in_every_direction(mode: int, data: bytes) -> None:
    TARGET.feed(bytes([mode]) + data)


def test_every_seed_passes_unchanged() -> None:
    for seed in TARGET.seeds():
        TARGET.feed(seed)


def test_a_forged_icv_does_not_move_the_window() -> None:
    """The same packet with its last octet changed, then as sent: the first is a bad_icv
    drop that leaves the window alone, the second still gets through."""
    t = DataplaneTarget()
    _kind, out, inb, _encap = t.pairs[1]  # AES-CBC + HMAC with ESN
    out.seq = 900
    _mode, packet = t._protect(out, t.fresh["10.1.0.5"], None)
    forged = packet[:-1] + bytes([packet[-1] ^ 1])
    window = inb.replay.top, inb.replay._bitmap
    assert t.dp.inbound_ip(forged) is None and t.dp.drops["bad_icv"] == 1
    assert (inb.replay.top, inb.replay._bitmap) == window
    assert t.dp.inbound_ip(packet) is not None and inb.replay.top == 901
