"""IKEv2 key derivation: SKEYSEED, the IKE SA keys, rekeying and Child SA KEYMAT.

RFC 7296 2.14 (IKE SA), 2.18 (IKE SA rekey) and 2.17 (Child SA).  The same formulas are
the "IKEv2" KDF of NIST SP 800-135 4.1.2, whose CAVP vectors test this module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from gateway.crypto.prf import PrfAlgorithm

__all__ = [
    "IkeSaKeys",
    "child_keymat",
    "derive_ike_sa_keys",
    "rekey_skeyseed",
    "skeyseed",
    "split_child_keymat",
]


@dataclass(frozen=True, repr=False)
class IkeSaKeys:
    """The seven secrets of an IKE SA (RFC 7296 2.14); ``i``/``r`` = initiator/responder.

    SK_d derives Child SA keys and the next IKE SA, SK_a*/SK_e* protect the IKE messages
    (SK_a* are empty with an AEAD cipher), SK_p* go into the AUTH payloads.
    """

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:
        sizes = ", ".join(f"{f.name}=<{len(getattr(self, f.name))} octets>" for f in fields(self))
        return f"IkeSaKeys({sizes})"


def skeyseed(prf: PrfAlgorithm, ni: bytes, nr: bytes, shared_secret: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 2.14).

    The nonces are the whole key because every PRF we have is HMAC, which takes keys of
    any length; only fixed-key PRFs (AES-XCBC-PRF-128, AES-CMAC-PRF-128) would take half
    of their key from each nonce.
    """
    return prf.compute(ni + nr, shared_secret)


def derive_ike_sa_keys(prf: PrfAlgorithm, skeyseed: bytes, ni: bytes, nr: bytes,
                       spi_i: bytes, spi_r: bytes, *, integ_key_size: int,
                       encr_key_size: int) -> IkeSaKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).

    SK_d, SK_pi and SK_pr have the PRF's preferred key size; ``integ_key_size`` is 0 for
    an AEAD cipher, whose ``encr_key_size`` includes the salt (RFC 5282).  The SPIs
    are the 8-octet IKE SPIs of the IKE_SA_INIT header (RFC 7296 2.14).
    """
    if integ_key_size < 0 or encr_key_size < 0:
        raise ValueError("key sizes must not be negative")
    sizes = (prf.key_size, integ_key_size, integ_key_size, encr_key_size, encr_key_size,
             prf.key_size, prf.key_size)
    material = prf.plus(skeyseed, ni + nr + spi_i + spi_r, sum(sizes))
    keys = []
    offset = 0
    for size in sizes:
        keys.append(material[offset:offset + size])
        offset += size
    return IkeSaKeys(*keys)


def rekey_skeyseed(prf_of_old_sa: PrfAlgorithm, old_sk_d: bytes, shared_secret: bytes,
                   ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) for a rekeyed IKE SA (RFC 7296 2.18).

    The PRF is the old IKE SA's; the nonces are those of the CREATE_CHILD_SA exchange.
    """
    return prf_of_old_sa.compute(old_sk_d, shared_secret + ni + nr)


def child_keymat(prf: PrfAlgorithm, sk_d: bytes, ni: bytes, nr: bytes, length: int,
                 shared_secret: bytes | None = None) -> bytes:
    """KEYMAT = prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir (new) | Ni | Nr) with PFS (RFC 7296 2.17).

    Ni and Nr are the nonces of the exchange that creates the Child SA (IKE_SA_INIT's for
    the first one, CREATE_CHILD_SA's otherwise).
    """
    seed = ni + nr if shared_secret is None else shared_secret + ni + nr
    return prf.plus(sk_d, seed, length)


def split_child_keymat(keymat: bytes, encr_size: int,
                       integ_size: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Cut KEYMAT into (encr_i, integ_i, encr_r, integ_r) (RFC 7296 2.17).

    Initiator-to-responder keys come first; within a direction the encryption key
    (with any salt) comes before the integrity key.  ``keymat`` must be exactly
    2 * (encr_size + integ_size) octets: a mismatch is a caller bug.
    """
    if encr_size < 0 or integ_size < 0:
        raise ValueError("key sizes must not be negative")
    per_direction = encr_size + integ_size
    if len(keymat) != 2 * per_direction:
        raise ValueError(f"KEYMAT of {len(keymat)} octets does not split into 2 x ({encr_size} + "
                         f"{integ_size})")
    encr_i = keymat[:encr_size]
    integ_i = keymat[encr_size:per_direction]
    encr_r = keymat[per_direction:per_direction + encr_size]
    integ_r = keymat[per_direction + encr_size:]
    return encr_i, integ_i, encr_r, integ_r
