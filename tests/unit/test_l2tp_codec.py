"""The L2TP codec: headers (RFC 2661 3.1), AVPs (4.1, 4.4), hidden AVPs (4.3) and every
message type (6), byte for byte where a value can be derived independently."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2tp import L2TP

from gateway.l2tp.avp import (
    Accm,
    Avp,
    CallErrors,
    Q931Cause,
    ResultCode,
    decode_avps,
    encode_avps,
    hide,
    make,
    subformat,
    unhide,
)
from gateway.l2tp.constants import AvpType, MessageType
from gateway.l2tp.errors import L2tpMalformed
from gateway.l2tp.message import (
    REQUIRED_AVPS,
    ControlMessage,
    DataMessage,
    control,
    decode,
    decode_header,
    encode_control,
)
from gateway.l2tp.settings import L2tpSettings

SECRET = b"correct horse battery staple"
VECTOR = bytes(range(16))


def _hidden_reference(attribute: int, sub: bytes, secret: bytes, vector: bytes) -> bytes:
    """RFC 2661 4.3 as written: b1 = MD5(AV + S + RV), c(1) = p1 xor b1,
    bi = MD5(S + c(i-1)), c(i) = pi xor bi; a short last chunk uses the start of its hash."""
    out = b""
    b = hashlib.md5(attribute.to_bytes(2, "big") + secret + vector).digest()
    for i in range(0, len(sub), 16):
        c = bytes(p ^ k for p, k in zip(sub[i:i + 16], b, strict=False))
        out += c
        b = hashlib.md5(secret + c).digest()
    return out


# -- headers -------------------------------------------------------------------------------------


def test_control_header_bytes() -> None:
    data = encode_control(0x1234, 0x5678, 3, 7, b"")
    assert data == bytes.fromhex("c802 000c 1234 5678 0003 0007")
    header, body = decode_header(data)
    assert header.control and header.tunnel_id == 0x1234 and header.session_id == 0x5678
    assert (header.ns, header.nr, header.length) == (3, 7, 12) and body == b""
    dissected = L2TP(data)
    assert (dissected.tunnel_id, dissected.session_id, dissected.ns, dissected.nr, dissected.len) == (
        0x1234, 0x5678, 3, 7, 12)


@pytest.mark.parametrize("kwargs", [
    {},
    {"length_field": True},
    {"ns": 5, "nr": 0},
    {"ns": 65535, "nr": 0, "length_field": True},
    {"offset_size": 0},
    {"offset_size": 3, "length_field": True},
    {"priority": True},
])
def test_data_message_round_trip_and_scapy(kwargs: dict) -> None:
    frame = b"\xff\x03\xc0\x21\x01\x01\x00\x04"
    msg = DataMessage(7, 9, frame, **kwargs)
    data = msg.encode()
    assert decode(data) == msg
    dissected = L2TP(data)
    assert (dissected.tunnel_id, dissected.session_id) == (7, 9)
    assert bytes(dissected.payload)[-len(frame):] == frame
    if "ns" in kwargs:
        assert dissected.ns == kwargs["ns"]
    if kwargs.get("length_field"):
        assert dissected.len == len(data)


def test_plain_data_header_is_six_octets() -> None:
    assert DataMessage(1, 2, b"x").encode() == bytes.fromhex("0002 0001 0002") + b"x"
    # SoftEther sends data with the O bit and an empty offset
    header, body = decode_header(bytes.fromhex("0202 0001 0002 0000") + b"ppp")
    assert header.offset_size == 0 and body == b"ppp"


@pytest.mark.parametrize("data, reason", [
    (b"", "malformed"),
    (b"\xc8\x02\x00", "malformed"),
    (bytes.fromhex("c803 000c 0001 0000 0000 0000"), "bad_version"),  # L2TPv3
    (bytes.fromhex("c801 000c 0001 0000 0000 0000"), "bad_version"),  # L2F
    (bytes.fromhex("8802 0001 0000 0000 0000"), "malformed"),  # control without L
    (bytes.fromhex("c002 000c 0001 0000"), "malformed"),  # control without S
    (bytes.fromhex("ca02 000e 0001 0000 0000 0000 0000"), "malformed"),  # control with O
    (bytes.fromhex("c802 0020 0001 0000 0000 0000"), "malformed"),  # Length beyond the datagram
    (bytes.fromhex("c802 0008 0001 0000 0000 0000"), "malformed"),  # Length inside the header
    (bytes.fromhex("0202 0001 0002 0009 00"), "malformed"),  # offset beyond the datagram
    (bytes.fromhex("0802 0001 0002 00"), "malformed"),  # truncated Ns/Nr
])
def test_malformed_headers(data: bytes, reason: str) -> None:
    with pytest.raises(L2tpMalformed) as info:
        decode(data)
    assert info.value.reason == reason


def test_trailing_octets_after_length_are_ignored() -> None:
    data = encode_control(1, 0, 0, 0, b"") + b"\x00\x00"
    assert decode(data) == ControlMessage(None, (), 1, 0, 0, 0)


# -- AVPs ----------------------------------------------------------------------------------------

EXAMPLES: dict[AvpType, object] = {
    AvpType.RESULT_CODE: ResultCode(2, 8, b"unknown mandatory AVP type-99"),
    AvpType.PROTOCOL_VERSION: (1, 0),
    AvpType.FRAMING_CAPABILITIES: 3,
    AvpType.BEARER_CAPABILITIES: 2,
    AvpType.TIE_BREAKER: bytes.fromhex("0102030405060708"),
    AvpType.FIRMWARE_REVISION: 0x0601,
    AvpType.HOST_NAME: b"DESKTOP-1",
    AvpType.VENDOR_NAME: b"Microsoft",
    AvpType.ASSIGNED_TUNNEL_ID: 0xBEEF,
    AvpType.RECEIVE_WINDOW_SIZE: 8,
    AvpType.CHALLENGE: b"\x01" * 16,
    AvpType.Q931_CAUSE_CODE: Q931Cause(16, 0x5A, b"normal clearing"),
    AvpType.CHALLENGE_RESPONSE: b"\x02" * 16,
    AvpType.ASSIGNED_SESSION_ID: 0x1001,
    AvpType.CALL_SERIAL_NUMBER: 0xDEADBEEF,
    AvpType.MINIMUM_BPS: 9600,
    AvpType.MAXIMUM_BPS: 10_000_000,
    AvpType.BEARER_TYPE: 1,
    AvpType.FRAMING_TYPE: 1,
    AvpType.CALLED_NUMBER: b"5551234",
    AvpType.CALLING_NUMBER: b"10.0.0.5",
    AvpType.SUB_ADDRESS: b"7",
    AvpType.TX_CONNECT_SPEED: 100_000_000,
    AvpType.PHYSICAL_CHANNEL_ID: 4,
    AvpType.INITIAL_RECEIVED_LCP_CONFREQ: bytes.fromhex("0104 05dc 0506 1234 5678"),
    AvpType.LAST_SENT_LCP_CONFREQ: bytes.fromhex("0305 c223 81"),
    AvpType.LAST_RECEIVED_LCP_CONFREQ: b"",
    AvpType.PROXY_AUTHEN_TYPE: 2,
    AvpType.PROXY_AUTHEN_NAME: b"alice",
    AvpType.PROXY_AUTHEN_CHALLENGE: b"\x07" * 16,
    AvpType.PROXY_AUTHEN_ID: 42,
    AvpType.PROXY_AUTHEN_RESPONSE: b"\x08" * 16,
    AvpType.CALL_ERRORS: CallErrors(1, 2, 3, 4, 5, 6),
    AvpType.ACCM: Accm(0xFFFFFFFF, 0x000A0000),
    AvpType.RANDOM_VECTOR: VECTOR,
    AvpType.PRIVATE_GROUP_ID: b"group-1",
    AvpType.RX_CONNECT_SPEED: 54_000_000,
    AvpType.SEQUENCING_REQUIRED: True,
}


def test_every_rfc_avp_has_an_example() -> None:
    assert set(EXAMPLES) == set(AvpType) - {AvpType.MESSAGE_TYPE}


@pytest.mark.parametrize("attribute", list(EXAMPLES), ids=lambda a: a.name)
def test_avp_round_trip(attribute: AvpType) -> None:
    avp = make(attribute, EXAMPLES[attribute])
    data = encode_avps([avp])
    word, vendor, number = struct.unpack_from("!HHH", data)
    assert (word & 0x3FF, vendor, number) == (len(data), 0, attribute)
    assert bool(word & 0x8000) == avp.mandatory
    assert decode_avps(data) == [avp]


def test_mandatory_bits_follow_rfc_2661() -> None:
    optional = {a for a in EXAMPLES if not make(a, EXAMPLES[a]).mandatory}
    assert optional == {
        AvpType.TIE_BREAKER, AvpType.FIRMWARE_REVISION, AvpType.VENDOR_NAME, AvpType.PHYSICAL_CHANNEL_ID,
        AvpType.INITIAL_RECEIVED_LCP_CONFREQ, AvpType.LAST_SENT_LCP_CONFREQ,
        AvpType.LAST_RECEIVED_LCP_CONFREQ,
        AvpType.PROXY_AUTHEN_TYPE, AvpType.PROXY_AUTHEN_NAME, AvpType.PROXY_AUTHEN_CHALLENGE,
        AvpType.PROXY_AUTHEN_ID, AvpType.PROXY_AUTHEN_RESPONSE, AvpType.PRIVATE_GROUP_ID,
        AvpType.RX_CONNECT_SPEED}


def test_structured_avp_bytes() -> None:
    assert encode_avps([make(AvpType.RESULT_CODE, ResultCode(1))]) == bytes.fromhex("8008 0000 0001 0001")
    assert encode_avps([make(AvpType.RESULT_CODE, ResultCode(2, 8, b"x"))]) == bytes.fromhex(
        "800b 0000 0001 0002 0008 78")
    assert encode_avps([make(AvpType.ACCM, Accm(0xFFFFFFFF, 0))]) == bytes.fromhex(
        "8010 0000 0023 0000 ffffffff 00000000")
    assert encode_avps([make(AvpType.PROXY_AUTHEN_ID, 9)]) == bytes.fromhex("0008 0000 0020 0009")
    assert encode_avps([make(AvpType.SEQUENCING_REQUIRED, True)]) == bytes.fromhex("8006 0000 0027")


def test_unknown_and_vendor_avps_are_kept_raw() -> None:
    data = (struct.pack("!HHH", 0x8000 | 9, 311, 1) + b"abc"  # Microsoft, mandatory
            + struct.pack("!HHH", 8, 0, 200) + b"zz")  # unknown IETF type, not mandatory
    avps = decode_avps(data)
    assert avps == [Avp(1, b"abc", True, False, 311), Avp(200, b"zz", False, False, 0)]
    assert not avps[0].known and not avps[1].known
    assert encode_avps(avps) == data


@pytest.mark.parametrize("data", [
    bytes.fromhex("8007 0000 0009 00"),  # Assigned Tunnel ID of one octet
    bytes.fromhex("8009 0000 0009 000000"),  # ... of three
    bytes.fromhex("8006 0000 0007"),  # empty Host Name
    bytes.fromhex("8007 0000 0001 00"),  # Result Code of one octet
    bytes.fromhex("8009 0000 0001 000100"),  # ... of three
    bytes.fromhex("8007 0000 0027 00"),  # Sequencing Required with a value
    bytes.fromhex("8005 0000 0000"),  # AVP length below the header
    bytes.fromhex("8010 0000 0000 0001"),  # AVP length beyond the data
    bytes.fromhex("8008 00"),  # truncated header
    bytes.fromhex("c008 0000 0016 0102"),  # hidden Calling Number without a Random Vector
    bytes.fromhex("8016 0000 0024") + bytes(16) + bytes.fromhex("c008 0000 0000 0001"),  # hidden Message Type
])
def test_malformed_avps(data: bytes) -> None:
    with pytest.raises(L2tpMalformed):
        decode_avps(data, secret=SECRET)


# -- hidden AVPs (RFC 2661 4.3) ------------------------------------------------------------------


def test_hidden_avp_known_answer_one_chunk() -> None:
    value = b"5551234"
    sub = struct.pack("!H", len(value)) + value + b"\xa5" * 7  # padded to 16 octets
    expected = bytes(a ^ b for a, b in zip(
        sub, hashlib.md5(b"\x00\x16" + SECRET + VECTOR).digest(), strict=True))
    assert hide(AvpType.CALLING_NUMBER, subformat(value, b"\xa5" * 7), SECRET, VECTOR) == expected
    assert unhide(AvpType.CALLING_NUMBER, expected, SECRET, VECTOR) == sub


def test_hidden_avp_known_answer_chained_chunks() -> None:
    value = bytes(range(100, 140))  # 42-octet subformat: two full chunks and a partial one
    sub = subformat(value)
    hidden = hide(AvpType.PROXY_AUTHEN_RESPONSE, sub, SECRET, VECTOR)
    assert len(hidden) == 42
    assert hidden == _hidden_reference(AvpType.PROXY_AUTHEN_RESPONSE, sub, SECRET, VECTOR)
    # the second chunk hashes the secret with the first *hidden* chunk, not the cleartext
    b2 = hashlib.md5(SECRET + hidden[:16]).digest()
    assert bytes(a ^ b for a, b in zip(hidden[16:32], b2, strict=True)) == sub[16:32]


def test_hidden_avp_in_a_message_decodes_with_the_secret() -> None:
    """A message assembled by hand from the RFC's definition, decoded by the codec."""
    value = b"alice@example.net"
    sub = struct.pack("!H", len(value)) + value + b"\x00" * 13  # 32 octets
    hidden = _hidden_reference(AvpType.PROXY_AUTHEN_NAME, sub, SECRET, VECTOR)
    body = (struct.pack("!HHHH", 0x8008, 0, 0, MessageType.ICCN)
            + struct.pack("!HHH", 0x8000 | 22, 0, AvpType.RANDOM_VECTOR) + VECTOR
            + struct.pack("!HHH", 0x4000 | (6 + len(hidden)), 0, AvpType.PROXY_AUTHEN_NAME) + hidden)
    data = encode_control(5, 6, 1, 2, body)
    msg = decode(data, secret=SECRET)
    assert isinstance(msg, ControlMessage) and msg.type == MessageType.ICCN
    avp = msg.find(AvpType.PROXY_AUTHEN_NAME)
    assert avp is not None and avp.hidden and avp.value == value
    # without the secret the AVP is kept, unreadable; with a wrong one it does not unhide
    blind = decode(data)
    assert isinstance(blind, ControlMessage)
    assert blind.find(AvpType.PROXY_AUTHEN_NAME) is None
    assert [a.readable for a in blind.avps] == [True, False]
    with pytest.raises(L2tpMalformed):
        decode(data, secret=b"wrong secret, long enough to garble the length")


def test_hiding_inserts_a_random_vector_and_pads() -> None:
    draws: list[int] = []

    def random(n: int) -> bytes:
        draws.append(n)
        return bytes([0x5A]) * n

    msg = control(MessageType.ICRQ, [make(AvpType.ASSIGNED_SESSION_ID, 7),
                                     make(AvpType.CALLING_NUMBER, "10.1.2.3", hidden=True),
                                     make(AvpType.CALLED_NUMBER, "5551234", hidden=True)])
    data = msg.encode(secret=SECRET, random=random)
    assert draws == [16, 6, 7]  # one vector, then padding of 2+8 and 2+7 octets to 16
    decoded = decode(data, secret=SECRET)
    assert isinstance(decoded, ControlMessage)
    assert [a.type for a in decoded.avps] == [AvpType.ASSIGNED_SESSION_ID, AvpType.RANDOM_VECTOR,
                                              AvpType.CALLING_NUMBER, AvpType.CALLED_NUMBER]
    assert decoded.value(AvpType.RANDOM_VECTOR) == b"\x5a" * 16
    assert decoded.value(AvpType.CALLING_NUMBER) == b"10.1.2.3"
    assert decoded.value(AvpType.CALLED_NUMBER) == b"5551234"
    assert b"10.1.2.3" not in data
    with pytest.raises(ValueError):
        msg.encode()  # hiding needs the secret


# -- messages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
def test_every_message_type_round_trips(kind: MessageType) -> None:
    avps = [make(t, EXAMPLES[t]) for t in REQUIRED_AVPS[kind]]
    if kind is MessageType.SCCRQ:
        avps += [make(t, EXAMPLES[t]) for t in (AvpType.BEARER_CAPABILITIES, AvpType.RECEIVE_WINDOW_SIZE,
                                                 AvpType.CHALLENGE, AvpType.TIE_BREAKER,
                                                 AvpType.FIRMWARE_REVISION, AvpType.VENDOR_NAME)]
    if kind is MessageType.ICCN:
        avps += [make(t, EXAMPLES[t]) for t in (
            AvpType.INITIAL_RECEIVED_LCP_CONFREQ, AvpType.LAST_SENT_LCP_CONFREQ,
            AvpType.LAST_RECEIVED_LCP_CONFREQ, AvpType.PROXY_AUTHEN_TYPE, AvpType.PROXY_AUTHEN_NAME,
            AvpType.PROXY_AUTHEN_CHALLENGE, AvpType.PROXY_AUTHEN_ID, AvpType.PROXY_AUTHEN_RESPONSE,
            AvpType.PRIVATE_GROUP_ID, AvpType.RX_CONNECT_SPEED, AvpType.SEQUENCING_REQUIRED)]
    if kind is MessageType.CDN:
        avps.append(make(AvpType.Q931_CAUSE_CODE, EXAMPLES[AvpType.Q931_CAUSE_CODE]))
    msg = control(kind, avps, tunnel_id=0x0102, session_id=0x0304, ns=65535, nr=0)
    data = msg.encode()
    assert data[12:20] == struct.pack("!HHHH", 0x8008, 0, 0, kind)  # Message Type first, M bit set
    assert decode(data) == msg
    assert msg.missing() == []
    assert L2TP(data).len == len(data)


def test_zlb_and_missing_avps() -> None:
    zlb = decode(encode_control(9, 0, 4, 2, b""))
    assert isinstance(zlb, ControlMessage) and zlb.is_zlb and zlb.name == "ZLB"
    bare = control(MessageType.SCCRQ, [make(AvpType.ASSIGNED_TUNNEL_ID, 1)])
    assert bare.missing() == [AvpType.PROTOCOL_VERSION, AvpType.HOST_NAME, AvpType.FRAMING_CAPABILITIES]


def test_first_avp_must_be_the_message_type() -> None:
    body = encode_avps([make(AvpType.HOST_NAME, "x"), make(AvpType.MESSAGE_TYPE, 1)])
    with pytest.raises(L2tpMalformed):
        decode(encode_control(0, 0, 0, 0, body))


def test_unknown_message_type_keeps_its_m_bit() -> None:
    msg = ControlMessage(99, (), 1, 0, 0, 0, type_mandatory=False)
    assert decode(msg.encode()) == msg


def test_secrets_stay_out_of_reprs() -> None:
    assert "\\x08" not in repr(make(AvpType.PROXY_AUTHEN_RESPONSE, b"\x08" * 16))
    assert "***" in repr(make(AvpType.CHALLENGE_RESPONSE, b"\x02" * 16))
    settings_repr = repr(L2tpSettings(secrets={"10.0.0.1": b"hunter2"}, default_secret=b"swordfish"))
    assert "hunter2" not in settings_repr and "swordfish" not in settings_repr


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_input_only_ever_raises_l2tp_malformed(data: bytes) -> None:
    for candidate in (data, encode_control(1, 2, 3, 4, data), bytes.fromhex("c802") + data):
        try:
            decode(candidate, secret=SECRET)
        except L2tpMalformed:
            pass
