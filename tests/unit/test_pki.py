"""`gateway pki`: CAs, gateway and client profiles, PKCS#12 bundles, list/show; checked with
cryptography, openssl, strongSwan's pki tool and the gateway's own IKE certificate code."""

from __future__ import annotations

import hashlib
import os
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
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance import bundle, pki
from appliance.pki import IKE_INTERMEDIATE, IPSEC_IKE, Issued
from gateway.cli import main as gateway_main
from gateway.config.model import CertAuth
from gateway.ike import signatures
from gateway.ike.certs import TrustStore, load_private_key, peer_certificate
from gateway.ike.identity import Identity
from gateway.ike.v2.fromconfig import load_auth

REPO = Path(__file__).resolve().parents[2]
OPENSSL = shutil.which("openssl")
STRONGSWAN_PKI = shutil.which("pki")
PASSWORD = "Tr0ub4dor&3-horse-battery"
ROOT, ISSUING, GATEWAY, ALICE, LAPTOP = "VPN Root CA", "VPN Issuing CA", "vpn.example.com", "alice", "laptop"


def gateway(*args: str | Path) -> None:
    """`gateway ARGS` in this process; it must succeed."""
    assert gateway_main([str(a) for a in args]) == 0


def run_gateway(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` as its own process (what an operator runs)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "gateway", *map(str, args)], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, check=False, timeout=60)


@dataclass
class Lab:
    kind: str
    dir: Path
    root: Issued
    issuing: Issued
    gateway: Issued
    alice: Issued
    laptop: Issued
    password_file: Path
    p12: Path
    pem: Path


def make_lab(base: Path, kind: str) -> Lab:
    d = base / "pki"
    gateway("pki", "ca", d, ROOT, "--kind", kind)
    gateway("pki", "ca", d, ISSUING, "--issuer", ROOT, "--kind", kind)
    gateway("pki", "issue", d, "--ca", ISSUING, GATEWAY, "--gateway", "--dns", GATEWAY, "--ip", "192.0.2.1",
            "--ip", "2001:db8::1", "--kind", kind)
    gateway("pki", "issue", d, "--ca", ISSUING, ALICE, "--client", "--email", "alice@example.com",
            "--kind", kind)
    gateway("pki", "issue", d, "--ca", ISSUING, LAPTOP, "--client", "--dns", "laptop.corp.example",
            "--kind", kind)
    password_file = base / "password.txt"
    password_file.write_text(PASSWORD + "\n")
    p12 = base / "out" / "alice.p12"
    gateway("pki", "bundle", d, "--ca", ISSUING, ALICE, p12, "--password-file", password_file,
            "--pem", base / "pem")
    return Lab(kind, d, *(Issued.load(d, n) for n in (ROOT, ISSUING, GATEWAY, ALICE, LAPTOP)),
               password_file, p12, base / "pem")


@pytest.fixture(scope="module", params=["rsa", "ecdsa256"])
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return make_lab(tmp_path_factory.mktemp(f"pki-{request.param}"), request.param)


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def sans(cert: x509.Certificate) -> list[str]:
    return [f"{type(n).__name__}:{n.value}" for n in ext(cert, x509.SubjectAlternativeName).value]


# -- profiles -----------------------------------------------------------------------------------
def test_gateway_profile(lab: Lab) -> None:
    cert = lab.gateway.certificate
    assert ext(cert, x509.BasicConstraints).critical and not ext(cert, x509.BasicConstraints).value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert ku.value.key_encipherment is (lab.kind == "rsa")  # never for EC keys (RFC 5480 3)
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.content_commitment)
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE, IPSEC_IKE]
    assert IKE_INTERMEDIATE.dotted_string == "1.3.6.1.5.5.8.2.2"
    assert ExtendedKeyUsageOID.SERVER_AUTH.dotted_string == "1.3.6.1.5.5.7.3.1"
    # The IPv4 address also as a dNSName (Windows), the IPv6 one only as an iPAddress.
    assert sans(cert) == ["IPAddress:192.0.2.1", "IPAddress:2001:db8::1", "DNSName:vpn.example.com",
                          "DNSName:192.0.2.1"]
    assert cert.subject.rfc4514_string() == "O=Gateway Lab,CN=vpn.example.com"
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(lab.issuing.certificate, x509.SubjectKeyIdentifier).value.digest


def test_client_profile(lab: Lab) -> None:
    for issued, names in ((lab.alice, ["RFC822Name:alice@example.com"]),
                          (lab.laptop, ["DNSName:laptop.corp.example"])):
        cert = issued.certificate
        assert not ext(cert, x509.BasicConstraints).value.ca
        assert ext(cert, x509.KeyUsage).value.digital_signature
        eku = ext(cert, x509.ExtendedKeyUsage)
        assert not eku.critical
        assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH, IKE_INTERMEDIATE, IPSEC_IKE]
        assert sans(cert) == names


def test_ca_profile_and_keys(lab: Lab) -> None:
    for ca, path_len in ((lab.root, None), (lab.issuing, None)):
        bc = ext(ca.certificate, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == path_len
        ku = ext(ca.certificate, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert lab.root.certificate.subject == lab.root.certificate.issuer
    assert lab.issuing.certificate.issuer == lab.root.certificate.subject
    for issued in (lab.root, lab.issuing, lab.gateway, lab.alice):
        key = issued.certificate.public_key()
        if lab.kind == "rsa":
            assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert isinstance(issued.certificate.signature_hash_algorithm, hashes.SHA256)


@pytest.mark.parametrize(("kind", "check"), [
    ("rsa3072", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 3072),
    ("rsa4096", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 4096),
    ("ecdsa384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1"),
])
def test_other_key_kinds(tmp_path: Path, kind: str, check: Callable[[object], bool]) -> None:
    gateway("pki", "ca", tmp_path, "Root", "--kind", "ecdsa384")
    gateway("pki", "issue", tmp_path, "--ca", "Root", "gw", "--gateway", "--dns", "gw.example",
            "--kind", kind)
    cert = Issued.load(tmp_path, "gw").certificate
    assert check(cert.public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)  # signed by the P-384 root
    assert ext(cert, x509.KeyUsage).value.key_encipherment is kind.startswith("rsa")


def test_validity_defaults_and_cap(tmp_path: Path) -> None:
    gateway("pki", "ca", tmp_path, "Short CA", "--kind", "ecdsa256", "--days", "30")
    gateway("pki", "issue", tmp_path, "--ca", "Short CA", "gw", "--gateway", "--ip", "192.0.2.9",
            "--kind", "ecdsa256")
    ca, gw = (Issued.load(tmp_path, n).certificate for n in ("Short CA", "gw"))
    assert gw.not_valid_after_utc <= ca.not_valid_after_utc  # 825 days asked, capped at the CA's
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(days=30, minutes=5)
    gateway("pki", "ca", tmp_path, "Long CA", "--kind", "ecdsa256")
    gateway("pki", "issue", tmp_path, "--ca", "Long CA", "gw2", "--gateway", "--ip", "192.0.2.9",
            "--kind", "ecdsa256")
    gw2 = Issued.load(tmp_path, "gw2").certificate
    assert gw2.not_valid_after_utc - gw2.not_valid_before_utc == timedelta(days=825)
    assert gw2.not_valid_before_utc < datetime.now(UTC) < gw2.not_valid_after_utc


def test_organization(tmp_path: Path) -> None:
    gateway("pki", "ca", tmp_path, "Acme Root", "--org", "Acme Corp", "--kind", "ecdsa256")
    gateway("pki", "ca", tmp_path, "Acme Issuing", "--issuer", "Acme Root", "--kind", "ecdsa256")
    gateway("pki", "issue", tmp_path, "--ca", "Acme Issuing", "bob", "--client",
            "--email", "bob@acme.example", "--kind", "ecdsa256")
    assert Issued.load(tmp_path, "bob").certificate.subject.rfc4514_string() == "O=Acme Corp,CN=bob"


# -- openssl, strongSwan and the gateway's own IKE code accept them --------------------------------
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_verifies_the_chains(lab: Lab) -> None:
    def verify(cert: Issued, purpose: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OPENSSL), "verify", "-CAfile", str(lab.root.cert_path), "-untrusted",
                               str(lab.issuing.cert_path), "-purpose", purpose, str(cert.cert_path)],
                              capture_output=True, text=True, check=False)

    for cert, purpose in ((lab.gateway, "sslserver"), (lab.alice, "sslclient"), (lab.laptop, "sslclient")):
        proc = verify(cert, purpose)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr
    # The profiles differ: a client certificate is no server's, and the other way round.
    assert verify(lab.alice, "sslserver").returncode != 0
    assert verify(lab.gateway, "sslclient").returncode != 0
    for issued in (lab.root, lab.gateway, lab.alice):  # the keys are PKCS#8, openssl reads them
        assert issued.key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
        subprocess.run([str(OPENSSL), "pkey", "-in", str(issued.key_path), "-noout"], check=True)


@pytest.mark.skipif(STRONGSWAN_PKI is None, reason="strongSwan's pki tool is not installed")
def test_strongswan_pki_reads_them(lab: Lab) -> None:
    def show(path: Path) -> str:
        proc = subprocess.run([str(STRONGSWAN_PKI), "--print", "--in", str(path)], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    text = show(lab.gateway.cert_path)
    assert 'subject:  "CN=vpn.example.com, O=Gateway Lab"' in text
    assert "altNames:  192.0.2.1, 2001:db8::1, vpn.example.com, 192.0.2.1" in text
    assert "flags:     serverAuth ikeIntermediate" in text
    text = show(lab.alice.cert_path)
    assert "altNames:  alice@example.com" in text and "flags:     clientAuth ikeIntermediate" in text
    assert "CA" in show(lab.issuing.cert_path).split("flags:")[1].splitlines()[0]
    proc = subprocess.run([str(STRONGSWAN_PKI), "--verify", "--in", str(lab.gateway.cert_path), "--cacert",
                           str(lab.root.cert_path), "--cacert", str(lab.issuing.cert_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "certificate trusted" in proc.stdout, proc.stdout + proc.stderr


def test_gateway_loads_and_validates_them_as_for_ike(lab: Lab, tmp_path: Path) -> None:
    """The daemon's path: cert auth config -> LoadedAuth; the peer's: CERT payloads -> validated
    certificate with the claimed identity; then an AUTH signature made and checked."""
    chain = tmp_path / "gw-chain.pem"
    chain.write_bytes(lab.gateway.cert_path.read_bytes() + lab.issuing.cert_path.read_bytes())
    loaded = load_auth(CertAuth(method="cert", cert=str(chain), key=str(lab.gateway.key_path),
                                ca=[str(lab.root.cert_path)]))
    assert loaded.certificate == lab.gateway.certificate
    assert loaded.intermediates == (lab.issuing.certificate,)
    now = datetime.now(UTC)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in (loaded.certificate, *loaded.intermediates)]
    for identity in ("vpn.example.com", "192.0.2.1", "2001:db8::1", "CN=vpn.example.com,O=Gateway Lab"):
        assert peer_certificate(loaded.trust, Identity.parse(identity), ders, now) == lab.gateway.certificate
    octets = b"IKE_AUTH octets" * 8
    method, data = signatures.sign(loaded.private_key, octets, method=signatures.AuthMethod.DIGITAL_SIGNATURE,
                                   peer_hashes=[signatures.HashAlgorithm.SHA2_256])
    assert signatures.verify(lab.gateway.certificate.public_key(), octets, method, data,  # type: ignore[arg-type]
                             our_hashes=[signatures.HashAlgorithm.SHA2_256])
    # The client side: the gateway validates alice's certificate from the PEM export.
    trust = TrustStore.from_files([lab.pem / "alice-ca.crt"])
    alice_ders = [lab.alice.certificate.public_bytes(serialization.Encoding.DER),
                  lab.issuing.certificate.public_bytes(serialization.Encoding.DER)]
    for identity in ("alice@example.com", "CN=alice,O=Gateway Lab"):
        assert peer_certificate(trust, Identity.parse(identity), alice_ders, now) == lab.alice.certificate
    assert isinstance(load_private_key(lab.alice.key_path), rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)


# -- bundles ------------------------------------------------------------------------------------
def test_bundle_round_trips(lab: Lab) -> None:
    assert stat.S_IMODE(lab.p12.stat().st_mode) == 0o600
    loaded = pkcs12.load_pkcs12(lab.p12.read_bytes(), PASSWORD.encode())
    assert loaded.cert is not None and loaded.cert.certificate == lab.alice.certificate
    assert loaded.cert.friendly_name == b"alice"
    assert loaded.key is not None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert loaded.key.public_key().public_bytes(*spki) == \
        lab.alice.certificate.public_key().public_bytes(*spki)
    assert [c.certificate for c in loaded.additional_certs] == [lab.issuing.certificate, lab.root.certificate]
    assert [c.friendly_name for c in loaded.additional_certs] == [ISSUING.encode(), ROOT.encode()]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(lab.p12.read_bytes(), b"not the password")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_openssl_reads_the_bundle(lab: Lab, tmp_path: Path) -> None:
    def info(p12: Path, password_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(OPENSSL), "pkcs12", "-info", "-nokeys", "-in", str(p12), "-passin",
                               f"file:{password_file}"], capture_output=True, text=True, check=False)

    proc = info(lab.p12, lab.password_file)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("Certificate bag") == 3 and "friendlyName: alice" in out
    assert f"friendlyName: {ISSUING}" in out and f"friendlyName: {ROOT}" in out
    assert "localKeyID:" in out  # ties the key to its certificate (Windows needs it)
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 50000" in out
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC" in out and "MAC: sha1" in out
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the password\n")
    assert info(lab.p12, wrong).returncode != 0

    modern = tmp_path / "alice-aes.p12"
    gateway("pki", "bundle", lab.dir, "--ca", ISSUING, ALICE, modern, "--password-file", lab.password_file,
            "--encryption", "aes256")
    proc = info(modern, lab.password_file)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "PBES2, PBKDF2, AES-256-CBC" in out and "MAC: sha256" in out


def test_pem_export(lab: Lab) -> None:
    cert, key, chain = (lab.pem / f"alice{suffix}" for suffix in (".crt", ".key", "-ca.crt"))
    assert x509.load_pem_x509_certificate(cert.read_bytes()) == lab.alice.certificate
    cas = x509.load_pem_x509_certificates(chain.read_bytes())
    assert cas == [lab.issuing.certificate, lab.root.certificate]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    with pytest.raises(TypeError):  # encrypted: no password, no key
        serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert serialization.load_pem_private_key(key.read_bytes(), password=PASSWORD.encode())


def test_password_never_shown(lab: Lab, tmp_path: Path) -> None:
    """From a file, from standard input, and in the error paths: never on stdout or stderr."""
    seen = []
    proc = run_gateway("pki", "bundle", lab.dir, "--ca", ISSUING, ALICE, tmp_path / "a.p12",
                       "--password-file", lab.password_file)
    seen.append(proc)
    assert proc.returncode == 0, proc.stderr
    proc = run_gateway("pki", "bundle", lab.dir, "--ca", ISSUING, ALICE, tmp_path / "b.p12",
                       "--password-file", "-", stdin=PASSWORD + "\n")
    seen.append(proc)
    assert proc.returncode == 0, proc.stderr
    assert pkcs12.load_pkcs12((tmp_path / "b.p12").read_bytes(), PASSWORD.encode()).cert is not None
    # Refusals: the file exists; a short password; a wrong CA; no terminal and no password file.
    for args, stdin, message in (
            (("--password-file", "-"), PASSWORD, "already exists"),
            (("--password-file", "-"), PASSWORD[:5], "shorter than 8"),
            (("--password-file", "-"), "pässwörd-" + PASSWORD, "must be ASCII"),
            ((), PASSWORD, "no terminal")):
        out = tmp_path / ("b.p12" if message == "already exists" else "c.p12")
        proc = run_gateway("pki", "bundle", lab.dir, "--ca", ISSUING, ALICE, out, *args, stdin=stdin)
        seen.append(proc)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    proc = run_gateway("pki", "bundle", lab.dir, "--ca", ROOT, ALICE, tmp_path / "d.p12",
                       "--password-file", "-", stdin=PASSWORD)
    seen.append(proc)
    assert proc.returncode == 1 and "was not issued by" in proc.stderr
    for proc in seen:
        for fragment in (PASSWORD, PASSWORD[:5], "horse-battery"):
            assert fragment not in proc.stdout + proc.stderr
    assert not (tmp_path / "c.p12").exists() and not (tmp_path / "d.p12").exists()


def test_password_prompt(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "something else"])
    monkeypatch.setattr(bundle.getpass, "getpass", lambda prompt: next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    gateway("pki", "bundle", lab.dir, "--ca", ISSUING, ALICE, tmp_path / "p.p12")
    assert pkcs12.load_pkcs12((tmp_path / "p.p12").read_bytes(), PASSWORD.encode()).key is not None
    assert gateway_main(["pki", "bundle", str(lab.dir), "--ca", ISSUING, ALICE, str(tmp_path / "q.p12")]) == 1
    out = capsys.readouterr()
    assert "the two passwords differ" in out.err and PASSWORD not in out.out + out.err


def test_bundle_refuses_ca_keys_and_foreign_keys(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="CA certificate: a CA's key is never exported"):
        bundle.load_material(lab.dir, ROOT, ISSUING)
    other = tmp_path / "other"
    shutil.copytree(lab.dir, other)
    shutil.copy(other / "laptop.key", other / "alice.key")
    with pytest.raises(pki.PkiError, match="is not the private key of"):
        bundle.load_material(other, ISSUING, ALICE)


# -- files --------------------------------------------------------------------------------------
def test_file_modes(lab: Lab, tmp_path: Path) -> None:
    assert stat.S_IMODE(lab.dir.stat().st_mode) == 0o700  # created by `pki ca`
    for issued in (lab.root, lab.issuing, lab.gateway, lab.alice):
        assert stat.S_IMODE(issued.key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(issued.cert_path.stat().st_mode) == 0o644
    assert not [p for p in lab.dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    gateway("pki", "ca", existing, "CA", "--kind", "ecdsa256")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an existing directory is left as it is
    old = os.umask(0o000)
    try:
        gateway("pki", "ca", tmp_path / "a" / "b", "CA", "--kind", "ecdsa256")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "CA.key").stat().st_mode) == 0o600


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway("pki", "ca", tmp_path, "CA", "--kind", "ecdsa256")
    gateway("pki", "issue", tmp_path, "--ca", "CA", "gw", "--gateway", "--dns", "gw.example",
            "--kind", "ecdsa256")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert gateway_main(["pki", "ca", str(tmp_path), "CA", "--kind", "ecdsa256"]) == 1
    assert gateway_main(["pki", "issue", str(tmp_path), "--ca", "CA", "gw", "--client",
                         "--dns", "x.example"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'CA.crt'} already exists; not replaced (--force replaces it)" in err
    assert "gw.crt already exists" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # A lone key (a crash between the two files) blocks a new certificate too.
    (tmp_path / "lone.key").write_bytes(b"")
    assert gateway_main(["pki", "issue", str(tmp_path), "--ca", "CA", "lone", "--client",
                         "--dns", "x.example"]) == 1
    assert not (tmp_path / "lone.crt").exists()
    # --force replaces both files.
    gateway("pki", "issue", tmp_path, "--ca", "CA", "gw", "--client", "--dns", "x.example", "--force",
            "--kind", "ecdsa256")
    assert (tmp_path / "gw.key").read_bytes() != before["gw.key"]
    eku = ext(Issued.load(tmp_path, "gw").certificate, x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku
    # The lab's bare tool refuses as well.
    proc = subprocess.run([sys.executable, "-m", "appliance.pki", "ca", str(tmp_path), "CA"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "already exists" in proc.stderr


def test_write_file_never_clobbers(tmp_path: Path) -> None:
    target = tmp_path / "f"
    pki.write_file(target, b"one", mode=0o600, overwrite=False)
    with pytest.raises(pki.PkiError, match="already exists"):
        pki.write_file(target, b"two", mode=0o600, overwrite=False)
    assert target.read_bytes() == b"one"
    pki.write_file(target, b"three", mode=0o640, overwrite=True)
    assert target.read_bytes() == b"three" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize(("args", "message"), [
    (("--gateway",), "needs --dns and/or --ip"),
    (("--client",), "needs --email, --dns or --ip"),
    (("--gateway", "--dns", "gw.example", "--email", "a@example.com"), "--email is for client certificates"),
    (("--gateway", "--ip", "192.0.2.300"), "is not an IP address"),
    (("--gateway", "--dns", "not a name"), "is not a host name"),
    (("--client", "--email", "nobody"), "is not an e-mail address"),
    (("--client", "--email", "a@example.com", "--days", "0"), "--days must be at least 1"),
])
def test_profile_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                          message: str) -> None:
    gateway("pki", "ca", tmp_path, "CA", "--kind", "ecdsa256")
    capsys.readouterr()
    assert gateway_main(["pki", "issue", str(tmp_path), "--ca", "CA", "x", *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.key").exists() and not (tmp_path / "x.crt").exists()


def test_issuer_must_be_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway("pki", "ca", tmp_path, "CA", "--kind", "ecdsa256")
    gateway("pki", "issue", tmp_path, "--ca", "CA", "gw", "--gateway", "--dns", "gw.example",
            "--kind", "ecdsa256")
    capsys.readouterr()
    assert gateway_main(["pki", "issue", str(tmp_path), "--ca", "gw", "x", "--client",
                         "--dns", "x.example"]) == 1
    assert gateway_main(["pki", "ca", str(tmp_path), "Sub", "--issuer", "gw"]) == 1
    assert gateway_main(["pki", "issue", str(tmp_path), "--ca", "nope", "x", "--client",
                         "--dns", "x.example"]) == 1
    err = capsys.readouterr().err
    assert err.count("not a CA certificate") == 2 and "nope.crt: cannot load the certificate" in err


def test_profile_needs_a_choice() -> None:
    with pytest.raises(SystemExit):
        gateway_main(["pki", "issue", "/nonexistent", "--ca", "CA", "x", "--dns", "x.example"])


# -- list and show ------------------------------------------------------------------------------
def test_list_and_show(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    gateway("pki", "list", lab.dir)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0].strip() for line in lines] == [ROOT, ISSUING, ALICE, LAPTOP, GATEWAY]
    assert "root CA" in lines[0] and "intermediate CA" in lines[1]
    assert "client" in lines[2] and "email:alice@example.com" in lines[2]
    assert "gateway" in lines[4] and "DNS:vpn.example.com" in lines[4] and "IP:192.0.2.1" in lines[4]
    assert "824 days left" in lines[4] or "825 days left" in lines[4]

    gateway("pki", "show", lab.dir, GATEWAY)
    out = capsys.readouterr().out
    der = lab.gateway.certificate.public_bytes(serialization.Encoding.DER)
    expect = {
        "subject": "CN=vpn.example.com,O=Gateway Lab",
        "issuer": "CN=VPN Issuing CA,O=Gateway Lab",
        "ext. usage": "serverAuth, ikeIntermediate, ipsecIKE",
        "alt. names": "IP:192.0.2.1, IP:2001:db8::1, DNS:vpn.example.com, DNS:192.0.2.1",
        "key usage": "digitalSignature, keyEncipherment" if lab.kind == "rsa" else "digitalSignature",
        "basic": "not a CA",
        "SHA-256": ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()),
        "SHA-1": ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest()),
        "private key": f"{GATEWAY}.key (mode 0600)",
    }
    shown = {line[:13].strip(): line[13:] for line in out.splitlines()}
    for key, value in expect.items():
        assert shown[key] == value, (key, out)
    # Names, usages and fingerprints only: no key material anywhere.
    key_pem = lab.gateway.key_path.read_text()
    body = "".join(key_pem.splitlines()[1:-1])
    assert "PRIVATE KEY" not in out and body[:40] not in out


def test_list_empty_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gateway("pki", "list", tmp_path)
    assert "no certificates in" in capsys.readouterr().out
    assert gateway_main(["pki", "list", str(tmp_path / "nope")]) == 1
    assert gateway_main(["pki", "show", str(tmp_path), "nope"]) == 1
    err = capsys.readouterr().err
    assert "no such directory" in err and "cannot load the certificate" in err
