"""ESP (RFC 4303/4106) and AH (RFC 4302) packet processing for one SA.

Round trips for every suite, interoperability with scapy's independent IPsec code in
both directions, and every way an inbound packet can be rejected.
"""

from __future__ import annotations

import struct

import pytest
from ipsec_testkit import (
    A_PUB,
    ALL_ESP_SUITES,
    B_PUB,
    ah_key,
    ah_sa,
    esp_keys,
    esp_pair,
    esp_sa,
    flip_bit,
    icmp_echo,
    outer_ip,
    udp_packet,
)
from scapy.layers.inet import IP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.ipsec import AH as ScapyAH
from scapy.layers.ipsec import ESP as ScapyESP
from scapy.layers.ipsec import IPSecIntegrityError
from scapy.layers.ipsec import SecurityAssociation as ScapySA

from gateway.dataplane import ah, esp, ip
from gateway.dataplane.drops import Dropped, DropReason
from gateway.dataplane.sa import Direction, SecurityAssociation

SUBSPACE = 1 << 32
INNER = udp_packet("10.1.0.5", "10.2.0.7", 5353, 53, b"tunnelled datagram " * 3)
TRANSPORT = udp_packet(A_PUB, B_PUB, 4000, 1701, b"l2tp-ish payload" * 2)


def _drop(fn, *args) -> DropReason:  # type: ignore[no-untyped-def]
    with pytest.raises(Dropped) as exc:
        fn(*args)
    return exc.value.reason


def _position_esn(out: SecurityAssociation, inb: SecurityAssociation, next_seq: int) -> None:
    """Make ``next_seq`` the next number ``out`` sends, and ``inb`` expect it."""
    out.seq = next_seq - 1
    assert inb.replay is not None
    inb.replay.accept(next_seq - 1)


# ======================================================================================
# Round trips
# ======================================================================================


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("suite", ALL_ESP_SUITES)
def test_round_trip_tunnel_and_transport(suite: str, esn: bool) -> None:
    out, inb = esp_pair(suite, esn=esn)
    if esn:  # start above 2^32 so the implicit high half matters
        _position_esn(out, inb, (7 << 32) + 100)
    enc = out.esp.encryption  # type: ignore[union-attr]
    cases = [(INNER, ip.PROTO_IPIP), (TRANSPORT[20:], ip.PROTO_UDP)]
    cases += [(bytes(range(n)), ip.PROTO_TCP) for n in range(0, 40)]  # every pad length
    cases.append((bytes(1400), ip.PROTO_IPIP))
    for payload, next_header in cases:
        data = esp.encapsulate(out, payload, next_header)
        assert data[:4] == out.spi.to_bytes(4, "big")
        assert data[4:8] == (out.seq & 0xFFFFFFFF).to_bytes(4, "big")
        ct_len = len(data) - 8 - enc.iv_size - out.esp.icv_size  # type: ignore[union-attr]
        assert ct_len % enc.block_size == 0 and ct_len % 4 == 0
        assert ct_len - len(payload) - 2 < enc.block_size  # minimal padding
        if enc.aead:
            assert data[8:16] == out.seq.to_bytes(8, "big")  # RFC 4106 3.1: IV = counter
        assert esp.decapsulate(inb, data) == (next_header, payload)
        assert inb.replay.top == out.seq  # type: ignore[union-attr]


def test_sequence_numbers_count_from_one() -> None:
    out, inb = esp_pair("aes128gcm16")
    for n in range(1, 4):
        data = esp.encapsulate(out, b"x", ip.PROTO_UDP)
        assert struct.unpack("!I", data[4:8])[0] == n
        esp.decapsulate(inb, data)
    assert out.seq == 3


def test_cbc_iv_comes_from_the_sa_random_source() -> None:
    out = esp_sa("aes128-sha256", 0x99, Direction.OUT, random=lambda n: bytes(range(n)))
    assert esp.encapsulate(out, b"abc", 17)[8:24] == bytes(range(16))
    out.random = None  # os.urandom: two packets get different IVs
    assert esp.encapsulate(out, b"abc", 17)[8:24] != esp.encapsulate(out, b"abc", 17)[8:24]


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes256-sha256", "3des-sha1", "null-sha256"])
def test_esn_high_half_is_authenticated(suite: str) -> None:
    """A receiver that does not use ESN (or infers other high bits) cannot verify."""
    out, _ = esp_pair(suite, esn=True)
    out.seq = (3 << 32) + 9
    data = esp.encapsulate(out, INNER, 4)
    _, plain_receiver = esp_pair(suite, esn=False)
    assert _drop(esp.decapsulate, plain_receiver, data) is DropReason.BAD_ICV
    _, esn_receiver = esp_pair(suite, esn=True)
    esn_receiver.replay.accept((4 << 32) + 5)  # type: ignore[union-attr]  # wrong subspace
    assert _drop(esp.decapsulate, esn_receiver, data) is DropReason.BAD_ICV
    _, esn_receiver = esp_pair(suite, esn=True)
    esn_receiver.replay.accept((3 << 32) + 5)  # type: ignore[union-attr]
    assert esp.decapsulate(esn_receiver, data) == (4, INNER)


# ======================================================================================
# Interoperability with scapy.layers.ipsec
# ======================================================================================

SCAPY_ESP = {
    "aes128gcm16": ("AES-GCM", None),
    "aes256gcm16": ("AES-GCM", None),
    "aes128-sha1": ("AES-CBC", "HMAC-SHA1-96"),
    "aes128-sha256": ("AES-CBC", "SHA2-256-128"),
    "aes256-sha384": ("AES-CBC", "SHA2-384-192"),
    "aes256-sha512": ("AES-CBC", "SHA2-512-256"),
    "3des-md5": ("3DES", "HMAC-MD5-96"),
    "3des-sha1": ("3DES", "HMAC-SHA1-96"),
    "null-sha256": ("NULL", "SHA2-256-128"),
}


def _scapy_esp_sa(suite: str, spi: int, *, tunnel: bool, esn_high: int | None) -> ScapySA:
    crypt, auth = SCAPY_ESP[suite]
    enc_key, auth_key = esp_keys(suite)
    return ScapySA(ScapyESP, spi=spi, crypt_algo=crypt, crypt_key=enc_key or None,
                   auth_algo=auth, auth_key=auth_key,
                   tunnel_header=IP(src=str(A_PUB), dst=str(B_PUB)) if tunnel else None,
                   esn_en=esn_high is not None, esn=esn_high or 0)


_INTEROP = [pytest.param(s, t, e, id=f"{s}-{'tunnel' if t else 'transport'}-{'esn' if e else 'seq32'}")
            for s in SCAPY_ESP for t in (True, False) for e in (False, True)]


@pytest.mark.parametrize(("suite", "tunnel", "esn"), _INTEROP)
def test_esp_we_encrypt_scapy_decrypts(suite: str, tunnel: bool, esn: bool) -> None:
    out, _ = esp_pair(suite, spi=0xC0FFEE01, esn=esn)
    out.seq = (2 << 32) + 41 if esn else 41
    if tunnel:
        data = esp.encapsulate(out, INNER, ip.PROTO_IPIP)
    else:
        data = esp.encapsulate(out, TRANSPORT[20:], ip.PROTO_UDP)
    wire = IP(outer_ip(A_PUB, B_PUB, ip.PROTO_ESP, data))
    assert wire[ScapyESP].seq == 42
    peer = _scapy_esp_sa(suite, 0xC0FFEE01, tunnel=tunnel, esn_high=2 if esn else None)
    clear = peer.decrypt(wire)
    if tunnel:
        assert bytes(clear) == INNER
    else:
        assert clear.proto == ip.PROTO_UDP
        assert bytes(clear)[20:] == TRANSPORT[20:]
        assert clear.src == str(A_PUB) and clear.dst == str(B_PUB)


@pytest.mark.parametrize(("suite", "tunnel", "esn"), _INTEROP)
def test_esp_scapy_encrypts_we_decrypt(suite: str, tunnel: bool, esn: bool) -> None:
    _, inb = esp_pair(suite, spi=0xC0FFEE02, esn=esn)
    high = 2 if esn else 0
    inb.replay.accept((high << 32) + 41)  # type: ignore[union-attr]
    peer = _scapy_esp_sa(suite, 0xC0FFEE02, tunnel=tunnel, esn_high=high if esn else None)
    iv_size = peer.crypt_algo.iv_size
    original = INNER if tunnel else TRANSPORT
    sent = peer.encrypt(IP(original), seq_num=42, iv=bytes(range(7, 7 + iv_size)) if iv_size else None)
    raw = bytes(sent)
    data = raw[(raw[0] & 0x0F) * 4:]
    if tunnel:
        assert esp.decapsulate(inb, data) == (ip.PROTO_IPIP, INNER)
    else:
        assert esp.decapsulate(inb, data) == (ip.PROTO_UDP, TRANSPORT[20:])
    assert inb.replay.top == (high << 32) + 42  # type: ignore[union-attr]
    assert _drop(esp.decapsulate, inb, data) is DropReason.REPLAY


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256", "3des-md5"])
def test_esp_scapy_rejects_our_tampered_packet(suite: str) -> None:
    out, _ = esp_pair(suite, spi=0xC0FFEE03)
    data = esp.encapsulate(out, INNER, ip.PROTO_IPIP)
    wire = IP(outer_ip(A_PUB, B_PUB, ip.PROTO_ESP, flip_bit(data, 8 * len(data) - 1)))
    with pytest.raises(IPSecIntegrityError):
        _scapy_esp_sa(suite, 0xC0FFEE03, tunnel=True, esn_high=None).decrypt(wire)


SCAPY_AH = {"sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128", "md5": "HMAC-MD5-96",
            "sha512": "SHA2-512-256"}

_AH_INTEROP = [pytest.param(a, t, e, id=f"{a}-{'tunnel' if t else 'transport'}-{'esn' if e else 'seq32'}")
               for a in SCAPY_AH for t in (True, False) for e in (False, True)]


def _scapy_ah_sa(integ: str, spi: int, *, tunnel: bool, esn_high: int | None) -> ScapySA:
    return ScapySA(ScapyAH, spi=spi, auth_algo=SCAPY_AH[integ], auth_key=ah_key(integ),
                   tunnel_header=IP(src=str(A_PUB), dst=str(B_PUB)) if tunnel else None,
                   esn_en=esn_high is not None, esn=esn_high or 0)


@pytest.mark.parametrize(("integ", "tunnel", "esn"), _AH_INTEROP)
def test_ah_we_protect_scapy_verifies(integ: str, tunnel: bool, esn: bool) -> None:
    sa = ah_sa(integ, 0xA0000001, Direction.OUT, esn=esn)
    sa.seq = (5 << 32) + 6 if esn else 6
    if tunnel:
        header = ip.build_header(A_PUB.packed, B_PUB.packed, ip.PROTO_AH, 0, ident=0x0777, tos=0x28)
        packet = ah.protect(sa, header, ip.PROTO_IPIP, INNER)
    else:
        packet = ah.protect(sa, TRANSPORT[:20], ip.PROTO_UDP, TRANSPORT[20:])
    assert ip.checksum(packet[:20]) == 0 and int.from_bytes(packet[2:4], "big") == len(packet)
    parsed = IP(packet)
    assert parsed[ScapyAH].seq == 7
    clear = _scapy_ah_sa(integ, 0xA0000001, tunnel=tunnel, esn_high=5 if esn else None).decrypt(parsed)
    if tunnel:
        assert bytes(clear) == INNER
    else:
        assert bytes(clear) == TRANSPORT


@pytest.mark.parametrize(("integ", "tunnel", "esn"), _AH_INTEROP)
def test_ah_scapy_protects_we_verify(integ: str, tunnel: bool, esn: bool) -> None:
    sa = ah_sa(integ, 0xA0000002, Direction.IN, esn=esn)
    high = 5 if esn else 0
    sa.replay.accept((high << 32) + 6)  # type: ignore[union-attr]
    peer = _scapy_ah_sa(integ, 0xA0000002, tunnel=tunnel, esn_high=high if esn else None)
    sent = bytes(peer.encrypt(IP(INNER if tunnel else TRANSPORT), seq_num=7))
    header, next_header, rest = ah.verify(sa, sent)
    assert header == sent[:20]
    if tunnel:
        assert (next_header, rest) == (ip.PROTO_IPIP, INNER)
    else:
        assert (next_header, rest) == (ip.PROTO_UDP, TRANSPORT[20:])
    assert _drop(ah.verify, sa, sent) is DropReason.REPLAY


def test_ah_mutable_fields_do_not_count() -> None:
    """TOS, flags/offset, TTL, checksum and mutable options may change in transit."""
    options = bytes(IPOption_RR(routers=["0.0.0.0", "0.0.0.0"])) + b"\x00"  # 11 + EOL = 12
    body = TRANSPORT[20:]
    header = bytearray(ip.build_header(A_PUB.packed, B_PUB.packed, ip.PROTO_UDP, len(body) + 12,
                                       ident=0x2222))
    header[0] = 0x48  # IHL 8: 20 + 12 octets of options
    header = ip.rewrite_header(bytes(header) + options, proto=ip.PROTO_UDP,
                               total_length=32 + len(body))
    sent = ah.protect(ah_sa("sha256", 0x77, Direction.OUT), header, ip.PROTO_UDP, body)
    # scapy agrees on what is mutable here (Record Route is zeroed by both).
    clear = _scapy_ah_sa("sha256", 0x77, tunnel=False, esn_high=None).decrypt(IP(sent))
    assert bytes(clear)[32:] == body

    in_transit = bytearray(sent)
    in_transit[1] = 0xB8  # DSCP/ECN rewritten
    in_transit[6] = 0x40  # DF set by a router
    in_transit[8] = 3  # TTL decremented
    in_transit[20 + 3:20 + 7] = bytes([192, 0, 2, 254])  # a router recorded its address
    in_transit[22] = 8  # and moved the pointer
    in_transit[10:12] = b"\0\0"
    in_transit[10:12] = ip.checksum(bytes(in_transit[:32])).to_bytes(2, "big")
    receiver = ah_sa("sha256", 0x77, Direction.IN)
    assert ah.verify(receiver, bytes(in_transit))[1:] == (ip.PROTO_UDP, body)

    # ident, protocol, source, destination, AH SPI, AH sequence number, ICV, payload
    for offset in (4, 9, 12, 16, 32 + 4, 32 + 8, 32 + 12, len(sent) - 1):
        tampered = bytearray(sent)
        tampered[offset] ^= 0x01
        assert _drop(ah.verify, ah_sa("sha256", 0x77, Direction.IN), bytes(tampered)) is DropReason.BAD_ICV


def test_ah_router_alert_option_is_immutable() -> None:
    pkt = IP(src=str(A_PUB), dst=str(B_PUB), id=0x3333, proto=ip.PROTO_UDP,
             options=[IPOption_Router_Alert()]) / TRANSPORT[20:]
    raw = bytes(pkt)
    ihl = (raw[0] & 0x0F) * 4
    assert ihl == 24
    sent = ah.protect(ah_sa("sha1", 0x78, Direction.OUT), raw[:ihl], ip.PROTO_UDP, raw[ihl:])
    # An independent implementation (scapy: RFC 4302 A.1) must verify our ICV ...
    _scapy_ah_sa("sha1", 0x78, tunnel=False, esn_high=None).decrypt(IP(sent))
    # ... and we must verify its.
    theirs = bytes(_scapy_ah_sa("sha1", 0x78, tunnel=False, esn_high=None).encrypt(IP(raw), seq_num=1))
    ah.verify(ah_sa("sha1", 0x78, Direction.IN), theirs)


# ======================================================================================
# Inbound rejections
# ======================================================================================


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("suite", ALL_ESP_SUITES)
def test_any_single_bit_flip_is_bad_icv(suite: str, esn: bool) -> None:
    out, inb = esp_pair(suite, esn=esn)
    out.seq = 4  # a sequence number whose single-bit variants are all non-zero
    data = esp.encapsulate(out, icmp_echo("10.1.0.5", "10.2.0.7"), ip.PROTO_IPIP)
    for bit in range(8 * len(data)):
        assert _drop(esp.decapsulate, inb, flip_bit(data, bit)) is DropReason.BAD_ICV, bit
    assert inb.replay.top == 0  # type: ignore[union-attr]  # nothing forged moved the window
    assert inb.counters.packets == 0
    assert esp.decapsulate(inb, data)[0] == ip.PROTO_IPIP


@pytest.mark.parametrize("suite", ALL_ESP_SUITES)
def test_truncation_and_extension(suite: str) -> None:
    out, inb = esp_pair(suite)
    data = esp.encapsulate(out, INNER, ip.PROTO_IPIP)
    enc = out.esp.encryption  # type: ignore[union-attr]
    overhead = 8 + enc.iv_size + out.esp.icv_size  # type: ignore[union-attr]
    for length in range(len(data)):
        ct_len = length - overhead
        if ct_len < 2:
            expected = DropReason.TOO_SHORT
        elif ct_len % enc.block_size:
            expected = DropReason.BAD_LENGTH
        else:
            expected = DropReason.BAD_ICV
        if length < 8:
            continue  # the engine rejects these before decapsulate (no SPI)
        assert _drop(esp.decapsulate, inb, data[:length]) is expected, length
    for extra in (1, 3, enc.block_size):
        reason = _drop(esp.decapsulate, inb, data + bytes(extra))
        assert reason in (DropReason.BAD_LENGTH, DropReason.BAD_ICV)
    assert _drop(esp.decapsulate, inb, data[:8]) is DropReason.TOO_SHORT
    assert esp.decapsulate(inb, data) == (ip.PROTO_IPIP, INNER)


def _craft(sa_out: SecurityAssociation, seq: int, plaintext: bytes) -> bytes:
    """An authentic ESP packet around an arbitrary plaintext (payload|padding|trailer)."""
    suite = sa_out.esp
    assert suite is not None and sa_out.cipher is not None
    header = sa_out.spi_bytes + seq.to_bytes(4, "big")
    enc = suite.encryption
    if enc.aead:
        iv = seq.to_bytes(8, "big")
        return header + iv + sa_out.cipher.encrypt(iv, plaintext, header)
    iv = bytes(range(enc.iv_size))
    body = header + iv + sa_out.cipher.encrypt(iv, plaintext, b"")
    assert sa_out.integrity is not None
    return body + sa_out.integrity.compute(body)


def _trailer_cases(block: int) -> list[tuple[bytes, DropReason | None]]:
    """(plaintext, expected drop or None if valid); every length a multiple of ``block``."""
    n = block - 4  # a payload length that needs exactly 2 octets of padding
    payload = bytes(range(0x40, 0x40 + n))
    long_pad = 2 * block - 4  # more padding than alignment needs (RFC 4303 2.4 allows it)
    cases: list[tuple[bytes, DropReason | None]] = [
        (payload + b"\x01\x02" + bytes((2, 17)), None),  # RFC 4303 2.4 default padding
        (payload + b"\x00\x00" + bytes((2, 17)), DropReason.BAD_PADDING),  # wrong pad octets
        (payload + b"\x02\x01" + bytes((2, 17)), DropReason.BAD_PADDING),  # wrong order
        (bytes(block - 2) + bytes((200, 17)), DropReason.BAD_PADDING),  # longer than the packet
        (bytes(block - 2) + bytes((block - 1, 17)), DropReason.BAD_PADDING),  # one too long
        (bytes(range(1, block - 1)) + bytes((block - 2, 17)), None),  # all padding, empty payload
        (b"xy" + bytes(range(1, long_pad + 1)) + bytes((long_pad, 17)), None),
    ]
    for plaintext, _ in cases:
        assert len(plaintext) % block == 0
    return cases


@pytest.mark.parametrize("suite", ["null-sha256", "aes128gcm16", "aes256-sha256", "3des-md5"])
def test_padding_is_checked(suite: str) -> None:
    out, inb = esp_pair(suite)
    block = out.esp.encryption.block_size  # type: ignore[union-attr]
    for seq, (plaintext, expected) in enumerate(_trailer_cases(block), start=1):
        packet = _craft(out, seq, plaintext)
        if expected is None:
            pad_len = plaintext[-2]
            assert esp.decapsulate(inb, packet) == (17, plaintext[:len(plaintext) - 2 - pad_len])
        else:
            assert _drop(esp.decapsulate, inb, packet) is expected, plaintext.hex()


def test_crafted_null_packet_with_valid_trailer_decapsulates() -> None:
    """Sanity check of the crafting helper itself against the real encapsulation."""
    out, inb = esp_pair("null-sha256")
    out2, _ = esp_pair("null-sha256")
    out2.seq = 0
    assert _craft(out, 1, b"hello" + b"\x01" + b"\x01\x11") == esp.encapsulate(out2, b"hello", 17)
    assert esp.decapsulate(inb, _craft(out, 1, b"hello!\x01\x02\x03\x04\x04\x11")) == (17, b"hello!")


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256", "null-sha256"])
def test_next_header_59_is_a_dummy_packet(suite: str) -> None:
    out, inb = esp_pair(suite)
    for tfc in (b"", bytes(37)):
        data = esp.encapsulate(out, tfc, ip.PROTO_NONE)
        assert _drop(esp.decapsulate, inb, data) is DropReason.DUMMY
        # authenticated, so it is recorded by the replay window
        assert inb.replay.top == out.seq  # type: ignore[union-attr]
        assert _drop(esp.decapsulate, inb, data) is DropReason.REPLAY
    assert esp.decapsulate(inb, esp.encapsulate(out, b"real", 17)) == (17, b"real")


def test_replay_is_checked_before_the_icv() -> None:
    out, inb = esp_pair("aes128-sha256")
    first = esp.encapsulate(out, b"one", 17)
    esp.decapsulate(inb, first)
    assert _drop(esp.decapsulate, inb, flip_bit(first, 8 * len(first) - 1)) is DropReason.REPLAY


def test_replay_window_disabled_on_the_sa() -> None:
    out, inb = esp_pair("aes128gcm16", replay_size=None)
    data = esp.encapsulate(out, b"again", 17)
    assert esp.decapsulate(inb, data) == (17, b"again")
    assert esp.decapsulate(inb, data) == (17, b"again")


# ======================================================================================
# Sequence number exhaustion (RFC 4303 3.3.3) and ESN across 2^32
# ======================================================================================


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes128-sha256"])
def test_32bit_counter_refuses_to_wrap(suite: str) -> None:
    out, inb = esp_pair(suite)
    _position_esn(out, inb, 0xFFFFFFFF)
    last = esp.encapsulate(out, b"last", 17)
    assert last[4:8] == b"\xff\xff\xff\xff"
    assert esp.decapsulate(inb, last) == (17, b"last")
    assert out.seq == 0xFFFFFFFF and not out.exhausted
    for _ in range(2):
        assert _drop(esp.encapsulate, out, b"one more", 17) is DropReason.SEQ_EXHAUSTED
    assert out.exhausted
    assert out.seq == 0xFFFFFFFF  # the counter did not wrap to 0


@pytest.mark.parametrize("suite", ["aes128gcm16", "aes256gcm16", "aes128-sha256", "3des-sha1", "null-sha256"])
def test_esn_counter_continues_past_2_32(suite: str) -> None:
    out, inb = esp_pair(suite, esn=True)
    _position_esn(out, inb, SUBSPACE - 3)
    for full in range(SUBSPACE - 3, SUBSPACE + 4):
        data = esp.encapsulate(out, INNER, ip.PROTO_IPIP)
        assert out.seq == full
        assert data[4:8] == (full & 0xFFFFFFFF).to_bytes(4, "big")
        if out.esp.encryption.aead:  # type: ignore[union-attr]
            assert data[8:16] == full.to_bytes(8, "big")
        # scapy, told the high half, verifies the same packet
        wire = IP(outer_ip(A_PUB, B_PUB, ip.PROTO_ESP, data))
        clear = _scapy_esp_sa(suite, out.spi, tunnel=True, esn_high=full >> 32).decrypt(wire)
        assert bytes(clear) == INNER
        # and our receiver follows the wrap
        assert esp.decapsulate(inb, data) == (ip.PROTO_IPIP, INNER)
        assert inb.replay.top == full  # type: ignore[union-attr]
    assert not out.exhausted


def test_esn_counter_exhausts_at_2_64() -> None:
    out, _ = esp_pair("aes128gcm16", esn=True)
    out.seq = (1 << 64) - 2
    esp.encapsulate(out, b"x", 17)
    assert _drop(esp.encapsulate, out, b"x", 17) is DropReason.SEQ_EXHAUSTED
    assert out.exhausted


def test_ah_counter_refuses_to_wrap() -> None:
    sa = ah_sa("sha256", 0x51, Direction.OUT)
    sa.seq = 0xFFFFFFFE
    header = ip.build_header(A_PUB.packed, B_PUB.packed, ip.PROTO_AH, 0, ident=9)
    ah.protect(sa, header, ip.PROTO_IPIP, INNER)
    assert _drop(ah.protect, sa, header, ip.PROTO_IPIP, INNER) is DropReason.SEQ_EXHAUSTED
    assert sa.exhausted


# ======================================================================================
# AH inbound rejections
# ======================================================================================


def test_ah_rejections() -> None:
    out = ah_sa("sha256", 0x61, Direction.OUT)
    header = ip.build_header(A_PUB.packed, B_PUB.packed, ip.PROTO_AH, 0, ident=10)
    packet = ah.protect(out, header, ip.PROTO_IPIP, INNER)
    inb = ah_sa("sha256", 0x61, Direction.IN)
    assert _drop(ah.verify, inb, packet[:20 + 11]) is DropReason.TOO_SHORT
    assert _drop(ah.verify, inb, packet[:20 + 20]) is DropReason.TOO_SHORT  # ICV cut short
    bad_len = bytearray(packet)
    bad_len[21] += 1  # payload length field
    assert _drop(ah.verify, inb, bytes(bad_len)) is DropReason.BAD_LENGTH
    assert _drop(ah.verify, inb, packet[:-1]) is DropReason.BAD_ICV
    assert ah.verify(inb, packet)[1:] == (ip.PROTO_IPIP, INNER)
    assert _drop(ah.verify, inb, packet) is DropReason.REPLAY
    other_key = ah_sa("sha256", 0x61, Direction.IN, seed=2)
    assert _drop(ah.verify, other_key, packet) is DropReason.BAD_ICV
