"""Known-answer tests for the IKEv2 crypto: PRFs, key exchange groups and the key derivation.

Every expected value comes from a published source, named next to it; none is produced by
the code under test.  Where a source gives no vector (the MODP groups), the test checks
what the RFC text states (the prime's defining formula) and that both sides agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.crypto.algorithms import UnknownAlgorithm
from gateway.crypto.dh import (
    DH_BY_NAME,
    DH_GROUPS,
    DhGroup,
    InvalidKeyExchange,
    parse_dh_group,
)
from gateway.crypto.prf import PRF, PRF_BY_ID, parse_prf
from gateway.ike.v2.keymat import (
    IkeSaKeys,
    child_keymat,
    derive_ike_sa_keys,
    rekey_skeyseed,
    skeyseed,
    split_child_keymat,
)


def _hex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def _replay(*chunks: bytes) -> Callable[[int], bytes]:
    """A ``random`` source that hands out the given chunks, in order, one per call."""
    it: Iterator[bytes] = iter(chunks)

    def draw(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n, f"vector has {len(chunk)} octets, generate() asked {n}"
        return chunk

    return draw


# ======================================================================================
# PRF: HMAC-SHA-1 (RFC 2202 section 3) and HMAC-SHA-256/384/512 (RFC 4231 section 4)
# ======================================================================================

_RFC_LONG_KEY_DATA = (b"This is a test using a larger than block-size key and a larger than block-size "
                      b"data. The key needs to be hashed before being used by the HMAC algorithm.")

HMAC_VECTORS = [
    # RFC 2202 section 3, HMAC-SHA-1 test cases 1-4, 6, 7 (case 5 is about truncation)
    pytest.param("prfsha1", b"\x0b" * 20, b"Hi There",
                 "b617318655057264e28bc0b6fb378c8ef146be00", id="rfc2202-sha1-1"),
    pytest.param("prfsha1", b"Jefe", b"what do ya want for nothing?",
                 "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79", id="rfc2202-sha1-2"),
    pytest.param("prfsha1", b"\xaa" * 20, b"\xdd" * 50,
                 "125d7342b9ac11cd91a39af48aa17b4f63f175d3", id="rfc2202-sha1-3"),
    pytest.param("prfsha1", bytes(range(1, 26)), b"\xcd" * 50,
                 "4c9007f4026250c6bc8414f9bf50c86c2d7235da", id="rfc2202-sha1-4"),
    pytest.param("prfsha1", b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 "aa4ae5e15272d00e95705637ce8a3b55ed402112", id="rfc2202-sha1-6"),
    pytest.param("prfsha1", b"\xaa" * 80,
                 b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                 "e8e99d0f45237d786d6bbaa7965c7808bbff1a91", id="rfc2202-sha1-7"),
    # RFC 4231 section 4.2, test case 1
    pytest.param("prfsha256", b"\x0b" * 20, b"Hi There",
                 "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", id="rfc4231-256-1"),
    pytest.param("prfsha384", b"\x0b" * 20, b"Hi There",
                 "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
                 "faea9ea9076ede7f4af152e8b2fa9cb6", id="rfc4231-384-1"),
    pytest.param("prfsha512", b"\x0b" * 20, b"Hi There",
                 "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                 "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854", id="rfc4231-512-1"),
    # RFC 4231 section 4.3, test case 2
    pytest.param("prfsha256", b"Jefe", b"what do ya want for nothing?",
                 "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", id="rfc4231-256-2"),
    pytest.param("prfsha384", b"Jefe", b"what do ya want for nothing?",
                 "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                 "8e2240ca5e69e2c78b3239ecfab21649", id="rfc4231-384-2"),
    pytest.param("prfsha512", b"Jefe", b"what do ya want for nothing?",
                 "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                 "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737", id="rfc4231-512-2"),
    # RFC 4231 section 4.4, test case 3
    pytest.param("prfsha256", b"\xaa" * 20, b"\xdd" * 50,
                 "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", id="rfc4231-256-3"),
    pytest.param("prfsha384", b"\xaa" * 20, b"\xdd" * 50,
                 "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
                 "2a5ab39dc13814b94e3ab6e101a34f27", id="rfc4231-384-3"),
    pytest.param("prfsha512", b"\xaa" * 20, b"\xdd" * 50,
                 "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
                 "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb", id="rfc4231-512-3"),
    # RFC 4231 section 4.5, test case 4
    pytest.param("prfsha256", bytes(range(1, 26)), b"\xcd" * 50,
                 "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", id="rfc4231-256-4"),
    pytest.param("prfsha384", bytes(range(1, 26)), b"\xcd" * 50,
                 "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
                 "6801dd23c4a7d679ccf8a386c674cffb", id="rfc4231-384-4"),
    pytest.param("prfsha512", bytes(range(1, 26)), b"\xcd" * 50,
                 "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
                 "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd", id="rfc4231-512-4"),
    # RFC 4231 section 4.7, test case 6 (key longer than the block)
    pytest.param("prfsha256", b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", id="rfc4231-256-6"),
    pytest.param("prfsha384", b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
                 "0c2ef6ab4030fe8296248df163f44952", id="rfc4231-384-6"),
    pytest.param("prfsha512", b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
                 "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
                 "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598", id="rfc4231-512-6"),
    # RFC 4231 section 4.8, test case 7 (key and data longer than the block)
    pytest.param("prfsha256", b"\xaa" * 131, _RFC_LONG_KEY_DATA,
                 "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", id="rfc4231-256-7"),
    pytest.param("prfsha384", b"\xaa" * 131, _RFC_LONG_KEY_DATA,
                 "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
                 "a678cc31e799176d3860e6110c46523e", id="rfc4231-384-7"),
    pytest.param("prfsha512", b"\xaa" * 131, _RFC_LONG_KEY_DATA,
                 "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
                 "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58", id="rfc4231-512-7"),
]


@pytest.mark.parametrize(("name", "key", "data", "digest"), HMAC_VECTORS)
def test_prf_hmac_known_answers(name: str, key: bytes, data: bytes, digest: str) -> None:
    prf = PRF[name]
    out = prf.compute(key, data)
    assert out == _hex(digest)
    assert len(out) == prf.output_size == prf.key_size


def test_prf_registry() -> None:
    # IANA "Transform Type 2 - Pseudorandom Function Transform IDs" (RFC 7296 3.3.2, RFC 4868)
    assert {(p.name, p.ikev2_id, p.output_size) for p in PRF.values()} == {
        ("prfmd5", 1, 16), ("prfsha1", 2, 20), ("prfsha256", 5, 32), ("prfsha384", 6, 48),
        ("prfsha512", 7, 64)}
    assert all(PRF_BY_ID[p.ikev2_id] is p for p in PRF.values())
    assert parse_prf(" PRFSHA256 ") is PRF["prfsha256"]
    # RFC 2202 test case 1 for HMAC-MD5 (IKEv1 peers negotiating the MD5 hash)
    assert PRF["prfmd5"].compute(b"\x0b" * 16, b"Hi There").hex() == "9294727a3638bb1c13f48ef8158bfc9d"
    for bad in ("sha256", "hmac-sha256", "prfmd4", ""):
        with pytest.raises(UnknownAlgorithm, match="prfmd5, prfsha1, prfsha256, prfsha384, prfsha512"):
            parse_prf(bad)
    assert "hash_factory" not in repr(PRF["prfsha1"])


@pytest.mark.parametrize("name", sorted(PRF))
def test_prf_plus_structure(name: str) -> None:
    """prf+ as RFC 7296 2.13 writes it: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    prf = PRF[name]
    key, seed = b"K" * 7, b"seed"
    t1 = prf.compute(key, seed + b"\x01")
    t2 = prf.compute(key, t1 + seed + b"\x02")
    t3 = prf.compute(key, t2 + seed + b"\x03")
    assert prf.plus(key, seed, 3 * prf.output_size) == t1 + t2 + t3
    assert prf.plus(key, seed, 2 * prf.output_size + 1) == t1 + t2 + t3[:1]
    assert prf.plus(key, seed, 1) == t1[:1]
    assert prf.plus(key, seed, 0) == b""
    full = prf.plus(key, seed, 255 * prf.output_size)  # the counter octet runs 0x01..0xff
    assert len(full) == prf.max_plus_length() == 255 * prf.output_size
    assert full.startswith(t1 + t2 + t3)
    with pytest.raises(ValueError, match="255 blocks"):
        prf.plus(key, seed, 255 * prf.output_size + 1)
    with pytest.raises(ValueError):
        prf.plus(key, seed, -1)


# ======================================================================================
# ECP groups 19, 20, 21: RFC 5903 section 8 test vectors
# ======================================================================================
# i and r are the private values, g^i and g^r the KE data (x | y), girx the shared secret
# (the x coordinate only, RFC 5903 7).  The private values go in through the ``random``
# hook; they are below the group order, so they are used as they are.

RFC5903 = [
    pytest.param(  # RFC 5903 8.1, 256-bit Random ECP Group
        19,
        "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3",
        "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB",
        "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE",
        id="ecp256"),
    pytest.param(  # RFC 5903 8.2, 384-bit Random ECP Group
        20,
        "099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655E35B538041E649EE3FAEF896783AB194",
        "667842D7D180AC2CDE6F74F37551F55755C7645C20EF73E31634FE72B4C55EE6DE3AC808ACB4BDB4C88732AEE95F41AA"
        "9482ED1FC0EEB9CAFC4984625CCFC23F65032149E0E144ADA024181535A0F38EEB9FCFF3C2C947DAE69B4C634573A81C",
        "41CB0779B4BDB85D47846725FBEC3C9430FAB46CC8DC5060855CC9BDA0AA2942E0308312916B8ED2960E4BD55A7448FC",
        "E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D0D1AC43A0336DEF96FDA41D0774A3571"
        "DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FFF83FA40142209DFF5EAAD96DB9E6386C",
        "11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4D603135569B9E9D09CF5D4A270F59746",
        id="ecp384"),
    pytest.param(  # RFC 5903 8.3, 521-bit Random ECP Group
        21,
        "0037ADE9319A89F4DABDB3EF411AACCCA5123C61ACAB57B5393DCE47608172A095AA85A30FE1C2952C6771D937BA9777"
        "F5957B2639BAB072462F68C27A57382D4A52",
        "0015417E84DBF28C0AD3C278713349DC7DF153C897A1891BD98BAB4357C9ECBEE1E3BF42E00B8E380AEAE57C2D107564"
        "941885942AF5A7F4601723C4195D176CED3E"
        "017CAE20B6641D2EEB695786D8C946146239D099E18E1D5A514C739D7CB4A10AD8A788015AC405D7799DC75E7B7D5B6C"
        "F2261A6A7F1507438BF01BEB6CA3926F9582",
        "0145BA99A847AF43793FDD0E872E7CDFA16BE30FDC780F97BCCC3F078380201E9C677D600B343757A3BDBF2A3163E4C2"
        "F869CCA7458AA4A4EFFC311F5CB151685EB9",
        "00D0B3975AC4B799F5BEA16D5E13E9AF971D5E9B984C9F39728B5E5739735A219B97C356436ADC6E95BB0352F6BE64A6"
        "C2912D4EF2D0433CED2B6171640012D9460F"
        "015C68226383956E3BD066E797B623C27CE0EAC2F551A10C2C724D9852077B87220B6536C5C408A1D2AEBB8E86D678AE"
        "49CB57091F4732296579AB44FCD17F0FC56A",
        "01144C7D79AE6956BC8EDB8E7C787C4521CB086FA64407F97894E5E6B2D79B04D1427E73CA4BAA240A34786859810C06"
        "B3C715A3A8CC3151F2BEE417996D19F3DDEA",
        id="ecp521"),
]


@pytest.mark.parametrize(("group_id", "i", "g_i", "r", "g_r", "g_ir_x"), RFC5903)
def test_ecp_rfc5903(group_id: int, i: str, g_i: str, r: str, g_r: str, g_ir_x: str) -> None:
    group = DH_GROUPS[group_id]
    initiator = group.generate(_replay(_hex(i)))
    responder = group.generate(_replay(_hex(r)))
    assert initiator.public == _hex(g_i)
    assert responder.public == _hex(g_r)
    assert len(initiator.public) == group.public_size
    assert initiator.shared_secret(responder.public) == _hex(g_ir_x)
    assert responder.shared_secret(initiator.public) == _hex(g_ir_x)


@pytest.mark.parametrize("group_id", [19, 20, 21])
def test_ecp_rejects_bad_points(group_id: int) -> None:
    group = DH_GROUPS[group_id]
    ours, theirs = group.generate(), group.generate()
    good = theirs.public
    size = group.public_size // 2
    off_curve = good[:-1] + bytes([good[-1] ^ 1])  # y changed: (x, y') is not on the curve
    for bad in (off_curve, bytes(group.public_size), good[:-1], good + b"\0", b"\x04" + good,
                good[:size]):
        with pytest.raises(InvalidKeyExchange):
            ours.shared_secret(bad)
    assert ours.shared_secret(good) == theirs.shared_secret(ours.public)


def test_ecp_group_orders() -> None:
    """The hard-coded orders n (used to draw private values) are right: (n-1)G = -G."""
    for group_id, curve in ((19, ec.SECP256R1()), (20, ec.SECP384R1()), (21, ec.SECP521R1())):
        n = DH_GROUPS[group_id]._impl.order  # type: ignore[attr-defined]
        g = ec.derive_private_key(1, curve).public_key().public_numbers()
        minus_g = ec.derive_private_key(n - 1, curve).public_key().public_numbers()
        assert (minus_g.x, minus_g.y) == (g.x, (-g.y) % _CURVE_P[group_id])
        with pytest.raises(ValueError):
            ec.derive_private_key(n, curve)


def test_ecp_private_value_rejection_sampling() -> None:
    """A draw >= n is thrown away and the next one used, so published values replay as is."""
    group = DH_GROUPS[19]
    i = _hex(RFC5903[0].values[1])
    kex = group.generate(_replay(b"\xff" * 32, bytes(32), i))  # >= n, then 0, then the RFC's i
    assert kex.public == _hex(RFC5903[0].values[2])


# Field primes of the NIST curves (FIPS 186-4 D.1.2, RFC 5903 3), for -G above.
_CURVE_P = {
    19: 2**256 - 2**224 + 2**192 + 2**96 - 1,
    20: 2**384 - 2**128 - 2**96 + 2**32 - 1,
    21: 2**521 - 1,
}


# ======================================================================================
# Curve25519 (group 31): RFC 7748 sections 5.2 and 6.1, RFC 8031
# ======================================================================================

X25519_EXCHANGES = [
    pytest.param(  # RFC 7748 6.1 (Alice, Bob, K)
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        id="rfc7748-6.1"),
    pytest.param(  # RFC 8031's example, as strongSwan's test_vectors/curve25519.c carries it
        "751fb4308655b476b6789b7325f9ea8cddd16a58533ff6d9e60009464a5f9d94",
        "48d5ddd4061257ba166fa3f9bbdb74f1a4e81c089384fa77f790709f0dfbc766",
        "0a54645253290d60ddadd0e030bacd9e5501efdc220755a1e978f1b839a05688",
        "0be7c1f5aad87d7e448662673298a443478b859745179eaf564c79c0ef6eee25",
        "c74950607a12327f3204d94b6825bfb068b7f8319a9e3708ed3d43ce8130c950",
        id="rfc8031"),
]


@pytest.mark.parametrize(("a_priv", "a_pub", "b_priv", "b_pub", "shared"), X25519_EXCHANGES)
def test_x25519_exchange(a_priv: str, a_pub: str, b_priv: str, b_pub: str, shared: str) -> None:
    group = parse_dh_group("x25519")
    alice = group.generate(_replay(_hex(a_priv)))
    bob = group.generate(_replay(_hex(b_priv)))
    assert alice.public == _hex(a_pub)
    assert bob.public == _hex(b_pub)
    assert alice.shared_secret(bob.public) == _hex(shared)
    assert bob.shared_secret(alice.public) == _hex(shared)


def test_x25519_scalar_mult_rfc7748_5_2() -> None:
    # RFC 7748 5.2, first X25519 test vector: scalar (clamped by X25519), u-coordinate, result
    kex = DH_GROUPS[31].generate(_replay(_hex(
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")))
    assert kex.shared_secret(_hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")) \
        == _hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")


def test_x25519_rejects_low_order_and_bad_length() -> None:
    kex = DH_GROUPS[31].generate()
    # u = 0 and u = 1 have small order: every scalar gives the all-zero output (RFC 7748 6.1)
    for low_order in (bytes(32), b"\x01" + bytes(31)):
        with pytest.raises(InvalidKeyExchange):
            kex.shared_secret(low_order)
    for bad_length in (bytes(31), bytes(33), b""):
        with pytest.raises(InvalidKeyExchange):
            kex.shared_secret(bad_length)


# ======================================================================================
# MODP groups 2, 5, 14, 15, 16: RFC 2409 6.2 and RFC 3526
# ======================================================================================
# No published KAT exists for these groups in IKE, so: the primes are checked against the
# formula each RFC gives for them, p = 2^b - 2^(b-64) - 1 + 2^64 * ([2^(b-130) pi] + c),
# two fresh exchanges must agree, and out-of-range public values must be refused.

_MODP_FORMULA = {  # group id: (bits, offset c), from RFC 2409 6.2 (group 2) and RFC 3526 2-5
    2: (1024, 129093),
    5: (1536, 741804),
    14: (2048, 124476),
    15: (3072, 1690314),
    16: (4096, 240904),
}


def _floor_pi_times_2_to(k: int) -> int:
    """[2^k * pi] with Machin's formula pi = 16 atan(1/5) - 4 atan(1/239), in integers."""
    guard = 64
    one = 1 << (k + guard)

    def atan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (16 * atan_inv(5) - 4 * atan_inv(239)) >> guard


@pytest.mark.parametrize("group_id", sorted(_MODP_FORMULA))
def test_modp_prime_matches_rfc_formula(group_id: int) -> None:
    bits, c = _MODP_FORMULA[group_id]
    expected = 2**bits - 2**(bits - 64) - 1 + 2**64 * (_floor_pi_times_2_to(bits - 130) + c)
    group = DH_GROUPS[group_id]
    assert group.prime == expected
    assert group.public_size == bits // 8


@pytest.mark.parametrize("group_id", sorted(_MODP_FORMULA))
def test_modp_exchange_agrees_and_refuses_bad_publics(group_id: int) -> None:
    group = DH_GROUPS[group_id]
    p = group.prime
    assert p is not None
    a, b = group.generate(), group.generate()
    assert len(a.public) == len(b.public) == group.public_size
    assert 1 < int.from_bytes(a.public, "big") < p - 1
    secret = a.shared_secret(b.public)
    assert secret == b.shared_secret(a.public)
    assert len(secret) == group.public_size  # padded to the length of p (RFC 7296 2.14)
    size = group.public_size
    for y in (0, 1, p - 1, p, p + 1, 2**(8 * size) - 1):  # RFC 6989 2.1: need 1 < y < p-1
        with pytest.raises(InvalidKeyExchange):
            a.shared_secret(y.to_bytes(size, "big"))
    for bad_length in (b.public[1:], b"\0" + b.public, b""):
        with pytest.raises(InvalidKeyExchange):
            a.shared_secret(bad_length)


def test_modp_replays_the_random_source() -> None:
    """The private exponent comes from ``random``: same draws, same KE data, g^x mod p."""
    group = DH_GROUPS[14]
    x = bytes(range(1, 33))  # 256-bit exponent
    first, second = group.generate(_replay(x)), group.generate(_replay(x))
    assert first.public == second.public
    assert group.prime is not None
    assert first.public == pow(2, int.from_bytes(x, "big"), group.prime).to_bytes(256, "big")
    # g^2 from a peer: the shared secret is (g^2)^x = (g^x)^2
    peer = (4).to_bytes(256, "big")
    assert first.shared_secret(peer) == pow(int.from_bytes(first.public, "big"), 2, group.prime) \
        .to_bytes(256, "big")
    # draws below 2 are thrown away
    assert group.generate(_replay(bytes(32), (1).to_bytes(32, "big"), x)).public == first.public


@pytest.mark.parametrize("group_id", sorted(_MODP_FORMULA))
def test_modp_public_value_is_g_to_the_x(group_id: int) -> None:
    """Our KE data (computed by OpenSSL's exchange with g) is g^x mod p for the drawn x,
    zero-padded to the length of p."""
    group = DH_GROUPS[group_id]
    assert group.prime is not None
    size = 48 if group_id == 16 else 32
    for x in (bytes(range(1, size + 1)), bytes(size - 1) + b"\x02", b"\xff" * size):
        assert group.generate(_replay(x)).public == \
            pow(2, int.from_bytes(x, "big"), group.prime).to_bytes(group.public_size, "big")


def test_modp_public_value_keeps_its_leading_zero() -> None:
    group = DH_GROUPS[14]
    assert group.prime is not None
    x = bytes(range(1, 32)) + b"\xe3"  # g^x mod p < 2^2040 for this one
    public = group.generate(_replay(x)).public
    assert public[0] == 0 and public == pow(2, int.from_bytes(x, "big"), group.prime).to_bytes(256, "big")


def test_dh_registry_and_parse() -> None:
    # IANA "Transform Type 4 - Key Exchange Method Transform IDs" (RFC 7296 3.3.2, RFC 5903, RFC 8031)
    assert {(g.id, g.name, g.public_size, g.weak) for g in DH_GROUPS.values()} == {
        (2, "modp1024", 128, True), (5, "modp1536", 192, True), (14, "modp2048", 256, False),
        (15, "modp3072", 384, False), (16, "modp4096", 512, False), (19, "ecp256", 64, False),
        (20, "ecp384", 96, False), (21, "ecp521", 132, False), (31, "curve25519", 32, False)}
    assert DH_BY_NAME["x25519"] is DH_BY_NAME["curve25519"] is DH_GROUPS[31]
    assert parse_dh_group(" ModP2048 ") is DH_GROUPS[14]
    for bad in ("modp768", "14", "ecp224", "x448", ""):
        with pytest.raises(UnknownAlgorithm, match=r"modp2048.*curve25519, x25519"):
            parse_dh_group(bad)
    assert DH_GROUPS[19].prime is None and DH_GROUPS[31].prime is None


@pytest.mark.parametrize("group", list(DH_GROUPS.values()), ids=lambda g: g.name)
def test_key_exchange_repr_hides_private(group: DhGroup) -> None:
    secret_bytes = bytes(range(0x41, 0x41 + 66))
    kex = group.generate(lambda n: secret_bytes[:n])
    text = repr(kex) + str(kex)
    assert "***" in text and group.name in text
    for n in (8, 16, 32):
        assert secret_bytes[:n].hex() not in text.lower()
    assert str(int.from_bytes(secret_bytes[:32], "big")) not in text
    assert "_impl" not in repr(group)


# ======================================================================================
# Key derivation: NIST CAVP SP 800-135 KDF vectors, "IKEv2" section
# ======================================================================================
# From the CAVS 17.3 response file ikev2.fax ("'IKE v2' information", generated
# 2015-02-09), as NSS keeps it in tests/fips/cavs_samples/IKE/fax/ikev2.fax; the line
# number is that of the vector's COUNT.  Its fields map onto RFC 7296 as follows:
#   SKEYSEED          = prf(Ni | Nr, g^ir)                               (2.14)
#   DKM               = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)            (2.14)
#   DKM(Child SA)     = prf+(SK_d, Ni | Nr)                              (2.17)
#   DKM(Child SA D-H) = prf+(SK_d, g^ir (new) | Ni | Nr)                 (2.17)
#   SKEYSEED(Rekey)   = prf(SK_d, g^ir (new) | Ni | Nr)                  (2.18)
# where SK_d is the first prf-output-size octets of DKM.

CAVP_IKEV2 = [
    pytest.param(  # [SHA-1] g^ir 256, Ni/Nr 64, DKM 1056 bits: COUNT = 0 (line 14)
        "prfsha1", dict(
            ni="32b50d5f4a3763f3",
            nr="9206a04b26564cb1",
            g_ir="4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52",
            g_ir_new="863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330",
            spi_i="34c9e7c188868785",
            spi_r="3ff77d760d2b2199",
            skeyseed="a9a7b222b59f8f48645f28a1db5b5f5d7479cba7",
            dkm=(
                "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002a2a63080e514a062"
                "768b76606f9fa5e992204fc5a670bde3f10d6b027113936a5c55b648a194ae587b0088d52204b702"
                "c979fa280870d2ed41efa9c549fd11198af1670b143d384bd275c5f594cf266b05ebadca855e4249"
                "520a441a81157435a7a56cc4"
            ),
            dkm_child=(
                "8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c5811a8e7b5d1cdabd95"
                "60b2d5e092d1f24e2d4b85eccdf0ad0dc9abd94b51ee71814ca6dbc8bb51b6309f5b9545c7eb35cf"
                "5580b1e521a8fe20754a2d883ba0c2cf285f524aea6545b33106bc03e614296d319d41d4b50b3f51"
                "0b1c0a22f3e664994d234cb4"
            ),
            dkm_child_dh=(
                "bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d37301628190e38c66232ea"
                "b4b3ab14c400a5197dd3730ed4820a8a10394d51e1c0400052f63ebd36b0e7ef53aaed31eba4a508"
                "0d7d4b5666023a8bbb5ffb7857240f9a05884d1b7d2f933708450b7b3288f1fc863ab49fa901227c"
                "ffc06e27899c7054d56fd74c"
            ),
            skeyseed_rekey="63e81194946ebd05df7df5ebf5d8750056bf1f1d",
        ), id="sha1-n64"),
    pytest.param(  # [SHA-256] g^ir 256, Ni/Nr 64, DKM 1056 bits: COUNT = 0 (line 2629)
        "prfsha256", dict(
            ni="3f302be1abcb28e1",
            nr="8c332ee006064c9b",
            g_ir="0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29",
            g_ir_new="25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c",
            spi_i="40dac39e1e1a8640",
            spi_r="8619a1cf9a6e4c07",
            skeyseed="5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe",
            dkm=(
                "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ece98aca531188d160"
                "41b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6cdf6854379e31be72b8d3d1fa990cf9c"
                "5b015ca9f918a7df6253c958114a09d4e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d3"
                "6aa4ab55e90f8986d12d4aad"
            ),
            dkm_child=(
                "7d808e2b44635300e7025f1b640c431b13a9b3b891cd45a15261f4f3c4a7e39b3a3c8017ccc2b746"
                "10faf52ba3faf6d9e83c859b448217b24dadc82c9887460b7bd724236b9885914cc93b39d6c749e9"
                "2f36b30c9eb6a9f59e396bc7c0ac4878512639cc612c5660ddb1a1fed360ac8b9b3f548f13482d04"
                "31b38eca293ef97681e179fc"
            ),
            dkm_child_dh=(
                "67edd256e64542436173e3ca39ef1fdec3c8240b860df26f84caf5258578ff35df40ddc31ea210e0"
                "523988b7531c9dc3207e0e98e256214999c7712f73ff044a9cf6e3a5e421862b9ba140862f460ea5"
                "236527cf8346db9ac23feb6636e21fc7a18a94a2e9d4ad95356e278f46ac3fa53a75a058c87293cf"
                "38dd863e879f84d0e0935da3"
            ),
            skeyseed_rekey="2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398",
        ), id="sha256-n64"),
    pytest.param(  # [SHA-384] g^ir 256, Ni/Nr 64, DKM 1056 bits: COUNT = 0 (line 5245)
        "prfsha384", dict(
            ni="fd1b572a8e735591",
            nr="6013b0ef88dacd3d",
            g_ir="d3288cd87565101e88fe3bad918f31939d8dd26ff1071f8b2d7f447524e58d7c",
            g_ir_new="3358f620539473aee8d07e779764c4c6a9aabddc79a28e136b3bac021dbde44a",
            spi_i="2116ad07ce61f749",
            spi_r="24880e55f11a65b7",
            skeyseed=(
                "69fe7a1ac94adaeb711295f5fe004b1a8d6a0b65d05692758ce8ad2f7a45f59d7d0b596f51f7dfcf"
                "3330061888f6a94f"
            ),
            dkm=(
                "4f904c2025c90c817ea5ff9b662a6fdb445a73b57cdf09eacd379b95e1f03cacb04cd6deeda4f952"
                "191dd9bc1f7a9502471a648d74dc06d38112de48a42501f6b1a3ad55c2099cd9a648e5f17e5bf3e3"
                "4bf9b5953decb768a34f875fe2b78dca0c2fcca81ec1a412006dfaed38fa06882e61f4c148105fb8"
                "e231fdb33c4d484c001721d4"
            ),
            dkm_child=(
                "06126cc023ac8aabb3ae1ae2d583005a16d39e889efd09d588f2995883261e55f44f959072d25ea2"
                "f035a64ee8e2341421e7a2d95344282f6ff1f2a9ef236b5ec7eae4bb1074ce1f206461209c19dc05"
                "a61bbc10a5ec0391bdcd1d25831f8d1199af467359a13cb5f9b11187ad97379469f8a1ff3d612b18"
                "f165d32e3b5fc6440f447321"
            ),
            dkm_child_dh=(
                "e31b1b94e0b2146ae66dfe223ca64ccf0895fb6c8862990b446b80a4a81fd801ed5fdbcee6e9455c"
                "4d56ee10cd73ea77d8c01f31d4e2fcc9d65765327e13f497f631ba09d99b39aff2ffa9082c59334a"
                "9eb082f795cde78989b1be547fde560eb49d5b262e86ef2e2094eab785008e3038dd7bb0d4ac7dac"
                "6f99d9c7945950f21b9f44de"
            ),
            skeyseed_rekey=(
                "e0548c1682e13bce454026b3b1bdf42985b24e4e7408095a7c529de38c3d1fcb04c9fe6868042a34"
                "c9614c6c99e3fcea"
            ),
        ), id="sha384-n64"),
    pytest.param(  # [SHA-512] g^ir 256, Ni/Nr 64, DKM 1056 bits: COUNT = 0 (line 7861)
        "prfsha512", dict(
            ni="97c41a9b0a03e74c",
            nr="a659fd06e1746600",
            g_ir="276255c3eaace5c6db32b609aa86c0ef07bba4bf2dc4c262995efd95ca607c3f",
            g_ir_new="bb4015f7727b35532021336a9e4a6370ac8729b01fbb8f15d52236820fac4709",
            spi_i="ff43c5c689b95481",
            spi_r="e2ba607f30079bb7",
            skeyseed=(
                "d6e74966b75fd2afab48be319d63d97c8a5d2ffe2e320763a462c664b36c3a944067d867c3a55fd8"
                "a7e5cca64b22e24415987e15549f09a81b455adaa5303df8"
            ),
            dkm=(
                "22259105314717dc73c210919ee9cb3ded774dc087e866aa3960404c0ed7b8e78e79b993888388e2"
                "e5cb238d4bfcb4cdee9da074a26e329d6c2f2f660cc9c711c941a2fb3d85a2e5d01e579c8f2c9d00"
                "fa6fabe76a137b00c7ff1b291899906588c26f073d819063238c4c844f0f8d221b65b76dbc9ed6f6"
                "368e5dba86b3e81b60eb44a1"
            ),
            dkm_child=(
                "2f1311a8e143e59d65bd9d8adc4e64c624313495c899697236bd0980c503717d0ad5dee13ff918e3"
                "f4f6505bc19a0a1352d20e99f704f6ef0c71124be1c97a1ad9aacf99a33c1cd00537aa922906d1db"
                "33fcd640f147953ac632f8a655f84daa1363e0b8322e82620c4bc27309bb1525387493398467b7c9"
                "561317e61d1f8be436388aa9"
            ),
            dkm_child_dh=(
                "15a40cef7fc88a166526a4cdb5697dddbccf3c69a72b22c92c1f88e9ca9d9b5258c9f52684a7169e"
                "fd4463f758e34ada6eb3f3805f194f6019b13acd11988e423f7630cb764f10a86eb28e14cba8596e"
                "e9255c853f7a903ef09de2ab5f84cc446359c604dc193a8d4c4e4b02174a4c04aa859e84934bbb60"
                "128b920b90124187c721c000"
            ),
            skeyseed_rekey=(
                "ecdaf3ccb990abc898a453b03fd56f9975275f150e1e571b0560b3cb2ee67289e82b899cdc2129fd"
                "821fe8aebea796f190765c25798f5883f923526551f16a4b"
            ),
        ), id="sha512-n64"),
    pytest.param(  # [SHA-256] g^ir 256, Ni/Nr 2048, DKM 3072 bits: COUNT = 0 (line 3937)
        "prfsha256", dict(
            ni=(
                "52695be4ccad9c05e6599fe796d899bde72e26be01c243d8e2cf9ca6859588389eb5781b54dc2ba6"
                "a12dbe146e453a53531b4b731f527dcc5e7380f630764b2136e45d9b9e371fbd3a996884870099e5"
                "e5b4eed40d51c4a148c3c2bc340add5eea80c6f5b670b6b0d62e5499e9d898e07b2acb435911ed8e"
                "54b0ea74e0b0e486df9706ad1d2fe1cea8cf3d26236c9764c44a2159c0f726cd1aec5999964e91aa"
                "6a234da90bfbded712ec3b628e0bbbdc0d340a47fd1e33fc9401072f145895d988f69cefca1bdc20"
                "275be3ff69e3c71303454cae5e35f5835c139df283fe6cec3583449bf0a66ae6f108f4d4a1c7fcaa"
                "63ae7cc7592793d34ca11577ac5be944"
            ),
            nr=(
                "fd2f17562e5948ee1aba5d1bcc288a0969b323dd82208b93b59cf6320d0beaef04c1d9dd440c9b93"
                "25993e542703516a7a37819eefc33a24fa7e38a56e199fcfee36b43747d60802695beaa0d8955d1c"
                "78d87884f40614d79f1ec9807c5387985e1bacbea4772b6217587bcab6f1ea040012e56ecd8d119d"
                "8438380b276ff4f357b1d3f1dccbfe3356c3a3d841b10d872b0fb076c12b68ecd835c5592ec9277f"
                "c92b6c9cee6594dfad80d4518c113935ec23923bfc244fd03876e43e4cb4858310d0d54b5f25f811"
                "53620131728136b481d522d52931ecd71983e716fe05daeb3378579d1644b43d2d0c7b4971064a99"
                "2caffd58deec43c1063e55d2937df734"
            ),
            g_ir="a94b14531636fe15eaf6702bad948aaa45363de91b8612035732284f90b1f4c3",
            g_ir_new="4ed8e741924534724004e875af6868cc4cabe11533a72ebd4bafe41e092a3084",
            spi_i="cc764573887db682",
            spi_r="34a8c67dc5b90587",
            skeyseed="61fa41aee660c44ed0ab4bf631081277cea673f94a533a01ef02b6d8860cc8fa",
            dkm=(
                "8fe38e354da09b21c7d79ee4209d7694899efb7690365aaf63c0ab8ef853055072111acf542ba0dc"
                "d8f761edc4e02edbcdeba6f608b8c028873a996aa081e5dc4dc6c4e087829c5fd89591ac07e919ac"
                "7bd57614befb68fc302637c63a8acd858437399e6558fd6799460e0406b7c4790659e9eb3aab4936"
                "2cfca27e13a8c87f499db965c3dba93c01eb92b34bb1614ff4280c7001ebc03477dee0d1346eb96d"
                "42d4195ec9601340afd638e6840fe809975470c57a3587515f3084b1514086e10b3e309683a1ef0d"
                "81c044d8dec9c3377b434756bec87ac0ff30228bfd2540ade3505e15b4b2f79e86c20c8648d2addb"
                "0089b96bee956ffff5e8df8c0ac176811b4c69d2825ec1fa7db51df6ac2117bd85ca6e5f328616c8"
                "2d21ae9b2e9adbd5757010cd91b07b6c1d83242b02f66e315c727b9ae97647ca05e9628be7fa91d0"
                "462eb480c4b4aa3ab6d78f884b7523d71c0149d1d9203572d51a30be703d86920cdbb08b0d5358af"
                "2c41c7da340313a6dff5438ab8631c89e3069219c981cf3f"
            ),
            dkm_child=(
                "e05582c7d29bc0739bedfb3ef9745c4a5fbecda17c8ced9beb0f55d33603b771c0744010e993e572"
                "1335a4019b1ab2f4c20fbc51b897ae0396c3767e80e6b7dc74d18b7d57bd01690e710138434cc651"
                "fe91777eb85a2f3be0d3a1da4a03a4b43b82cef0ad1cadc9fc62f1bf67671c6ca9379118d3f3aedb"
                "8baf9102483f1fca35e1ce1e8f0aa1910661c6d4cca9bd576a925cc880f7ded97afcf70fc8cea344"
                "cf82dfc67fe23ccb46c830e59faf994d8290c7191e7052d2bae713f2c70f1dea30c5d7113ccb6573"
                "79ccb8eed772b91ed2e3b4b1b4a7758fcda96279c10d645bd293781d640e9147c57ed137f8db673a"
                "02c0ce2cc88613948248f79b42367442a9533dd9a5883935415fe7f42bdf90360083562d88c489ca"
                "2f8f128673726fe6d55a44828fcfa349da3fe9e6c44f83c8666de981520fd999f6e46aa214d96d20"
                "587c3d9f44304b88bb5cefe51855af013d79b3e4852ffd69798a1748b389f9410ca653129dac0bbe"
                "03098fd997fea57d0ac098650de4821c427251681e3329bc"
            ),
            dkm_child_dh=(
                "dacc5eb83aaa08449c274a11150d649d055bd921d66893b0b2df8f509e4df337cc3863a8a34f8e2b"
                "033fcaaee7c2f9bf68cf21b65c97355cf11873c93f9bee6c4b217c511eae289f11cc6cb1078af909"
                "960795433d000a7fe5ae4ec67513c3f24a0c0ffdf445cf2ada0b24140a8011cb3459f364a9c4819b"
                "830028a7cd4198e6b31a2b3d222f7ab3f462a3ac64966e87a29110a67614a3fe6c1057b23e820f5b"
                "a10bcf4821df5e1ed54bbbf191570b697fcec8c733a084a1ff76bee6bdf53ff3d737aff9e9b983a7"
                "ae9e648950ac7fdf69c8ebef6f8b4aee3603cdc132d0c9890e58829ebb6c40f5699d8130bf2c86f1"
                "6280be2a8f38f633576254de9898718e42b50f3b7729d6ca33ab1ab4cd7e0f8dd9e1022fd889f639"
                "a76ef7bf00fafc27d9673dd2c78f56385cdad9841606a180fc7b7f869999165859f32de0b314a1ae"
                "419e703557df9c98aa156cee5962baa331e711faeb81d1116e4cfd3c6e40fc74732266cbe7328d78"
                "69bf676c30d21f902a78a3e5ec97c97f8266c359668d2fbb"
            ),
            skeyseed_rekey="851ac5c3a213576fa2b9c50d60793619eba336e3a5cb3632040c466e34db6cab",
        ), id="sha256-n2048"),
]


@pytest.mark.parametrize(("prf_name", "v"), CAVP_IKEV2)
def test_ikev2_kdf_cavp(prf_name: str, v: dict[str, str]) -> None:
    prf = PRF[prf_name]
    ni, nr, g_ir, g_ir_new = _hex(v["ni"]), _hex(v["nr"]), _hex(v["g_ir"]), _hex(v["g_ir_new"])
    spi_i, spi_r = _hex(v["spi_i"]), _hex(v["spi_r"])
    dkm = _hex(v["dkm"])

    seed = skeyseed(prf, ni, nr, g_ir)
    assert seed == _hex(v["skeyseed"])
    assert prf.plus(seed, ni + nr + spi_i + spi_r, len(dkm)) == dkm

    sk_d = dkm[:prf.key_size]
    assert child_keymat(prf, sk_d, ni, nr, len(dkm)) == _hex(v["dkm_child"])
    assert child_keymat(prf, sk_d, ni, nr, len(dkm), shared_secret=g_ir_new) == _hex(v["dkm_child_dh"])
    assert rekey_skeyseed(prf, sk_d, g_ir_new, ni, nr) == _hex(v["skeyseed_rekey"])

    # The seven IKE SA keys are consecutive slices of DKM (compared as far as DKM goes).
    keys = derive_ike_sa_keys(prf, seed, ni, nr, spi_i, spi_r, integ_key_size=prf.key_size,
                              encr_key_size=16)
    assert keys.sk_d == sk_d
    parts = [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]
    assert [len(k) for k in parts] == [prf.key_size] * 3 + [16, 16] + [prf.key_size] * 2
    joined = b"".join(parts)
    common = min(len(joined), len(dkm))
    assert joined[:common] == dkm[:common]


def test_ike_sa_keys_layout_and_repr() -> None:
    """Sizes per RFC 7296 2.14: AEAD (no SK_a, salt in SK_e) and cipher + HMAC."""
    prf = PRF["prfsha256"]
    ni, nr, spi_i, spi_r = b"\x01" * 32, b"\x02" * 32, b"\x03" * 8, b"\x04" * 8
    seed = skeyseed(prf, ni, nr, b"\x05" * 256)
    material = prf.plus(seed, ni + nr + spi_i + spi_r, 3 * 32 + 2 * 36)
    gcm = derive_ike_sa_keys(prf, seed, ni, nr, spi_i, spi_r, integ_key_size=0, encr_key_size=36)
    assert (gcm.sk_ai, gcm.sk_ar) == (b"", b"")
    assert gcm.sk_d + gcm.sk_ei + gcm.sk_er + gcm.sk_pi + gcm.sk_pr == material
    cbc = derive_ike_sa_keys(prf, seed, ni, nr, spi_i, spi_r, integ_key_size=32, encr_key_size=32)
    assert [len(getattr(cbc, f)) for f in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi",
                                           "sk_pr")] == [32] * 7
    assert cbc.sk_d == gcm.sk_d  # SK_d always comes first
    text = repr(cbc) + str(cbc) + repr(gcm)
    assert "sk_ei=<32 octets>" in text and "sk_ai=<0 octets>" in text
    for key in (cbc.sk_d, cbc.sk_ai, cbc.sk_ei, cbc.sk_pr, gcm.sk_er):
        assert key.hex() not in text and key[:8].hex() not in text
    assert isinstance(cbc, IkeSaKeys)
    with pytest.raises(ValueError):
        derive_ike_sa_keys(prf, seed, ni, nr, spi_i, spi_r, integ_key_size=-1, encr_key_size=16)


def test_split_child_keymat_order() -> None:
    """RFC 7296 2.17: initiator->responder first; per direction encryption, then integrity."""
    keymat = bytes(range(2 * (20 + 32)))
    encr_i, integ_i, encr_r, integ_r = split_child_keymat(keymat, 20, 32)
    assert encr_i == keymat[0:20]
    assert integ_i == keymat[20:52]
    assert encr_r == keymat[52:72]
    assert integ_r == keymat[72:104]
    assert split_child_keymat(bytes(72), 36, 0)[1::2] == (b"", b"")  # AEAD: key + salt only
    with pytest.raises(ValueError):
        split_child_keymat(keymat[:-1], 20, 32)
    with pytest.raises(ValueError):
        split_child_keymat(keymat + b"\0", 20, 32)
