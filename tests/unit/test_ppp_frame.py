"""The PPP frame, control packet and option codecs (RFC 1661 2, 5, 6; RFC 1662 3.1), with
scapy as the independent reader and writer, and hypothesis for bytes that make no sense."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.ppp import (
    HDLC,
    PPP,
    PPP_LCP_Configure,
    PPP_LCP_Magic_Number_Option,
    PPP_LCP_MRU_Option,
)

from gateway.ppp.frame import (
    PROTO_IPV4,
    PROTO_LCP,
    ControlPacket,
    Frame,
    Option,
    PppMalformed,
    decode_control,
    decode_frame,
    decode_options,
    encode_frame,
    encode_options,
    printable,
    protocol_name,
)


def test_frame_forms() -> None:
    ip = b"\x45" + bytes(19)
    assert decode_frame(b"\xff\x03\x00\x21" + ip) == Frame(PROTO_IPV4, ip)
    assert decode_frame(b"\x00\x21" + ip) == Frame(PROTO_IPV4, ip)  # ACFC
    assert decode_frame(b"\xff\x03\x21" + ip) == Frame(PROTO_IPV4, ip)  # PFC
    assert decode_frame(b"\x21" + ip) == Frame(PROTO_IPV4, ip)  # both
    assert decode_frame(b"\xc0\x21\x01\x01\x00\x04") == Frame(PROTO_LCP, b"\x01\x01\x00\x04")
    assert encode_frame(PROTO_IPV4, ip) == b"\xff\x03\x00\x21" + ip
    assert encode_frame(PROTO_IPV4, ip, address_control=False, compress_protocol=True) == b"\x21" + ip
    assert encode_frame(PROTO_LCP, b"", compress_protocol=True) == b"\xff\x03\xc0\x21"  # never one octet


def test_protocol_field_breaking_the_rules_is_returned_for_protocol_reject() -> None:
    # RFC 1661 2: a low octet that is even is invalid; "treated as having an unrecognized Protocol"
    assert decode_frame(b"\xff\x03\x00\x20abc").protocol == 0x0020


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xff\x03", b"\xff\x04\xc0\x21", b"\xc0", b"\xff\x03\xc0"])
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(PppMalformed):
        decode_frame(data)


def test_control_packet_and_options_against_scapy() -> None:
    theirs = bytes(HDLC() / PPP() / PPP_LCP_Configure(code=1, id=7, options=[
        PPP_LCP_MRU_Option(max_recv_unit=1400), PPP_LCP_Magic_Number_Option(magic_number=0x01020304)]))
    frame = decode_frame(theirs)
    packet = decode_control(frame.payload)
    assert (packet.code, packet.identifier) == (1, 7)
    assert decode_options(packet.data) == [Option(1, b"\x05\x78"), Option(5, b"\x01\x02\x03\x04")]
    ours = encode_frame(PROTO_LCP, packet.encode())
    assert ours == theirs
    parsed = HDLC(ours)
    assert parsed[PPP_LCP_Configure].options[0].max_recv_unit == 1400


def test_padding_after_length_is_ignored() -> None:
    packet = decode_control(b"\x09\x01\x00\x08abcdPADDING")
    assert packet == ControlPacket(9, 1, b"abcd")


@pytest.mark.parametrize("data", [b"\x01\x01\x00", b"\x01\x01\x00\x03", b"\x01\x01\x00\x09abcd"])
def test_malformed_control_packets(data: bytes) -> None:
    with pytest.raises(PppMalformed):
        decode_control(data)


@pytest.mark.parametrize("data", [b"\x01", b"\x01\x01", b"\x01\x05ab", b"\x05\x06\x00\x00\x00\x00\x07"])
def test_malformed_options(data: bytes) -> None:
    with pytest.raises(PppMalformed):
        decode_options(data)


def test_options_round_trip() -> None:
    options = [Option(7), Option(8), Option(3, b"\xc2\x23\x81"), Option(200, bytes(253))]
    assert decode_options(encode_options(options)) == options


def test_control_packet_repr_shows_no_data() -> None:
    secret = b"\x05alice\x08password"
    assert "password" not in repr(ControlPacket(1, 1, secret))
    assert "password" not in repr(Frame(0xC023, secret))


def test_printable_and_names() -> None:
    assert printable(b"ok\x00\x1b[31mred\xff") == "ok??[31mred\ufffd"
    assert printable(b"x" * 100, 10).endswith("...")
    assert protocol_name(0x8057) == "IPv6CP (0x8057)"
    assert protocol_name(0x1234) == "0x1234"


@given(st.binary(max_size=300))
def test_random_bytes_raise_nothing_but_ppp_malformed(data: bytes) -> None:
    for decoder in (decode_frame, decode_control, decode_options):
        try:
            decoder(data)
        except PppMalformed as exc:
            assert len(data) < 4 or data.hex() not in str(exc)  # never quotes the octets
