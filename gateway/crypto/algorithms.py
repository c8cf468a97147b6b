"""ESP/AH transforms: encryption ciphers and integrity algorithms, all from `cryptography`.

One registry of algorithms keyed by the names operators write (strongSwan style:
``aes128gcm16``, ``aes256-sha256``, ``3des-md5``, ``null-sha256``), carrying the IKEv2
transform IDs (RFC 7296 3.3.2, IANA "IKEv2 Transform Type 1/3") so that the IKE cores
and the dataplane speak of the same thing.
"""

from __future__ import annotations

import hmac as _stdlib_hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ENCRYPTION",
    "INTEGRITY",
    "AuthenticationFailed",
    "EncryptionAlgorithm",
    "EspSuite",
    "IntegrityAlgorithm",
    "parse_esp_suite",
    "parse_integrity",
]


class AuthenticationFailed(Exception):
    """An AEAD tag or ICV did not verify."""


class UnknownAlgorithm(ValueError):
    """A name that is not in the registry."""


# --------------------------------------------------------------------------------------
# Encryption
# --------------------------------------------------------------------------------------


class BoundCipher:
    """A cipher with its key: encrypt/decrypt one ESP payload."""

    __slots__ = ()

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key=***>"


class _Gcm(BoundCipher):
    """AES-GCM with an explicit 8-octet IV and a 4-octet salt from the key (RFC 4106 4)."""

    __slots__ = ("_aead", "_salt")

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key[:-4])
        self._salt = key[-4:]

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(self._salt + iv, plaintext, aad)

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(self._salt + iv, ciphertext, aad)
        except InvalidTag:
            raise AuthenticationFailed("GCM tag mismatch") from None


class _Cbc(BoundCipher):
    """A block cipher in CBC mode (RFC 3602 for AES, RFC 2451 for 3DES).

    Setting up a cipher context costs several times a packet's encryption, so one
    encrypting and one decrypting context live as long as the SA and carry on from packet
    to packet.  The ciphertext is still exactly CBC under the packet's own IV: the first
    block goes in as P1 ^ IV ^ X, where X is the context's chaining value (the previous
    packet's last ciphertext block), so it comes out as E(P1 ^ IV); decryption feeds IV
    ahead of the ciphertext and drops that first block's output.
    """

    __slots__ = ("_algorithm", "_block", "_chain", "_decryptor", "_encryptor")

    def __init__(self, algorithm: algorithms.AES | TripleDES) -> None:
        self._algorithm = algorithm
        self._block = algorithm.block_size // 8
        zero = bytes(self._block)
        self._encryptor = Cipher(algorithm, modes.CBC(zero)).encryptor()
        self._decryptor = Cipher(algorithm, modes.CBC(zero)).decryptor()
        self._chain = 0  # the encrypting context's last ciphertext block, as an integer

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        n = self._block
        if len(iv) != n or len(plaintext) % n or not plaintext:
            raise ValueError("CBC needs one IV block and whole plaintext blocks")
        first = (int.from_bytes(plaintext[:n], "big") ^ int.from_bytes(iv, "big")
                 ^ self._chain).to_bytes(n, "big")
        out = self._encryptor.update(first + plaintext[n:])
        self._chain = int.from_bytes(out[-n:], "big")
        return out

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        n = self._block
        if len(iv) != n or len(ciphertext) % n:
            raise ValueError("CBC needs one IV block and whole ciphertext blocks")
        return self._decryptor.update(iv + ciphertext)[n:]


class _Null(BoundCipher):
    """ENCR_NULL (RFC 2410): integrity only."""

    __slots__ = ()

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return plaintext

    def decrypt(self, iv: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        return ciphertext


@dataclass(frozen=True)
class EncryptionAlgorithm:
    """Static facts about an ESP cipher (sizes in octets)."""

    name: str
    ikev2_id: int
    key_size: int  # cipher key, without salt
    salt_size: int
    block_size: int  # alignment of plaintext + trailer
    iv_size: int
    icv_size: int  # AEAD tag; 0 for non-AEAD ciphers
    weak: bool
    factory: Callable[[bytes], BoundCipher] = field(repr=False, compare=False)

    @property
    def aead(self) -> bool:
        return self.icv_size > 0

    @property
    def keymat_size(self) -> int:
        """Octets of key material (RFC 4106 8.1: key then salt)."""
        return self.key_size + self.salt_size

    def bind(self, key: bytes) -> BoundCipher:
        if len(key) != self.keymat_size:
            raise ValueError(f"{self.name} needs a {self.keymat_size}-octet key, got {len(key)}")
        return self.factory(key)


ENCRYPTION: dict[str, EncryptionAlgorithm] = {
    a.name: a
    for a in (
        EncryptionAlgorithm("aes128gcm16", 20, 16, 4, 4, 8, 16, False, _Gcm),
        EncryptionAlgorithm("aes256gcm16", 20, 32, 4, 4, 8, 16, False, _Gcm),
        EncryptionAlgorithm("aes128", 12, 16, 0, 16, 16, 0, False,
                            lambda k: _Cbc(algorithms.AES(k))),
        EncryptionAlgorithm("aes192", 12, 24, 0, 16, 16, 0, False,
                            lambda k: _Cbc(algorithms.AES(k))),
        EncryptionAlgorithm("aes256", 12, 32, 0, 16, 16, 0, False,
                            lambda k: _Cbc(algorithms.AES(k))),
        EncryptionAlgorithm("3des", 3, 24, 0, 8, 8, 0, True, lambda k: _Cbc(TripleDES(k))),
        EncryptionAlgorithm("null", 11, 0, 0, 4, 0, 0, False, lambda k: _Null()),
    )
}


# --------------------------------------------------------------------------------------
# Integrity
# --------------------------------------------------------------------------------------


class BoundIntegrity:
    """HMAC with its key, truncated to the ICV length (RFC 2104, RFC 4868 2.6)."""

    __slots__ = ("_template", "icv_size")

    def __init__(self, key: bytes, algorithm: hashes.HashAlgorithm, icv_size: int) -> None:
        self._template = crypto_hmac.HMAC(key, algorithm)
        self.icv_size = icv_size

    def compute(self, data: bytes) -> bytes:
        h = self._template.copy()
        h.update(data)
        return h.finalize()[: self.icv_size]

    def verify(self, data: bytes, icv: bytes) -> bool:
        """Constant-time comparison of the computed and received ICV."""
        return _stdlib_hmac.compare_digest(self.compute(data), icv)

    def __repr__(self) -> str:
        return f"<BoundIntegrity icv={self.icv_size} key=***>"


@dataclass(frozen=True)
class IntegrityAlgorithm:
    name: str
    ikev2_id: int
    key_size: int
    icv_size: int
    weak: bool
    hash_factory: Callable[[], hashes.HashAlgorithm] = field(repr=False, compare=False)

    def bind(self, key: bytes) -> BoundIntegrity:
        if len(key) != self.key_size:
            raise ValueError(f"{self.name} needs a {self.key_size}-octet key, got {len(key)}")
        return BoundIntegrity(key, self.hash_factory(), self.icv_size)


INTEGRITY: dict[str, IntegrityAlgorithm] = {
    a.name: a
    for a in (
        IntegrityAlgorithm("md5", 1, 16, 12, True, hashes.MD5),
        IntegrityAlgorithm("sha1", 2, 20, 12, False, hashes.SHA1),
        IntegrityAlgorithm("sha256", 12, 32, 16, False, hashes.SHA256),
        IntegrityAlgorithm("sha384", 13, 48, 24, False, hashes.SHA384),
        IntegrityAlgorithm("sha512", 14, 64, 32, False, hashes.SHA512),
    )
}

#: Legacy ciphers only pair with the legacy integrity algorithms the issue lists.
_ALLOWED_PAIRS = {"3des": {"md5", "sha1"}}


@dataclass(frozen=True)
class EspSuite:
    """A cipher plus (unless AEAD) an integrity algorithm, as an ESP proposal names it."""

    encryption: EncryptionAlgorithm
    integrity: IntegrityAlgorithm | None

    @property
    def name(self) -> str:
        if self.integrity is None:
            return self.encryption.name
        return f"{self.encryption.name}-{self.integrity.name}"

    @property
    def weak(self) -> bool:
        return self.encryption.weak or bool(self.integrity and self.integrity.weak)

    @property
    def icv_size(self) -> int:
        return self.encryption.icv_size or (self.integrity.icv_size if self.integrity else 0)


def parse_esp_suite(text: str) -> EspSuite:
    """Parse ``aes128gcm16``, ``aes256-sha256``, ``3des-md5``, ``null-sha1``."""
    name = text.strip().lower()
    enc_name, _, integ_name = name.partition("-")
    enc = ENCRYPTION.get(enc_name)
    if enc is None:
        raise UnknownAlgorithm(
            f"unknown ESP encryption {enc_name!r} (known: {', '.join(ENCRYPTION)})")
    if enc.aead:
        if integ_name:
            raise UnknownAlgorithm(f"{enc_name} is an AEAD cipher: it takes no integrity algorithm")
        return EspSuite(enc, None)
    if not integ_name:
        raise UnknownAlgorithm(f"{enc_name} needs an integrity algorithm, e.g. {enc_name}-sha256")
    integ = parse_integrity(integ_name)
    allowed = _ALLOWED_PAIRS.get(enc_name)
    if allowed is not None and integ.name not in allowed:
        raise UnknownAlgorithm(f"{enc_name} pairs only with {' or '.join(sorted(allowed))}")
    return EspSuite(enc, integ)


def parse_integrity(text: str) -> IntegrityAlgorithm:
    integ = INTEGRITY.get(text.strip().lower())
    if integ is None:
        raise UnknownAlgorithm(
            f"unknown integrity algorithm {text!r} (known: {', '.join(INTEGRITY)})")
    return integ
