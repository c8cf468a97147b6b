"""IKE key exchange groups (RFC 7296 3.4): MODP, ECP and Curve25519, math in `cryptography`.

* MODP groups 2 (RFC 2409 6.2) and 5, 14, 15, 16 (RFC 3526), generator 2.  The KE data
  is g^x mod p, big-endian, zero-padded to the length of p (RFC 7296 3.4); so is g^xy.
* ECP groups 19, 20, 21 (RFC 5903): the KE data is x | y, each coordinate padded to the
  field size (RFC 5903 7); the shared secret is the x coordinate of the product only.
* Curve25519, group 31 (RFC 8031): 32 octets each way (RFC 7748 5).

Private values come from a ``random`` callable (default ``os.urandom``) so that tests can
replay published vectors byte for byte:

* MODP: x is an unsigned big-endian number of ``exponent_bits`` bits (256, or 384 for
  the 4096-bit group): short exponents of at least twice the strength of the group, as
  RFC 3526 section 8 allows; drawn again in the (negligible) case x < 2.
* ECP: ceil(bits(n)/8) octets masked to the bit length of the group order n, drawn again
  until 1 <= d < n (rejection sampling, so no modulo bias).  A published private value
  smaller than n is therefore used as is.
* Curve25519: 32 octets, clamped by the X25519 function itself (RFC 7748 5).

Peer values are checked before use (RFC 6989): exact length, 1 < y < p-1 for MODP, a
point on the curve for ECP, and a non-zero X25519 result (RFC 7748 6.1).

`cryptography` 50 deprecated finite-field DH (FFDH): its DH names are fetched once below
with that warning silenced; should FFDH go away, only `_Modp` needs another backend.
Building a DH key from numbers costs OpenSSL a primality check of p unless it knows p as
a named group (RFC 3526 groups are; RFC 2409's 1024-bit group 2 is not, so group 2 costs
some tens of milliseconds per key).  `cryptography` cannot derive a DH public value from a
given private one, and Python's ``pow`` takes 2.7 ms for g^x in MODP-2048 (15 ms in
MODP-4096): our public value is the "shared secret" of our private key with the peer
value g (an exchange computes peer^x mod p), 0.4 ms in OpenSSL for MODP-2048.  The key
object is made once, with g in its public half (it is never read: only the exchange
uses the object), so a key costs one construction, as before.
"""

from __future__ import annotations

import hmac
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.utils import CryptographyDeprecationWarning

from gateway.crypto.algorithms import UnknownAlgorithm

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dh import (
        DHParameterNumbers,
        DHPrivateNumbers,
        DHPublicNumbers,
    )

__all__ = [
    "DH_BY_NAME",
    "DH_GROUPS",
    "DhGroup",
    "InvalidKeyExchange",
    "KeyExchange",
    "parse_dh_group",
]

RandomSource = Callable[[int], bytes]


class InvalidKeyExchange(ValueError):
    """A peer's KE data is unusable: wrong length, out of range, not on the curve."""


def _draw(random: RandomSource, size: int) -> bytes:
    data = random(size)
    if len(data) != size:
        raise ValueError(f"random source gave {len(data)} octets, {size} asked")
    return data


def _prime(text: str) -> int:
    return int("".join(text.split()), 16)


# --------------------------------------------------------------------------------------
# Group implementations
# --------------------------------------------------------------------------------------


class _Impl:
    """The math of one kind of group; the private value is opaque to everyone else."""

    def generate(self, random: RandomSource) -> tuple[bytes, Any]:  # pragma: no cover
        raise NotImplementedError

    def agree(self, private: Any, peer_public: bytes) -> bytes:  # pragma: no cover
        raise NotImplementedError


class _Modp(_Impl):
    """Finite-field DH with g = 2 over a safe prime (RFC 2409 6.2, RFC 3526)."""

    def __init__(self, prime: int, exponent_bits: int) -> None:
        self.p = prime
        self.size = (prime.bit_length() + 7) // 8
        self.exponent_bits = exponent_bits
        self._numbers = DHParameterNumbers(prime, 2)
        self._generator: Any = None  # g as a public key (made when first needed)

    def generate(self, random: RandomSource) -> tuple[bytes, Any]:
        while True:
            x = int.from_bytes(_draw(random, self.exponent_bits // 8), "big")
            if 2 <= x <= self.p - 2:
                break
        if self._generator is None:
            self._generator = DHPublicNumbers(2, self._numbers).public_key()
        # g^x mod p as OpenSSL's exchange with g (see the module docstring)
        private = DHPrivateNumbers(x, DHPublicNumbers(2, self._numbers)).private_key()
        return private.exchange(self._generator).rjust(self.size, b"\0"), private

    def agree(self, private: Any, peer_public: bytes) -> bytes:
        if len(peer_public) != self.size:
            raise InvalidKeyExchange(
                f"MODP-{self.p.bit_length()} KE data must be {self.size} octets, got {len(peer_public)}")
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < self.p - 1:  # RFC 6989 2.1
            raise InvalidKeyExchange("MODP public value out of range (need 1 < y < p-1)")
        try:
            peer = DHPublicNumbers(y, self._numbers).public_key()
            secret = private.exchange(peer)
        except ValueError as e:
            raise InvalidKeyExchange(f"MODP key exchange failed: {e}") from None
        return secret.rjust(self.size, b"\0")


class _Ecp(_Impl):
    """ECDH over a NIST prime curve, KE data x | y (RFC 5903 7)."""

    def __init__(self, curve: ec.EllipticCurve, order: int) -> None:
        self.curve = curve
        self.order = order
        self.coordinate_size = (curve.key_size + 7) // 8
        self._draw_size = (order.bit_length() + 7) // 8
        self._mask = (1 << order.bit_length()) - 1

    def generate(self, random: RandomSource) -> tuple[bytes, Any]:
        while True:
            d = int.from_bytes(_draw(random, self._draw_size), "big") & self._mask
            if 1 <= d < self.order:
                break
        private = ec.derive_private_key(d, self.curve)
        point = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return point[1:], private  # drop the 0x04 "uncompressed" octet (RFC 5903 7)

    def agree(self, private: Any, peer_public: bytes) -> bytes:
        if len(peer_public) != 2 * self.coordinate_size:
            raise InvalidKeyExchange(
                f"{self.curve.name} KE data must be {2 * self.coordinate_size} octets, "
                f"got {len(peer_public)}")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self.curve, b"\x04" + peer_public)
            return private.exchange(ec.ECDH(), peer)  # the x coordinate, padded
        except ValueError as e:
            raise InvalidKeyExchange(f"{self.curve.name} public value rejected: {e}") from None


class _X25519(_Impl):
    """X25519 (RFC 7748 5, RFC 8031)."""

    def generate(self, random: RandomSource) -> tuple[bytes, Any]:
        private = x25519.X25519PrivateKey.from_private_bytes(_draw(random, 32))
        return private.public_key().public_bytes_raw(), private

    def agree(self, private: Any, peer_public: bytes) -> bytes:
        if len(peer_public) != 32:
            raise InvalidKeyExchange(f"Curve25519 KE data must be 32 octets, got {len(peer_public)}")
        try:
            secret = private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as e:  # OpenSSL refuses an all-zero result itself
            raise InvalidKeyExchange(f"X25519 public value rejected: {e}") from None
        if hmac.compare_digest(secret, bytes(32)):  # RFC 7748 6.1, RFC 8031 2 (a secret: constant time)
            raise InvalidKeyExchange("X25519 shared secret is all zeros (low-order point)")
        return secret


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DhGroup:
    """An IKE key exchange group (IANA "IKEv2 Transform Type 4"); sizes in octets."""

    id: int
    name: str
    public_size: int  # length of the KE payload's key exchange data
    weak: bool
    _impl: _Impl = field(repr=False, compare=False)

    @property
    def prime(self) -> int | None:
        """The MODP prime p, or None for an elliptic-curve group."""
        return self._impl.p if isinstance(self._impl, _Modp) else None

    def generate(self, random: RandomSource = os.urandom) -> KeyExchange:
        """A fresh private value and its public KE data."""
        public, private = self._impl.generate(random)
        return KeyExchange(self, public, private)


class KeyExchange:
    """One side of a key exchange: our public KE data and the private value behind it."""

    __slots__ = ("_private", "group", "public")

    def __init__(self, group: DhGroup, public: bytes, private: Any) -> None:
        self.group = group
        self.public = public
        self._private = private

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir from the peer's KE data (RFC 7296 2.14); InvalidKeyExchange if it is bad."""
        return self.group._impl.agree(self._private, bytes(peer_public))

    def __repr__(self) -> str:
        return f"<KeyExchange {self.group.name} public={len(self.public)} octets private=***>"


# RFC 2409 6.2, "Second Oakley Group" (1024-bit MODP).
_MODP_1024 = _prime("""
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE65381
    FFFFFFFF FFFFFFFF
""")

# RFC 3526 2, 1536-bit MODP group.
_MODP_1536 = _prime("""
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA237327 FFFFFFFF FFFFFFFF
""")

# RFC 3526 3, 2048-bit MODP group.
_MODP_2048 = _prime("""
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AACAA68 FFFFFFFF FFFFFFFF
""")

# RFC 3526 4, 3072-bit MODP group.
_MODP_3072 = _prime("""
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF
""")

# RFC 3526 5, 4096-bit MODP group.
_MODP_4096 = _prime("""
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7
    88719A10 BDBA5B26 99C32718 6AF4E23C 1A946834 B6150BDA
    2583E9CA 2AD44CE8 DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6
    287C5947 4E6BC05D 99B2964F A090C3A2 233BA186 515BE7ED
    1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9
    93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199
    FFFFFFFF FFFFFFFF
""")

# Group orders n of the NIST curves (FIPS 186-4 D.1.2, repeated in RFC 5903 3).
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_N = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
    16)
_P521_N = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D0"
    "3BB5C9B8899C47AEBB6FB71E91386409", 16)


def _modp(group_id: int, name: str, prime: int, exponent_bits: int, weak: bool) -> DhGroup:
    impl = _Modp(prime, exponent_bits)
    return DhGroup(group_id, name, impl.size, weak, impl)


def _ecp(group_id: int, name: str, curve: ec.EllipticCurve, order: int) -> DhGroup:
    impl = _Ecp(curve, order)
    return DhGroup(group_id, name, 2 * impl.coordinate_size, False, impl)


DH_GROUPS: dict[int, DhGroup] = {
    g.id: g
    for g in (
        _modp(2, "modp1024", _MODP_1024, 256, weak=True),
        _modp(5, "modp1536", _MODP_1536, 256, weak=True),
        _modp(14, "modp2048", _MODP_2048, 256, weak=False),
        _modp(15, "modp3072", _MODP_3072, 256, weak=False),
        _modp(16, "modp4096", _MODP_4096, 384, weak=False),
        _ecp(19, "ecp256", ec.SECP256R1(), _P256_N),
        _ecp(20, "ecp384", ec.SECP384R1(), _P384_N),
        _ecp(21, "ecp521", ec.SECP521R1(), _P521_N),
        DhGroup(31, "curve25519", 32, False, _X25519()),
    )
}

DH_BY_NAME: dict[str, DhGroup] = {g.name: g for g in DH_GROUPS.values()}
DH_BY_NAME["x25519"] = DH_GROUPS[31]


def parse_dh_group(text: str) -> DhGroup:
    """Look up a group by name (``modp2048``, ``ecp256``, ``curve25519`` or ``x25519``)."""
    group = DH_BY_NAME.get(text.strip().lower())
    if group is None:
        raise UnknownAlgorithm(f"unknown DH group {text!r} (known: {', '.join(DH_BY_NAME)})")
    return group
