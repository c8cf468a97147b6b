"""The Encrypted payload: sealing and opening IKE messages (RFC 7296 3.14, RFC 5282,
RFC 7383 for fragments).

A sealed message is ``header | SK header | IV | ciphertext | ICV``.  With a
combined-mode cipher (AES-GCM, RFC 5282 5.1) the ICV is the AEAD tag and the header
through the SK (or SKF) generic header is the additional data; otherwise the ICV is a
truncated HMAC over everything before it.  When both ends announced
IKEV2_FRAGMENTATION_SUPPORTED, a message that would exceed the path's fragment size goes
out as several SKF messages, each protected on its own (RFC 7383 2.5).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.crypto.algorithms import AuthenticationFailed, EncryptionAlgorithm, IntegrityAlgorithm
from gateway.ike.v2.constants import PayloadType
from gateway.ike.v2.keymat import IkeSaKeys
from gateway.ike.v2.message import (
    HEADER_SIZE,
    EncryptedFragment,
    EncryptedPayload,
    Header,
    MalformedMessage,
)


class IntegrityError(Exception):
    """The ICV or AEAD tag of an Encrypted payload did not verify."""


@dataclass
class SkProtection:
    """The keys of one IKE SA, bound to ciphers, oriented for one end."""

    encryption: EncryptionAlgorithm
    integrity: IntegrityAlgorithm | None
    keys: IkeSaKeys = field(repr=False)
    initiator: bool
    random: Callable[[int], bytes] = field(default=os.urandom, repr=False)

    def __post_init__(self) -> None:
        k = self.keys
        ei, er = self.encryption.bind(k.sk_ei), self.encryption.bind(k.sk_er)
        self._enc_out, self._enc_in = (ei, er) if self.initiator else (er, ei)
        if self.integrity is not None:
            ai, ar = self.integrity.bind(k.sk_ai), self.integrity.bind(k.sk_ar)
            self._integ_out, self._integ_in = (ai, ar) if self.initiator else (ar, ai)
        else:
            self._integ_out = self._integ_in = None

    @property
    def icv_size(self) -> int:
        return self.encryption.icv_size or (self.integrity.icv_size if self.integrity else 0)

    def overhead(self) -> int:
        """Octets an SKF message adds around its plaintext chunk, at most."""
        return (HEADER_SIZE + 8 + self.encryption.iv_size + self.encryption.block_size
                + self.icv_size)

    # -- sealing ---------------------------------------------------------------------
    def _pad(self, plaintext: bytes) -> bytes:
        block = self.encryption.block_size if not self.encryption.aead else 1
        pad = (-(len(plaintext) + 1)) % block
        return plaintext + bytes(pad) + bytes([pad])

    def _seal_one(self, header: Header, sk_head: bytes, plaintext: bytes) -> bytes:
        """``sk_head`` is the SK/SKF generic header (plus fragment numbers for SKF)
        whose length field is filled in here."""
        enc = self.encryption
        iv = self.random(enc.iv_size)
        padded = self._pad(plaintext)
        body_len = len(sk_head) + len(iv) + len(padded) + self.icv_size
        sk_head = sk_head[:2] + struct.pack("!H", body_len) + sk_head[4:]
        header.length = HEADER_SIZE + body_len
        head = header.encode() + sk_head
        if enc.aead:
            sealed = self._enc_out.encrypt(iv, padded, head)
            return head + iv + sealed
        ciphertext = self._enc_out.encrypt(iv, padded, b"")
        message = head + iv + ciphertext
        assert self._integ_out is not None
        return message + self._integ_out.compute(message)

    def seal(self, header: Header, first_inner: int, inner: bytes,
             fragment_size: int | None = None) -> list[bytes]:
        """Encrypt a payload chain into one message, or into SKF fragments when it would
        not fit ``fragment_size`` octets of UDP payload."""
        header.next_payload = PayloadType.SK
        whole = self._seal_one(header, struct.pack("!BBH", first_inner, 0, 0), inner)
        if fragment_size is None or len(whole) <= fragment_size:
            return [whole]
        chunk = fragment_size - self.overhead()
        if chunk < 64:
            raise ValueError(f"fragment size {fragment_size} leaves no room for data")
        pieces = [inner[i:i + chunk] for i in range(0, len(inner), chunk)]
        total = len(pieces)
        out = []
        for number, piece in enumerate(pieces, 1):
            h = Header(header.spi_i, header.spi_r, PayloadType.SKF, header.exchange, header.flags,
                       header.message_id)
            skf = struct.pack("!BBHHH", first_inner if number == 1 else 0, 0, 0, number, total)
            out.append(self._seal_one(h, skf, piece))
        return out

    # -- opening ---------------------------------------------------------------------
    def open(self, data: bytes, payload: EncryptedPayload | EncryptedFragment) -> bytes:
        """Verify and decrypt; returns the inner payload chain (padding removed)."""
        enc = self.encryption
        start = payload.offset + (8 if isinstance(payload, EncryptedFragment) else 4)
        iv_end = start + enc.iv_size
        icv = self.icv_size
        if len(data) < iv_end + icv + 1:
            raise MalformedMessage("Encrypted payload too short")
        iv = data[start:iv_end]
        if enc.aead:
            try:
                padded = self._enc_in.decrypt(iv, data[iv_end:], data[:start])
            except AuthenticationFailed:
                raise IntegrityError("AEAD tag mismatch") from None
        else:
            assert self._integ_in is not None
            if not self._integ_in.verify(data[:-icv], data[-icv:]):
                raise IntegrityError("ICV mismatch")
            ciphertext = data[iv_end:-icv]
            if not ciphertext or len(ciphertext) % enc.block_size:
                raise MalformedMessage("ciphertext is not a whole number of blocks")
            padded = self._enc_in.decrypt(iv, ciphertext, b"")
        pad = padded[-1] if padded else 0
        if pad + 1 > len(padded):
            raise MalformedMessage("bad padding length")
        return padded[:len(padded) - pad - 1]


@dataclass
class FragmentBuffer:
    """Reassembly of one message's SKF fragments (RFC 7383 2.6)."""

    message_id: int
    total: int
    first_inner: int = 0
    pieces: dict[int, bytes] = field(default_factory=dict, repr=False)

    def add(self, fragment: EncryptedFragment, plaintext: bytes) -> bytes | None:
        if fragment.number == 1:
            self.first_inner = fragment.first_inner
        self.pieces.setdefault(fragment.number, plaintext)
        if len(self.pieces) < self.total:
            return None
        return b"".join(self.pieces[i] for i in range(1, self.total + 1))
