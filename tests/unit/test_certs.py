"""Certificate trust for IKE: path validation, identities in certificates, loading; openssl agrees."""

from __future__ import annotations

import hashlib
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.pki import ORGANIZATION, Issued, issue, make_ca
from gateway.ike.certs import (
    IPSEC_IKE,
    CertificateRejected,
    TrustStore,
    check_identity,
    identity_in_certificate,
    load_certificate,
    load_certificates,
    load_private_key,
)
from gateway.ike.identity import Identity, IdType

REPO = Path(__file__).resolve().parents[2]
OPENSSL = shutil.which("openssl")
NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """The reference time is taken when each test runs, not when the module was collected:
    certificates are issued (backdated 5 min) by fixtures that may run minutes later."""
    global NOW
    NOW = datetime.now(UTC)


@dataclass
class Lab:
    """root (RSA) -> inter (P-256) -> leaves; plus a rogue root, an impostor and a pathLen-0 root."""

    dir: Path
    root: Issued
    inter: Issued
    leaf: Issued
    expired: Issued
    future: Issued
    rogue_root: Issued
    rogue_leaf: Issued
    impostor_leaf: Issued
    not_a_ca: Issued
    under_not_a_ca: Issued
    no_key_usage: Issued
    strict_root: Issued
    strict_inter: Issued
    strict_leaf: Issued

    @property
    def store(self) -> TrustStore:
        return TrustStore([self.root.certificate])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    d = tmp_path_factory.mktemp("pki")
    root = make_ca(d, "Root CA")
    inter = make_ca(d, "Inter CA", issuer=root, kind="ecdsa256")
    leaf = issue(d, inter, "gw", san_ip=["192.0.2.1", "2001:db8::1"], san_dns=["gw.example"],
                 san_email=["ops@gw.example"])
    expired = issue(d, inter, "old", kind="ecdsa256", not_before=NOW - timedelta(days=30), days=1)
    future = issue(d, inter, "br", kind="ecdsa256", not_before=NOW + timedelta(days=10))
    rogue_root = make_ca(d / "rogue", "Rogue CA", kind="ecdsa256")
    rogue_leaf = issue(d / "rogue", rogue_root, "gw", kind="ecdsa256", san_dns=["gw.example"])
    impostor = make_ca(d / "impostor", "Inter CA", kind="ecdsa256")  # same name, other key
    impostor_leaf = issue(d / "impostor", impostor, "gw", kind="ecdsa256", san_dns=["gw.example"])
    not_a_ca = issue(d, inter, "plain", kind="ecdsa256")
    under_not_a_ca = issue(d, not_a_ca, "sub", kind="ecdsa256")
    no_key_usage = issue(d, inter, "noku", kind="ecdsa256", key_usage=False)
    strict_root = make_ca(d, "Strict Root", kind="ecdsa256", path_length=0)
    strict_inter = make_ca(d, "Strict Inter", kind="ecdsa256", issuer=strict_root)
    strict_leaf = issue(d, strict_inter, "deep", kind="ecdsa256")
    return Lab(d, root, inter, leaf, expired, future, rogue_root, rogue_leaf, impostor_leaf, not_a_ca,
               under_not_a_ca, no_key_usage, strict_root, strict_inter, strict_leaf)


def custom_leaf(ca: Issued, name: str, *extensions: tuple[x509.ExtensionType, bool]) -> x509.Certificate:
    """A P-256 end-entity certificate with exactly the given extensions, signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
               .issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30)))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(ca.private_key(), hashes.SHA256())


def custom_ca(parent: Issued, directory: Path, name: str,
              *extensions: tuple[x509.ExtensionType, bool]) -> Issued:
    """An intermediate CA (P-256) with extra extensions, written to disk like appliance.pki does."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = custom_leaf_builder(parent, name, key, extensions).sign(parent.private_key(), hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Issued(cert_path, key_path, cert)


def custom_leaf_builder(parent: Issued, name: str, key: ec.EllipticCurvePrivateKey,
                        extensions: tuple[tuple[x509.ExtensionType, bool], ...]) -> x509.CertificateBuilder:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
               .issuer_name(parent.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder


def rejected(store: TrustStore, leaf: x509.Certificate, intermediates: list[x509.Certificate],
             now: datetime | None = None) -> CertificateRejected:
    with pytest.raises(CertificateRejected) as info:
        store.validate(leaf, intermediates, now or NOW)
    return info.value


# --------------------------------------------------------------------------------------
# Path validation
# --------------------------------------------------------------------------------------


def test_good_chain(lab: Lab) -> None:
    chain = lab.store.validate(lab.leaf.certificate, [lab.inter.certificate], NOW)
    assert chain == [lab.leaf.certificate, lab.inter.certificate, lab.root.certificate]


def test_intermediates_in_any_order_with_strangers(lab: Lab) -> None:
    extras = [lab.rogue_root.certificate, lab.expired.certificate, lab.inter.certificate,
              lab.inter.certificate, lab.root.certificate]
    chain = lab.store.validate(lab.leaf.certificate, extras, NOW.replace(tzinfo=None))  # naive = UTC
    assert chain[-1] == lab.root.certificate and len(chain) == 3


def test_missing_intermediate(lab: Lab) -> None:
    exc = rejected(lab.store, lab.leaf.certificate, [])
    assert exc.reason == "untrusted"
    assert str(exc) == "certificate CN=gw,O=Gateway Lab: issuer CN=Inter CA,O=Gateway Lab not trusted"


def test_untrusted_root(lab: Lab) -> None:
    exc = rejected(lab.store, lab.rogue_leaf.certificate, [])
    assert exc.reason == "untrusted"
    assert str(exc) == "certificate CN=gw,O=Gateway Lab: issuer CN=Rogue CA,O=Gateway Lab not trusted"
    # The peer sending its own root along does not make it an anchor.
    exc = rejected(lab.store, lab.rogue_leaf.certificate, [lab.rogue_root.certificate])
    assert exc.reason == "untrusted"
    assert "issuer CN=Rogue CA,O=Gateway Lab not trusted (self-signed" in str(exc)


def test_expired(lab: Lab) -> None:
    exc = rejected(lab.store, lab.expired.certificate, [lab.inter.certificate])
    assert exc.reason == "expired"
    after = lab.expired.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(exc) == f"certificate CN=old,O=Gateway Lab: expired (notAfter {after})"


def test_not_yet_valid(lab: Lab) -> None:
    exc = rejected(lab.store, lab.future.certificate, [lab.inter.certificate])
    assert exc.reason == "not_yet_valid"
    before = lab.future.certificate.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert str(exc) == f"certificate CN=br,O=Gateway Lab: not yet valid (notBefore {before})"
    # ... and fine once its time has come.
    lab.store.validate(lab.future.certificate, [lab.inter.certificate], NOW + timedelta(days=11))


def test_every_certificate_must_be_valid_at_that_time(lab: Lab) -> None:
    exc = rejected(lab.store, lab.leaf.certificate, [lab.inter.certificate], NOW + timedelta(days=5000))
    assert exc.reason == "expired" and "CN=Inter CA" in str(exc)


def test_wrong_signature(lab: Lab) -> None:
    exc = rejected(lab.store, lab.impostor_leaf.certificate, [lab.inter.certificate])
    assert exc.reason == "bad_signature"
    assert str(exc) == ("certificate CN=gw,O=Gateway Lab: signature does not verify with the key of "
                        "CN=Inter CA,O=Gateway Lab")


def test_intermediate_without_ca_flag(lab: Lab) -> None:
    exc = rejected(lab.store, lab.under_not_a_ca.certificate,
                   [lab.not_a_ca.certificate, lab.inter.certificate])
    assert exc.reason == "not_a_ca"
    assert str(exc) == ("certificate CN=plain,O=Gateway Lab: not a CA (basicConstraints cA=FALSE) "
                        "but it issued CN=sub,O=Gateway Lab")


def test_path_length(lab: Lab) -> None:
    store = TrustStore([lab.strict_root.certificate])
    exc = rejected(store, lab.strict_leaf.certificate, [lab.strict_inter.certificate])
    assert exc.reason == "path_length"
    assert "pathLenConstraint 0 exceeded by 1 CA certificate(s)" in str(exc)
    direct = issue(lab.dir, lab.strict_root, "shallow", kind="ecdsa256")  # no CA below: within pathLen 0
    assert len(store.validate(direct.certificate, [], NOW)) == 2


def test_key_usage_of_end_entity(lab: Lab) -> None:
    encipher_only = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True,
                                  data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                  crl_sign=False, encipher_only=False, decipher_only=False)
    leaf = custom_leaf(lab.inter, "kx", (encipher_only, True))
    exc = rejected(lab.store, leaf, [lab.inter.certificate])
    assert exc.reason == "key_usage"
    assert str(exc) == "certificate CN=kx,O=Gateway Lab: key usage lacks digitalSignature"
    # No keyUsage at all is fine (RFC 5280 4.2.1.3: then the key may be used for anything).
    lab.store.validate(lab.no_key_usage.certificate, [lab.inter.certificate], NOW)


def test_key_usage_of_issuer(lab: Lab, tmp_path: Path) -> None:
    sign_only = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False)
    ca = custom_ca(lab.root, tmp_path, "No Sign CA", (sign_only, True))
    exc = rejected(lab.store, custom_leaf(ca, "x"), [ca.certificate])
    assert exc.reason == "key_usage" and "lacks keyCertSign" in str(exc)


@pytest.mark.parametrize(("usages", "accepted"), [
    ([ExtendedKeyUsageOID.SERVER_AUTH], True),
    ([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING], True),
    ([IPSEC_IKE], True),
    ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
    ([ExtendedKeyUsageOID.CODE_SIGNING], False),
])
def test_extended_key_usage(lab: Lab, usages: list[x509.ObjectIdentifier], accepted: bool) -> None:
    leaf = custom_leaf(lab.inter, "eku", (x509.ExtendedKeyUsage(usages), False))
    if accepted:
        lab.store.validate(leaf, [lab.inter.certificate], NOW)
    else:
        exc = rejected(lab.store, leaf, [lab.inter.certificate])
        assert exc.reason == "key_usage" and "(codeSigning) has none of serverAuth" in str(exc)


def test_unknown_critical_extension(lab: Lab) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = custom_leaf(lab.inter, "odd", (odd, True))
    exc = rejected(lab.store, leaf, [lab.inter.certificate])
    assert exc.reason == "malformed" and "unsupported critical extension 1.3.6.1.4.1.99999.1" in str(exc)
    lab.store.validate(custom_leaf(lab.inter, "odd", (odd, False)), [lab.inter.certificate], NOW)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_sha1_signed_certificate(lab: Lab, tmp_path: Path) -> None:
    # cryptography refuses to sign with SHA-1 any more; openssl still does.
    key, csr, crt = tmp_path / "legacy.key", tmp_path / "legacy.csr", tmp_path / "legacy.crt"
    subprocess.run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", "/CN=legacy/O=Gateway Lab"],
                   check=True, capture_output=True)
    subprocess.run([OPENSSL, "x509", "-req", "-in", str(csr), "-CA", str(lab.inter.cert_path), "-CAkey",
                    str(lab.inter.key_path), "-CAcreateserial", "-sha1", "-days", "2", "-out", str(crt)],
                   check=True, capture_output=True)
    leaf = load_certificate(crt.read_bytes())
    exc = rejected(lab.store, leaf, [lab.inter.certificate])
    assert exc.reason == "weak_algorithm" and "signed with SHA1" in str(exc)


def test_name_constraints(lab: Lab, tmp_path: Path) -> None:
    constraints = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                                       excluded_subtrees=[x509.DNSName("bad.example.com")])
    ca = custom_ca(lab.root, tmp_path, "Constrained CA", (constraints, True))
    inside = custom_leaf(ca, "in", (x509.SubjectAlternativeName([x509.DNSName("gw.example.com")]), False))
    lab.store.validate(inside, [ca.certificate], NOW)
    for name in ("gw.example.org", "x.bad.example.com"):
        leaf = custom_leaf(ca, "out", (x509.SubjectAlternativeName([x509.DNSName(name)]), False))
        exc = rejected(lab.store, leaf, [ca.certificate])
        assert exc.reason == "name_constraints" and name in str(exc)


def test_directly_trusted_end_entity(lab: Lab) -> None:
    store = TrustStore([lab.rogue_leaf.certificate])
    assert store.validate(lab.rogue_leaf.certificate, [], NOW) == [lab.rogue_leaf.certificate]


def test_intermediate_as_anchor(lab: Lab) -> None:
    store = TrustStore([lab.inter.certificate])
    assert store.validate(lab.leaf.certificate, [], NOW) == [lab.leaf.certificate, lab.inter.certificate]


def test_many_same_name_candidates_are_bounded(lab: Lab) -> None:
    """Self-issued certificates that all cross-sign each other: the search gives up, quickly."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop CA")])
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]

    def cert(subject_key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
             ca: bool = True) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(name if ca else lab.leaf.certificate.subject)
                .issuer_name(name).public_key(subject_key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(NOW - timedelta(hours=1))
                .not_valid_after(NOW + timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    leaf = cert(ec.generate_private_key(ec.SECP256R1()), keys[0], ca=False)
    loop = [cert(a, b) for a in keys for b in keys if a is not b]  # 12 certificates, 4**7 paths
    exc = rejected(lab.store, leaf, loop)
    assert exc.reason == "untrusted"
    assert "no path to a trust anchor among the first 32 candidate issuers" in str(exc)


def test_certreq_hashes(lab: Lab) -> None:
    store = TrustStore([lab.root.certificate, lab.strict_root.certificate, lab.root.certificate])
    assert len(store) == 2
    spki = lab.root.certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert store.certreq_hashes()[0] == hashlib.sha1(spki).digest()
    assert [len(h) for h in store.certreq_hashes()] == [20, 20]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def test_trust_store_from_files(lab: Lab, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(lab.root.cert_path.read_bytes() + b"\n" + lab.strict_root.cert_path.read_bytes())
    der = tmp_path / "inter.der"
    der.write_bytes(lab.inter.certificate.public_bytes(serialization.Encoding.DER))
    store = TrustStore.from_files([bundle, str(der)])
    assert store.anchors == (lab.root.certificate, lab.strict_root.certificate, lab.inter.certificate)
    assert repr(store) == "<TrustStore 3 anchors>"

    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{bad}: ")):
        TrustStore.from_files([bundle, bad])
    with pytest.raises(ValueError, match=r"missing\.pem: cannot read"):
        TrustStore.from_files([tmp_path / "missing.pem"])
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x03\x02\x01\x01")
    with pytest.raises(ValueError, match=r"junk\.der: not a PEM or DER X\.509 certificate"):
        TrustStore.from_files([junk])


def test_load_certificate(lab: Lab) -> None:
    pem = lab.leaf.cert_path.read_bytes()
    der = lab.leaf.certificate.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == load_certificate(der) == lab.leaf.certificate
    assert len(load_certificates(pem + lab.inter.cert_path.read_bytes())) == 2
    with pytest.raises(ValueError):
        load_certificate(b"\x00garbage")


def test_load_private_key(lab: Lab, tmp_path: Path) -> None:
    key = load_private_key(lab.leaf.key_path)
    assert key.public_key().public_numbers() == lab.leaf.certificate.public_key().public_numbers()
    assert stat.S_IMODE(lab.leaf.key_path.stat().st_mode) == 0o600

    traditional = tmp_path / "trad.key"
    traditional.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()))
    assert load_private_key(str(traditional)).key_size == 2048  # type: ignore[union-attr]

    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(ValueError, match=r"enc\.key: the private key is encrypted"):
        load_private_key(encrypted)

    broken = tmp_path / "broken.key"
    secret_line = lab.leaf.key_path.read_text().splitlines()[1]
    broken.write_text("-----BEGIN PRIVATE KEY-----\n" + secret_line + "\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError) as info:
        load_private_key(broken)
    assert str(info.value) == f"{broken}: not a readable PEM or DER private key"
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --------------------------------------------------------------------------------------
# Identities in certificates (RFC 4945 3.1)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("identity", "expected"), [
    ("192.0.2.1", True),
    ("2001:db8::1", True),
    ("gw.example", True),
    ("GW.Example.", True),
    ("ops@gw.example", True),
    ("CN=gw,O=Gateway Lab", True),
    ("cn=GW, o=gateway lab", True),
    ("%any", True),
    ("192.0.2.2", False),
    ("other.example", False),
    ("gw", False),  # the subject CN is not a dNSName
    ("root@gw.example", False),
    ("O=Gateway Lab,CN=gw", False),
    ("CN=gw", False),
    ("@#0102", False),
])
def test_identity_in_certificate(lab: Lab, identity: str, expected: bool) -> None:
    assert identity_in_certificate(lab.leaf.certificate, Identity.parse(identity)) is expected


def test_subject_cn_and_email_are_not_fqdn_or_email_identities(lab: Lab) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpn.example"),
                         x509.NameAttribute(NameOID.EMAIL_ADDRESS, "vpn@example.org")])
    key = ec.generate_private_key(ec.SECP256R1())
    base = (x509.CertificateBuilder().subject_name(subject).issuer_name(lab.inter.certificate.subject)
            .public_key(key.public_key()).serial_number(1).not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=1)))
    no_san = base.sign(lab.inter.private_key(), hashes.SHA256())
    with_san = base.add_extension(x509.SubjectAlternativeName([x509.DNSName("other.example")]),
                                  critical=False).sign(lab.inter.private_key(), hashes.SHA256())
    for cert in (no_san, with_san):
        assert not identity_in_certificate(cert, Identity.parse("vpn.example"))
        assert not identity_in_certificate(cert, Identity.parse("vpn@example.org"))
        assert identity_in_certificate(cert, Identity.parse("CN=vpn.example, E=vpn@example.org"))


def test_key_id_identity(lab: Lab) -> None:
    cert = lab.leaf.certificate
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert identity_in_certificate(cert, Identity(IdType.KEY_ID, ski))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert identity_in_certificate(cert, Identity(IdType.KEY_ID, hashlib.sha1(spki).digest()))


def test_check_identity_message(lab: Lab) -> None:
    check_identity(lab.leaf.certificate, Identity.parse("gw.example"))
    with pytest.raises(CertificateRejected) as info:
        check_identity(lab.leaf.certificate, Identity.parse("vpn.example"))
    assert info.value.reason == "identity_mismatch"
    assert str(info.value) == ("certificate CN=gw,O=Gateway Lab: identity vpn.example not in its "
                               "subjectAltName")


# --------------------------------------------------------------------------------------
# Cross-checks: openssl, and the pki command line
# --------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Lab], tuple[Issued, list[Issued]]]] = {
    "good": lambda lab: (lab.leaf, [lab.inter]),
    "missing intermediate": lambda lab: (lab.leaf, []),
    "untrusted root": lambda lab: (lab.rogue_leaf, [lab.rogue_root]),
    "expired": lambda lab: (lab.expired, [lab.inter]),
    "not yet valid": lambda lab: (lab.future, [lab.inter]),
    "wrong signature": lambda lab: (lab.impostor_leaf, [lab.inter]),
    "intermediate not a CA": lambda lab: (lab.under_not_a_ca, [lab.not_a_ca, lab.inter]),
}


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_openssl_verify_agrees(lab: Lab, tmp_path: Path, case: str) -> None:
    leaf, intermediates = CASES[case](lab)
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(b"".join(i.cert_path.read_bytes() for i in intermediates))
    args = [OPENSSL, "verify", "-CAfile", str(lab.root.cert_path)]
    if intermediates:
        args += ["-untrusted", str(untrusted)]
    proc = subprocess.run([*args, str(leaf.cert_path)], capture_output=True, text=True, check=False)
    try:
        lab.store.validate(leaf.certificate, [i.certificate for i in intermediates], datetime.now(UTC))
        ours = True
    except CertificateRejected:
        ours = False
    assert ours == (proc.returncode == 0), proc.stdout + proc.stderr
    assert ours is (case == "good")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_shows_what_pki_wrote(lab: Lab) -> None:
    text = subprocess.run([OPENSSL, "x509", "-in", str(lab.leaf.cert_path), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:192.0.2.1, IP Address:2001:DB8:0:0:0:0:0:1, DNS:gw.example, email:ops@gw.example" \
        in text
    assert "Subject: CN = gw, O = Gateway Lab" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature" in text
    assert "CA:FALSE" in text and "Extended Key Usage" not in text
    ca_text = subprocess.run([OPENSSL, "x509", "-in", str(lab.strict_root.cert_path), "-noout", "-text"],
                             capture_output=True, text=True, check=True).stdout
    assert "CA:TRUE, pathlen:0" in ca_text and "Certificate Sign, CRL Sign" in ca_text
    # The key file is PKCS#8, which strongSwan's pem + pkcs8 plugins read.
    assert lab.leaf.key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    subprocess.run([OPENSSL, "pkey", "-in", str(lab.leaf.key_path), "-noout"], check=True)


def test_pki_command_line(tmp_path: Path) -> None:
    def pki(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "appliance.pki", *args], cwd=REPO,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    assert pki("ca", str(tmp_path), "CLI Root", "--kind", "ecdsa256") == [
        str(tmp_path / "CLI Root.crt"), str(tmp_path / "CLI Root.key")]
    pki("ca", str(tmp_path), "CLI Inter", "--issuer", "CLI Root", "--kind", "ecdsa384")
    pki("issue", str(tmp_path), "--ca", "CLI Inter", "edge", "--kind", "ecdsa256", "--ip", "198.51.100.1",
        "--dns", "edge.example", "--email", "noc@edge.example")
    assert stat.S_IMODE((tmp_path / "edge.key").stat().st_mode) == 0o600
    edge = Issued.load(tmp_path, "edge")
    store = TrustStore.from_files([tmp_path / "CLI Root.crt"])
    chain = store.validate(edge.certificate, [Issued.load(tmp_path, "CLI Inter").certificate], NOW)
    assert len(chain) == 3
    for ident in ("198.51.100.1", "edge.example", "noc@edge.example", "CN=edge,O=Gateway Lab"):
        assert identity_in_certificate(edge.certificate, Identity.parse(ident))

    proc = subprocess.run([sys.executable, "-m", "appliance.pki", "issue", str(tmp_path), "--ca", "nope",
                           "x"], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "nope.crt: cannot load the certificate" in proc.stderr


STRONGSWAN_PKI = shutil.which("pki")


@pytest.mark.skipif(STRONGSWAN_PKI is None, reason="strongSwan's pki tool is not installed")
def test_strongswan_reads_what_pki_wrote(lab: Lab) -> None:
    def pki(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([STRONGSWAN_PKI, *args], capture_output=True, text=True, check=False)

    shown = pki("--print", "--in", str(lab.leaf.cert_path)).stdout
    assert 'subject:  "CN=gw, O=Gateway Lab"' in shown
    assert "altNames:  192.0.2.1, 2001:db8::1, gw.example, ops@gw.example" in shown
    # strongSwan's DN text is ours, and its keyid is our CERTREQ hash (SHA-1 of the SPKI).
    subject = shown.split('subject:  "')[1].split('"')[0]
    assert Identity.parse(subject) == Identity.subject_of(lab.leaf.certificate)
    keyid = shown.split("keyid:")[1].split()[0].replace(":", "")
    assert TrustStore([lab.leaf.certificate]).certreq_hashes() == [bytes.fromhex(keyid)]
    for issued, kind in ((lab.leaf, "RSA 2048 bits"), (lab.inter, "ECDSA 256 bits")):
        key = pki("--print", "--type", "priv", "--in", str(issued.key_path))
        assert key.returncode == 0 and f"privkey:   {kind}" in key.stdout, key.stderr

    good = pki("--verify", "--in", str(lab.leaf.cert_path), "--cacert", str(lab.root.cert_path),
               "--cacert", str(lab.inter.cert_path))
    assert good.returncode == 0 and "certificate trusted" in good.stdout
    rogue = pki("--verify", "--in", str(lab.rogue_leaf.cert_path), "--cacert", str(lab.root.cert_path))
    assert rogue.returncode != 0 and "certificate untrusted" in rogue.stdout
