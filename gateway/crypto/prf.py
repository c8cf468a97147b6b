"""IKEv2 pseudo-random functions and prf+ (RFC 7296 2.13), HMAC from `cryptography`.

The registry is keyed by strongSwan's names (``prfsha256``) and carries the IKEv2
transform IDs (RFC 7296 3.3.2, IANA "IKEv2 Transform Type 2").  All of them are HMAC
(RFC 2104) over SHA-1 or SHA-2 (RFC 4868 2.1): they take keys of any length, and their
preferred key size is their output size (RFC 7296 2.13/2.14).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from gateway.crypto.algorithms import UnknownAlgorithm

__all__ = [
    "PRF",
    "PRF_BY_ID",
    "PRF_PLUS_MAX_BLOCKS",
    "PrfAlgorithm",
    "parse_prf",
]

#: prf+ counts its blocks in one octet, 0x01..0xff (RFC 7296 2.13).
PRF_PLUS_MAX_BLOCKS = 255


@dataclass(frozen=True)
class PrfAlgorithm:
    """An HMAC-based IKEv2 PRF (sizes in octets)."""

    name: str
    ikev2_id: int
    output_size: int  # also the preferred key size (RFC 7296 2.13, RFC 4868 2.1.2)
    hash_factory: Callable[[], hashes.HashAlgorithm] = field(repr=False, compare=False)

    @property
    def key_size(self) -> int:
        """Preferred key size: SK_d, SK_pi and SK_pr have this length (RFC 7296 2.14)."""
        return self.output_size

    def compute(self, key: bytes, data: bytes) -> bytes:
        """prf(key, data): HMAC with the whole digest as output."""
        h = crypto_hmac.HMAC(key, self.hash_factory())
        h.update(data)
        return h.finalize()

    def max_plus_length(self) -> int:
        """The longest output prf+ can give: 255 blocks (RFC 7296 2.13)."""
        return PRF_PLUS_MAX_BLOCKS * self.output_size

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+(K, S) truncated to ``length`` octets (RFC 7296 2.13).

        T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); the output is T1 | T2 | ...
        The counter is one octet, so more than 255 blocks is an error.
        """
        if length < 0:
            raise ValueError(f"prf+ length must not be negative, got {length}")
        blocks = -(-length // self.output_size)
        if blocks > PRF_PLUS_MAX_BLOCKS:
            raise ValueError(
                f"prf+ of {self.name} gives at most {self.max_plus_length()} octets "
                f"({PRF_PLUS_MAX_BLOCKS} blocks), {length} asked")
        template = crypto_hmac.HMAC(key, self.hash_factory())
        out = bytearray()
        previous = b""
        for counter in range(1, blocks + 1):
            h = template.copy()
            h.update(previous + seed + bytes([counter]))
            previous = h.finalize()
            out += previous
        return bytes(out[:length])


PRF: dict[str, PrfAlgorithm] = {
    a.name: a
    for a in (
        PrfAlgorithm("prfmd5", 1, 16, hashes.MD5),  # PRF_HMAC_MD5 (RFC 2104): IKEv1 MD5 peers only
        PrfAlgorithm("prfsha1", 2, 20, hashes.SHA1),  # PRF_HMAC_SHA1 (RFC 2104)
        PrfAlgorithm("prfsha256", 5, 32, hashes.SHA256),  # PRF_HMAC_SHA2_256 (RFC 4868)
        PrfAlgorithm("prfsha384", 6, 48, hashes.SHA384),  # PRF_HMAC_SHA2_384 (RFC 4868)
        PrfAlgorithm("prfsha512", 7, 64, hashes.SHA512),  # PRF_HMAC_SHA2_512 (RFC 4868)
    )
}

PRF_BY_ID: dict[int, PrfAlgorithm] = {a.ikev2_id: a for a in PRF.values()}


def parse_prf(text: str) -> PrfAlgorithm:
    """Look up a PRF by its exact strongSwan name (``prfsha256``); no aliases."""
    prf = PRF.get(text.strip().lower())
    if prf is None:
        raise UnknownAlgorithm(f"unknown PRF {text!r} (known: {', '.join(PRF)})")
    return prf
