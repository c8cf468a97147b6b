"""IKEv2 wire format: payload codec, SK protection and fragments, proposal choice, selectors.

Round trips check that every payload class survives encode -> decode unchanged, and a few
encodings are compared with bytes worked out by hand from RFC 7296 3.  Malformed input must
raise `MalformedMessage` (never IndexError or struct.error): truncations of a real message at
every length, every single-byte corruption, and hypothesis-generated garbage.  scapy's
independent IKEv2 dissector is used as a second opinion on the wire format, both ways.
"""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ike_loopback import endpoints, psk_pair, seeded

from gateway.crypto.algorithms import ENCRYPTION, INTEGRITY
from gateway.crypto.prf import PRF
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.trafficselectors import TsRange, narrow, within
from gateway.ike.v2.constants import (
    CfgAttribute,
    CfgType,
    ExchangeType,
    Flag,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
)
from gateway.ike.v2.keymat import derive_ike_sa_keys, skeyseed
from gateway.ike.v2.message import (
    HEADER_SIZE,
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    EncryptedFragment,
    EncryptedPayload,
    Header,
    IdPayload,
    IdrPayload,
    KePayload,
    MalformedMessage,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    TsPayload,
    TsrPayload,
    UnknownPayload,
    UnsupportedCriticalPayload,
    VendorPayload,
    decode_payloads,
    encode_payloads,
)
from gateway.ike.v2.negotiation import (
    accept_response,
    build_proposals,
    describe_proposals,
    select,
    suite_of,
)
from gateway.ike.v2.protection import FragmentBuffer, IntegrityError, SkProtection

ENCR, PRF_T, INTEG, DH, ESN = (TransformType.ENCR, TransformType.PRF, TransformType.INTEG,
                               TransformType.DH, TransformType.ESN)


def net(text: str, protocol: int = 0, ports: tuple[int, int] = (0, 65535)) -> TsRange:
    return TsRange.of_network(ipaddress.IPv4Network(text), protocol, *ports)


def roundtrip(payloads: list[Payload]) -> list[Payload]:
    first, body = encode_payloads(payloads)
    return decode_payloads(first, body)


def message(payloads: list[Payload], exchange: int = ExchangeType.IKE_SA_INIT, flags: int = Flag.INITIATOR,
            spi_i: bytes = b"\x11" * 8, spi_r: bytes = bytes(8), message_id: int = 0) -> bytes:
    first, body = encode_payloads(payloads)
    header = Header(spi_i, spi_r, first, exchange, flags, message_id, HEADER_SIZE + len(body))
    return header.encode() + body


def decode_message(data: bytes) -> tuple[Header, list[Payload]]:
    header = Header.decode(data)
    return header, decode_payloads(header.next_payload, data[HEADER_SIZE:], HEADER_SIZE)


def init_request_from_loopback() -> bytes:
    """The initiator's real IKE_SA_INIT request (fixed seeds)."""
    a, b = psk_pair()
    w = endpoints(a, b)
    w.a.initiate("to-branch", w.now)
    w.pump()
    tag, first = w.log[0]
    assert tag == "a>b"
    return first.data


# ======================================================================================
# header
# ======================================================================================


def test_header_round_trip_and_flags() -> None:
    h = Header(b"\x01" * 8, b"\x02" * 8, PayloadType.SK, ExchangeType.IKE_AUTH,
               Flag.INITIATOR | Flag.RESPONSE, 0x01020304, HEADER_SIZE)
    raw = h.encode()
    assert len(raw) == HEADER_SIZE
    # RFC 7296 3.1: SPIi, SPIr, Next Payload, MjVer|MnVer, Exchange Type, Flags, Message ID, Length
    assert raw == (b"\x01" * 8 + b"\x02" * 8 + bytes([46, 0x20, 35, 0x28]) + bytes.fromhex("01020304")
                   + struct.pack("!I", 28))
    back = Header.decode(raw)
    assert back == h
    assert back.is_response and back.from_initiator
    assert back.describe() == "IKE_AUTH response 16909060"
    request = Header(b"\x01" * 8, bytes(8), 0, 99, 0, 7, HEADER_SIZE)
    assert not request.is_response and not request.from_initiator
    assert request.describe() == "EXCHANGE_99 request 7"


@pytest.mark.parametrize("data", [b"", b"\x00" * 27, b"\x00" * 28,
                                  b"\x00" * 24 + struct.pack("!I", 30) + b"x"])
def test_header_decode_rejects_short_or_inconsistent(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Header.decode(data)


def test_header_length_must_match_datagram() -> None:
    raw = Header(b"\x01" * 8, bytes(8), 0, 34, 8, 0, 40).encode() + bytes(12)
    assert Header.decode(raw).length == 40
    with pytest.raises(MalformedMessage):
        Header.decode(raw + b"\x00")
    with pytest.raises(MalformedMessage):
        Header.decode(raw[:-1])


# ======================================================================================
# payload round trips
# ======================================================================================

SA_MANY = SaPayload([
    Proposal(1, ProtocolId.IKE, b"", [
        Transform(ENCR, 12, 128), Transform(ENCR, 12, 256), Transform(ENCR, 20, 256),
        Transform(PRF_T, 5), Transform(PRF_T, 2), Transform(INTEG, 12), Transform(INTEG, 2),
        Transform(DH, 19), Transform(DH, 14), Transform(DH, 31)]),
    Proposal(2, ProtocolId.IKE, b"\xaa" * 8, [Transform(ENCR, 3), Transform(PRF_T, 2), Transform(INTEG, 2),
                                               Transform(DH, 2)]),
    Proposal(3, ProtocolId.ESP, b"\xc0\x01\x02\x03", [Transform(ENCR, 20, 128), Transform(ESN, 1),
                                                       Transform(ESN, 0)]),
])

ROUND_TRIPS: list[tuple[str, list[Payload]]] = [
    ("sa", [SA_MANY]),
    ("ke", [KePayload(19, bytes(range(64)))]),
    ("ke-empty-data", [KePayload(31, b"")]),
    ("id", [IdPayload(2, b"gw.example"), IdrPayload(1, bytes([192, 0, 2, 1]))]),
    ("cert", [CertPayload(4, b"\x30\x82\x01\x00" + bytes(256)), CertPayload(4, b"\x30\x03\x02\x01\x01")]),
    ("certreq", [CertReqPayload(4, bytes(range(20)) + bytes(range(20, 40)))]),
    ("certreq-empty", [CertReqPayload(4, b"")]),
    ("auth", [AuthPayload(2, b"\x5a" * 32), AuthPayload(14, b"\x30\x0d" + bytes(300))]),
    ("nonce", [NoncePayload(b"\x01" * 16), NoncePayload(b"\x02" * 256)]),
    ("notify", [NotifyPayload(NotifyType.INITIAL_CONTACT),
                NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20)),
                NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\xde\xad\xbe\xef"),
                NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, b"", ProtocolId.AH, b"\x00\x00\x01\x00"),
                NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x0e"),
                NotifyPayload(40000, b"private use")]),
    ("delete-ike", [DeletePayload(ProtocolId.IKE, [])]),
    ("delete-esp", [DeletePayload(ProtocolId.ESP, [b"\x00\x00\x10\x00", b"\xff\xff\xff\xff"])]),
    ("vendor", [VendorPayload(b"strongSwan"), VendorPayload(b"")]),
    ("ts", [TsPayload([net("10.1.0.0/24"), net("10.9.9.9/32", 6, (443, 443)),
                       TsRange(ipaddress.IPv4Address("10.0.0.5"), ipaddress.IPv4Address("10.0.0.77"), 17,
                               500, 4500)]),
            TsrPayload([net("0.0.0.0/0")])]),
    ("ts-empty", [TsPayload([])]),
    ("cp", [CpPayload(CfgType.REQUEST, [(CfgAttribute.INTERNAL_IP4_ADDRESS, b""),
                                        (CfgAttribute.INTERNAL_IP4_DNS, b"")]),
            CpPayload(CfgType.REPLY, [(CfgAttribute.INTERNAL_IP4_ADDRESS, bytes([10, 3, 0, 7])),
                                      (CfgAttribute.INTERNAL_IP4_NETMASK, bytes([255, 255, 255, 0])),
                                      (CfgAttribute.APPLICATION_VERSION, b"gateway 0.1")])]),
    ("eap", [EapPayload(bytes([1, 7, 0, 5, 1]))]),
    ("unknown-noncritical", [UnknownPayload(200, b"kept as is"), NoncePayload(b"n" * 32)]),
    ("mixed-chain", [SA_MANY, KePayload(14, bytes(256)), NoncePayload(bytes(32)),
                     NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED), VendorPayload(b"v"),
                     UnknownPayload(250, b""), CertReqPayload(4, bytes(20))]),
]


@pytest.mark.parametrize(("name", "payloads"), ROUND_TRIPS, ids=[n for n, _ in ROUND_TRIPS])
def test_payload_round_trip(name: str, payloads: list[Payload]) -> None:
    back = roundtrip(payloads)
    assert back == payloads
    assert [type(p) for p in back] == [type(p) for p in payloads]  # IDi stays IDi, TSr stays TSr
    # and in a whole message, through the header
    header, again = decode_message(message(payloads))
    assert again == payloads
    assert header.next_payload == (payloads[0].type if isinstance(payloads[0], UnknownPayload)
                                   else payloads[0].TYPE)


def test_every_payload_class_is_covered_by_the_round_trips() -> None:
    covered = {type(p) for _, ps in ROUND_TRIPS for p in ps}
    assert covered >= {SaPayload, KePayload, IdPayload, IdrPayload, CertPayload, CertReqPayload,
                       AuthPayload, NoncePayload, NotifyPayload, DeletePayload, VendorPayload, TsPayload,
                       TsrPayload, CpPayload, EapPayload, UnknownPayload}


def test_transform_and_proposal_encoding_by_hand() -> None:
    # RFC 7296 3.3.2 / 3.3.5: Last Substruc 3 (more) or 0, length 12 with the Key Length TV attribute
    assert Transform(ENCR, 12, 256).encode(last=False) == bytes.fromhex("03 00 000c 01 00 000c 800e 0100")
    assert Transform(PRF_T, 5).encode(last=True) == bytes.fromhex("00 00 0008 02 00 0005")
    p = Proposal(2, ProtocolId.ESP, b"\x01\x02\x03\x04", [Transform(ENCR, 20, 128), Transform(ESN, 0)])
    # RFC 7296 3.3.1: Last Substruc 2 (more) or 0, length, number, protocol, SPI size, #transforms, SPI
    assert p.encode(last=False) == bytes.fromhex(
        "02 00 0020 02 03 04 02 01020304" "03 00 000c 01 00 0014 800e 0080" "00 00 0008 05 00 0000")
    first, body = encode_payloads([SaPayload([p])])
    assert first == PayloadType.SA
    # generic payload header (3.2): next payload, C bit/reserved, length
    assert body[:4] == bytes([0, 0]) + struct.pack("!H", 4 + 32)
    assert body[4] == 0  # the last proposal says "no more"


def test_key_length_attribute_distinguishes_aes128_from_aes256() -> None:
    back = roundtrip([SA_MANY])[0]
    assert isinstance(back, SaPayload)
    encr = back.proposals[0].of_type(ENCR)
    assert [t.key() for t in encr] == [(1, 12, 128), (1, 12, 256), (1, 20, 256)]
    assert back.proposals[1].of_type(ENCR)[0].key_length is None
    assert back.proposals[2].spi == b"\xc0\x01\x02\x03"
    assert back.proposals[1].spi == b"\xaa" * 8


def test_notify_with_spi_layout() -> None:
    n = NotifyPayload(NotifyType.REKEY_SA, b"", ProtocolId.ESP, b"\xde\xad\xbe\xef")
    # RFC 7296 3.10: Protocol ID, SPI Size, Notify Message Type, SPI, data
    assert n.encode_body() == bytes.fromhex("03 04 4009 deadbeef")
    assert n.name == "REKEY_SA"
    assert NotifyPayload(40000).name == "NOTIFY_40000"


def test_delete_layout_ike_and_esp() -> None:
    # RFC 7296 3.11: IKE SA deletes carry SPI size 0 and no SPI; ESP carries 4-octet SPIs
    assert DeletePayload(ProtocolId.IKE).encode_body() == bytes.fromhex("01 00 0000")
    assert DeletePayload(ProtocolId.ESP, [b"\x00\x00\x10\x00"]).encode_body() == \
        bytes.fromhex("03 04 0001 00001000")


def test_cp_attribute_layout() -> None:
    cp = CpPayload(CfgType.REPLY, [(CfgAttribute.INTERNAL_IP4_ADDRESS, bytes([10, 3, 0, 7]))])
    assert cp.encode_body() == bytes.fromhex("02 000000 0001 0004 0a030007")


def test_ts_payload_layout_and_ipv6_selectors_skipped() -> None:
    ts = TsPayload([net("10.1.0.0/24", 6, (80, 80))])
    assert ts.encode_body() == bytes.fromhex("01 000000 07 06 0010 0050 0050 0a010000 0a0100ff")
    v6 = struct.pack("!BBHHH", 8, 0, 40, 0, 65535) + bytes(16) + b"\xff" * 16
    v4 = TsPayload([net("192.0.2.0/24")]).encode_body()[4:]
    body = bytes([2, 0, 0, 0]) + v6 + v4
    back = TsPayload.decode_body(body)
    assert back.selectors == [net("192.0.2.0/24")]
    assert back.skipped == 1
    assert str(net("10.1.0.0/24")) == "10.1.0.0/24"
    assert str(net("10.1.0.0/24", 6, (80, 80))) == "10.1.0.0/24[6/80]"


def test_unknown_noncritical_payload_is_kept_with_its_body() -> None:
    data = message([NoncePayload(b"n" * 16), UnknownPayload(222, b"\x01\x02\x03"), VendorPayload(b"x")])
    _, payloads = decode_message(data)
    assert payloads[1] == UnknownPayload(222, b"\x01\x02\x03", False)
    assert isinstance(payloads[2], VendorPayload)


def test_unknown_critical_payload_is_refused() -> None:
    data = message([NoncePayload(b"n" * 16), UnknownPayload(222, b"\x01\x02\x03", critical=True)])
    with pytest.raises(UnsupportedCriticalPayload) as info:
        decode_message(data)
    assert info.value.payload_type == 222
    assert isinstance(info.value, MalformedMessage)


def test_critical_bit_on_a_known_payload_is_ignored() -> None:
    first, body = encode_payloads([NoncePayload(b"n" * 16)])
    body = body[:1] + b"\x80" + body[2:]  # RFC 7296 2.5: only unknown payloads care about C
    assert decode_payloads(first, body) == [NoncePayload(b"n" * 16)]


def test_sk_payload_ends_the_chain() -> None:
    notify = NotifyPayload(NotifyType.COOKIE, b"c" * 8).encode_body()
    chain = struct.pack("!BBH", PayloadType.SK, 0, 4 + len(notify)) + notify
    sk = struct.pack("!BBH", PayloadType.IDI, 0, 4 + 40) + bytes(40)
    payloads = decode_payloads(PayloadType.NOTIFY, chain + sk, HEADER_SIZE)
    assert payloads[0] == NotifyPayload(NotifyType.COOKIE, b"c" * 8)
    assert isinstance(payloads[1], EncryptedPayload)
    assert payloads[1].first_inner == PayloadType.IDI
    assert payloads[1].offset == HEADER_SIZE + len(chain)  # where the SK generic header starts
    assert payloads[1].body == bytes(40)
    with pytest.raises(MalformedMessage):  # SK must be the last payload
        decode_payloads(PayloadType.SK, sk + b"\x00")


# ======================================================================================
# malformed input
# ======================================================================================

BAD_BODIES = [
    (SaPayload, b""),
    (SaPayload, bytes.fromhex("00 00 0008 01 01 00 01")),  # announces 1 transform, has none
    (SaPayload, bytes.fromhex("00 00 0007 01 01 00 00")),  # proposal shorter than its header
    (SaPayload, bytes.fromhex("00 00 0010 01 01 08 00") + bytes(4)),  # SPI exceeds the proposal
    (SaPayload, bytes.fromhex("00 00 0010 01 01 00 01 00 00 0004 01 00 000c")),  # transform length 4
    (SaPayload, bytes.fromhex("00 00 0014 01 01 00 01 00 00 000c 01 00 000c 800e")),  # truncated attribute
    (SaPayload, bytes.fromhex("00 00 0010 01 01 00 01 00 00 0008 01 00 000c") + b"\x00"),  # trailing octet
    (KePayload, b"\x00\x13\x00"),
    (IdPayload, b"\x02\x00\x00\x00"),
    (IdrPayload, b""),
    (CertPayload, b""),
    (AuthPayload, b"\x02\x00\x00"),
    (NoncePayload, b"\x00" * 15),
    (NoncePayload, b"\x00" * 257),
    (NotifyPayload, b"\x00\x00\x40"),
    (NotifyPayload, b"\x03\x04\x40\x09\xde\xad"),  # SPI size 4, 2 octets
    (DeletePayload, b"\x03\x04\x00"),
    (DeletePayload, b"\x03\x04\x00\x02\x00\x00\x00\x01"),  # 2 SPIs announced, 1 present
    (TsPayload, b"\x01\x00\x00"),
    (TsPayload, b"\x01\x00\x00\x00"),  # one selector announced, none present
    (TsPayload, b"\x01\x00\x00\x00\x07\x00\x00\x0c" + bytes(8)),  # IPv4 selector of 12 octets
    (TsPayload, b"\x01\x00\x00\x00\x07\x00\x00\x04"),  # selector length below 8
    (TsPayload, b"\x00\x00\x00\x00\x00"),  # trailing octet
    (CpPayload, b"\x01\x00"),
    (CpPayload, b"\x01\x00\x00\x00\x00\x01\x00\x04\x0a"),  # attribute longer than the payload
    (CpPayload, b"\x01\x00\x00\x00\x00\x01"),
]


@pytest.mark.parametrize(("cls", "body"), BAD_BODIES, ids=[f"{c.__name__}-{i}" for i, (c, _) in
                                                             enumerate(BAD_BODIES)])
def test_malformed_payload_bodies(cls: type[Payload], body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        cls.decode_body(body)
    # and inside a chain, through decode_payloads
    with pytest.raises(MalformedMessage):
        decode_payloads(cls.TYPE, struct.pack("!BBH", 0, 0, 4 + len(body)) + body)


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00",  # shorter than a generic header
    b"\x00\x00\x00\x03",  # length below 4
    b"\x00\x00\x00\x09abcd",  # length beyond the data
    b"\x28\x00\x00\x04",  # announces a next payload that is not there
    b"\x00\x00\x00\x04\x00",  # trailing octet after the last payload
])
def test_malformed_chains(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_payloads(PayloadType.VENDOR, data)


def test_bad_encrypted_fragment_header() -> None:
    with pytest.raises(MalformedMessage):
        decode_payloads(PayloadType.SKF, struct.pack("!BBH", 0, 0, 7) + b"\x00\x01\x00")


def test_truncation_at_every_length_is_malformed() -> None:
    data = init_request_from_loopback()
    _, payloads = decode_message(data)  # the full message parses
    assert len(payloads) >= 7
    for cut in range(len(data)):
        short = data[:cut]
        with pytest.raises(MalformedMessage):
            Header.decode(short)
        if cut < HEADER_SIZE:
            continue
        # even with a consistent header length, the chain is cut short
        fixed = short[:24] + struct.pack("!I", cut) + short[28:]
        h = Header.decode(fixed)
        with pytest.raises(MalformedMessage):
            decode_payloads(h.next_payload, fixed[HEADER_SIZE:], HEADER_SIZE)


def test_every_single_byte_corruption_parses_or_is_malformed() -> None:
    data = init_request_from_loopback()
    outcomes = {"ok": 0, "malformed": 0}
    for i in range(HEADER_SIZE, len(data)):
        for value in (0x00, 0xFF, data[i] ^ 0x01):
            bad = data[:i] + bytes([value]) + data[i + 1:]
            try:
                decode_message(bad)
                outcomes["ok"] += 1
            except MalformedMessage:
                outcomes["malformed"] += 1
    assert outcomes["malformed"] > 0 and outcomes["ok"] > 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_datagrams(data: bytes) -> None:
    try:
        header = Header.decode(data)
    except MalformedMessage:
        header = None
    if header is not None:
        try:
            decode_payloads(header.next_payload, data[HEADER_SIZE:], HEADER_SIZE)
        except MalformedMessage:
            pass
    # the same bytes as a payload chain of each type, without a header
    for first in (*[t.value for t in PayloadType if t != PayloadType.NONE], 99):
        try:
            decode_payloads(first, data)
        except MalformedMessage:
            pass


_KNOWN_TYPES = [t.value for t in PayloadType if t not in (PayloadType.NONE,)]


@st.composite
def payload_chains(draw: st.DrawFn) -> tuple[int, bytes]:
    """Chains whose generic headers are mostly right, with random bodies and next-payload types."""
    count = draw(st.integers(1, 5))
    types = [draw(st.sampled_from([*_KNOWN_TYPES, 0, 1, 200])) for _ in range(count)]
    out = b""
    for i, _ in enumerate(types):
        body = draw(st.binary(max_size=60))
        nxt = types[i + 1] if i + 1 < count else 0
        length = 4 + len(body) + draw(st.sampled_from([0, 0, 0, -1, 1, -4]))
        flags = draw(st.sampled_from([0, 0, 0x80]))
        out += struct.pack("!BBH", nxt, flags, max(0, min(0xFFFF, length))) + body
    return types[0], out


@settings(max_examples=600, deadline=None)
@given(payload_chains())
def test_fuzz_structured_chains(chain: tuple[int, bytes]) -> None:
    first, data = chain
    try:
        payloads = decode_payloads(first, data)
    except MalformedMessage:
        return
    # whatever decodes re-encodes without error (SK/SKF are framing only and end the chain)
    plain = [p for p in payloads if not isinstance(p, (EncryptedPayload, EncryptedFragment))]
    if plain and len(plain) == len(payloads):
        encode_payloads(plain)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=6))
def test_fuzz_mutations_of_a_real_message(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_REAL_INIT)
    for pos, value in edits:
        data[HEADER_SIZE + pos % (len(data) - HEADER_SIZE)] = value
    try:
        decode_message(bytes(data))
    except MalformedMessage:
        pass


_REAL_INIT = init_request_from_loopback()


# ======================================================================================
# SK protection (RFC 7296 3.14, RFC 5282) and fragmentation (RFC 7383)
# ======================================================================================

SUITES = [("aes128gcm16", None), ("aes256gcm16", None), ("aes256", "sha256"), ("aes128", "sha1")]


def protection_pair(enc_name: str, integ_name: str | None,
                    seed: int = 7) -> tuple[SkProtection, SkProtection]:
    enc = ENCRYPTION[enc_name]
    integ = INTEGRITY[integ_name] if integ_name else None
    prf = PRF["prfsha256"]
    ni, nr = b"\x01" * 32, b"\x02" * 32
    seed_key = skeyseed(prf, ni, nr, b"\x03" * 32)
    keys = derive_ike_sa_keys(prf, seed_key, ni, nr, b"\xaa" * 8, b"\xbb" * 8,
                              integ_key_size=integ.key_size if integ else 0, encr_key_size=enc.keymat_size)
    return (SkProtection(enc, integ, keys, True, seeded(seed)),
            SkProtection(enc, integ, keys, False, seeded(seed + 1)))


def sk_header(message_id: int = 1, response: bool = False) -> Header:
    flags = Flag.INITIATOR | (Flag.RESPONSE if response else 0)
    return Header(b"\xaa" * 8, b"\xbb" * 8, 0, ExchangeType.IKE_AUTH, flags, message_id)


INNER = [IdPayload(2, b"hq.example"), AuthPayload(2, b"\x42" * 32),
         NotifyPayload(NotifyType.INITIAL_CONTACT), TsPayload([net("10.1.0.0/24")]),
         TsrPayload([net("10.2.0.0/24")])]


def open_message(prot: SkProtection,
                 data: bytes) -> tuple[Header, EncryptedPayload | EncryptedFragment, bytes]:
    header, payloads = decode_message(data)
    sk = payloads[-1]
    assert isinstance(sk, (EncryptedPayload, EncryptedFragment))
    return header, sk, prot.open(data, sk)


@pytest.mark.parametrize(("enc", "integ"), SUITES)
def test_seal_open_round_trip(enc: str, integ: str | None) -> None:
    ini, res = protection_pair(enc, integ)
    first, inner = encode_payloads(INNER)
    for size in (0, 1, 15, 16, 17, len(inner)):
        chunk = inner[:size] if size else b""
        [data] = ini.seal(sk_header(), first, chunk)
        header, sk, plain = open_message(res, data)
        assert plain == chunk
        assert header.next_payload == PayloadType.SK
        assert header.length == len(data)
        assert isinstance(sk, EncryptedPayload) and sk.first_inner == first
        e = ENCRYPTION[enc]
        # IV | ciphertext | ICV, with the ciphertext block-aligned for CBC
        ct = len(data) - HEADER_SIZE - 4 - e.iv_size - res.icv_size
        if not e.aead:
            assert ct % e.block_size == 0
    [data] = ini.seal(sk_header(), first, inner)
    assert decode_payloads(first, open_message(res, data)[2]) == INNER
    # and the other direction, with the other keys
    [back] = res.seal(sk_header(response=True), first, inner)
    assert open_message(ini, back)[2] == inner
    # a message is not readable with the keys of the opposite direction
    with pytest.raises(IntegrityError):
        open_message(ini, data)


@pytest.mark.parametrize(("enc", "integ"), SUITES)
def test_tampering_any_byte_fails_integrity(enc: str, integ: str | None) -> None:
    ini, res = protection_pair(enc, integ)
    first, inner = encode_payloads(INNER[:3])
    [data] = ini.seal(sk_header(), first, inner)
    _, sk, _ = open_message(res, data)
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            bad = data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]
            with pytest.raises(IntegrityError):
                res.open(bad, sk)


@pytest.mark.parametrize(("enc", "integ"), SUITES)
def test_truncated_sealed_message_fails_cleanly(enc: str, integ: str | None) -> None:
    ini, res = protection_pair(enc, integ)
    first, inner = encode_payloads(INNER[:2])
    [data] = ini.seal(sk_header(), first, inner)
    _, sk, _ = open_message(res, data)
    for cut in range(HEADER_SIZE, len(data)):
        with pytest.raises((IntegrityError, MalformedMessage)):
            res.open(data[:cut], sk)


def test_wrong_keys_fail_integrity() -> None:
    ini, _ = protection_pair("aes256gcm16", None, seed=1)
    enc = ENCRYPTION["aes256gcm16"]
    prf = PRF["prfsha256"]
    keys = derive_ike_sa_keys(prf, b"other seed", b"\x01" * 32, b"\x02" * 32, b"\xaa" * 8, b"\xbb" * 8,
                              integ_key_size=0, encr_key_size=enc.keymat_size)
    stranger = SkProtection(enc, None, keys, False)
    first, inner = encode_payloads(INNER)
    [data] = ini.seal(sk_header(), first, inner)
    with pytest.raises(IntegrityError):
        open_message(stranger, data)


BIG_INNER = [IdPayload(11, bytes(range(256)) * 12), AuthPayload(2, b"\x42" * 32),
             NotifyPayload(NotifyType.INITIAL_CONTACT), SaPayload(build_proposals(
                 [parse_child_proposal("aes256gcm16"), parse_child_proposal("aes128-sha256-esn")],
                 ProtocolId.ESP, b"\x00\x00\x12\x34", include_dh=False)),
             TsPayload([net("10.1.0.0/24")]), TsrPayload([net("10.2.0.0/24")])]


@pytest.mark.parametrize(("enc", "integ"), SUITES)
@pytest.mark.parametrize("fragment_size", [300, 548, 1252])
def test_fragmentation_fits_and_reassembles(enc: str, integ: str | None, fragment_size: int) -> None:
    ini, res = protection_pair(enc, integ)
    first, inner = encode_payloads(BIG_INNER)
    assert len(inner) > 3000
    fragments = ini.seal(sk_header(message_id=1), first, inner, fragment_size)
    assert len(fragments) >= len(inner) // fragment_size
    assert all(len(f) <= fragment_size for f in fragments)
    total = len(fragments)
    buf = FragmentBuffer(1, total)
    whole = None
    # deliver out of order, with a duplicate, as the network may
    order = list(range(total))
    random.Random(fragment_size).shuffle(order)
    order.insert(1, order[0])
    for k, index in enumerate(order):
        header, sk, plain = open_message(res, fragments[index])
        assert header.next_payload == PayloadType.SKF
        assert header.message_id == 1 and header.length == len(fragments[index])
        assert isinstance(sk, EncryptedFragment)
        assert (sk.number, sk.total) == (index + 1, total)
        # RFC 7383 2.5: only the first fragment names the first inner payload
        assert sk.first_inner == (first if index == 0 else 0)
        whole = buf.add(sk, plain)
        assert (whole is None) == (k < len(order) - 1)
    assert whole == inner
    assert buf.first_inner == first
    assert decode_payloads(buf.first_inner, whole) == BIG_INNER


def test_fragment_numbers_are_authenticated() -> None:
    ini, res = protection_pair("aes256gcm16", None)
    first, inner = encode_payloads(BIG_INNER)
    fragments = ini.seal(sk_header(), first, inner, 548)
    frag = fragments[1]
    # the Fragment Number field sits right after the SKF generic header (RFC 7383 2.5)
    forged = frag[:HEADER_SIZE + 4] + struct.pack("!H", 1) + frag[HEADER_SIZE + 6:]
    _, sk, _ = open_message(res, frag)
    with pytest.raises(IntegrityError):
        res.open(forged, sk)


def test_small_message_is_not_fragmented_and_tiny_fragment_size_refused() -> None:
    ini, _ = protection_pair("aes128gcm16", None)
    first, inner = encode_payloads(INNER[:2])
    assert len(ini.seal(sk_header(), first, inner, 1200)) == 1
    first, inner = encode_payloads(BIG_INNER)
    with pytest.raises(ValueError):
        ini.seal(sk_header(), first, inner, 100)


# ======================================================================================
# proposals (RFC 7296 2.7, 3.3)
# ======================================================================================


def ike(*texts: str) -> list[Proposal]:
    return build_proposals([parse_ike_proposal(t) for t in texts], ProtocolId.IKE, b"")


def esp(*texts: str, spi: bytes = b"\x00\x00\x01\x00", include_dh: bool = True) -> list[Proposal]:
    return build_proposals([parse_child_proposal(t) for t in texts], ProtocolId.ESP, spi,
                           include_dh=include_dh)


def test_build_proposals_numbers_and_transforms() -> None:
    props = ike("aes256gcm16-prfsha256-ecp256", "aes128-sha256-modp2048")
    assert [p.number for p in props] == [1, 2]
    assert [t.key() for t in props[0].transforms] == [(ENCR, 20, 256), (PRF_T, 5, None), (DH, 19, None)]
    assert [t.key() for t in props[1].transforms] == [(ENCR, 12, 128), (PRF_T, 5, None), (INTEG, 12, None),
                                                      (DH, 14, None)]
    [e] = esp("aes128-sha1-esn", include_dh=False)
    assert [t.key() for t in e.transforms] == [(ENCR, 12, 128), (INTEG, 2, None), (ESN, 1, None)]
    assert e.spi == b"\x00\x00\x01\x00"


def test_select_follows_our_preference_not_theirs() -> None:
    ours = ike("aes256gcm16-prfsha256-ecp256", "aes128-sha256-modp2048")
    theirs = ike("aes128-sha256-modp2048", "aes256gcm16-prfsha256-ecp256")
    chosen = select(ours, theirs)
    assert chosen is not None
    assert chosen.number == 2  # the peer's number for the proposal we prefer
    assert suite_of(chosen).name == "aes256gcm16-prfsha256-ecp256"


def test_select_prefers_our_order_within_a_proposal() -> None:
    ours = ike("aes256-aes128-sha256-sha1-modp2048-ecp256")
    theirs = ike("aes128-aes256-sha1-sha256-ecp256-modp2048")
    chosen = select(ours, theirs)
    assert chosen is not None
    assert [t.key() for t in chosen.transforms] == [(ENCR, 12, 256), (PRF_T, 5, None), (INTEG, 12, None),
                                                    (DH, 14, None)]
    # one transform of each type only
    assert len({t.type for t in chosen.transforms}) == len(chosen.transforms)


def test_select_needs_the_key_length_to_match() -> None:
    assert select(ike("aes256-sha256-modp2048"), ike("aes128-sha256-modp2048")) is None
    assert select(ike("aes256-sha256-modp2048"), ike("aes128-aes256-sha256-modp2048")) is not None


def test_select_needs_every_transform_type() -> None:
    assert select(ike("aes256-sha256-modp2048"), ike("aes256-sha256-ecp256")) is None  # DH
    assert select(esp("aes256-sha256"), esp("aes256gcm16")) is None
    # a peer proposal carrying an extra type we do not use (PFS group) does not match a no-PFS one
    assert select(esp("aes256gcm16"), esp("aes256gcm16-ecp256")) is None
    # ... unless the DH transforms are to be ignored (IKE_AUTH, RFC 7296 1.2)
    chosen = select(esp("aes256gcm16", include_dh=False), esp("aes256gcm16-ecp256"), ignore_dh=True)
    assert chosen is not None and not chosen.of_type(DH)


def test_select_treats_none_transforms_as_absent() -> None:
    # RFC 7296 3.3.2: INTEG NONE with an AEAD cipher, DH NONE in a child proposal
    theirs = [Proposal(1, ProtocolId.ESP, b"\x00\x00\x02\x00",
                       [Transform(ENCR, 20, 256), Transform(INTEG, 0), Transform(DH, 0), Transform(ESN, 0)])]
    chosen = select(esp("aes256gcm16"), theirs)
    assert chosen is not None
    assert chosen.spi == b"\x00\x00\x02\x00"
    assert [t.key() for t in chosen.transforms] == [(ENCR, 20, 256), (ESN, 0, None)]


def test_select_skips_other_protocols() -> None:
    theirs = [Proposal(1, ProtocolId.AH, b"\x00\x00\x02\x00", [Transform(INTEG, 12), Transform(ESN, 0)])]
    assert select(esp("aes256-sha256"), theirs) is None


def test_accept_response_exact_choice() -> None:
    offered = ike("aes256gcm16-aes128gcm16-prfsha256-ecp256-modp2048")
    answer = [Proposal(1, ProtocolId.IKE, b"", [Transform(ENCR, 20, 128), Transform(PRF_T, 5),
                                                 Transform(DH, 14)])]
    assert accept_response(offered, answer) == answer[0]


@pytest.mark.parametrize("transforms", [
    [Transform(ENCR, 20, 192), Transform(PRF_T, 5), Transform(DH, 19)],  # key length not offered
    [Transform(ENCR, 20, 256), Transform(PRF_T, 7), Transform(DH, 19)],  # PRF not offered
    [Transform(ENCR, 20, 256), Transform(PRF_T, 5), Transform(DH, 31)],  # group not offered
    [Transform(ENCR, 20, 256), Transform(PRF_T, 5)],  # a type missing
    [Transform(ENCR, 20, 256), Transform(ENCR, 20, 128), Transform(PRF_T, 5), Transform(DH, 19)],  # two ENCR
], ids=["key-length", "prf", "group", "missing-dh", "two-encr"])
def test_accept_response_refuses_what_we_did_not_offer(transforms: list[Transform]) -> None:
    offered = ike("aes256gcm16-aes128gcm16-prfsha256-ecp256-modp2048")
    assert accept_response(offered, [Proposal(1, ProtocolId.IKE, b"", transforms)]) is None


def test_accept_response_refuses_wrong_number_or_count() -> None:
    offered = ike("aes256gcm16-prfsha256-ecp256", "aes128-sha256-modp2048")
    good = Proposal(1, ProtocolId.IKE, b"",
                    [Transform(ENCR, 20, 256), Transform(PRF_T, 5), Transform(DH, 19)])
    assert accept_response(offered, [good]) == good
    renumbered = Proposal(2, ProtocolId.IKE, b"", good.transforms)  # proposal 2 had no GCM
    assert accept_response(offered, [renumbered]) is None
    assert accept_response(offered, [good, good]) is None
    assert accept_response(offered, []) is None


def test_accept_response_ignore_dh_for_ike_auth() -> None:
    offered = esp("aes256gcm16-ecp256")
    answer = [Proposal(1, ProtocolId.ESP, b"\x00\x00\x09\x00", [Transform(ENCR, 20, 256), Transform(ESN, 0)])]
    assert accept_response(offered, answer) is None
    assert accept_response(offered, answer, ignore_dh=True) == answer[0]


def test_describe_proposals_text() -> None:
    text = describe_proposals(ike("aes256gcm16-prfsha256-ecp256", "aes128-sha1-modp2048")
                              + esp("aes256-sha256-esn"))
    assert text == ("IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256, "
                    "IKE:AES_CBC_128/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_2048, "
                    "ESP:AES_CBC_256/HMAC_SHA2_256_128/ESN")
    assert describe_proposals([]) == "(none)"
    odd = [Proposal(1, 9, b"", [Transform(ENCR, 99), Transform(7, 3), Transform(ESN, 0)])]
    assert describe_proposals(odd) == "PROTO9:ENCR_99/T7_3/NO_EXT_SEQ"


def test_suite_of_maps_back_and_refuses_unknown() -> None:
    [p] = ike("aes128-sha256-modp2048")
    chosen = select([p], [p])
    assert chosen is not None
    suite = suite_of(chosen)
    assert suite.name == "aes128-sha256-prfsha256-modp2048"
    with pytest.raises(ValueError):
        suite_of(Proposal(1, 1, b"", [Transform(ENCR, 12)]))  # AES-CBC without a key length
    with pytest.raises(ValueError):
        suite_of(Proposal(1, 1, b"", [Transform(ENCR, 12, 128), Transform(DH, 99)]))


# ======================================================================================
# traffic selectors (RFC 7296 2.9)
# ======================================================================================


def test_narrow_to_the_intersection() -> None:
    assert narrow([net("10.0.0.0/8")], [net("10.1.0.0/24")]) == [net("10.1.0.0/24")]
    assert narrow([net("10.1.0.0/24")], [net("10.0.0.0/8")]) == [net("10.1.0.0/24")]
    # a range that is not a prefix
    got = narrow([net("10.1.0.0/24")], [TsRange(ipaddress.IPv4Address("10.1.0.100"),
                                               ipaddress.IPv4Address("10.1.1.5"))])
    assert got == [TsRange(ipaddress.IPv4Address("10.1.0.100"), ipaddress.IPv4Address("10.1.0.255"))]


def test_narrow_protocols_and_ports() -> None:
    assert narrow([net("10.1.0.0/24", 6, (80, 80))], [net("10.0.0.0/8")]) == [net("10.1.0.0/24", 6, (80, 80))]
    assert narrow([net("10.1.0.0/24")], [net("10.1.0.0/24", 17, (500, 4500))]) == \
        [net("10.1.0.0/24", 17, (500, 4500))]
    assert narrow([net("10.1.0.0/24", 6, (1000, 2000))], [net("10.1.0.0/24", 6, (1500, 3000))]) == \
        [net("10.1.0.0/24", 6, (1500, 2000))]
    assert narrow([net("10.1.0.0/24", 6)], [net("10.1.0.0/24", 17)]) == []
    assert narrow([net("10.1.0.0/24", 6, (1, 10))], [net("10.1.0.0/24", 6, (11, 20))]) == []


def test_narrow_disjoint_and_several() -> None:
    assert narrow([net("10.1.0.0/24")], [net("10.2.0.0/24")]) == []
    got = narrow([net("10.0.0.0/8"), net("192.168.0.0/16")],
                 [net("10.1.0.0/24"), net("192.168.5.0/24"), net("172.16.0.0/12"), net("10.1.0.0/24")])
    assert got == [net("10.1.0.0/24"), net("192.168.5.0/24")]  # proposer's order, no duplicates


def test_within() -> None:
    proposed = (net("10.1.0.0/16"),)
    assert within([net("10.1.2.0/24")], proposed)
    assert within([net("10.1.0.0/16")], proposed)
    assert not within([net("10.0.0.0/8")], proposed)  # wider than proposed
    assert not within([], proposed)  # an empty answer is no answer
    assert not within([net("10.1.2.0/24"), net("10.3.0.0/24")], proposed)
    assert within([net("10.1.2.0/24", 6, (80, 80))], proposed)
    assert not within([net("10.1.2.0/24")], (net("10.1.0.0/16", 6),))  # any-protocol is not TCP only
    assert not within([net("10.1.2.0/24", 6, (1, 100))], (net("10.1.0.0/16", 6, (50, 60)),))


# ======================================================================================
# scapy as an independent dissector
# ======================================================================================

scapy_ikev2 = pytest.importorskip("scapy.contrib.ikev2")


def _chain(pkt: object, cls: type) -> list:
    out = []
    layer = pkt
    while layer is not None and layer.__class__.__name__ != "NoPayload":
        if isinstance(layer, cls):
            out.append(layer)
        layer = layer.payload
    return out


def test_scapy_dissects_our_init_request() -> None:
    data = _REAL_INIT
    ours_header, ours = decode_message(data)
    pkt = scapy_ikev2.IKEv2(data)
    assert pkt.init_SPI == ours_header.spi_i and pkt.resp_SPI == bytes(8)
    assert pkt.exch_type == 34 and pkt.id == 0 and pkt.length == len(data)
    assert int(pkt.flags) & 0x08  # Initiator
    # SA: proposals and transforms, with key lengths
    [sa] = _chain(pkt, scapy_ikev2.IKEv2_SA)
    our_sa = next(p for p in ours if isinstance(p, SaPayload))
    scapy_props = _chain(sa.prop, scapy_ikev2.IKEv2_Proposal)
    assert len(scapy_props) == len(our_sa.proposals)
    for sp, op in zip(scapy_props, our_sa.proposals, strict=True):
        assert sp.proposal == op.number and sp.proto == op.protocol and sp.trans_nb == len(op.transforms)
        got = [(t.transform_type, t.transform_id, t.key_length if t.length > 8 else None)
               for t in _chain(sp.trans, scapy_ikev2.IKEv2_Transform)]
        assert got == [t.key() for t in op.transforms]
    assert got[0] == (ENCR, 20, 256)  # aes256gcm16
    # KE and nonce
    [ke] = _chain(pkt, scapy_ikev2.IKEv2_KE)
    our_ke = next(p for p in ours if isinstance(p, KePayload))
    assert ke.group == our_ke.group == 19
    assert bytes(ke.ke) == our_ke.data and len(our_ke.data) == 64
    [nonce] = _chain(pkt, scapy_ikev2.IKEv2_Nonce)
    our_nonce = next(p for p in ours if isinstance(p, NoncePayload))
    assert bytes(nonce.nonce) == our_nonce.data
    # notifies, in order
    scapy_notifies = [(n.type, bytes(n.notify)) for n in _chain(pkt, scapy_ikev2.IKEv2_Notify)]
    assert scapy_notifies == [(n.type, n.data) for n in ours if isinstance(n, NotifyPayload)]
    assert {t for t, _ in scapy_notifies} >= {NotifyType.NAT_DETECTION_SOURCE_IP,
                                               NotifyType.NAT_DETECTION_DESTINATION_IP,
                                               NotifyType.IKEV2_FRAGMENTATION_SUPPORTED}


def test_scapy_built_message_decodes_with_our_codec() -> None:
    s = scapy_ikev2
    trans = (s.IKEv2_Transform(transform_type="Encryption", transform_id=12, length=12, key_length=256)
             / s.IKEv2_Transform(transform_type="Encryption", transform_id=12, length=12, key_length=128)
             / s.IKEv2_Transform(transform_type="PRF", transform_id=5)
             / s.IKEv2_Transform(transform_type="Integrity", transform_id=12)
             / s.IKEv2_Transform(transform_type="GroupDesc", transform_id=14))
    trans2 = (s.IKEv2_Transform(transform_type="Encryption", transform_id=20, length=12,
                                  key_length=128)
              / s.IKEv2_Transform(transform_type="PRF", transform_id=7)
              / s.IKEv2_Transform(transform_type="GroupDesc", transform_id=19))
    props = (s.IKEv2_Proposal(proposal=1, proto=1, trans_nb=5, trans=trans)
             / s.IKEv2_Proposal(proposal=2, proto=1, trans_nb=3, trans=trans2))
    pkt = (s.IKEv2(init_SPI=b"\x01\x02\x03\x04\x05\x06\x07\x08", resp_SPI=bytes(8), exch_type=34,
                   flags="Initiator", id=0)
           / s.IKEv2_SA(prop=props)
           / s.IKEv2_KE(group=14, ke=b"\x07" * 256)
           / s.IKEv2_Nonce(nonce=b"\x09" * 32)
           / s.IKEv2_Notify(type=16430)
           / s.IKEv2_Notify(type=16388, notify=b"\x05" * 20))
    data = bytes(pkt)
    header, payloads = decode_message(data)
    assert header.spi_i == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert header.exchange == ExchangeType.IKE_SA_INIT and header.from_initiator and not header.is_response
    assert header.message_id == 0 and header.length == len(data)
    assert [type(p) for p in payloads] == [SaPayload, KePayload, NoncePayload, NotifyPayload, NotifyPayload]
    sa, ke, nonce, frag, nat = payloads
    assert isinstance(sa, SaPayload)
    assert [(p.number, p.protocol, p.spi) for p in sa.proposals] == [(1, 1, b""), (2, 1, b"")]
    assert [t.key() for t in sa.proposals[0].transforms] == [(ENCR, 12, 256), (ENCR, 12, 128),
                                                             (PRF_T, 5, None), (INTEG, 12, None),
                                                             (DH, 14, None)]
    assert [t.key() for t in sa.proposals[1].transforms] == [(ENCR, 20, 128), (PRF_T, 7, None),
                                                             (DH, 19, None)]
    assert ke == KePayload(14, b"\x07" * 256)
    assert nonce == NoncePayload(b"\x09" * 32)
    assert frag == NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)
    assert nat == NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"\x05" * 20)
    # what scapy built we choose from like any peer's offer
    chosen = select(ike("aes128gcm16-prfsha512-ecp256", "aes256-sha256-modp2048"), sa.proposals)
    assert chosen is not None and chosen.number == 2
    # and our encoding of the same payloads is byte-identical to scapy's
    assert message(payloads, flags=Flag.INITIATOR, spi_i=header.spi_i) == data
