"""Known-answer tests for the ESP/AH transforms, from published test vectors only.

Each vector names its source next to it.  Where a source gives whole ESP packets
(RFC 3602 cases 5-8, draft-mcgrew-gcm-test-01) they are run through our ESP code, not
just the cipher, so that the packet layout (SPI, sequence number, IV, padding, trailer,
RFC 4106 AAD with and without ESN) is checked against an independent implementation.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.crypto.algorithms import (
    ENCRYPTION,
    INTEGRITY,
    AuthenticationFailed,
    BoundIntegrity,
    EspSuite,
    parse_esp_suite,
)
from gateway.dataplane import esp
from gateway.dataplane.drops import Dropped, DropReason
from gateway.dataplane.replay import ReplayWindow
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation

h = bytes.fromhex


def _hex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# ======================================================================================
# AES-CBC: RFC 3602 section 4, cases 1-4 (raw cipher)
# ======================================================================================

RFC3602_CBC = [
    pytest.param(  # RFC 3602 s.4 Case #1: 16 bytes (1 block), AES-CBC 128-bit key
        h("06a9214036b8a15b512e03d534120006"), h("3dafba429d9eb430b422da802c9fac41"),
        b"Single block msg",
        h("e353779c1079aeb82708942dbe77181a"), id="rfc3602-case1"),
    pytest.param(  # RFC 3602 s.4 Case #2: 32 bytes (2 blocks)
        h("c286696d887c9aa0611bbb3e2025a45a"), h("562e17996d093d28ddb3ba695a2e6f58"),
        bytes(range(0x20)),
        _hex("d296cd94c2cccf8a3a863028b5e1dc0a 7586602d253cfff91b8266bea6d61ab1"),
        id="rfc3602-case2"),
    pytest.param(  # RFC 3602 s.4 Case #3: 48 bytes (3 blocks)
        h("6c3ea0477630ce21a2ce334aa746c2cd"), h("c782dc4c098c66cbd9cd27d825682c81"),
        b"This is a 48-byte message (exactly 3 AES blocks)",
        _hex("d0a02b3836451753d493665d33f0e886 2dea54cdb293abc7506939276772f8d5"
             "021c19216bad525c8579695d83ba2684"),
        id="rfc3602-case3"),
    pytest.param(  # RFC 3602 s.4 Case #4: 64 bytes (4 blocks)
        h("56e47a38c5598974bc46903dba290349"), h("8ce82eefbea0da3c44699ed7db51b7d9"),
        bytes(range(0xA0, 0xE0)),
        _hex("c30e32ffedc0774e6aff6af0869f71aa 0f3af07a9a31a9c684db207eb0ef8e4e"
             "35907aa632c3ffdf868bb7b29d3d46ad 83ce9f9a102ee99d49a53e87f4c3da55"),
        id="rfc3602-case4"),
]


@pytest.mark.parametrize(("key", "iv", "plaintext", "ciphertext"), RFC3602_CBC)
def test_aes_cbc_rfc3602(key: bytes, iv: bytes, plaintext: bytes, ciphertext: bytes) -> None:
    cipher = ENCRYPTION["aes128"].bind(key)
    assert cipher.encrypt(iv, plaintext, b"") == ciphertext
    assert cipher.decrypt(iv, ciphertext, b"") == plaintext


# ======================================================================================
# AES-CBC ESP packets: RFC 3602 section 4, cases 5-8
# ======================================================================================
# The RFC's ESP examples carry no ICV (encryption only).  Our SA model always pairs CBC
# with an integrity algorithm, so these SAs use a zero-length "null" ICV: a BoundIntegrity
# truncated to 0 octets.  Everything else (layout, IV placement, RFC 4303 2.4 padding,
# pad length, next header) is our production code.

_KEY_56 = h("90d382b410eeba7ad938c46cec1a82bf")  # RFC 3602 cases 5 and 6
_KEY_78 = h("0123456789abcdef0123456789abcdef")  # RFC 3602 cases 7 and 8

RFC3602_ESP = [
    pytest.param(  # RFC 3602 s.4 Case #5: ICMP echo, transport mode, SPI 4321, seq 1
        _KEY_56, 0x4321, 1, h("e96e8c08ab465763fd098d45dd3ff893"), 1,
        _hex("08000ebda70a00008e9c083db95b0700 08090a0b0c0d0e0f1011121314151617"
             "18191a1b1c1d1e1f2021222324252627 28292a2b2c2d2e2f3031323334353637"),
        _hex("0000432100000001e96e8c08ab465763 fd098d45dd3ff893f663c25d325c18c6"
             "a9453e194e120849a4870b66cc6b9965 330013b4898dc856a4699e523a55db08"
             "0b59ec3a8e4b7e52775b07d1db34ed9c 538ab50c551b874aa269add047ad2d59"
             "13ac19b7cfbad4a6"),
        id="rfc3602-case5"),
    pytest.param(  # RFC 3602 s.4 Case #6: ICMP echo reply, transport mode, SPI 4321, seq 8
        _KEY_56, 0x4321, 8, h("69d08df7d203329db093fc4924e5bd80"), 1,
        _hex("0800b5e8a80a0500a69c083d0b660e00 777777777777777777777777"),
        _hex("000043210000000869d08df7d203329d b093fc4924e5bd80f51995881ec4e0c4"
             "488987ce742e8109689bb379d2d750c0 d915dca346a89f75"),
        id="rfc3602-case6"),
    pytest.param(  # RFC 3602 s.4 Case #7: tunnel mode (next header 4), SPI 8765, seq 2
        _KEY_78, 0x8765, 2, h("f4e765244f6407adf13dc1380f673f37"), 4,
        _hex("45000054090400004001f988c0a87b03 c0a87bc808009f76a90a0100b49c083d"
             "02a2040008090a0b0c0d0e0f10111213 1415161718191a1b1c1d1e1f20212223"
             "2425262728292a2b2c2d2e2f30313233 34353637"),
        _hex("0000876500000002f4e765244f6407ad f13dc1380f673f37773b5241a4c44922"
             "5e4f3ce5ed611b0c237ca96cf74a9301 3c1b0ea1a0cf70f8e4ecaec78ac53aad"
             "7a0f022b859243c647752e94a859352b 8a4d4d2decd136e5c177f132ad3fbfb2"
             "201ac9904c74ee0a109e0ca1e4dfe9d5 a100b842f1c22f0d"),
        id="rfc3602-case7"),
    pytest.param(  # RFC 3602 s.4 Case #8: tunnel mode (next header 4), SPI 8765, seq 5
        _KEY_78, 0x8765, 5, h("85d47224b5f3dd5d2101d4ea8dffab22"), 4,
        _hex("45000044090c00004001f990c0a87b03 c0a87bc80800d63caa0a0200c69c083d"
             "a3de0300ffffffffffffffffffffffff ffffffffffffffffffffffffffffffff"
             "ffffffff"),
        _hex("000087650000000585d47224b5f3dd5d 2101d4ea8dffab2215b92683819596a8"
             "047232cc00f7048fe45318e11f8a0f62 ede3c3fc61203bb50f980a08c9843fd3"
             "a1b06d5c07ff9639b7eb7dfb3512e5de 435e7207ed971ef3d2726d9b5ef6affc"
             "6d17a0decbb13892"),
        id="rfc3602-case8"),
]


def _cbc_no_icv_sa(key: bytes, spi: int, direction: Direction, *, iv: bytes = b"") -> SecurityAssociation:
    enc = ENCRYPTION["aes128"]
    return SecurityAssociation(
        name="rfc3602", spi=spi, protocol=50, direction=direction, mode=Mode.TUNNEL,
        local=ipaddress.IPv4Address("192.168.123.100"),
        remote=ipaddress.IPv4Address("192.168.123.99"),
        esp=EspSuite(enc, None), cipher=enc.bind(key),
        integrity=BoundIntegrity(b"\0" * 16, hashes.SHA256(), 0),  # no ICV, as in the RFC
        replay=ReplayWindow(64) if direction is Direction.IN else None,
        random=(lambda n: iv[:n]) if iv else None,
    )


@pytest.mark.parametrize(("key", "spi", "seq", "iv", "next_header", "payload", "packet"), RFC3602_ESP)
def test_esp_aes_cbc_packets_rfc3602(key: bytes, spi: int, seq: int, iv: bytes, next_header: int,
                                     payload: bytes, packet: bytes) -> None:
    # Inbound: our decapsulation of the RFC's packet yields the RFC's payload.
    inbound = _cbc_no_icv_sa(key, spi, Direction.IN)
    assert esp.decapsulate(inbound, packet) == (next_header, payload)
    assert inbound.replay is not None and inbound.replay.top == seq
    # Outbound: with the RFC's IV we build the RFC's packet, octet for octet (this also
    # checks our default padding 1, 2, 3, ... of RFC 4303 2.4).
    outbound = _cbc_no_icv_sa(key, spi, Direction.OUT, iv=iv)
    outbound.seq = seq - 1
    assert esp.encapsulate(outbound, payload, next_header) == packet


# ======================================================================================
# HMAC-SHA-256/384/512 truncated: RFC 4868 section 2.7.2 (authentication test vectors)
# ======================================================================================
# RFC 4868 2.7.2.1-2.7.2.3 use keys of exactly the algorithm's key size and list the
# full HMAC output; IPsec sends the first 128/192/256 bits (RFC 4868 2.6), shown here.

RFC4868_AUTH = [
    # 2.7.2.1 HMAC-SHA-256-128, Test Case AUTH256-1/2/3
    pytest.param("sha256", b"\x0b" * 32, b"Hi There",
                 h("198a607eb44bfbc69903a0f1cf2bbdc5"), id="AUTH256-1"),
    pytest.param("sha256", b"Jefe" * 8, b"what do ya want for nothing?",
                 h("167f928588c5cc2eef8e3093caa0e87c"), id="AUTH256-2"),
    pytest.param("sha256", b"\xaa" * 32, b"\xdd" * 50,
                 h("cdcb1220d1ecccea91e53aba3092f962"), id="AUTH256-3"),
    # 2.7.2.2 HMAC-SHA-384-192, Test Case AUTH384-1/2/3
    pytest.param("sha384", b"\x0b" * 48, b"Hi There",
                 h("b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973"), id="AUTH384-1"),
    pytest.param("sha384", b"Jefe" * 12, b"what do ya want for nothing?",
                 h("2c7353974f1842fd66d53c452ca42122b28c0b594cfb184d"), id="AUTH384-2"),
    pytest.param("sha384", b"\xaa" * 48, b"\xdd" * 50,
                 h("809f439be00274321d4a538652164b53554a508184a0c316"), id="AUTH384-3"),
    # 2.7.2.3 HMAC-SHA-512-256, Test Case AUTH512-1/2/3
    pytest.param("sha512", b"\x0b" * 64, b"Hi There",
                 _hex("637edc6e01dce7e6742a99451aae82df 23da3e92439e590e43e761b33e910fb8"),
                 id="AUTH512-1"),
    pytest.param("sha512", b"Jefe" * 16, b"what do ya want for nothing?",
                 _hex("cb370917ae8a7ce28cfd1d8f4705d614 1c173b2a9362c15df235dfb251b15454"),
                 id="AUTH512-2"),
    pytest.param("sha512", b"\xaa" * 64, b"\xdd" * 50,
                 _hex("2ee7acd783624ca9398710f3ee05ae41 b9f9b0510c87e49e586cc9bf961733d8"),
                 id="AUTH512-3"),
]


@pytest.mark.parametrize(("name", "key", "data", "icv"), RFC4868_AUTH)
def test_hmac_sha2_rfc4868(name: str, key: bytes, data: bytes, icv: bytes) -> None:
    integ = INTEGRITY[name].bind(key)
    assert integ.icv_size == len(icv)
    assert integ.compute(data) == icv
    assert integ.verify(data, icv)
    assert not integ.verify(data, icv[:-1] + bytes([icv[-1] ^ 1]))
    assert not integ.verify(data + b"\0", icv)


# ======================================================================================
# HMAC-MD5-96 and HMAC-SHA1-96: RFC 2202 (digests truncated to 96 bits, RFC 2403/2404)
# ======================================================================================
# Cases whose key has the IPsec key size (16 octets for MD5, 20 for SHA-1) go through the
# registry's bind(); the others (other key lengths) through BoundIntegrity directly.

RFC2202 = [
    # RFC 2202 section 2, HMAC-MD5
    pytest.param("md5", b"\x0b" * 16, b"Hi There",
                 h("9294727a3638bb1c13f48ef8158bfc9d"), id="md5-case1"),
    pytest.param("md5", b"Jefe", b"what do ya want for nothing?",
                 h("750c783e6ab0b503eaa86e310a5db738"), id="md5-case2"),
    pytest.param("md5", b"\xaa" * 16, b"\xdd" * 50,
                 h("56be34521d144c88dbb8c733f0e8b3f6"), id="md5-case3"),
    pytest.param("md5", bytes(range(1, 26)), b"\xcd" * 50,
                 h("697eaf0aca3a3aea3a75164746ffaa79"), id="md5-case4"),
    pytest.param("md5", b"\x0c" * 16, b"Test With Truncation",  # digest-96 56461ef2342edc00f9bab995
                 h("56461ef2342edc00f9bab995690efd4c"), id="md5-case5"),
    pytest.param("md5", b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 h("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"), id="md5-case6"),
    pytest.param("md5", b"\xaa" * 80,
                 b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                 h("6f630fad67cda0ee1fb1f562db3aa53e"), id="md5-case7"),
    # RFC 2202 section 3, HMAC-SHA-1
    pytest.param("sha1", b"\x0b" * 20, b"Hi There",
                 h("b617318655057264e28bc0b6fb378c8ef146be00"), id="sha1-case1"),
    pytest.param("sha1", b"Jefe", b"what do ya want for nothing?",
                 h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"), id="sha1-case2"),
    pytest.param("sha1", b"\xaa" * 20, b"\xdd" * 50,
                 h("125d7342b9ac11cd91a39af48aa17b4f63f175d3"), id="sha1-case3"),
    pytest.param("sha1", bytes(range(1, 26)), b"\xcd" * 50,
                 h("4c9007f4026250c6bc8414f9bf50c86c2d7235da"), id="sha1-case4"),
    pytest.param("sha1", b"\x0c" * 20, b"Test With Truncation",  # digest-96 4c1a03424b55e07fe7f27be1
                 h("4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"), id="sha1-case5"),
    pytest.param("sha1", b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 h("aa4ae5e15272d00e95705637ce8a3b55ed402112"), id="sha1-case6"),
    pytest.param("sha1", b"\xaa" * 80,
                 b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                 h("e8e99d0f45237d786d6bbaa7965c7808bbff1a91"), id="sha1-case7"),
]


@pytest.mark.parametrize(("name", "key", "data", "digest"), RFC2202)
def test_hmac_96_rfc2202(name: str, key: bytes, data: bytes, digest: bytes) -> None:
    algo = INTEGRITY[name]
    assert algo.icv_size == 12
    if len(key) == algo.key_size:
        integ = algo.bind(key)
    else:
        integ = BoundIntegrity(key, algo.hash_factory(), algo.icv_size)
    assert integ.compute(data) == digest[:12]
    assert integ.verify(data, digest[:12])
    assert not integ.verify(data, digest[:11] + bytes([digest[11] ^ 0x80]))


# ======================================================================================
# AES-GCM: McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", appendix B
# ======================================================================================
# The spec's 96-bit IVs are split RFC 4106 style: the first 4 octets are the salt (the
# last 4 octets of our key material), the last 8 the explicit per-packet IV.

_GCM_P = _hex("d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72"
              "1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b391aafd255")
_GCM_A = _hex("feedfacedeadbeeffeedfacedeadbeef abaddad2")
_GCM_K = h("feffe9928665731c6d6a8f9467308308")

GCM_SPEC = [
    pytest.param(  # GCM spec Test Case 2 (AES-128, zero key and IV, one zero block)
        "aes128gcm16", bytes(16), bytes(12), bytes(16), b"",
        h("0388dace60b6a392f328c2b971b2fe78"), h("ab6e47d42cec13bdf53a67b21257bddf"), id="TC2"),
    pytest.param(  # GCM spec Test Case 3 (AES-128, 64-byte plaintext, no AAD)
        "aes128gcm16", _GCM_K, h("cafebabefacedbaddecaf888"), _GCM_P, b"",
        _hex("42831ec2217774244b7221b784d0d49c e3aa212f2c02a4e035c17e2329aca12e"
             "21d514b25466931c7d8f6a5aac84aa05 1ba30b396a0aac973d58e091473f5985"),
        h("4d5c2af327cd64a62cf35abd2ba6fab4"), id="TC3"),
    pytest.param(  # GCM spec Test Case 4 (AES-128, 60-byte plaintext, 20-byte AAD)
        "aes128gcm16", _GCM_K, h("cafebabefacedbaddecaf888"), _GCM_P[:60], _GCM_A,
        _hex("42831ec2217774244b7221b784d0d49c e3aa212f2c02a4e035c17e2329aca12e"
             "21d514b25466931c7d8f6a5aac84aa05 1ba30b396a0aac973d58e091"),
        h("5bc94fbc3221a5db94fae95ae7121a47"), id="TC4"),
    pytest.param(  # GCM spec Test Case 14 (AES-256, zero key and IV, one zero block)
        "aes256gcm16", bytes(32), bytes(12), bytes(16), b"",
        h("cea7403d4d606b6e074ec5d3baf39d18"), h("d0d1c8a799996bf0265b98b5d48ab919"), id="TC14"),
    pytest.param(  # GCM spec Test Case 15 (AES-256, 64-byte plaintext, no AAD)
        "aes256gcm16", _GCM_K * 2, h("cafebabefacedbaddecaf888"), _GCM_P, b"",
        _hex("522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa"
             "8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662898015ad"),
        h("b094dac5d93471bdec1a502270e3cc6c"), id="TC15"),
    pytest.param(  # GCM spec Test Case 16 (AES-256, 60-byte plaintext, 20-byte AAD)
        "aes256gcm16", _GCM_K * 2, h("cafebabefacedbaddecaf888"), _GCM_P[:60], _GCM_A,
        _hex("522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa"
             "8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662"),
        h("76fc6ece0f4e1768cddf8853bb2d551b"), id="TC16"),
]


@pytest.mark.parametrize(("suite", "key", "iv96", "plaintext", "aad", "ciphertext", "tag"), GCM_SPEC)
def test_aes_gcm_spec(suite: str, key: bytes, iv96: bytes, plaintext: bytes, aad: bytes,
                      ciphertext: bytes, tag: bytes) -> None:
    salt, iv = iv96[:4], iv96[4:]
    cipher = ENCRYPTION[suite].bind(key + salt)  # RFC 4106 8.1: key material = key | salt
    assert cipher.encrypt(iv, plaintext, aad) == ciphertext + tag
    assert cipher.decrypt(iv, ciphertext + tag, aad) == plaintext
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(iv, ciphertext + tag[:-1] + bytes([tag[-1] ^ 1]), aad)
    with pytest.raises(AuthenticationFailed):
        cipher.decrypt(iv, ciphertext + tag, aad + b"\0")


# ======================================================================================
# AES-GCM ESP packets: draft-mcgrew-gcm-test-01 ("GCM Test Vectors", section 4)
# ======================================================================================
# Each case is an RFC 4106 ESP packet: key | salt, SPI, sequence number, ESN flag (set
# where the draft's AAD is 12 octets: SPI | seq-high | seq-low), explicit IV, and the
# plaintext including the ESP trailer (padding, pad length, next header).  We rebuild the
# wire packet SPI | seq-low | IV | ciphertext | tag and decapsulate it with our code.

GCM_ESP = [
    pytest.param(  # draft-mcgrew-gcm-test-01, first packet: AES-128, ESN
        "aes128gcm16", h("4c80cdefbb5d10da906ac73c3613a634") + h("2e443b68"),
        0x00004321, 0x8765432100000000, True, h("4956ed7e3b244cfe"),
        _hex("45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000"
             "00000000045f736970045f7564700373 69700963796265726369747902646b00"
             "0021000101020201"),
        _hex("fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34"
             "cfa2436f14a3f3cf65925bf1f4a13c5d 15b21e1884f5ff6247aeabb786b93bce"
             "61bc17d768fd9732"),
        h("459018148f6cbe722fd04796562dfdb4"), id="draft-aes128-esn"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, 32-bit sequence number
        "aes128gcm16", _GCM_K + h("cafebabe"), 0x0000A5F8, 0x0A, False, h("facedbaddecaf888"),
        _hex("4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100"
             "00010000000000000373697009637962 65726369747902646b00000100010001"),
        _hex("deb22cd9b07c72c16e3a65beeb8df304 a5a5897d33ae530f1ba76d5d114d2a5c"
             "3de81827c10e9a4f51330d0eec416642 cfbb85a5b47e48a4ec3b9ba95d918bd1"),
        h("83b70d3aa8bc6ee4c309e9d85a41ad4a"), id="draft-aes128"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-256, 32-bit sequence number
        "aes256gcm16", h("abbccddef00112233445566778899aab") * 2 + h("11223344"),
        0x4A2CBFE3, 0x02, False, h("0102030405060708"),
        _hex("4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000"
             "7002400020bf0000020405b401010402 01020201"),
        _hex("ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763"
             "748a637985771d347f0545659f14e99d ef842d8e"),
        h("b335f4eecfdbf831824b4c4915956c96"), id="draft-aes256"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, all-zero key/salt/IV, SPI 0, seq 1
        "aes128gcm16", bytes(20), 0, 1, False, bytes(8),
        _hex("4500003c99c500008001cb7a40679318 010101010800075c0200440061626364"
             "65666768696a6b6c6d6e6f7071727374 75767761626364656667686901020201"),
        _hex("4688daf2f973a392732909c331d56d60 f694abaa414b5e7ff5fdcdfff5e9a284"
             "456476492719ffb64de7d9dca1e1d894 bc3bd57873ed4d181d19d4d5c8c18af3"),
        h("f821d496eeb096e98ad2b69e4799c71d"), id="draft-zero"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, ESN 0x1010101010101010
        "aes128gcm16", h("3de09874b388e6491988d0c3607eae1f") + h("57690e43"),
        0x42F67E3F, 0x1010101010101010, True, h("4e280000a2fca1a3"),
        _hex("4500003c99c300008001cb7c40679318 010101010800085c0200430061626364"
             "65666768696a6b6c6d6e6f7071727374 75767761626364656667686901020201"),
        _hex("fba2caa4853cf9f0f22cb10d86dd83b0 fec75691cf1a04b00d1138ec9c357917"
             "65acbd8701ad79845bf9fe3fba487bc9 1755e6662b4c8d0d1f5e22739530320a"),
        h("e0d731cc978ecafaeae88f00e80d6e48"), id="draft-aes128-esn2"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, ESN, short ICMP packet
        "aes128gcm16", h("3de09874b388e6491988d0c3607eae1f") + h("57690e43"),
        0x42F67E3F, 0x1010101010101010, True, h("4e280000a2fca1a3"),
        _hex("4500001c42a200008001441f406793b6 e00000020a00f5ff01020201"),
        _hex("fba2ca845e5df9f0f22c3e6e86dd831e 1fc65792cd1af9130e1379ed"),
        h("369f071f35e034be95f112e4e7d05d35"), id="draft-aes128-esn-short"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, ESN with high half 0
        "aes128gcm16", h("abbccddef00112233445566778899aab") + h("decaf888"),
        0x00000100, 0x0000000000000001, True, h("cafedebaceface74"),
        _hex("4500004933ba00007f119106c3fb1d10 c2b1d326c02831ce0035dd7b800302d5"
             "00004e20001e8c18d75b81dc91baa047 6b91b924b280389d92c963bac046ec95"
             "9b6266c04722b14923010101"),
        _hex("18a6fd42f72cbf4ab2a2ea901f73d814 e3e7f243d95412e1c349c1d2fbec168f"
             "9190feebaf2cb01984e65863965d7472 b79da345e0e780191f0d2f0e0f496c22"
             "6f2127b27db35724e7845d68"),
        h("651f57e65f354f75ff17015769623436"), id="draft-aes128-esn-low"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-256, ESN
        "aes256gcm16", h("abbccddef00112233445566778899aab") * 2 + h("73616c74"),
        0x17405E67, 0x156F3126DD0DB99B, True, h("616e640169766563"),
        _hex("45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602"
             "50101f646d540001"),
        _hex("f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f"
             "f4d3a31ce673119e"),
        h("451626c2415771e3b7eebca614c89b35"), id="draft-aes256-esn"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-128, seq 0xffffffff, empty payload
        "aes128gcm16", h("7d773d00c144c525ac619d18c84a3f47") + h("d9664267"),
        0x335467AE, 0xFFFFFFFF, False, h("43457e9182443bc6"),
        h("01020201"), h("437f866b"), h("cb3f699fe9b0822bac961c4504bef270"),
        id="draft-empty-payload"),
    pytest.param(  # draft-mcgrew-gcm-test-01: AES-256, ESN 0xffffffffffffffff
        "aes256gcm16",
        h("6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961") + h("7475726e"),
        0x796B6963, 0xFFFFFFFFFFFFFFFF, True, h("333021696765746d"),
        _hex("45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364"
             "65666768696a6b6c6d6e6f7071727374 01020201"),
        _hex("f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86"
             "4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9"),
        h("d0937ba2945f669368661a329fb4c053"), id="draft-aes256-esn-max"),
]


@pytest.mark.parametrize(("suite_name", "keymat", "spi", "seq", "esn", "iv", "plaintext", "ciphertext",
                          "tag"), GCM_ESP)
def test_esp_gcm_packets_draft_mcgrew(suite_name: str, keymat: bytes, spi: int, seq: int, esn: bool,
                                      iv: bytes, plaintext: bytes, ciphertext: bytes, tag: bytes) -> None:
    suite = parse_esp_suite(suite_name)
    aad = spi.to_bytes(4, "big") + (seq.to_bytes(8, "big") if esn else seq.to_bytes(4, "big"))
    # Cipher level: RFC 4106 nonce = salt | IV, AAD = SPI | [seq-high |] seq-low.
    assert suite.encryption.bind(keymat).encrypt(iv, plaintext, aad) == ciphertext + tag

    # Packet level: our decapsulation, with the replay window just below ``seq`` so that the
    # high half of an extended sequence number is inferred (RFC 4303 A.2).
    def fresh_sa() -> SecurityAssociation:
        window = ReplayWindow(64, esn=esn)
        window.top = seq - 1
        return SecurityAssociation(
            name="draft-mcgrew", spi=spi, protocol=50, direction=Direction.IN, mode=Mode.TUNNEL,
            local=ipaddress.IPv4Address("192.0.2.1"), remote=ipaddress.IPv4Address("192.0.2.2"),
            esp=suite, cipher=suite.encryption.bind(keymat), esn=esn, replay=window)

    sa = fresh_sa()
    wire = spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big") + iv + ciphertext + tag
    pad_len, next_header = plaintext[-2], plaintext[-1]
    assert esp.decapsulate(sa, wire) == (next_header, plaintext[:len(plaintext) - 2 - pad_len])
    assert sa.replay is not None and sa.replay.top == seq
    # The same packet again is a replay; a flipped tag bit fails authentication.
    with pytest.raises(Dropped) as exc:
        esp.decapsulate(sa, wire)
    assert exc.value.reason is DropReason.REPLAY
    with pytest.raises(Dropped) as exc:
        esp.decapsulate(fresh_sa(), wire[:-1] + bytes([wire[-1] ^ 1]))
    assert exc.value.reason is DropReason.BAD_ICV


# ======================================================================================
# 3DES (TDEA)
# ======================================================================================

TDES_CBC = [
    pytest.param(  # NIST CAVP TDES Multi-block Message Test (TCBCMMT3), encrypt, COUNT 0
        _hex("627f460e08104a10 43cd265d5840eaf1 313edf97df2a8a8c"), h("8e29f75ea77e5475"),
        h("326a494cd33fe756"), h("b22b8d66de970692"), id="cavp-tcbcmmt3-0"),
    pytest.param(  # NIST CAVP TDES Multi-block Message Test (TCBCMMT3), encrypt, COUNT 1
        _hex("37ae5ebf46dff2dc 0754b94f31cbb385 5e7fd36dc870bfae"), h("3d1de3cc132e3b65"),
        h("84401f78fe6c10876d8ea23094ea5309"), h("7b1f7c7e3b1c948ebd04a75ffba7d2f5"),
        id="cavp-tcbcmmt3-1"),
]


@pytest.mark.parametrize(("key", "iv", "plaintext", "ciphertext"), TDES_CBC)
def test_3des_cbc_nist(key: bytes, iv: bytes, plaintext: bytes, ciphertext: bytes) -> None:
    cipher = ENCRYPTION["3des"].bind(key)
    assert cipher.encrypt(iv, plaintext, b"") == ciphertext
    assert cipher.decrypt(iv, ciphertext, b"") == plaintext


def test_3des_sp800_67_example() -> None:
    """NIST SP 800-67 Rev. 1, appendix B: TDEA ECB example with three distinct keys.

    ECB is CBC with an all-zero IV applied one block at a time.
    """
    key = _hex("0123456789ABCDEF 23456789ABCDEF01 456789ABCDEF0123")
    plaintext = _hex("5468652071756663 6B2062726F776E20 666F78206A756D70")  # "The qufck brown fox jump"
    ciphertext = _hex("A826FD8CE53B855F CCE21C8112256FE6 68D5C05DD9B6B900")
    cipher = ENCRYPTION["3des"].bind(key)
    for i in range(0, len(plaintext), 8):
        assert cipher.encrypt(bytes(8), plaintext[i:i + 8], b"") == ciphertext[i:i + 8]
        assert cipher.decrypt(bytes(8), ciphertext[i:i + 8], b"") == plaintext[i:i + 8]


@pytest.mark.parametrize(("plaintext", "ciphertext"), [
    # NIST SP 800-20, Table A.1 (TDEA variable plaintext known answer test), K1=K2=K3=0101...01
    (h("8000000000000000"), h("95F8A5E5DD31D900")),
    (h("4000000000000000"), h("DD7F121CA5015619")),
    (h("2000000000000000"), h("2E8653104F3834EA")),
])
def test_3des_sp800_20_variable_plaintext(plaintext: bytes, ciphertext: bytes) -> None:
    cipher = ENCRYPTION["3des"].bind(h("0101010101010101") * 3)
    assert cipher.encrypt(bytes(8), plaintext, b"") == ciphertext


# ======================================================================================
# Registry facts the vectors above rely on
# ======================================================================================


@pytest.mark.parametrize(("name", "keymat", "icv", "block", "iv"), [
    ("aes128gcm16", 20, 16, 4, 8),
    ("aes256gcm16", 36, 16, 4, 8),
    ("aes128-sha256", 16, 16, 16, 16),
    ("aes256-sha512", 32, 32, 16, 16),
    ("3des-md5", 24, 12, 8, 8),
    ("3des-sha1", 24, 12, 8, 8),
    ("null-sha1", 0, 12, 4, 0),
])
def test_suite_sizes(name: str, keymat: int, icv: int, block: int, iv: int) -> None:
    suite = parse_esp_suite(name)
    assert suite.name == name
    assert suite.encryption.keymat_size == keymat
    assert suite.icv_size == icv
    assert suite.encryption.block_size == block
    assert suite.encryption.iv_size == iv


@pytest.mark.parametrize("text", ["aes128gcm16-sha256", "aes128", "3des-sha256", "des-md5",
                                  "aes128-sha3", "null"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_esp_suite(text)


def test_bind_checks_key_length() -> None:
    with pytest.raises(ValueError):
        ENCRYPTION["aes128gcm16"].bind(bytes(16))  # salt missing
    with pytest.raises(ValueError):
        INTEGRITY["sha256"].bind(bytes(20))
    assert "key=***" in repr(ENCRYPTION["aes128"].bind(bytes(16)))


@pytest.mark.parametrize("name", ["aes128", "aes256", "3des"])
def test_cbc_context_kept_across_packets_is_plain_cbc_per_packet(name: str) -> None:
    """The bound CBC cipher keeps one context per direction for the SA's life: each
    packet must still be exactly CBC under its own IV, whatever came before (including
    input it refused)."""
    algorithm = ENCRYPTION[name]
    key = os.urandom(algorithm.keymat_size)
    bound = algorithm.bind(key)
    block = algorithm.block_size
    primitive = TripleDES(key) if name == "3des" else algorithms.AES(key)
    for i in range(12):
        iv, plaintext = os.urandom(block), os.urandom(block * (1 + i % 5))
        reference = Cipher(primitive, modes.CBC(iv)).encryptor()
        expected = reference.update(plaintext) + reference.finalize()
        assert bound.encrypt(iv, plaintext, b"") == expected
        assert bound.decrypt(iv, expected, b"") == plaintext
        with pytest.raises(ValueError):
            bound.encrypt(iv, plaintext + b"x", b"")
        with pytest.raises(ValueError):
            bound.decrypt(iv, expected[:-1], b"")
