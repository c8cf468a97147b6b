"""Client bundles: a certificate, its key and its CA chain in one PKCS#12 file (and as PEM files).

Windows (Certificate Import Wizard, ``Import-PfxCertificate``), macOS (Keychain Access),
iOS (a .p12 mailed, or in a configuration profile) and Android (Settings > Security > Install a
certificate > VPN and app user certificate) all import a password-protected PKCS#12 file
(RFC 7292) holding the client's certificate and key with the CA certificates above it.

How it is protected (`Encryption`):

* ``compat`` (the default): the key and the certificates are encrypted with
  pbeWithSHAAnd3-KeyTripleDES-CBC (50,000 iterations) and the file is MACed with HMAC-SHA-1
  (RFC 7292 appendix B and C).  Every client imports that.  AES-encrypted PKCS#12 files (what OpenSSL 3
  writes by default) are reported to fail on Windows Server 2016 and Windows releases of that
  age, in macOS Keychain and on iOS, with a misleading "wrong password" or "MAC verification
  failed" (Windows' own export dialog still offers TripleDES-SHA1 for them).  3DES and SHA-1
  are old, but here they only stretch the password: the bundle is as strong as its password,
  so give it a long one and hand it over apart from the file.
* ``aes256``: PBES2 with PBKDF2-HMAC-SHA-256 and AES-256-CBC, HMAC-SHA-256 MAC, for clients
  known to read it (current Windows, Android, Linux).

The password is taken as bytes and never printed, logged or put into an exception message.
It must be ASCII: PKCS#12 turns the password into a BMPString, and implementations disagree on
how they convert other characters, so a non-ASCII password can work on one client and fail on
the next.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from appliance.pki import Issued, PkiError, PrivateKey, chain_to_root, ensure_directory, write_file

__all__ = [
    "MIN_PASSWORD",
    "Encryption",
    "Material",
    "export_pem",
    "export_pkcs12",
    "load_material",
    "password_from_file",
    "password_from_prompt",
]

Encryption = Literal["compat", "aes256"]
#: Iterations of the password-based key derivation for the encryption.
KDF_ROUNDS = 50_000
MIN_PASSWORD = 8


@dataclass
class Material:
    """What goes into a bundle: the end entity's key and certificate, and its CAs (root last)."""

    name: str
    key: PrivateKey
    certificate: x509.Certificate
    cas: list[x509.Certificate]


def load_material(directory: str | os.PathLike[str], ca_name: str, name: str) -> Material:
    """``NAME.crt``/``NAME.key`` from `directory`, checked against the CA ``CA_NAME`` found there.

    The certificate must not be a CA's (a CA key never goes into a bundle), must have been signed
    by ``CA_NAME``, and the key must be its key.  The chain continues from ``CA_NAME`` through the
    CAs in `directory` up to the root.
    """
    issued = Issued.load(directory, name)
    ca = Issued.load(directory, ca_name)
    try:
        bc = issued.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        bc = None
    if bc is not None and bc.ca:
        raise PkiError(f"{issued.cert_path} is a CA certificate: a CA's key is never exported")
    try:
        issued.certificate.verify_directly_issued_by(ca.certificate)
    except Exception:  # InvalidSignature, ValueError, TypeError
        raise PkiError(f"{issued.cert_path} was not issued by {ca.cert_path}") from None
    key = issued.private_key()
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != issued.certificate.public_key().public_bytes(*spki):
        raise PkiError(f"{issued.key_path} is not the private key of {issued.cert_path}")
    return Material(name, key, issued.certificate, chain_to_root(directory, ca))


def export_pkcs12(material: Material, out: str | os.PathLike[str], password: bytes, *,
                  encryption: Encryption = "compat", overwrite: bool = False) -> Path:
    """Write `material` as a PKCS#12 file (mode 0600) protected by `password`.

    The key and certificate carry the friendly name ``NAME`` (what Windows and Keychain show)
    and a localKeyId that ties them together; each CA certificate carries its CN.
    """
    _check_password(password)
    out = Path(out)
    cas = [pkcs12.PKCS12Certificate(c, _common_name(c).encode()) for c in material.cas]
    data = pkcs12.serialize_key_and_certificates(material.name.encode(), material.key,
                                                 material.certificate, cas,
                                                 _encryption(encryption, password))
    ensure_directory(out.parent)
    write_file(out, data, mode=0o600, overwrite=overwrite)
    return out


def export_pem(material: Material, directory: str | os.PathLike[str], password: bytes, *,
               overwrite: bool = False) -> list[Path]:
    """``NAME.crt``, ``NAME.key`` and ``NAME-ca.crt`` (the CA chain, root last) in `directory`.

    The key is PKCS#8 encrypted with `password` (PBES2, AES-256-CBC), as strongSwan's pkcs8
    plugin and NetworkManager read it; the files written before a failure stay in place.
    """
    _check_password(password)
    directory = Path(directory)
    ensure_directory(directory)
    cert = directory / f"{material.name}.crt"
    key = directory / f"{material.name}.key"
    chain = directory / f"{material.name}-ca.crt"
    for path in (cert, key, chain):
        if not overwrite and (path.exists() or path.is_symlink()):
            raise PkiError(f"{path} already exists; not replaced (--force replaces it)")
    pem = serialization.Encoding.PEM
    write_file(key, material.key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.BestAvailableEncryption(password)),
               mode=0o600, overwrite=overwrite)
    write_file(cert, material.certificate.public_bytes(pem), mode=0o644, overwrite=overwrite)
    write_file(chain, b"".join(c.public_bytes(pem) for c in material.cas), mode=0o644, overwrite=overwrite)
    return [cert, key, chain]


# --------------------------------------------------------------------------------------
# The password: from a file, standard input or the terminal; never from the command line
# --------------------------------------------------------------------------------------


def password_from_file(path: str, stdin: BinaryIO | None = None) -> bytes:
    """The first line of `path` (``-``: standard input), without its line ending."""
    try:
        if path == "-":
            data = (stdin or sys.stdin.buffer).readline()
        else:
            with open(path, "rb") as f:
                data = f.readline()
    except OSError as exc:
        raise PkiError(f"{path}: cannot read the password ({exc.strerror})") from None
    password = data.rstrip(b"\r\n")
    where = "standard input" if path == "-" else path
    if not password:
        raise PkiError(f"{where}: no password on the first line")
    _check_password(password, where)
    return password


def password_from_prompt(ask: Callable[[str], str] | None = None) -> bytes:
    """Ask on the terminal (`ask`, default getpass), twice, without echo."""
    ask = ask or getpass.getpass
    first = ask("Bundle password: ")
    if ask("Again: ") != first:
        raise PkiError("the two passwords differ")
    try:
        password = first.encode("ascii")
    except UnicodeEncodeError:
        raise PkiError("the password must be ASCII (clients encode other characters differently)") from None
    _check_password(password, "the password")
    return password


def _check_password(password: bytes, where: str = "the password") -> None:
    if not password.isascii():
        raise PkiError(f"{where}: the password must be ASCII (clients encode other characters differently)")
    if len(password) < MIN_PASSWORD:
        raise PkiError(f"{where}: the password is shorter than {MIN_PASSWORD} characters "
                       "(the bundle is only as strong as its password)")


def _encryption(kind: Encryption, password: bytes) -> serialization.KeySerializationEncryption:
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(KDF_ROUNDS)
    if kind == "compat":
        return (builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1()).build(password))
    if kind == "aes256":
        return (builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256()).build(password))
    raise PkiError(f"unknown bundle encryption {kind!r} (compat or aes256)")


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else cert.subject.rfc4514_string()
