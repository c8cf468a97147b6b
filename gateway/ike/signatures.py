"""AUTH payload signatures (RFC 7296 2.15, 3.8): RSA and ECDSA, classic and RFC 7427.

With RFC 7427 (Auth Method 14, "Digital Signature") the AUTH data names its own algorithm:
one octet giving the length of a DER AlgorithmIdentifier, the AlgorithmIdentifier, then the
signature.  A peer announces the hashes it verifies in SIGNATURE_HASH_ALGORITHMS; we sign with
one of those, and accept only the hashes we announced (`SUPPORTED_HASHES`: SHA2-256/384/512,
RFC 8247 3.2).  Without the notify we fall back to the classic methods: RSA Digital Signature
(1, PKCS#1 v1.5 with SHA-1, the only use of SHA-1 left here) and ECDSA with SHA-256/384/512 on
P-256/384/521 (9, 10, 11; RFC 4754, the signature as fixed-width r || s).

The AlgorithmIdentifiers we send are the DER strings of RFC 7427 Appendix A, byte for byte
what strongSwan and libreswan send (RSASSA-PSS with explicit parameters, trailerField left at
its DEFAULT and so absent in DER).  Received ones are parsed, not compared as strings, so other
valid encodings (absent NULL parameters, an explicit trailerField of 1) are accepted too.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections.abc import Callable, Collection, Iterable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "ALGORITHM_IDENTIFIERS",
    "SUPPORTED_HASHES",
    "AuthMethod",
    "HashAlgorithm",
    "SignatureRejected",
    "parse_hash_algorithms",
    "sign",
    "verify",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class AuthMethod(enum.IntEnum):
    """IKEv2 Authentication Method (RFC 7296 3.8, IANA registry)."""

    RSA_SIG = 1
    SHARED_KEY = 2
    DSS = 3
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    DIGITAL_SIGNATURE = 14


class HashAlgorithm(enum.IntEnum):
    """IKEv2 Hash Algorithms for SIGNATURE_HASH_ALGORITHMS (RFC 7427 3, IANA registry)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4


#: The hashes we announce and accept in RFC 7427 signatures (RFC 8247 3.2: no SHA-1).
SUPPORTED_HASHES: tuple[HashAlgorithm, ...] = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384,
                                               HashAlgorithm.SHA2_512)


class SignatureRejected(Exception):
    """An AUTH signature was not accepted; the message says why."""


def parse_hash_algorithms(values: Iterable[int]) -> frozenset[HashAlgorithm]:
    """The known hashes among a SIGNATURE_HASH_ALGORITHMS list (unknown values are skipped)."""
    return frozenset(HashAlgorithm(v) for v in values if v in HashAlgorithm._value2member_map_)


# --------------------------------------------------------------------------------------
# Algorithms and their identifiers (RFC 7427 Appendix A)
# --------------------------------------------------------------------------------------

_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1, HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384, HashAlgorithm.SHA2_512: hashes.SHA512,
}
_HASH_NAMES = {HashAlgorithm.SHA1: "sha1", HashAlgorithm.SHA2_256: "sha256",
               HashAlgorithm.SHA2_384: "sha384", HashAlgorithm.SHA2_512: "sha512"}
#: OBJECT IDENTIFIER contents (X.690 8.19) of the hashes, for PSS parameters.
_HASH_OIDS = {
    bytes.fromhex("2b0e03021a"): HashAlgorithm.SHA1,  # 1.3.14.3.2.26
    bytes.fromhex("608648016503040201"): HashAlgorithm.SHA2_256,  # 2.16.840.1.101.3.4.2.1
    bytes.fromhex("608648016503040202"): HashAlgorithm.SHA2_384,
    bytes.fromhex("608648016503040203"): HashAlgorithm.SHA2_512,
}
_RSA_PKCS1_OIDS = {  # 1.2.840.113549.1.1.{5,11,12,13}
    bytes.fromhex("2a864886f70d010105"): HashAlgorithm.SHA1,
    bytes.fromhex("2a864886f70d01010b"): HashAlgorithm.SHA2_256,
    bytes.fromhex("2a864886f70d01010c"): HashAlgorithm.SHA2_384,
    bytes.fromhex("2a864886f70d01010d"): HashAlgorithm.SHA2_512,
}
_ECDSA_OIDS = {  # 1.2.840.10045.4.1, 1.2.840.10045.4.3.{2,3,4}
    bytes.fromhex("2a8648ce3d0401"): HashAlgorithm.SHA1,
    bytes.fromhex("2a8648ce3d040302"): HashAlgorithm.SHA2_256,
    bytes.fromhex("2a8648ce3d040303"): HashAlgorithm.SHA2_384,
    bytes.fromhex("2a8648ce3d040304"): HashAlgorithm.SHA2_512,
}
_RSASSA_PSS_OID = bytes.fromhex("2a864886f70d01010a")  # 1.2.840.113549.1.1.10
_MGF1_OID = bytes.fromhex("2a864886f70d010108")  # 1.2.840.113549.1.1.8


def _pss_identifier(hash_oid: str, salt: int) -> bytes:
    """RFC 7427 A.4.3 form: hash and MGF1 hash with NULL parameters, saltLength, no trailer."""
    h = "300d0609" + hash_oid + "0500"
    return bytes.fromhex("3041" "0609" "2a864886f70d01010a" "3034" "a00f" + h
                         + "a11c" "301a" "0609" "2a864886f70d010108" + h + f"a2030201{salt:02x}")


#: The AlgorithmIdentifiers we send, by scheme name (RFC 7427 A.1.2-A.1.4, A.3.2-A.3.4, A.4.3).
ALGORITHM_IDENTIFIERS: dict[str, bytes] = {
    "rsa-pkcs1-sha256": bytes.fromhex("300d06092a864886f70d01010b0500"),
    "rsa-pkcs1-sha384": bytes.fromhex("300d06092a864886f70d01010c0500"),
    "rsa-pkcs1-sha512": bytes.fromhex("300d06092a864886f70d01010d0500"),
    "ecdsa-with-SHA256": bytes.fromhex("300a06082a8648ce3d040302"),
    "ecdsa-with-SHA384": bytes.fromhex("300a06082a8648ce3d040303"),
    "ecdsa-with-SHA512": bytes.fromhex("300a06082a8648ce3d040304"),
    "rsassa-pss-sha256": _pss_identifier("608648016503040201", 32),
    "rsassa-pss-sha384": _pss_identifier("608648016503040202", 48),
    "rsassa-pss-sha512": _pss_identifier("608648016503040203", 64),
}

#: Classic ECDSA methods (RFC 4754 3): curve, hash, and octets in each of r and s.
_CLASSIC_ECDSA: dict[AuthMethod, tuple[type[ec.EllipticCurve], HashAlgorithm, int]] = {
    AuthMethod.ECDSA_256: (ec.SECP256R1, HashAlgorithm.SHA2_256, 32),
    AuthMethod.ECDSA_384: (ec.SECP384R1, HashAlgorithm.SHA2_384, 48),
    AuthMethod.ECDSA_521: (ec.SECP521R1, HashAlgorithm.SHA2_512, 66),
}
#: Which hash a curve's strength calls for first (RFC 5656 6.2.1 / RFC 5480 4 pairing).
_CURVE_HASH = {256: HashAlgorithm.SHA2_256, 384: HashAlgorithm.SHA2_384, 521: HashAlgorithm.SHA2_512}


def _ecdsa_name(h: HashAlgorithm) -> str:
    return f"ecdsa-with-{_HASH_NAMES[h].upper()}"


# --------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------


def sign(private_key: PrivateKey, octets: bytes, *, method: AuthMethod,
         peer_hashes: Collection[HashAlgorithm], rsa_pss: bool = False) -> tuple[AuthMethod, bytes]:
    """Sign the AUTH octets (RFC 7296 2.15); returns (the method used, the AUTH data).

    `method` DIGITAL_SIGNATURE uses RFC 7427 when the peer announced a hash we also support,
    picking the one that suits the key (SHA2-256 for RSA and P-256, 384 for P-384, 512 for
    P-521) or else the strongest in common, and RSASSA-PSS instead of PKCS#1 v1.5 if `rsa_pss`;
    without a common hash it falls back to the classic method of the key (RSA_SIG, or
    ECDSA_256/384/521 by curve).  A classic `method` is used as asked.  A key that cannot sign
    with the method asked for raises ValueError.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"cannot sign with a {type(private_key).__name__}: RSA or EC keys only")
    method = AuthMethod(method)
    if method is AuthMethod.DIGITAL_SIGNATURE:
        common = {HashAlgorithm(h) for h in peer_hashes if h in HashAlgorithm._value2member_map_}
        common &= set(SUPPORTED_HASHES)
        if common:
            return method, _sign_rfc7427(private_key, octets, _pick_hash(private_key, common), rsa_pss)
        method = _classic_method(private_key)
    if method is AuthMethod.RSA_SIG:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("RSA_SIG needs an RSA key")
        return method, private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    if method in _CLASSIC_ECDSA:
        curve, h, size = _CLASSIC_ECDSA[method]
        if not (isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, curve)):
            raise ValueError(f"{method.name} needs a {curve.name} key")
        r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(_HASHES[h]())))
        return method, r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise ValueError(f"{method.name} is not a signature method we can produce")


def _classic_method(key: PrivateKey) -> AuthMethod:
    if isinstance(key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIG
    for method, (curve, _, _) in _CLASSIC_ECDSA.items():
        if isinstance(key.curve, curve):
            return method
    raise ValueError(f"a {key.curve.name} key has no classic IKEv2 method; the peer must support RFC 7427")


def _pick_hash(key: PrivateKey, common: set[HashAlgorithm]) -> HashAlgorithm:
    preferred = HashAlgorithm.SHA2_256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        preferred = _CURVE_HASH.get(key.curve.key_size, HashAlgorithm.SHA2_512)
    if preferred in common:
        return preferred
    return max(common)


def _sign_rfc7427(key: PrivateKey, octets: bytes, h: HashAlgorithm, rsa_pss: bool) -> bytes:
    digest = _HASHES[h]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        identifier = ALGORITHM_IDENTIFIERS[_ecdsa_name(h)]
        signature = key.sign(octets, ec.ECDSA(digest))  # DER (r, s), RFC 7427 3 / RFC 3279 2.2.3
    elif rsa_pss:
        identifier = ALGORITHM_IDENTIFIERS[f"rsassa-pss-{_HASH_NAMES[h]}"]
        signature = key.sign(octets, padding.PSS(padding.MGF1(_HASHES[h]()), digest.digest_size), digest)
    else:
        identifier = ALGORITHM_IDENTIFIERS[f"rsa-pkcs1-{_HASH_NAMES[h]}"]
        signature = key.sign(octets, padding.PKCS1v15(), digest)
    return bytes([len(identifier)]) + identifier + signature


# --------------------------------------------------------------------------------------
# Verifying
# --------------------------------------------------------------------------------------


def verify(public_key: PublicKey, octets: bytes, method: AuthMethod, auth_data: bytes, *,
           our_hashes: Collection[HashAlgorithm]) -> str:
    """Check the AUTH data against the AUTH octets; returns the scheme, e.g. "rsassa-pss-sha256".

    For DIGITAL_SIGNATURE the hash must be one of `our_hashes` (what we announced).  RSA_SIG
    is PKCS#1 v1.5 with SHA-1 (RFC 7296 3.8; accepted for peers without RFC 7427), ECDSA_256/
    384/521 fixed-width r || s on the matching curve (RFC 4754).  Anything else, malformed
    data included, raises SignatureRejected.
    """
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise SignatureRejected(f"the peer's {type(public_key).__name__} key is not supported "
                                "(RSA or ECDSA only)")
    try:
        method = AuthMethod(method)
    except ValueError:
        raise SignatureRejected(f"unsupported authentication method {int(method)}") from None
    data = bytes(auth_data)
    if method is AuthMethod.DIGITAL_SIGNATURE:
        return _verify_rfc7427(public_key, octets, data, our_hashes)
    if method is AuthMethod.RSA_SIG:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureRejected("RSA_SIG AUTH but the peer's certificate has an EC key")
        _check(lambda: public_key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1()), "rsa-pkcs1-sha1")
        return "rsa-pkcs1-sha1"
    if method in _CLASSIC_ECDSA:
        curve, h, size = _CLASSIC_ECDSA[method]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, curve):
            have = public_key.curve.name if isinstance(public_key, ec.EllipticCurvePublicKey) else "RSA"
            raise SignatureRejected(f"{method.name} AUTH needs a {curve.name} key, the peer's is {have}")
        if len(data) != 2 * size:
            raise SignatureRejected(f"{method.name} signature is {len(data)} octets, expected {2 * size}")
        der = encode_dss_signature(int.from_bytes(data[:size], "big"), int.from_bytes(data[size:], "big"))
        name = f"ecdsa-p{8 * size if size != 66 else 521}-{_HASH_NAMES[h]}"  # e.g. ecdsa-p256-sha256
        _check(lambda: public_key.verify(der, octets, ec.ECDSA(_HASHES[h]())), name)
        return name
    raise SignatureRejected(f"unsupported authentication method {method.name} ({int(method)})")


def _check(verification: Callable[[], object], scheme: str) -> None:
    try:
        verification()
    except InvalidSignature:
        raise SignatureRejected(f"bad signature ({scheme})") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureRejected(f"cannot verify the signature ({scheme}: {exc})") from None


def _verify_rfc7427(public_key: PublicKey, octets: bytes, data: bytes,
                    our_hashes: Collection[HashAlgorithm]) -> str:
    """RFC 7427 3: length octet, AlgorithmIdentifier, signature."""
    if not data or len(data) < 1 + data[0] or data[0] == 0:
        raise SignatureRejected("malformed Digital Signature AUTH data (bad AlgorithmIdentifier length)")
    identifier, signature = data[1:1 + data[0]], data[1 + data[0]:]
    if not signature:
        raise SignatureRejected("Digital Signature AUTH data holds no signature")
    scheme, h, pss = _parse_identifier(identifier)
    allowed = {HashAlgorithm(x) for x in our_hashes if x in HashAlgorithm._value2member_map_}
    if h not in allowed:
        raise SignatureRejected(f"{scheme} uses {_HASH_NAMES[h].upper()}, which we did not announce "
                                f"(we accept {', '.join(_HASH_NAMES[x] for x in sorted(allowed)) or 'none'})")
    digest = _HASHES[h]()
    if scheme.startswith("ecdsa"):
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise SignatureRejected(f"{scheme} signature but the peer's certificate has an RSA key")
        _check(lambda: public_key.verify(signature, octets, ec.ECDSA(digest)), scheme)
        return scheme
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureRejected(f"{scheme} signature but the peer's certificate has an EC key")
    if pss is None:
        _check(lambda: public_key.verify(signature, octets, padding.PKCS1v15(), digest), scheme)
    else:
        mgf_hash, salt = pss
        pad = padding.PSS(padding.MGF1(_HASHES[mgf_hash]()), salt)
        _check(lambda: public_key.verify(signature, octets, pad, digest), scheme)
    return scheme


# --------------------------------------------------------------------------------------
# Received AlgorithmIdentifiers: a small DER reader (X.690), strict and bounds-checked
# --------------------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, contents, position after) of the TLV at `pos`; definite lengths only."""
    if pos + 2 > len(data):
        raise _Malformed("truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise _Malformed("multi-octet tag")
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 2 or pos + count > len(data):
            raise _Malformed("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise _Malformed("truncated")
    return tag, data[pos:pos + length], pos + length


def _sequence(data: bytes) -> list[tuple[int, bytes]]:
    """The elements of a whole-buffer SEQUENCE's contents."""
    items, pos = [], 0
    while pos < len(data):
        tag, body, pos = _tlv(data, pos)
        items.append((tag, body))
    return items


def _algorithm(der: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }."""
    tag, body, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise _Malformed("not one SEQUENCE")
    items = _sequence(body)
    if not items or items[0][0] != 0x06 or len(items) > 2:
        raise _Malformed("not SEQUENCE { OID, parameters }")
    return items[0][1], items[1:]


def _null_or_absent(params: list[tuple[int, bytes]]) -> bool:
    return not params or params == [(0x05, b"")]


def _parse_identifier(der: bytes) -> tuple[str, HashAlgorithm, tuple[HashAlgorithm, int] | None]:
    """(scheme name, hash, (MGF1 hash, salt length) for RSASSA-PSS) of an AlgorithmIdentifier."""
    try:
        oid, params = _algorithm(der)
        if oid in _RSA_PKCS1_OIDS and _null_or_absent(params):
            h = _RSA_PKCS1_OIDS[oid]
            return f"rsa-pkcs1-{_HASH_NAMES[h]}", h, None
        if oid in _ECDSA_OIDS and _null_or_absent(params):
            h = _ECDSA_OIDS[oid]
            return _ecdsa_name(h), h, None
        if oid == _RSASSA_PSS_OID:
            h, mgf_hash, salt = _pss_params(params)
            return f"rsassa-pss-{_HASH_NAMES[h]}", h, (mgf_hash, salt)
    except _Malformed as exc:
        raise SignatureRejected(f"malformed AlgorithmIdentifier {der.hex()} ({exc})") from None
    raise SignatureRejected(f"unknown signature AlgorithmIdentifier {der.hex()}")


def _pss_params(params: list[tuple[int, bytes]]) -> tuple[HashAlgorithm, HashAlgorithm, int]:
    """RSASSA-PSS-params (RFC 4055 3.1): [0] hash, [1] MGF, [2] saltLength, [3] trailerField."""
    h, mgf_hash, salt, trailer = HashAlgorithm.SHA1, HashAlgorithm.SHA1, 20, 1
    if params:  # absent or empty: all defaults (SHA-1, which is then refused as not announced)
        if len(params) != 1 or params[0][0] != 0x30:
            raise _Malformed("RSASSA-PSS parameters are not a SEQUENCE")
        last = -1
        for tag, body in _sequence(params[0][1]):
            index = tag - 0xA0
            if not 0 <= index <= 3 or index <= last:
                raise _Malformed("unexpected field in RSASSA-PSS parameters")
            last = index
            inner_tag, inner, end = _tlv(body, 0)
            if end != len(body):
                raise _Malformed("trailing octets in an RSASSA-PSS field")
            if index == 0:
                h = _hash_of(_tlv_bytes(inner_tag, inner))
            elif index == 1:
                mgf_oid, mgf_params = _algorithm(_tlv_bytes(inner_tag, inner))
                if mgf_oid != _MGF1_OID or len(mgf_params) != 1:
                    raise _Malformed("mask generation is not MGF1")
                mgf_hash = _hash_of(_tlv_bytes(*mgf_params[0]))
            else:
                if inner_tag != 0x02 or not inner or len(inner) > 4 or inner[0] & 0x80:
                    raise _Malformed("bad INTEGER in RSASSA-PSS parameters")
                value = int.from_bytes(inner, "big")
                if index == 2:
                    salt = value
                else:
                    trailer = value
    if trailer != 1:
        raise _Malformed(f"trailerField {trailer} (only 1 is defined)")
    return h, mgf_hash, salt


def _hash_of(der: bytes) -> HashAlgorithm:
    oid, params = _algorithm(der)
    if oid not in _HASH_OIDS or not _null_or_absent(params):
        raise _Malformed("unknown hash algorithm")
    return _HASH_OIDS[oid]


def _tlv_bytes(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + body


# --------------------------------------------------------------------------------------
# IKEv1 (RFC 2409 5.1): the signature covers HASH_I / HASH_R
# --------------------------------------------------------------------------------------

#: IKEv1 ECDSA authentication methods (RFC 4754 7) and the IKEv2 methods that sign alike
_IKEV1_ECDSA = {9: AuthMethod.ECDSA_256, 10: AuthMethod.ECDSA_384, 11: AuthMethod.ECDSA_521}


def ikev1_method(key: PrivateKey | PublicKey) -> int:
    """The IKEv1 Authentication Method attribute for a key: 3 (RSA signatures) or 9/10/11
    (ECDSA with P-256/384/521, RFC 4754)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return 3
    for v1, v2 in _IKEV1_ECDSA.items():
        curve = _CLASSIC_ECDSA[v2][0]
        if isinstance(key.curve, curve):
            return v1
    raise ValueError(f"a {key.curve.name} key has no IKEv1 signature method")


def sign_ikev1(private_key: PrivateKey, hash_data: bytes, method: int) -> bytes:
    """SIG_I/SIG_R: for RSA (method 3) an EMSA-PKCS1-v1_5 block carrying the bare hash, no
    DigestInfo (what every IKEv1 implementation does); for ECDSA the RFC 4754 r || s over the
    hash with the curve's SHA-2."""
    if method == 3:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("RSA signature method needs an RSA key")
        return _rsa_sign_raw(private_key, hash_data)
    if method in _IKEV1_ECDSA:
        curve, _, size = _CLASSIC_ECDSA[_IKEV1_ECDSA[method]]
        if not (isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, curve)):
            raise ValueError(f"ECDSA method {method} needs a {curve.name} key")
        r, s = decode_dss_signature(private_key.sign(hash_data, ec.ECDSA(_prehashed(hash_data))))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise ValueError(f"IKEv1 authentication method {method} is not a signature we produce")


def _prehashed(hash_data: bytes) -> Prehashed:
    """IKEv1 ECDSA signs HASH_I/HASH_R itself, not a hash of it (strongSwan's
    SIGN_ECDSA_WITH_NULL): hand it over as a digest of its own length."""
    by_size = {16: hashes.MD5, 20: hashes.SHA1, 32: hashes.SHA256, 48: hashes.SHA384, 64: hashes.SHA512}
    if len(hash_data) not in by_size:
        raise ValueError(f"no ECDSA digest of {len(hash_data)} octets")
    return Prehashed(by_size[len(hash_data)]())


def verify_ikev1(public_key: PublicKey, hash_data: bytes, method: int, signature: bytes) -> str:
    """Check SIG_I/SIG_R; returns the scheme name or raises SignatureRejected."""
    if method == 3:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureRejected("RSA signature method but the peer's certificate has an EC key")
        try:
            recovered = public_key.recover_data_from_signature(bytes(signature), padding.PKCS1v15(), None)
        except (InvalidSignature, ValueError):
            raise SignatureRejected("rsa-pkcs1 signature does not verify") from None
        if not hmac.compare_digest(recovered, hash_data):
            raise SignatureRejected("rsa-pkcs1 signature does not verify")
        return "rsa-pkcs1"
    if method in _IKEV1_ECDSA:
        curve, _, size = _CLASSIC_ECDSA[_IKEV1_ECDSA[method]]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, curve):
            raise SignatureRejected(f"ECDSA method {method} needs a {curve.name} key")
        if len(signature) != 2 * size:
            raise SignatureRejected(f"ECDSA signature is {len(signature)} octets, expected {2 * size}")
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"),
                                   int.from_bytes(signature[size:], "big"))
        try:
            prehashed = _prehashed(hash_data)
        except ValueError as exc:
            raise SignatureRejected(str(exc)) from None
        _check(lambda: public_key.verify(der, hash_data, ec.ECDSA(prehashed)), f"ecdsa-{curve.name}")
        return f"ecdsa-{curve.name}"
    raise SignatureRejected(f"unsupported IKEv1 authentication method {method}")


def _rsa_sign_raw(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """RSA private-key operation on a PKCS#1 v1.5 type-1 block (RFC 8017 9.2 without the
    DigestInfo).  `cryptography` has no such mode, so the modular exponentiation is done here,
    with CRT and message blinding against timing attacks, and checked with the public key."""
    priv = key.private_numbers()
    pub = priv.public_numbers
    n, e = pub.n, pub.e
    k = (n.bit_length() + 7) // 8
    if len(data) > k - 11:
        raise ValueError("hash too long for the RSA modulus")
    m = int.from_bytes(b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data, "big")
    while True:
        r = secrets.randbelow(n - 3) + 2
        try:
            r_inv = pow(r, -1, n)
            break
        except ValueError:
            continue
    c = m * pow(r, e, n) % n
    s1 = pow(c, priv.dmp1, priv.p)
    s2 = pow(c, priv.dmq1, priv.q)
    s = (s2 + priv.q * (priv.iqmp * (s1 - s2) % priv.p)) * r_inv % n
    if pow(s, e, n) != m:
        raise ValueError("RSA signature self-check failed")
    return s.to_bytes(k, "big")
