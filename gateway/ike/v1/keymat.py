"""IKEv1 key derivation (RFC 2409 5, 5.5, Appendix B) and the hashes that authenticate.

The PRF is HMAC with the negotiated hash (RFC 2409 4: no PRF attribute means HMAC of
the hash algorithm).  Everything here is a pure function of its inputs, so the known-
answer tests can feed published vectors straight in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes

from gateway.crypto.prf import PrfAlgorithm


@dataclass(frozen=True)
class Phase1Keys:
    """SKEYID and its three descendants (RFC 2409 5), never printed."""

    skeyid: bytes = field(repr=False)
    skeyid_d: bytes = field(repr=False)
    skeyid_a: bytes = field(repr=False)
    skeyid_e: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Phase1Keys({len(self.skeyid)} octets each, ***)"


def skeyid_psk(prf: PrfAlgorithm, psk: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYID = prf(pre-shared-key, Ni_b | Nr_b) (RFC 2409 5)."""
    return prf.compute(psk, ni + nr)


def skeyid_signature(prf: PrfAlgorithm, ni: bytes, nr: bytes, gxy: bytes) -> bytes:
    """SKEYID = prf(Ni_b | Nr_b, g^xy) for signature authentication (RFC 2409 5)."""
    return prf.compute(ni + nr, gxy)


def derive(prf: PrfAlgorithm, skeyid: bytes, gxy: bytes, cky_i: bytes, cky_r: bytes) -> Phase1Keys:
    """SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0),
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1),
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)."""
    d = prf.compute(skeyid, gxy + cky_i + cky_r + b"\x00")
    a = prf.compute(skeyid, d + gxy + cky_i + cky_r + b"\x01")
    e = prf.compute(skeyid, a + gxy + cky_i + cky_r + b"\x02")
    return Phase1Keys(skeyid, d, a, e)


def encryption_key(prf: PrfAlgorithm, skeyid_e: bytes, length: int) -> bytes:
    """The Phase 1 cipher key (RFC 2409 Appendix B): the first octets of SKEYID_e, or when
    that is too short, Ka = K1 | K2 | ... with K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1)."""
    if len(skeyid_e) >= length:
        return skeyid_e[:length]
    out = b""
    block = b"\x00"
    while len(out) < length:
        block = prf.compute(skeyid_e, block)
        out += block
    return out[:length]


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def phase1_iv(prf: PrfAlgorithm, gxi: bytes, gxr: bytes, block_size: int) -> bytes:
    """The first Phase 1 IV: hash(g^xi | g^xr) cut to the block size (RFC 2409 Appendix B)."""
    return _digest(prf.hash_factory(), gxi + gxr)[:block_size]


def exchange_iv(prf: PrfAlgorithm, last_phase1_block: bytes, message_id: int, block_size: int) -> bytes:
    """The IV of a Quick Mode or Informational exchange: hash(last Phase 1 CBC block | M-ID)
    (RFC 2409 Appendix B)."""
    return _digest(prf.hash_factory(), last_phase1_block + message_id.to_bytes(4, "big"))[:block_size]


def hash_i(prf: PrfAlgorithm, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idii_b: bytes) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b) (RFC 2409 5)."""
    return prf.compute(skeyid, gxi + gxr + cky_i + cky_r + sai_b + idii_b)


def hash_r(prf: PrfAlgorithm, skeyid: bytes, gxi: bytes, gxr: bytes, cky_i: bytes, cky_r: bytes,
           sai_b: bytes, idir_b: bytes) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b) (RFC 2409 5)."""
    return prf.compute(skeyid, gxr + gxi + cky_r + cky_i + sai_b + idir_b)


def qm_hash1(prf: PrfAlgorithm, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """HASH(1) = prf(SKEYID_a, M-ID | everything after the HASH payload) (RFC 2409 5.5);
    Informational exchanges use the same form (5.7)."""
    return prf.compute(skeyid_a, message_id.to_bytes(4, "big") + rest)


def qm_hash2(prf: PrfAlgorithm, skeyid_a: bytes, message_id: int, ni_b: bytes, rest: bytes) -> bytes:
    """HASH(2) = prf(SKEYID_a, M-ID | Ni_b | everything after the HASH payload)."""
    return prf.compute(skeyid_a, message_id.to_bytes(4, "big") + ni_b + rest)


def qm_hash3(prf: PrfAlgorithm, skeyid_a: bytes, message_id: int, ni_b: bytes, nr_b: bytes) -> bytes:
    """HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)."""
    return prf.compute(skeyid_a, b"\x00" + message_id.to_bytes(4, "big") + ni_b + nr_b)


def keymat(prf: PrfAlgorithm, skeyid_d: bytes, protocol: int, spi: bytes, ni_b: bytes, nr_b: bytes,
           length: int, gxy: bytes | None = None) -> bytes:
    """Quick Mode KEYMAT for the SA whose ``spi`` its receiver chose (RFC 2409 5.5):
    K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b), Kn = prf(SKEYID_d, Kn-1 | ...);
    the cipher key comes first, then the integrity key."""
    seed = (gxy or b"") + bytes([protocol]) + spi + ni_b + nr_b
    out = b""
    block = b""
    while len(out) < length:
        block = prf.compute(skeyid_d, block + seed)
        out += block
    return out[:length]


def nat_d(prf: PrfAlgorithm, cky_i: bytes, cky_r: bytes, address: bytes, port: int) -> bytes:
    """NAT-D = HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash (RFC 3947 3.2)."""
    return _digest(prf.hash_factory(), cky_i + cky_r + address + port.to_bytes(2, "big"))
