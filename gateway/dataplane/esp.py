"""ESP packet processing (RFC 4303) for one SA: build and open an ESP payload.

Layout (section 2): SPI(4) | Sequence Number(4) | IV | ciphertext of
[payload | padding | pad length(1) | next header(1)] | ICV.
With AEAD (RFC 4106 5) the AAD is SPI|seq (or SPI|seq-high|seq-low with ESN) and the
ICV is the GCM tag.  Otherwise the ICV is an HMAC over SPI..ciphertext, with the high
32 bits of an extended sequence number appended implicitly (RFC 4303 2.2.1, 3.3.2.1).
"""

from __future__ import annotations

import os
import struct

from gateway.crypto.algorithms import AuthenticationFailed
from gateway.dataplane.drops import Dropped, DropReason
from gateway.dataplane.ip import PROTO_NONE
from gateway.dataplane.sa import SecurityAssociation

#: RFC 4303 2.4 default padding: 1, 2, 3, ... (index = pad length).
_PADDING = [bytes(range(1, n + 1)) for n in range(256)]
#: padding, pad length and next header, by next header and pad length (< 16: AES blocks)
_TRAILERS = [[_PADDING[n] + bytes((n, nh)) for n in range(16)] for nh in range(256)]
_SEQ = struct.Struct("!I")


def encapsulate(sa: SecurityAssociation, payload: bytes, next_header: int) -> bytes:
    """The ESP payload (from SPI to ICV) carrying ``payload``; advances the counter.

    Raises Dropped(SEQ_EXHAUSTED) rather than wrap the sequence number (3.3.3).
    """
    suite = sa.esp
    assert suite is not None and sa.cipher is not None
    seq = sa.seq + 1
    if seq > sa.seq_max:
        sa.exhausted = True
        raise Dropped(DropReason.SEQ_EXHAUSTED)
    sa.seq = seq
    enc = suite.encryption
    pad_len = -(len(payload) + 2) % enc.block_size
    if pad_len < 16:
        plaintext = payload + _TRAILERS[next_header][pad_len]
    else:
        plaintext = b"".join((payload, _PADDING[pad_len], bytes((pad_len, next_header))))
    header = sa.spi_bytes + _SEQ.pack(seq & 0xFFFFFFFF)
    if enc.aead:
        iv = seq.to_bytes(8, "big")  # unique per SA (RFC 4106 3.1)
        return b"".join((header, iv, sa.cipher.encrypt(iv, plaintext,
                                                        sa.spi_bytes + iv if sa.esn else header)))
    iv = (sa.random or os.urandom)(enc.iv_size) if enc.iv_size else b""
    body = b"".join((header, iv, sa.cipher.encrypt(iv, plaintext, b"")))
    assert sa.integrity is not None
    authed = body + _SEQ.pack(seq >> 32) if sa.esn else body
    return body + sa.integrity.compute(authed)


def decapsulate(sa: SecurityAssociation, data: bytes) -> tuple[int, bytes]:
    """(next header, payload) of an inbound ESP payload that starts at the SPI.

    Order of checks follows RFC 4303 3.4: replay pre-check, ICV, decrypt, window update.
    Every failure is a Dropped with its reason.
    """
    suite = sa.esp
    assert suite is not None and sa.cipher is not None
    enc = suite.encryption
    icv_size = suite.icv_size
    iv_size = enc.iv_size
    ct_len = len(data) - 8 - iv_size - icv_size
    if ct_len < 2:
        raise Dropped(DropReason.TOO_SHORT)
    if ct_len % enc.block_size:
        raise Dropped(DropReason.BAD_LENGTH)
    seq_low = _SEQ.unpack_from(data, 4)[0]
    replay = sa.replay
    if replay is not None:
        seq = replay.check(seq_low)
        if seq is None:
            raise Dropped(DropReason.REPLAY)
    else:
        seq = seq_low
    iv = data[8:8 + iv_size]
    if enc.aead:
        aad = data[:4] + seq.to_bytes(8, "big") if sa.esn else data[:8]
        try:
            plaintext = sa.cipher.decrypt(iv, data[8 + iv_size:], aad)
        except AuthenticationFailed:
            raise Dropped(DropReason.BAD_ICV) from None
    else:
        assert sa.integrity is not None
        body = data[:len(data) - icv_size]
        authed = body + _SEQ.pack(seq >> 32) if sa.esn else body
        if not sa.integrity.verify(authed, data[len(data) - icv_size:]):
            raise Dropped(DropReason.BAD_ICV)
        plaintext = sa.cipher.decrypt(iv, body[8 + iv_size:], b"")
    pad_len = plaintext[-2]
    next_header = plaintext[-1]
    end = len(plaintext) - 2 - pad_len
    if end < 0:
        raise Dropped(DropReason.BAD_PADDING)
    if pad_len and plaintext[end:end + pad_len] != _PADDING[pad_len]:
        raise Dropped(DropReason.BAD_PADDING)
    if replay is not None:
        replay.accept(seq)  # only now: the packet authenticated (3.4.3)
    if next_header == PROTO_NONE:
        raise Dropped(DropReason.DUMMY)
    return next_header, plaintext[:end]
