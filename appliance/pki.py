"""A small PKI for the lab and for operators: root and intermediate CAs, end-entity certificates.

Everything is made with `cryptography`.  Each certificate is written as ``NAME.crt`` (PEM) next
to its key ``NAME.key`` (unencrypted PKCS#8 PEM, mode 0600), a pair that strongSwan loads with
its ``pem``, ``x509`` and ``pkcs8`` plugins as well as the gateway itself.  Subjects read
``CN=<name>,O=Gateway Lab`` in the order written (the DER order, as strongSwan writes DNs).

End-entity certificates follow RFC 4945 5.1.3: the identities go into subjectAltName (IP
addresses, DNS names, e-mail addresses), keyUsage is digitalSignature, and there is no extended
key usage unless one is asked for.

    python -m appliance.pki ca DIR "Lab Root"
    python -m appliance.pki ca DIR "Lab Inter" --issuer "Lab Root" --kind ecdsa384
    python -m appliance.pki issue DIR --ca "Lab Inter" hq --ip 192.0.2.1 --dns hq.example
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["ORGANIZATION", "Issued", "Kind", "issue", "main", "make_ca"]

Kind = Literal["rsa", "ecdsa256", "ecdsa384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

ORGANIZATION = "Gateway Lab"
RSA_BITS = 2048
#: Backdating absorbs clock differences between the lab machines.
BACKDATE = timedelta(minutes=5)


@dataclass
class Issued:
    """A certificate on disk with its private key."""

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate

    @property
    def name(self) -> str:
        return self.cert_path.stem

    def private_key(self) -> PrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key_path}: not an RSA or EC key")
        return key

    @classmethod
    def load(cls, directory: str | os.PathLike[str], name: str) -> Issued:
        """The pair ``NAME.crt``/``NAME.key`` written earlier into `directory`."""
        cert_path, key_path = _paths(Path(directory), name)
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{cert_path}: cannot load the certificate ({exc})") from None
        if not key_path.exists():
            raise ValueError(f"{key_path}: the private key is missing")
        return cls(cert_path, key_path, cert)


def make_ca(directory: str | os.PathLike[str], name: str, *, kind: Kind = "rsa", days: int = 3650,
            issuer: Issued | None = None, path_length: int | None = None) -> Issued:
    """A CA: self-signed root when `issuer` is None, else an intermediate signed by `issuer`.

    basicConstraints cA=TRUE (critical, with `path_length` if given) and keyUsage
    keyCertSign + cRLSign (critical), RFC 5280 4.2.1.9 and 4.2.1.3.
    """
    key = _new_key(kind)
    subject = _subject(name)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        cert = _sign(builder.issuer_name(subject), key)
    else:
        builder = builder.issuer_name(issuer.certificate.subject).add_extension(
            _authority_key_id(issuer.certificate), critical=False)
        cert = _sign(builder, issuer.private_key())
    return _write(Path(directory), name, cert, key)


def issue(directory: str | os.PathLike[str], ca: Issued, name: str, *, kind: Kind = "rsa",
          san_ip: Sequence[str] = (), san_dns: Sequence[str] = (), san_email: Sequence[str] = (),
          days: int = 825, not_before: datetime | None = None, key_usage: bool = True,
          extended_key_usage: Sequence[x509.ObjectIdentifier] = ()) -> Issued:
    """An end-entity certificate for `name`, signed by `ca`.

    `key_usage` False leaves keyUsage out entirely (RFC 5280 allows it; IKE then accepts any
    use).  `not_before` (default: now, backdated a little) and `days` set the validity, so tests
    can make expired or not-yet-valid certificates.  Nothing stops `ca` from being a non-CA
    certificate: that is how tests build a chain with a bad intermediate.
    """
    key = _new_key(kind)
    start = not_before if not_before is not None else datetime.now(UTC) - BACKDATE
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in san_ip]
    names += [x509.DNSName(d) for d in san_dns]
    names += [x509.RFC822Name(e) for e in san_email]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca.certificate), critical=False)
    )
    if key_usage:
        builder = builder.add_extension(_key_usage(digital_signature=True), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
    cert = _sign(builder, ca.private_key())
    return _write(Path(directory), name, cert, key)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _new_key(kind: Kind) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if kind == "ecdsa256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unknown key kind {kind!r} (known: {', '.join(get_args(Kind))})")


def _subject(name: str) -> x509.Name:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"{name!r} is not usable as a certificate and file name")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _sign(builder: x509.CertificateBuilder, signer: PrivateKey) -> x509.Certificate:
    """Sign with SHA-384 for a P-384 signer, SHA-256 otherwise (RFC 5758 3.2 pairing)."""
    digest: hashes.HashAlgorithm = hashes.SHA256()
    if isinstance(signer, ec.EllipticCurvePrivateKey) and signer.curve.key_size >= 384:
        digest = hashes.SHA384()
    return builder.sign(signer, digest)


def _paths(directory: Path, name: str) -> tuple[Path, Path]:
    _subject(name)  # validates the name
    return directory / f"{name}.crt", directory / f"{name}.key"


def _write(directory: Path, name: str, cert: x509.Certificate, key: PrivateKey) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = _paths(directory, name)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file was already there
        os.write(fd, pem)
    finally:
        os.close(fd)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_path, key_path, cert)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.pki", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kinds = list(get_args(Kind))

    ca = sub.add_parser("ca", help="make a root CA, or an intermediate with --issuer")
    ca.add_argument("directory", type=Path)
    ca.add_argument("name")
    ca.add_argument("--kind", choices=kinds, default="rsa")
    ca.add_argument("--days", type=int, default=3650)
    ca.add_argument("--issuer", metavar="CA_NAME", help="sign with this CA (from DIRECTORY)")
    ca.add_argument("--path-length", type=int, default=None)

    ee = sub.add_parser("issue", help="issue an end-entity certificate")
    ee.add_argument("directory", type=Path)
    ee.add_argument("--ca", required=True, metavar="CA_NAME", help="the issuing CA (from DIRECTORY)")
    ee.add_argument("name")
    ee.add_argument("--kind", choices=kinds, default="rsa")
    ee.add_argument("--days", type=int, default=825)
    ee.add_argument("--ip", action="append", default=[], help="subjectAltName IP address (repeatable)")
    ee.add_argument("--dns", action="append", default=[], help="subjectAltName DNS name (repeatable)")
    ee.add_argument("--email", action="append", default=[], help="subjectAltName e-mail (repeatable)")

    args = parser.parse_args(argv)
    try:
        if args.command == "ca":
            issuer = Issued.load(args.directory, args.issuer) if args.issuer else None
            made = make_ca(args.directory, args.name, kind=args.kind, days=args.days, issuer=issuer,
                           path_length=args.path_length)
        else:
            made = issue(args.directory, Issued.load(args.directory, args.ca), args.name,
                         kind=args.kind, days=args.days, san_ip=args.ip, san_dns=args.dns,
                         san_email=args.email)
    except ValueError as exc:
        print(f"pki: {exc}", file=sys.stderr)
        return 1
    print(made.cert_path)
    print(made.key_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
