"""AUTH payload signatures: classic RSA/ECDSA and RFC 7427, against RFC text, cryptography and openssl."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ike.signatures import (
    ALGORITHM_IDENTIFIERS,
    SUPPORTED_HASHES,
    AuthMethod,
    HashAlgorithm,
    SignatureRejected,
    parse_hash_algorithms,
    sign,
    verify,
)

OPENSSL = shutil.which("openssl")
OCTETS = b"IKE_SA_INIT message | Nr | prf(SK_pi, IDi')" * 3
ALL = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)

# RFC 7427 Appendix A, as printed there (A.1.x, A.3.x) and as sent by strongSwan and libreswan
# (A.4.3: RSASSA-PSS with SHA-256; the SHA-384/512 forms differ only in hash OID and salt).
RFC7427 = {
    "rsa-pkcs1-sha256": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00",
    "rsa-pkcs1-sha384": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0c 05 00",
    "rsa-pkcs1-sha512": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0d 05 00",
    "ecdsa-with-SHA256": "30 0a 06 08 2a 86 48 ce 3d 04 03 02",
    "ecdsa-with-SHA384": "30 0a 06 08 2a 86 48 ce 3d 04 03 03",
    "ecdsa-with-SHA512": "30 0a 06 08 2a 86 48 ce 3d 04 03 04",
    "rsassa-pss-sha256": "30 41 06 09 2a 86 48 86 f7 0d 01 01 0a 30 34 a0 0f 30 0d 06 09 "
                         "60 86 48 01 65 03 04 02 01 05 00 a1 1c 30 1a 06 09 2a 86 48 86 "
                         "f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 "
                         "a2 03 02 01 20",
    "rsassa-pss-sha384": "30 41 06 09 2a 86 48 86 f7 0d 01 01 0a 30 34 a0 0f 30 0d 06 09 "
                         "60 86 48 01 65 03 04 02 02 05 00 a1 1c 30 1a 06 09 2a 86 48 86 "
                         "f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00 "
                         "a2 03 02 01 30",
    "rsassa-pss-sha512": "30 41 06 09 2a 86 48 86 f7 0d 01 01 0a 30 34 a0 0f 30 0d 06 09 "
                         "60 86 48 01 65 03 04 02 03 05 00 a1 1c 30 1a 06 09 2a 86 48 86 "
                         "f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65 03 04 02 03 05 00 "
                         "a2 03 02 01 40",
}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[int, ec.EllipticCurvePrivateKey]:
    return {256: ec.generate_private_key(ec.SECP256R1()), 384: ec.generate_private_key(ec.SECP384R1()),
            521: ec.generate_private_key(ec.SECP521R1())}


def identifier_of(data: bytes) -> bytes:
    return data[1:1 + data[0]]


# --------------------------------------------------------------------------------------
# AlgorithmIdentifiers
# --------------------------------------------------------------------------------------


def test_identifiers_are_rfc7427_appendix_a() -> None:
    assert {k: v.hex(" ") for k, v in ALGORITHM_IDENTIFIERS.items()} == RFC7427


def _signature_algorithm_of(cert: x509.Certificate) -> bytes:
    """The DER signatureAlgorithm of a Certificate ::= SEQUENCE { tbs, signatureAlgorithm, sig }."""
    der = cert.public_bytes(serialization.Encoding.DER)

    def tlv(pos: int) -> tuple[int, int]:  # (start of contents, end)
        first = der[pos + 1]
        if first < 0x80:
            return pos + 2, pos + 2 + first
        n = first & 0x7F
        return pos + 2 + n, pos + 2 + n + int.from_bytes(der[pos + 2:pos + 2 + n], "big")

    body, _ = tlv(0)
    _, tbs_end = tlv(body)
    _, alg_end = tlv(tbs_end)
    return der[tbs_end:alg_end]


def _self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, digest: hashes.HashAlgorithm,
                 pss: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alg")])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if pss:
        return builder.sign(key, digest, rsa_padding=padding.PSS(padding.MGF1(digest),
                                                                 padding.PSS.DIGEST_LENGTH))
    return builder.sign(key, digest)


@pytest.mark.parametrize("bits", [256, 384, 512])
def test_identifiers_match_what_cryptography_writes(rsa_key: rsa.RSAPrivateKey,
                                                    ec_keys: dict[int, ec.EllipticCurvePrivateKey],
                                                    bits: int) -> None:
    digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 512: hashes.SHA512()}[bits]
    cases = {
        f"rsa-pkcs1-sha{bits}": _self_signed(rsa_key, digest),
        f"ecdsa-with-SHA{bits}": _self_signed(ec_keys[256], digest),
        f"rsassa-pss-sha{bits}": _self_signed(rsa_key, digest, pss=True),
    }
    for scheme, cert in cases.items():
        assert _signature_algorithm_of(cert) == ALGORITHM_IDENTIFIERS[scheme], scheme


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_reads_the_pss_identifier(tmp_path: Path) -> None:
    path = tmp_path / "alg.der"
    path.write_bytes(ALGORITHM_IDENTIFIERS["rsassa-pss-sha384"])
    out = subprocess.run([OPENSSL, "asn1parse", "-inform", "DER", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert ":rsassaPss" in out and ":sha384" in out and ":mgf1" in out and ":30" in out  # salt 48


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("peer", "pss", "scheme"), [
    (ALL, False, "rsa-pkcs1-sha256"),
    ((HashAlgorithm.SHA2_384,), False, "rsa-pkcs1-sha384"),
    ((HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512), False, "rsa-pkcs1-sha512"),
    (ALL, True, "rsassa-pss-sha256"),
    ((HashAlgorithm.SHA2_384,), True, "rsassa-pss-sha384"),
    ((HashAlgorithm.SHA2_512, 7), True, "rsassa-pss-sha512"),  # unknown values are ignored
])
def test_rsa_rfc7427(rsa_key: rsa.RSAPrivateKey, peer: tuple[int, ...], pss: bool, scheme: str) -> None:
    method, data = sign(rsa_key, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=peer, rsa_pss=pss)
    assert method is AuthMethod.DIGITAL_SIGNATURE
    assert identifier_of(data) == ALGORITHM_IDENTIFIERS[scheme]
    assert len(data) == 1 + data[0] + 256
    assert verify(rsa_key.public_key(), OCTETS, method, data, our_hashes=SUPPORTED_HASHES) == scheme


@pytest.mark.parametrize("peer", [(), (HashAlgorithm.SHA1,)])
def test_rsa_classic_without_common_hash(rsa_key: rsa.RSAPrivateKey, peer: tuple[HashAlgorithm, ...]) -> None:
    method, data = sign(rsa_key, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=peer, rsa_pss=True)
    assert method is AuthMethod.RSA_SIG and len(data) == 256
    rsa_key.public_key().verify(data, OCTETS, padding.PKCS1v15(), hashes.SHA1())  # independent check
    assert verify(rsa_key.public_key(), OCTETS, method, data, our_hashes=SUPPORTED_HASHES) == "rsa-pkcs1-sha1"


@pytest.mark.parametrize(("bits", "peer", "scheme"), [
    (256, ALL, "ecdsa-with-SHA256"),
    (256, (HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512), "ecdsa-with-SHA512"),
    (384, ALL, "ecdsa-with-SHA384"),
    (384, (HashAlgorithm.SHA2_256,), "ecdsa-with-SHA256"),
    (521, ALL, "ecdsa-with-SHA512"),
])
def test_ecdsa_rfc7427(ec_keys: dict[int, ec.EllipticCurvePrivateKey], bits: int,
                       peer: tuple[HashAlgorithm, ...], scheme: str) -> None:
    key = ec_keys[bits]
    method, data = sign(key, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=peer)
    assert method is AuthMethod.DIGITAL_SIGNATURE
    assert identifier_of(data) == ALGORITHM_IDENTIFIERS[scheme]
    decode_dss_signature(data[1 + data[0]:])  # the signature is DER (r, s)
    assert verify(key.public_key(), OCTETS, method, data, our_hashes=SUPPORTED_HASHES) == scheme


@pytest.mark.parametrize(("bits", "method", "size", "scheme", "digest"), [
    (256, AuthMethod.ECDSA_256, 64, "ecdsa-p256-sha256", hashes.SHA256()),
    (384, AuthMethod.ECDSA_384, 96, "ecdsa-p384-sha384", hashes.SHA384()),
    (521, AuthMethod.ECDSA_521, 132, "ecdsa-p521-sha512", hashes.SHA512()),
])
def test_ecdsa_classic(ec_keys: dict[int, ec.EllipticCurvePrivateKey], bits: int, method: AuthMethod,
                       size: int, scheme: str, digest: hashes.HashAlgorithm) -> None:
    key = ec_keys[bits]
    used, data = sign(key, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=())
    assert used is method and len(data) == size  # r || s, fixed width (RFC 4754 7)
    forced, data2 = sign(key, OCTETS, method=method, peer_hashes=ALL)  # classic when asked for
    assert forced is method and len(data2) == size
    half = size // 2
    der = encode_dss_signature(int.from_bytes(data[:half], "big"), int.from_bytes(data[half:], "big"))
    key.public_key().verify(der, OCTETS, ec.ECDSA(digest))  # independent check
    for d in (data, data2):
        assert verify(key.public_key(), OCTETS, method, d, our_hashes=SUPPORTED_HASHES) == scheme


def test_sign_refuses_mismatches(rsa_key: rsa.RSAPrivateKey,
                                 ec_keys: dict[int, ec.EllipticCurvePrivateKey]) -> None:
    with pytest.raises(ValueError, match="ECDSA_384 needs a secp384r1 key"):
        sign(ec_keys[256], OCTETS, method=AuthMethod.ECDSA_384, peer_hashes=ALL)
    with pytest.raises(ValueError, match="RSA_SIG needs an RSA key"):
        sign(ec_keys[256], OCTETS, method=AuthMethod.RSA_SIG, peer_hashes=())
    with pytest.raises(ValueError, match="SHARED_KEY is not a signature method"):
        sign(rsa_key, OCTETS, method=AuthMethod.SHARED_KEY, peer_hashes=ALL)
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ValueError, match="no classic IKEv2 method"):
        sign(k1, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=())
    method, data = sign(k1, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=ALL)
    assert verify(k1.public_key(), OCTETS, method, data, our_hashes=ALL) == "ecdsa-with-SHA256"


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("scheme", ["rsassa-pss-sha256", "rsa-pkcs1-sha384", "ecdsa-with-SHA384"])
def test_openssl_verifies_our_signatures(rsa_key: rsa.RSAPrivateKey,
                                         ec_keys: dict[int, ec.EllipticCurvePrivateKey],
                                         tmp_path: Path, scheme: str) -> None:
    key = ec_keys[384] if scheme.startswith("ecdsa") else rsa_key
    h = HashAlgorithm.SHA2_384 if "384" in scheme else HashAlgorithm.SHA2_256
    _, data = sign(key, OCTETS, method=AuthMethod.DIGITAL_SIGNATURE, peer_hashes=(h,),
                   rsa_pss=scheme.startswith("rsassa"))
    assert identifier_of(data) == ALGORITHM_IDENTIFIERS[scheme]
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "msg").write_bytes(OCTETS)
    (tmp_path / "sig").write_bytes(data[1 + data[0]:])
    args = [OPENSSL, "dgst", f"-sha{scheme[-3:]}", "-verify", "pub.pem", "-signature", "sig"]
    if scheme.startswith("rsassa"):
        args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32",
                 "-sigopt", "rsa_mgf1_md:sha256"]
    proc = subprocess.run([*args, "msg"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(rsa_key: rsa.RSAPrivateKey,
           ec_keys: dict[int, ec.EllipticCurvePrivateKey]) -> dict[str, tuple[object, AuthMethod, bytes]]:
    """One AUTH payload of every kind: name -> (public key, method, data)."""
    out: dict[str, tuple[object, AuthMethod, bytes]] = {}
    for name, key, method, peer, pss in [
        ("rsa-classic", rsa_key, AuthMethod.DIGITAL_SIGNATURE, (), False),
        ("rsa-pkcs1", rsa_key, AuthMethod.DIGITAL_SIGNATURE, ALL, False),
        ("rsa-pss", rsa_key, AuthMethod.DIGITAL_SIGNATURE, ALL, True),
        ("p256-classic", ec_keys[256], AuthMethod.DIGITAL_SIGNATURE, (), False),
        ("p384-classic", ec_keys[384], AuthMethod.DIGITAL_SIGNATURE, (), False),
        ("p256-rfc7427", ec_keys[256], AuthMethod.DIGITAL_SIGNATURE, ALL, False),
        ("p384-rfc7427", ec_keys[384], AuthMethod.DIGITAL_SIGNATURE, ALL, False),
    ]:
        used, data = sign(key, OCTETS, method=method, peer_hashes=peer, rsa_pss=pss)  # type: ignore[arg-type]
        out[name] = (key.public_key(), used, data)
    return out


KINDS = ["rsa-classic", "rsa-pkcs1", "rsa-pss", "p256-classic", "p384-classic", "p256-rfc7427",
         "p384-rfc7427"]


@pytest.mark.parametrize("kind", KINDS)
def test_tampered_octets_and_signatures_are_rejected(signed: dict, kind: str) -> None:
    public, method, data = signed[kind]
    with pytest.raises(SignatureRejected, match="bad signature"):
        verify(public, OCTETS[:-1] + b"X", method, data, our_hashes=SUPPORTED_HASHES)
    tampered = data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]
    with pytest.raises(SignatureRejected):
        verify(public, OCTETS, method, tampered, our_hashes=SUPPORTED_HASHES)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_key_is_rejected(signed: dict, kind: str) -> None:
    _, method, data = signed[kind]
    other = signed["p256-rfc7427" if kind.startswith("rsa") else "rsa-pss"][0]
    with pytest.raises(SignatureRejected):
        verify(other, OCTETS, method, data, our_hashes=SUPPORTED_HASHES)


def test_hash_not_announced(signed: dict) -> None:
    public, method, data = signed["rsa-pss"]
    with pytest.raises(SignatureRejected, match="uses SHA256, which we did not announce"):
        verify(public, OCTETS, method, data, our_hashes=(HashAlgorithm.SHA2_384,))


def test_sha1_in_rfc7427_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    sha1_with_rsa = bytes.fromhex("300d06092a864886f70d0101050500")  # RFC 7427 A.1.1
    signature = rsa_key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA1())
    data = bytes([len(sha1_with_rsa)]) + sha1_with_rsa + signature
    with pytest.raises(SignatureRejected, match="SHA1, which we did not announce"):
        verify(rsa_key.public_key(), OCTETS, AuthMethod.DIGITAL_SIGNATURE, data, our_hashes=SUPPORTED_HASHES)
    assert verify(rsa_key.public_key(), OCTETS, AuthMethod.DIGITAL_SIGNATURE, data,
                  our_hashes=(HashAlgorithm.SHA1,)) == "rsa-pkcs1-sha1"
    empty_pss = bytes.fromhex("300b06092a864886f70d01010a")  # RFC 7427 A.4.1: defaults, i.e. SHA-1
    with pytest.raises(SignatureRejected, match="rsassa-pss-sha1 uses SHA1"):
        verify(rsa_key.public_key(), OCTETS, AuthMethod.DIGITAL_SIGNATURE,
               bytes([len(empty_pss)]) + empty_pss + b"\x01" * 256, our_hashes=SUPPORTED_HASHES)


def _pss_auth(key: rsa.RSAPrivateKey, identifier: bytes, digest: hashes.HashAlgorithm,
              mgf: hashes.HashAlgorithm, salt: int) -> bytes:
    signature = key.sign(OCTETS, padding.PSS(padding.MGF1(mgf), salt), digest)
    return bytes([len(identifier)]) + identifier + signature


def test_other_valid_pss_encodings_are_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    sha256 = "300d06096086480165030402010500"
    # trailerField 1 written out (as RFC 7427's text shows it; not DER, but harmless)
    explicit_trailer = bytes.fromhex("3046" "06092a864886f70d01010a" "3039" "a00f" + sha256 + "a11c301a"
                                     "06092a864886f70d010108" + sha256 + "a203020120" "a303020101")
    data = _pss_auth(rsa_key, explicit_trailer, hashes.SHA256(), hashes.SHA256(), 32)
    assert verify(public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, data, our_hashes=ALL) == "rsassa-pss-sha256"
    # hash AlgorithmIdentifiers without NULL, MGF1 with SHA-384, salt 0
    no_null = "300b0609608648016503040201"
    mgf384 = "300b0609608648016503040202"
    mixed = bytes.fromhex("303d" "06092a864886f70d01010a" "3030" "a00d" + no_null + "a11a3018"
                          "06092a864886f70d010108" + mgf384 + "a203020100")
    data = _pss_auth(rsa_key, mixed, hashes.SHA256(), hashes.SHA384(), 0)
    assert verify(public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, data, our_hashes=ALL) == "rsassa-pss-sha256"
    # ... but the salt length that was announced is the one checked
    data = _pss_auth(rsa_key, mixed, hashes.SHA256(), hashes.SHA384(), 32)
    with pytest.raises(SignatureRejected, match="bad signature"):
        verify(public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, data, our_hashes=ALL)
    bad_trailer = explicit_trailer[:-1] + b"\x02"
    with pytest.raises(SignatureRejected, match="trailerField 2"):
        verify(public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, _pss_auth(rsa_key, bad_trailer, hashes.SHA256(),
                                                                       hashes.SHA256(), 32), our_hashes=ALL)


def test_unknown_identifier_and_mismatched_key(signed: dict) -> None:
    rsa_public, _, _ = signed["rsa-pss"]
    ec_public, _, ec_data = signed["p256-rfc7427"]
    ed25519 = bytes.fromhex("300506032b6570")
    with pytest.raises(SignatureRejected, match="unknown signature AlgorithmIdentifier 300506032b6570"):
        verify(rsa_public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, b"\x07" + ed25519 + b"\x00" * 64,
               our_hashes=ALL)
    with pytest.raises(SignatureRejected, match="certificate has an RSA key"):
        verify(rsa_public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, ec_data, our_hashes=ALL)
    with pytest.raises(SignatureRejected, match="ECDSA_384 AUTH needs a secp384r1 key, the peer's is secp2"):
        verify(ec_public, OCTETS, AuthMethod.ECDSA_384, b"\x00" * 96, our_hashes=ALL)
    with pytest.raises(SignatureRejected, match="ECDSA_256 signature is 63 octets, expected 64"):
        verify(ec_public, OCTETS, AuthMethod.ECDSA_256, b"\x00" * 63, our_hashes=ALL)


@pytest.mark.parametrize("method", [AuthMethod.SHARED_KEY, AuthMethod.DSS, 12, 99])
def test_unsupported_methods(signed: dict, method: int) -> None:
    public, _, data = signed["rsa-pkcs1"]
    with pytest.raises(SignatureRejected, match="unsupported authentication method"):
        verify(public, OCTETS, method, data, our_hashes=ALL)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x0f", b"\x0f" + ALGORITHM_IDENTIFIERS["rsa-pkcs1-sha256"],
                                  b"\x05\x30\x03\x06\x01", b"\x02\x30\x80" + b"\x00" * 10,
                                  b"\x04\x30\x84\xff\xff" + b"\x00" * 10, b"\x03\x3f\x01\x00" + b"\x00" * 8])
def test_malformed_auth_data(signed: dict, data: bytes) -> None:
    public, _, _ = signed["rsa-pss"]
    with pytest.raises(SignatureRejected):
        verify(public, OCTETS, AuthMethod.DIGITAL_SIGNATURE, data, our_hashes=ALL)


def test_every_corrupted_identifier_octet_is_rejected_cleanly(signed: dict) -> None:
    public, method, data = signed["rsa-pss"]
    for i in range(data[0] + 1):
        for flip in (0x01, 0x80, 0xFF):
            corrupted = data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]
            with pytest.raises(SignatureRejected):
                verify(public, OCTETS, method, corrupted, our_hashes=ALL)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(KINDS))
def test_random_auth_data_never_crashes(signed: dict, noise: bytes, kind: str) -> None:
    public, method, data = signed[kind]
    for candidate in (noise, data[:1 + data[0]] + noise, data[:len(noise) % len(data)]):
        if candidate == data:  # a classic signature whose first octet happens to cover it all
            continue
        with pytest.raises(SignatureRejected):
            verify(public, OCTETS, method, candidate, our_hashes=ALL)


def test_parse_hash_algorithms() -> None:
    assert parse_hash_algorithms([1, 2, 5, 4, 0, 65535]) == {HashAlgorithm.SHA1, HashAlgorithm.SHA2_256,
                                                            HashAlgorithm.SHA2_512}
    assert SUPPORTED_HASHES == ALL
