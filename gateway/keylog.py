"""Saving ESP keys for Wireshark: a debugging aid that is off unless configured.

Why: the interesting parts of an L2TP/IPsec or site-to-site problem are inside ESP, and a
capture of ciphertext tells little.  With ``logging.save_keys: DIR`` the gateway appends
every ESP SA it installs (IKE-negotiated or manual) to ``DIR/esp_sa`` as a row of
Wireshark's ESP SA table (a "UAT" file: user accessible table), so that tshark or
Wireshark decrypts and dissects the capture.  The idea is strongSwan's ``save-keys``
plugin; the file format is Wireshark's, read by tshark 4.0 either from its profile
directory (copy the file to ``~/.config/wireshark/esp_sa``) or row by row with
``-o uat:esp_sa:ROW``, together with ``-o esp.enable_encryption_decode:TRUE``.

One row per SA direction::

    "IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTHENTICATION","0xKEY"

with tshark's names for the algorithms (its ``esp_encryption_type_vals`` and
``esp_authentication_type_vals``); AES-GCM keys carry the 4-octet salt (RFC 4106 8.1), and
an AEAD cipher has authentication "NULL" with an empty key.  tshark 4.0's table has no
extended sequence numbers: with ESN on it decrypts CBC but reports the ICVs bad.

The files hold keys, so: the directory must exist, belong to us (or root) and be writable
by nobody else (`directory_problem`, also a config check); each file is created with mode
0600 and opened without following symbolic links.  Keys go to these files only; the
records' reprs and every log line name SPIs and algorithms, never key octets.  IKE SA keys
(Wireshark's ``ikev1_decryption_table``/``ikev2_decryption_table``) are not saved: the IKE
cores do not hand their keys out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.crypto.algorithms import EncryptionAlgorithm, EspSuite, IntegrityAlgorithm
from gateway.dataplane.sa import Direction, SecurityAssociation
from gateway.logs import event

log = logging.getLogger("gateway.keylog")

#: The ESP SA table's file name in a Wireshark profile directory.
ESP_SA_FILE = "esp_sa"

#: Our cipher names -> tshark 4.0's ESP encryption names.
TSHARK_ESP_ENCRYPTION: dict[str, str] = {
    "aes128gcm16": "AES-GCM with 16 octet ICV [RFC4106]",
    "aes256gcm16": "AES-GCM with 16 octet ICV [RFC4106]",
    "aes128": "AES-CBC [RFC3602]",
    "aes192": "AES-CBC [RFC3602]",
    "aes256": "AES-CBC [RFC3602]",
    "3des": "TripleDES-CBC [RFC2451]",
    "null": "NULL",
}

#: Our integrity names (None: an AEAD cipher) -> tshark 4.0's ESP authentication names.
TSHARK_ESP_AUTHENTICATION: dict[str | None, str] = {
    None: "NULL",
    "md5": "HMAC-MD5-96 [RFC2403]",
    "sha1": "HMAC-SHA-1-96 [RFC2404]",
    "sha256": "HMAC-SHA-256-128 [RFC4868]",
    "sha384": "HMAC-SHA-384-192 [RFC4868]",
    "sha512": "HMAC-SHA-512-256 [RFC4868]",
}


class KeyLogError(ValueError):
    """The key directory is unusable or unsafe; the message says why."""


@dataclass(frozen=True)
class EspSaKeys:
    """One ESP SA direction as Wireshark's table needs it; its repr shows no key."""

    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    spi: int
    encryption: EncryptionAlgorithm
    integrity: IntegrityAlgorithm | None
    encryption_key: bytes = field(repr=False)
    integrity_key: bytes = field(repr=False)

    @classmethod
    def of(cls, sa: SecurityAssociation, encryption_key: bytes, integrity_key: bytes) -> EspSaKeys:
        """The record of an ESP SA built with these keys (the SA keeps only bound ciphers)."""
        if sa.esp is None:
            raise ValueError(f"SA 0x{sa.spi:08x} is not ESP")
        src, dst = (sa.local, sa.remote) if sa.direction is Direction.OUT else (sa.remote, sa.local)
        return cls(src, dst, sa.spi, sa.esp.encryption, sa.esp.integrity, encryption_key, integrity_key)

    @classmethod
    def from_suite(cls, src: str | ipaddress.IPv4Address, dst: str | ipaddress.IPv4Address, spi: int,
                   suite: EspSuite, encryption_key: bytes, integrity_key: bytes) -> EspSaKeys:
        return cls(ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst), spi, suite.encryption,
                   suite.integrity, encryption_key, integrity_key)

    def uat_record(self) -> str:
        """The row of tshark's ``esp_sa`` table (no line end)."""
        encryption = TSHARK_ESP_ENCRYPTION.get(self.encryption.name)
        integrity = self.integrity.name if self.integrity is not None else None
        authentication = TSHARK_ESP_AUTHENTICATION.get(integrity)
        if encryption is None or authentication is None:
            raise KeyLogError(f"tshark has no name for ESP {self.encryption.name}-{integrity}")
        fields = ["IPv4", str(self.src), str(self.dst), f"0x{self.spi:08x}",
                  encryption, _hex(self.encryption_key), authentication, _hex(self.integrity_key)]
        return ",".join(f'"{f}"' for f in fields)

    def __repr__(self) -> str:
        suite = self.encryption.name + (f"-{self.integrity.name}" if self.integrity else "")
        return f"EspSaKeys({self.src} -> {self.dst}, spi=0x{self.spi:08x}, {suite}, keys=***)"


def _hex(key: bytes) -> str:
    return "0x" + key.hex() if key else ""


def directory_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot hold key files, or None: it must be an existing directory of ours
    (or root's) that no group or other user may write to."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot use {os.fspath(path)} for keys: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{os.fspath(path)} is not a directory"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"{os.fspath(path)} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
                "key files need a private directory, e.g. mode 0700")
    if st.st_uid not in (0, os.geteuid()):
        return f"{os.fspath(path)} belongs to another user (uid {st.st_uid})"
    return None


class KeyLog:
    """Appends SA keys to Wireshark UAT files in one private directory.

    Each call opens, appends and closes (as strongSwan does), so the operator may move or
    delete the files at any time; a failure to write is logged and never stops the gateway.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        problem = directory_problem(directory)
        if problem is not None:
            raise KeyLogError(problem)
        self.directory = Path(directory)
        self.saved = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"KeyLog({str(self.directory)!r}, saved={self.saved})"

    def save_esp(self, records: Iterable[EspSaKeys]) -> None:
        """Append these SAs to ``esp_sa``."""
        records = list(records)
        try:
            text = "".join(r.uat_record() + "\n" for r in records)
            self._append(ESP_SA_FILE, text)
        except (OSError, KeyLogError) as exc:
            self.failures += 1
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            event(log, "keys.save_failed", logging.WARNING, file=str(self.directory / ESP_SA_FILE),
                  spis=",".join(f"0x{r.spi:08x}" for r in records), detail=detail)
            return
        self.saved += len(records)
        event(log, "keys.saved", logging.DEBUG, file=ESP_SA_FILE,
              spis=",".join(f"0x{r.spi:08x}" for r in records))

    def _append(self, name: str, text: str) -> None:
        path = self.directory / name
        # O_NOFOLLOW: a planted symlink is refused; O_NONBLOCK: a FIFO cannot hang us.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path, flags, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyLogError(f"{path} is not a regular file")
            if st.st_uid != os.geteuid():
                raise KeyLogError(f"{path} belongs to another user (uid {st.st_uid})")
            if stat.S_IMODE(st.st_mode) != 0o600:
                os.fchmod(fd, 0o600)
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
