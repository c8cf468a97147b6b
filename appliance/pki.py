"""A small PKI for operators and for the lab: CAs, gateway and client certificates, an inventory.

Everything is made with `cryptography`.  Each certificate is written as ``NAME.crt`` (PEM) next
to its key ``NAME.key`` (unencrypted PKCS#8 PEM, mode 0600), a pair that strongSwan loads with
its ``pem``, ``x509`` and ``pkcs8`` plugins as well as the gateway itself.  Files are written
atomically (a temporary file renamed into place), a directory this module creates is mode 0700,
and with ``overwrite=False`` an existing file is never replaced.  Subjects read
``CN=<name>,O=<organization>`` in the order written (the DER order, as strongSwan writes DNs).

Two kinds of end-entity certificate:

* `issue` is the bare RFC 4945 5.1.3 profile the tests build on: identities in subjectAltName
  (IP addresses, DNS names, e-mail addresses), keyUsage digitalSignature, no extended key usage
  unless one is asked for.
* `issue_gateway` and `issue_client` add what real clients insist on (Windows' IKEv2 client
  above all); their docstrings say what and cite why.

Operators use ``gateway pki`` (gateway/cli.py), which also exports client bundles
(`appliance.bundle`).  ``python -m appliance.pki`` is the lab's bare tool:

    python -m appliance.pki ca DIR "Lab Root"
    python -m appliance.pki ca DIR "Lab Inter" --issuer "Lab Root" --kind ecdsa384
    python -m appliance.pki issue DIR --ca "Lab Inter" hq --ip 192.0.2.1 --dns hq.example
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.ike.identity import Identity, IdType, dn_text

__all__ = [
    "CLIENT_EKU",
    "GATEWAY_EKU",
    "IKE_INTERMEDIATE",
    "IPSEC_IKE",
    "ORGANIZATION",
    "CertificateInfo",
    "Issued",
    "Kind",
    "PkiError",
    "certificate_info",
    "chain_to_root",
    "ensure_directory",
    "inventory",
    "issue",
    "issue_client",
    "issue_gateway",
    "main",
    "make_ca",
    "write_file",
]

Kind = Literal["rsa", "rsa3072", "rsa4096", "ecdsa256", "ecdsa384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

ORGANIZATION = "Gateway Lab"
#: Key sizes of the RSA kinds; "rsa" is 2048 bits.
RSA_BITS: dict[str, int] = {"rsa": 2048, "rsa3072": 3072, "rsa4096": 4096}
#: Backdating absorbs clock differences between the lab machines.
BACKDATE = timedelta(minutes=5)

#: id-kp-ipsecIKE (RFC 4945 5.1.3.12): a peer that follows RFC 4945 to the letter rejects a
#: certificate whose EKU has neither this nor anyExtendedKeyUsage.
IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")
#: "IP security IKE intermediate" (Microsoft's szOID_IPSEC_KP_IKE_INTERMEDIATE).
IKE_INTERMEDIATE = x509.ObjectIdentifier("1.3.6.1.5.5.8.2.2")
GATEWAY_EKU = (ExtendedKeyUsageOID.SERVER_AUTH, IKE_INTERMEDIATE, IPSEC_IKE)
CLIENT_EKU = (ExtendedKeyUsageOID.CLIENT_AUTH, IKE_INTERMEDIATE, IPSEC_IKE)
EKU_NAMES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    IPSEC_IKE: "ipsecIKE",
    IKE_INTERMEDIATE: "ikeIntermediate",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


class PkiError(ValueError):
    """A request this module refuses, or a file it cannot use; the message names the file.

    Messages never carry key material or passwords.
    """


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
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except OSError as exc:
            raise PkiError(f"{self.key_path}: cannot read the private key ({exc.strerror})") from None
        except (ValueError, TypeError):
            raise PkiError(f"{self.key_path}: not an unencrypted PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.key_path}: not an RSA or EC key")
        return key

    @classmethod
    def load(cls, directory: str | os.PathLike[str], name: str) -> Issued:
        """The pair ``NAME.crt``/``NAME.key`` written earlier into `directory`."""
        cert_path, key_path = _paths(Path(directory), name)
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"{cert_path}: cannot load the certificate ({exc})") from None
        if not key_path.exists():
            raise PkiError(f"{key_path}: the private key is missing")
        return cls(cert_path, key_path, cert)


# --------------------------------------------------------------------------------------
# Issuing
# --------------------------------------------------------------------------------------


def make_ca(directory: str | os.PathLike[str], name: str, *, kind: Kind = "rsa", days: int = 3650,
            issuer: Issued | None = None, path_length: int | None = None,
            organization: str | None = None, overwrite: bool = True) -> Issued:
    """A CA: self-signed root when `issuer` is None, else an intermediate signed by `issuer`.

    basicConstraints cA=TRUE (critical, with `path_length` if given) and keyUsage
    keyCertSign + cRLSign (critical), RFC 5280 4.2.1.9 and 4.2.1.3.  `organization` defaults to
    the issuer's O (for an intermediate), else `ORGANIZATION`.  With `overwrite` False an
    existing ``NAME.crt`` or ``NAME.key`` is an error and nothing is written.
    """
    directory = Path(directory)
    _refuse_existing(directory, name, overwrite)
    _check_days(days)
    key = _new_key(kind)
    subject = _subject(name, organization or _organization_of(issuer))
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
        _check_is_ca(issuer)
        builder = builder.issuer_name(issuer.certificate.subject).add_extension(
            _authority_key_id(issuer.certificate), critical=False)
        cert = _sign(builder, issuer.private_key())
    return _write(directory, name, cert, key, overwrite=overwrite)


def issue(directory: str | os.PathLike[str], ca: Issued, name: str, *, kind: Kind = "rsa",
          san_ip: Sequence[str] = (), san_dns: Sequence[str] = (), san_email: Sequence[str] = (),
          days: int = 825, not_before: datetime | None = None, key_usage: bool = True,
          extended_key_usage: Sequence[x509.ObjectIdentifier] = (), key_encipherment: bool = False,
          organization: str | None = None, overwrite: bool = True) -> Issued:
    """An end-entity certificate for `name`, signed by `ca`.

    `key_usage` False leaves keyUsage out entirely (RFC 5280 allows it; IKE then accepts any
    use); `key_encipherment` adds that bit (RSA keys only).  `not_before` (default: now,
    backdated a little) and `days` set the validity, so tests can make expired or not-yet-valid
    certificates.  Nothing stops `ca` from being a non-CA certificate: that is how tests build a
    chain with a bad intermediate.  SAN entries are added in the order IP, DNS, e-mail.
    """
    directory = Path(directory)
    _refuse_existing(directory, name, overwrite)
    key = _new_key(kind)
    if key_encipherment and not isinstance(key, rsa.RSAPrivateKey):
        raise PkiError("keyEncipherment is for RSA keys only (RFC 5480 3)")
    start = not_before if not_before is not None else datetime.now(UTC) - BACKDATE
    names: list[x509.GeneralName] = [x509.IPAddress(_ip(a)) for a in san_ip]
    names += [x509.DNSName(d) for d in san_dns]
    names += [x509.RFC822Name(e) for e in san_email]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name, organization or _organization_of(ca)))
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
        builder = builder.add_extension(
            _key_usage(digital_signature=True, key_encipherment=key_encipherment), critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
    cert = _sign(builder, ca.private_key())
    return _write(directory, name, cert, key, overwrite=overwrite)


def issue_gateway(directory: str | os.PathLike[str], ca: Issued, name: str, *, dns: Sequence[str] = (),
                  ip: Sequence[str] = (), kind: Kind = "rsa", days: int = 825,
                  organization: str | None = None, overwrite: bool = False) -> Issued:
    """The gateway's own (server) certificate, for IKEv2 clients of every make and for peers.

    What is in it, and why:

    * subjectAltName: every DNS name in `dns` and every address in `ip`, the names clients dial.
      Windows' IKEv2 client compares the name in the connection's "server" field with the
      certificate, and so do macOS and iOS with their "Remote ID"; strongSwan's "Windows
      Certificate Requirements" recommends the subjectAltName over the subject DN (matching
      parts of a DN is not RFC 4945 compliant, and macOS and the strongSwan Android app need
      the SAN).  An IPv4 address goes in twice: as an iPAddress (RFC 4945 3.1.1, the entry IKE
      peers match an ID_IPV4_ADDR against) and as a dNSName with the address as text, because
      Windows clients dialing an address fail with error 13801 unless that form is present
      (same strongSwan page).  IPv6 addresses go in as iPAddress only (a colon is not valid in
      a dNSName).  At least one name is required.
    * extendedKeyUsage (not critical): serverAuth (1.3.6.1.5.5.7.3.1), which Windows requires
      of a VPN server's certificate (error 13801 "IKE authentication credentials are
      unacceptable" lists a missing EKU among its causes: Microsoft, "Troubleshooting IKEv2
      VPN Connections"); IP security IKE intermediate (1.3.6.1.5.5.8.2.2), which strongSwan's
      page says older macOS releases want; and id-kp-ipsecIKE (1.3.6.1.5.5.7.3.17), without
      which a peer applying RFC 4945 5.1.3.12 strictly rejects a certificate that has an EKU.
      Not critical: RFC 4945 5.1.3.12 would rather have no EKU at all in IKE certificates, so
      the extension must not constrain peers that do not know these purposes.
    * keyUsage (critical): digitalSignature, which IKE needs (RFC 4945 5.1.3.2; Microsoft's
      troubleshooting page names a server certificate without it as a cause of error 13806),
      plus keyEncipherment for an RSA key, as RSA server certificates conventionally carry it
      (IKE only signs, so it changes nothing there); an EC key must not have keyEncipherment
      (RFC 5480 3).
    * basicConstraints cA=FALSE (critical), subject and authority key identifiers.

    The validity (825 days by default: the limit Apple sets since iOS 13 and macOS 10.15 for
    certificates with serverAuth, which a gateway certificate may be held to) never reaches past
    the CA's own notAfter.
    """
    if not dns and not ip:
        raise PkiError("a gateway certificate needs --dns and/or --ip: the names clients dial "
                       "(Windows, macOS and iOS check the server's name against the certificate)")
    dns_names = [_dns(d) for d in dns]
    addresses = [_ip(a) for a in ip]
    dns_names += [str(a) for a in addresses if a.version == 4 and str(a) not in dns_names]
    return _issue_profile(directory, ca, name, kind=kind, days=days, organization=organization,
                          overwrite=overwrite, eku=GATEWAY_EKU, ip=[str(a) for a in addresses],
                          dns=dns_names, email=[])


def issue_client(directory: str | os.PathLike[str], ca: Issued, name: str, *, email: Sequence[str] = (),
                 dns: Sequence[str] = (), ip: Sequence[str] = (), kind: Kind = "rsa", days: int = 825,
                 organization: str | None = None, overwrite: bool = False) -> Issued:
    """A client (user or machine) certificate for IKE certificate authentication.

    * subjectAltName: the identity the client claims, an e-mail address (ID_RFC822_ADDR) for a
      user or a DNS name (ID_FQDN) for a machine, or an address; RFC 4945 3.1 puts these
      identities in the subjectAltName, and Apple's and Android's clients send the identity
      configured as their local ID, which must match the certificate.  At least one is required.
      Windows' machine-certificate connections send the subject DN (``CN=NAME,O=...``), which
      the gateway can match with a DN ``remote_id``.
    * extendedKeyUsage (not critical): clientAuth (1.3.6.1.5.5.7.3.2), the minimum Windows asks
      of a device certificate for IKEv2; IP security IKE intermediate (1.3.6.1.5.5.8.2.2), which
      makes Windows prefer this certificate when the machine store holds several with clientAuth
      (both from Richard Hicks' Always On VPN notes on error 13801); and id-kp-ipsecIKE for
      RFC 4945 5.1.3.12 peers (see `issue_gateway`).
    * keyUsage (critical): digitalSignature, plus keyEncipherment for an RSA key (as for the
      gateway); basicConstraints cA=FALSE.
    """
    if not email and not dns and not ip:
        raise PkiError("a client certificate needs --email, --dns or --ip: the identity the "
                       "client proves with it (RFC 4945 3.1)")
    return _issue_profile(directory, ca, name, kind=kind, days=days, organization=organization,
                          overwrite=overwrite, eku=CLIENT_EKU, ip=[str(_ip(a)) for a in ip],
                          dns=[_dns(d) for d in dns], email=[_email(e) for e in email])


def _issue_profile(directory: str | os.PathLike[str], ca: Issued, name: str, *, kind: Kind, days: int,
                   organization: str | None, overwrite: bool, eku: Sequence[x509.ObjectIdentifier],
                   ip: Sequence[str], dns: Sequence[str], email: Sequence[str]) -> Issued:
    _check_days(days)
    _check_is_ca(ca)
    start = datetime.now(UTC) - BACKDATE
    days_left = (ca.certificate.not_valid_after_utc - start) // timedelta(days=1)
    if days_left < 1:
        raise PkiError(f"{ca.cert_path}: the CA expires on {_date(ca.certificate.not_valid_after_utc)}; "
                       "it can no longer issue")
    return issue(directory, ca, name, kind=kind, san_ip=ip, san_dns=dns, san_email=email,
                 days=min(days, days_left), not_before=start, extended_key_usage=eku,
                 key_encipherment=kind.startswith("rsa"), organization=organization,
                 overwrite=overwrite)


# --------------------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator needs to know about a certificate; never any key material."""

    name: str
    path: Path
    role: str                      # "root CA", "intermediate CA", "gateway", "client", "end entity"
    subject: str                   # DER order, as strongSwan and `remote_id` write it: CN=x,O=y
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    key: str                       # "RSA 2048", "ECDSA P-256"
    san: tuple[str, ...]           # "DNS:vpn.example.com", "IP:192.0.2.1", "email:a@example.com"
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    ca: bool
    path_length: int | None
    sha256: str                    # colon-separated hex of the DER
    sha1: str                      # Windows' "Thumbprint"
    key_file: str                  # "NAME.key (mode 0600)" or "none"

    def validity(self, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        if now < self.not_before:
            return "not yet valid"
        if now > self.not_after:
            return "EXPIRED"
        return f"{(self.not_after - now).days} days left"

    def summary(self, now: datetime | None = None) -> str:
        """One line for `gateway pki list`."""
        names = ", ".join(self.san) or "-"
        return (f"{self.name:<24} {self.role:<16} {self.key:<12} until {_date(self.not_after)} "
                f"({self.validity(now)})  {names}")

    def lines(self, now: datetime | None = None) -> list[str]:
        """The detailed view of `gateway pki show`."""
        constraints = "not a CA"
        if self.ca:
            constraints = "CA" if self.path_length is None else f"CA, pathlen {self.path_length}"
        return [
            f"certificate  {self.path}",
            f"role         {self.role}",
            f"subject      {self.subject}",
            f"issuer       {self.issuer}",
            f"serial       {self.serial:x}",
            f"validity     {_when(self.not_before)} .. {_when(self.not_after)} ({self.validity(now)})",
            f"public key   {self.key}",
            f"basic        {constraints}",
            f"key usage    {', '.join(self.key_usage) or '(any: no keyUsage extension)'}",
            f"ext. usage   {', '.join(self.extended_key_usage) or '(none)'}",
            f"alt. names   {', '.join(self.san) or '(none)'}",
            f"SHA-256      {self.sha256}",
            f"SHA-1        {self.sha1}",
            f"private key  {self.key_file}",
        ]


def certificate_info(cert_path: str | os.PathLike[str]) -> CertificateInfo:
    """Read ``NAME.crt`` (and only look at whether ``NAME.key`` exists, and its mode)."""
    cert_path = Path(cert_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{cert_path}: cannot load the certificate ({exc})") from None
    bc = _extension(cert, x509.BasicConstraints)
    ku = _extension(cert, x509.KeyUsage)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    san = _extension(cert, x509.SubjectAlternativeName)
    is_ca = isinstance(bc, x509.BasicConstraints) and bc.ca
    purposes = list(eku) if isinstance(eku, x509.ExtendedKeyUsage) else []
    if is_ca:
        role = "root CA" if cert.subject == cert.issuer else "intermediate CA"
    elif ExtendedKeyUsageOID.SERVER_AUTH in purposes:
        role = "gateway"
    elif ExtendedKeyUsageOID.CLIENT_AUTH in purposes:
        role = "client"
    else:
        role = "end entity"
    key_path = cert_path.with_suffix(".key")
    try:
        key_file = f"{key_path.name} (mode {stat.S_IMODE(key_path.stat().st_mode):04o})"
    except OSError:
        key_file = "none"
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateInfo(
        name=cert_path.stem, path=cert_path, role=role, subject=dn_text(cert.subject.public_bytes()),
        issuer=dn_text(cert.issuer.public_bytes()), serial=cert.serial_number,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, key=_key_text(cert),
        san=tuple(_general_name(n) for n in san) if isinstance(san, x509.SubjectAlternativeName) else (),
        key_usage=_key_usage_names(ku) if isinstance(ku, x509.KeyUsage) else (),
        extended_key_usage=tuple(EKU_NAMES.get(p, p.dotted_string) for p in purposes),
        ca=is_ca, path_length=bc.path_length if isinstance(bc, x509.BasicConstraints) else None,
        sha256=_hex(hashlib.sha256(der).digest()), sha1=_hex(hashlib.sha1(der).digest()),
        key_file=key_file)


def inventory(directory: str | os.PathLike[str]) -> list[CertificateInfo]:
    """Every ``*.crt`` in `directory`: CAs first (roots, then intermediates), then by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PkiError(f"{directory}: no such directory")
    order = {"root CA": 0, "intermediate CA": 1}
    found = [certificate_info(p) for p in sorted(directory.glob("*.crt"))]
    return sorted(found, key=lambda i: (order.get(i.role, 2), i.name))


def chain_to_root(directory: str | os.PathLike[str], ca: Issued) -> list[x509.Certificate]:
    """`ca` and its issuers found in `directory`, up to a self-signed root (or as far as found).

    Each link is checked: the issuer's subject matches and its key verifies the signature.
    """
    chain = [ca.certificate]
    candidates = []
    for path in sorted(Path(directory).glob("*.crt")):
        with contextlib.suppress(OSError, ValueError):
            candidates.append(x509.load_pem_x509_certificate(path.read_bytes()))
    while len(chain) < 8:
        cert = chain[-1]
        if cert.subject == cert.issuer and _signed_by(cert, cert):
            break
        parent = next((c for c in candidates if c.subject == cert.issuer and c != cert
                       and _signed_by(cert, c)), None)
        if parent is None:
            break
        chain.append(parent)
    return chain


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` atomically with `mode`: the content appears whole or not at all.

    A temporary file in the same directory (created 0600, then set to `mode`) is written,
    flushed to disk and renamed over `path`; without `overwrite` it is hard-linked instead, so
    an existing `path` is never replaced, even by a concurrent writer.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise PkiError(f"{path} already exists; not replaced (--force replaces it)") from None
            except OSError:  # no hard links on this file system (FAT): an exclusive create instead
                _create_exclusive(path, data, mode)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise PkiError(f"{path} already exists; not replaced (--force replaces it)") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def ensure_directory(directory: Path) -> None:
    """Create `directory` (and its parents) if missing; the directory itself gets mode 0700."""
    if directory.is_dir():
        return
    try:
        directory.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        if not directory.is_dir():
            raise PkiError(f"{directory} exists and is not a directory") from None
        return
    except OSError as exc:
        raise PkiError(f"{directory}: cannot create the directory ({exc.strerror})") from None
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def _refuse_existing(directory: Path, name: str, overwrite: bool) -> None:
    if overwrite:
        return
    for path in _paths(directory, name):
        if path.exists() or path.is_symlink():
            raise PkiError(f"{path} already exists; not replaced (--force replaces it)")


def _write(directory: Path, name: str, cert: x509.Certificate, key: PrivateKey, *,
           overwrite: bool) -> Issued:
    ensure_directory(directory)
    cert_path, key_path = _paths(directory, name)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_file(key_path, pem, mode=0o600, overwrite=overwrite)
    try:
        write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644,
                   overwrite=overwrite)
    except BaseException:
        if not overwrite:  # the key was ours alone: do not leave it without its certificate
            with contextlib.suppress(OSError):
                key_path.unlink()
        raise
    return Issued(cert_path, key_path, cert)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _new_key(kind: Kind) -> PrivateKey:
    if kind in RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[kind])
    if kind == "ecdsa256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa384":
        return ec.generate_private_key(ec.SECP384R1())
    raise PkiError(f"unknown key kind {kind!r} (known: {', '.join(get_args(Kind))})")


def _subject(name: str, organization: str = ORGANIZATION) -> x509.Name:
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise PkiError(f"{name!r} is not usable as a certificate and file name")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])


def _organization_of(issuer: Issued | None) -> str:
    if issuer is not None:
        values = issuer.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if values:
            return str(values[0].value)
    return ORGANIZATION


def _check_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"--days must be at least 1, not {days}")


def _check_is_ca(ca: Issued) -> None:
    bc = _extension(ca.certificate, x509.BasicConstraints)
    if not (isinstance(bc, x509.BasicConstraints) and bc.ca):
        raise PkiError(f"{ca.cert_path}: not a CA certificate (basicConstraints cA is not set)")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise PkiError(f"{text!r} is not an IP address") from None


def _dns(text: str) -> str:
    try:
        ident = Identity.parse("fqdn:" + text)
    except ValueError as exc:
        raise PkiError(str(exc)) from None
    assert ident.type is IdType.FQDN
    return ident.data.decode("ascii").rstrip(".")


def _email(text: str) -> str:
    try:
        return Identity.parse("email:" + text).data.decode("ascii")
    except ValueError as exc:
        raise PkiError(str(exc)) from None


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False,
                         key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)


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


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm
        return False
    return True


def _paths(directory: Path, name: str) -> tuple[Path, Path]:
    _subject(name)  # validates the name
    return directory / f"{name}.crt", directory / f"{name}.key"


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _key_text(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384",
                "secp521r1": "ECDSA P-521"}.get(key.curve.name, f"EC {key.curve.name}")
    return type(key).__name__.removeprefix("_")


def _key_usage_names(ku: x509.KeyUsage) -> tuple[str, ...]:
    names = []
    for attr, label in (("digital_signature", "digitalSignature"), ("content_commitment", "nonRepudiation"),
                        ("key_encipherment", "keyEncipherment"), ("data_encipherment", "dataEncipherment"),
                        ("key_agreement", "keyAgreement"), ("key_cert_sign", "keyCertSign"),
                        ("crl_sign", "cRLSign")):
        if getattr(ku, attr):
            names.append(label)
    return tuple(names)


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return f"{type(name).__name__}:{name.value!r}"


def _hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


# --------------------------------------------------------------------------------------
# Command line (the lab's bare tool; operators use `gateway pki`)
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
    ca.add_argument("--force", action="store_true", help="replace existing files")

    ee = sub.add_parser("issue", help="issue an end-entity certificate")
    ee.add_argument("directory", type=Path)
    ee.add_argument("--ca", required=True, metavar="CA_NAME", help="the issuing CA (from DIRECTORY)")
    ee.add_argument("name")
    ee.add_argument("--kind", choices=kinds, default="rsa")
    ee.add_argument("--days", type=int, default=825)
    ee.add_argument("--ip", action="append", default=[], help="subjectAltName IP address (repeatable)")
    ee.add_argument("--dns", action="append", default=[], help="subjectAltName DNS name (repeatable)")
    ee.add_argument("--email", action="append", default=[], help="subjectAltName e-mail (repeatable)")
    ee.add_argument("--force", action="store_true", help="replace existing files")

    args = parser.parse_args(argv)
    try:
        if args.command == "ca":
            issuer = Issued.load(args.directory, args.issuer) if args.issuer else None
            made = make_ca(args.directory, args.name, kind=args.kind, days=args.days, issuer=issuer,
                           path_length=args.path_length, overwrite=args.force)
        else:
            made = issue(args.directory, Issued.load(args.directory, args.ca), args.name,
                         kind=args.kind, days=args.days, san_ip=args.ip, san_dns=args.dns,
                         san_email=args.email, overwrite=args.force)
    except ValueError as exc:
        print(f"pki: {exc}", file=sys.stderr)
        return 1
    print(made.cert_path)
    print(made.key_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
