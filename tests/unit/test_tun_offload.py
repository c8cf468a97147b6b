"""TCP segmentation and coalescing for the offloading TUN (gateway.net.offload), checked
against scapy's own checksums and header fields."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from gateway.net.offload import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    PLAIN_HDR,
    VNET_HDR_LEN,
    OffloadError,
    coalesce_tcp4,
    complete_checksum,
    ones_sum,
    parse_vnet_header,
    segment_tcp4,
)

OPTIONS = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]


def tcp_packet(payload: bytes, seq: int = 1000, flags: str = "A", ident: int = 7,
               options: list | None = None, sport: int = 40000) -> bytes:
    return bytes(IP(src="10.1.0.2", dst="10.2.0.2", id=ident, flags="DF", ttl=63)
                 / TCP(sport=sport, dport=5201, seq=seq, ack=99, flags=flags, window=501,
                       options=OPTIONS if options is None else options) / payload)


def valid(packet: bytes) -> bool:
    """Both checksums as scapy computes them."""
    parsed = IP(packet)
    ip_sum, tcp_sum = parsed.chksum, parsed[TCP].chksum
    del parsed.chksum
    del parsed[TCP].chksum
    again = IP(bytes(parsed))
    return again.chksum == ip_sum and again[TCP].chksum == tcp_sum


def test_ones_sum_matches_rfc1071_word_sum() -> None:
    data = bytes(range(251))
    words = sum(struct.unpack(f"!{len(data) // 2}H", data[:-1])) + (data[-1] << 8)
    assert ones_sum(data) % 0xFFFF == words % 0xFFFF


def test_segments_like_the_kernel() -> None:
    payload = bytes(i % 251 for i in range(5000))
    big = tcp_packet(payload, seq=0xFFFFF000, flags="PA", ident=0xFFFE)
    segments = segment_tcp4(big, 1448)
    assert [len(IP(s)[TCP].payload) for s in segments] == [1448, 1448, 1448, 656]
    assert b"".join(bytes(IP(s)[TCP].payload) for s in segments) == payload
    for i, s in enumerate(segments):
        parsed = IP(s)
        assert valid(s)
        assert parsed.len == len(s)
        assert parsed.id == (0xFFFE + i) & 0xFFFF
        assert parsed[TCP].seq == (0xFFFFF000 + 1448 * i) & 0xFFFFFFFF  # wraps
        assert parsed[TCP].options == IP(big)[TCP].options
        assert ("P" in str(parsed[TCP].flags)) == (i == 3)


def test_fin_and_cwr_placement() -> None:
    segments = segment_tcp4(tcp_packet(bytes(3000), flags="FAC"), 1000)
    flags = [IP(s)[TCP].flags for s in segments]
    assert [("F" in str(f), "C" in str(f)) for f in flags] == [(False, True), (False, False),
                                                                (True, False)]


def test_rejects_what_is_not_tcp4() -> None:
    udp = bytes(IP(src="10.1.0.2", dst="10.2.0.2") / UDP() / bytes(100))
    with pytest.raises(OffloadError):
        segment_tcp4(udp, 1000)
    with pytest.raises(OffloadError):
        segment_tcp4(tcp_packet(bytes(100))[:30], 1000)


def test_complete_checksum_from_pseudo_header_sum() -> None:
    packet = bytearray(tcp_packet(bytes(range(200)) + b"x"))
    expected = bytes(packet)
    # what the kernel leaves with CHECKSUM_PARTIAL: the folded pseudo-header sum
    pseudo = int.from_bytes(packet[12:20], "big") + 6 + len(packet) - 20
    folded = pseudo % 0xFFFF or 0xFFFF
    packet[36:38] = folded.to_bytes(2, "big")
    assert complete_checksum(bytes(packet), 20, 16) == expected
    with pytest.raises(OffloadError):
        complete_checksum(bytes(packet), 20, 5000)


def test_coalesces_a_run_into_one_gso_frame() -> None:
    payload = bytes(i % 253 for i in range(1448 * 3 + 100))
    segments = segment_tcp4(tcp_packet(payload, flags="PA"), 1448)
    frames = coalesce_tcp4(segments)
    assert len(frames) == 1
    flags, gso_type, hdr_len, gso_size, start, offset = parse_vnet_header(frames[0])
    assert (flags, gso_type, hdr_len, gso_size, start, offset) == (F_NEEDS_CSUM, GSO_TCPV4, 52,
                                                                   1448, 20, 16)
    packet = frames[0][VNET_HDR_LEN:]
    parsed = IP(packet)
    assert parsed.len == len(packet) == 52 + len(payload)
    assert bytes(parsed[TCP].payload) == payload
    assert "P" in str(parsed[TCP].flags)
    # the checksum field holds the pseudo-header sum: completing it gives a valid packet
    assert valid(complete_checksum(packet, 20, 16))
    # and cutting it again gives back exactly the segments
    assert segment_tcp4(complete_checksum(packet, 20, 16), gso_size) == segments


def test_what_does_not_join_passes_alone_in_order() -> None:
    a = segment_tcp4(tcp_packet(bytes(2896), seq=1), 1448)
    gap = tcp_packet(bytes(1448), seq=1 + 2896 + 1448)  # a hole before it
    other_flow = tcp_packet(bytes(1448), seq=1, sport=40001)
    pure_ack = tcp_packet(b"", seq=5)
    syn = tcp_packet(b"", flags="S")
    bad = bytearray(tcp_packet(bytes(1448), seq=1 + 2896))
    bad[-1] ^= 1  # a corrupted segment is never hidden inside a GSO packet
    udp = bytes(IP(src="10.1.0.2", dst="10.2.0.2") / UDP() / bytes(10))
    packets = [*a, gap, other_flow, pure_ack, syn, udp]
    frames = coalesce_tcp4(packets)
    assert parse_vnet_header(frames[0])[1] == GSO_TCPV4
    assert frames[1:] == [PLAIN_HDR + p for p in packets[2:]]
    # the run with a bad segment in it: every segment alone, so the kernel checks each
    packets = [*a, bytes(bad), gap]
    assert coalesce_tcp4(packets) == [PLAIN_HDR + p for p in packets]


def test_short_segment_ends_a_run_and_options_must_match() -> None:
    first = segment_tcp4(tcp_packet(bytes(2000), seq=1), 1448)  # 1448 + 552
    after = tcp_packet(bytes(1448), seq=2001)
    assert len(coalesce_tcp4([*first, after])) == 2
    other_ts = tcp_packet(bytes(1448), seq=1449,
                          options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    one = tcp_packet(bytes(1448), seq=1)
    assert len(coalesce_tcp4([one, other_ts])) == 2


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 20000), mss=st.integers(100, 1460), seq=st.integers(0, 2**32 - 1))
def test_segment_then_coalesce_round_trip(size: int, mss: int, seq: int) -> None:
    payload = bytes((i * 7) % 256 for i in range(size))
    big = tcp_packet(payload, seq=seq)
    segments = segment_tcp4(big, mss)
    assert all(valid(s) for s in segments)
    frames = coalesce_tcp4(segments)
    assert len(frames) == 1
    packet = frames[0][VNET_HDR_LEN:]
    if len(segments) > 1:
        packet = complete_checksum(packet, 20, 16)
    assert bytes(IP(packet)[TCP].payload) == payload
    assert valid(packet)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=120),
    st.builds(lambda payload, seq, cut, flip: _mangled(payload, seq, cut, flip),
              st.binary(min_size=1, max_size=300), st.integers(0, 2**32 - 1),
              st.integers(0, 400), st.integers(0, 400))), max_size=12))
def test_coalescing_anything_never_fails_and_loses_nothing(packets: list[bytes]) -> None:
    """Decrypted packets come from an authenticated peer, not from us: whatever they are,
    joining them neither raises nor drops or invents payload."""
    frames = coalesce_tcp4(packets)
    assert len(frames) <= len(packets)
    assert all(parse_vnet_header(f)[1] in (0, GSO_TCPV4) for f in frames)
    plain = [f[VNET_HDR_LEN:] for f in frames if parse_vnet_header(f)[1] == 0]
    joined = sum(len(f) - VNET_HDR_LEN for f in frames)
    assert joined <= sum(len(p) for p in packets)
    assert all(p in packets for p in plain)


def _mangled(payload: bytes, seq: int, cut: int, flip: int) -> bytes:
    packet = bytearray(tcp_packet(payload, seq=seq))
    if flip < len(packet):
        packet[flip] ^= 0x5A
    return bytes(packet[:max(cut, 1)]) if cut < len(packet) else bytes(packet)
