"""Encryption of ISAKMP messages after the key exchange (RFC 2409 5.3, Appendix B).

IKEv1 uses the negotiated cipher in CBC mode with IVs that chain across messages: the
Phase 1 IV starts as hash(g^xi | g^xr) and then is the last ciphertext block of the
previous Phase 1 message; each Quick Mode or Informational exchange starts from
hash(last Phase 1 block | M-ID) and chains within its own messages.  A received message
moves its chain only once its hash has been verified (`confirm`), so forged ciphertext
cannot desynchronise an exchange.  Padding is zeros, at least one octet, like strongSwan.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.crypto.algorithms import BoundCipher, EncryptionAlgorithm
from gateway.crypto.prf import PrfAlgorithm
from gateway.ike.v1.keymat import exchange_iv

MAX_EXCHANGE_IVS = 32


class DecryptionError(ValueError):
    """Ciphertext that is not a whole number of blocks."""


class Phase1Cipher:
    """The ISAKMP SA's cipher with its IV chains, one per message ID (0 is Phase 1)."""

    def __init__(self, algorithm: EncryptionAlgorithm, key: bytes, prf: PrfAlgorithm,
                 first_iv: bytes) -> None:
        self.algorithm = algorithm
        self.block = algorithm.block_size
        self._cipher: BoundCipher = algorithm.bind(key)
        self._prf = prf
        self._ivs: OrderedDict[int, bytes] = OrderedDict({0: first_iv})

    def __repr__(self) -> str:
        return f"Phase1Cipher({self.algorithm.name}, key=***)"

    def iv(self, message_id: int) -> bytes:
        iv = self._ivs.get(message_id)
        if iv is None:
            iv = exchange_iv(self._prf, self._ivs[0], message_id, self.block)
            self._remember(message_id, iv)
        return iv

    def _remember(self, message_id: int, iv: bytes) -> None:
        self._ivs[message_id] = iv
        self._ivs.move_to_end(message_id)
        while len(self._ivs) > MAX_EXCHANGE_IVS:
            oldest = next(k for k in self._ivs if k != 0)
            del self._ivs[oldest]

    def encrypt(self, message_id: int, plain: bytes) -> bytes:
        pad = self.block - len(plain) % self.block
        data = self._cipher.encrypt(self.iv(message_id), plain + bytes(pad), b"")
        self._remember(message_id, data[-self.block:])
        return data

    def decrypt(self, message_id: int, data: bytes) -> tuple[bytes, bytes]:
        """(plaintext with padding, the IV this message's chain moves to once confirmed)."""
        if not data or len(data) % self.block:
            raise DecryptionError(f"{len(data)} octets of ciphertext is not a multiple of {self.block}")
        return self._cipher.decrypt(self.iv(message_id), data, b""), data[-self.block:]

    def confirm(self, message_id: int, next_iv: bytes) -> None:
        """A decrypted message proved authentic: its last block is the next IV."""
        self._remember(message_id, next_iv)

    def forget(self, message_id: int) -> None:
        if message_id:
            self._ivs.pop(message_id, None)
