"""AH packet processing (RFC 4302) for IPv4, transport and tunnel mode.

AH authenticates the IP header too, so it works on whole IP packets: the ICV covers the
IPv4 header with its mutable fields zeroed (TOS, flags, fragment offset, TTL, checksum,
and mutable options: section 3.3.3.1.1 and appendix A.1), the AH header with a zero ICV,
and everything after it, with the high ESN bits appended implicitly (section 2.5.1).
"""

from __future__ import annotations

import struct

from gateway.dataplane import ip
from gateway.dataplane.drops import Dropped, DropReason
from gateway.dataplane.sa import SecurityAssociation

_AH = struct.Struct("!BBHII")
#: IPv4 options whose content does not change in transit (RFC 4302 A.1).
_IMMUTABLE_OPTIONS = {0, 1, 130, 133, 134, 148, 149}


def ah_length(sa: SecurityAssociation) -> int:
    assert sa.integrity is not None
    return 12 + (-sa.integrity.icv_size % 4) + sa.integrity.icv_size


def _zero_mutable(header: bytes) -> bytes:
    """The IPv4 header as the ICV sees it."""
    hdr = bytearray(header)
    hdr[1] = 0  # TOS/DSCP+ECN
    hdr[6:8] = b"\0\0"  # flags + fragment offset
    hdr[8] = 0  # TTL
    hdr[10:12] = b"\0\0"  # checksum
    i = 20
    while i < len(hdr):
        kind = hdr[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(hdr) or hdr[i + 1] < 2 or i + hdr[i + 1] > len(hdr):
            raise Dropped(DropReason.MALFORMED)
        length = hdr[i + 1]
        if kind not in _IMMUTABLE_OPTIONS:
            hdr[i:i + length] = bytes(length)
        i += length
    return bytes(hdr)


def _icv_input(sa: SecurityAssociation, header: bytes, ah_fixed: bytes, icv_len: int,
               rest: bytes, seq: int) -> bytes:
    parts = [_zero_mutable(header), ah_fixed, bytes(icv_len), rest]
    if sa.esn:
        parts.append((seq >> 32).to_bytes(4, "big"))
    return b"".join(parts)


def protect(sa: SecurityAssociation, header: bytes, next_header: int, payload: bytes) -> bytes:
    """A complete IP packet: ``header`` (protocol and length rewritten), AH, ``payload``.

    ``header`` must carry a non-zero Identification: it is immutable, so the kernel must
    not fill it in after the ICV is computed.
    """
    assert sa.integrity is not None
    seq = sa.seq + 1
    if seq > sa.seq_max:
        sa.exhausted = True
        raise Dropped(DropReason.SEQ_EXHAUSTED)
    sa.seq = seq
    length = ah_length(sa)
    icv_len = length - 12
    ah_fixed = _AH.pack(next_header, length // 4 - 2, 0, sa.spi, seq & 0xFFFFFFFF)
    header = ip.rewrite_header(header, proto=ip.PROTO_AH,
                               total_length=len(header) + length + len(payload))
    icv = sa.integrity.compute(_icv_input(sa, header, ah_fixed, icv_len, payload, seq))
    icv = icv + bytes(icv_len - len(icv))
    return b"".join((header, ah_fixed, icv, payload))


def verify(sa: SecurityAssociation, packet: bytes) -> tuple[bytes, int, bytes]:
    """(IP header, next header, payload after AH) of an inbound AH packet.

    The replay window is advanced only after the ICV verified.
    """
    assert sa.integrity is not None
    ihl = ip.header_length(packet)
    if len(packet) < ihl + 12:
        raise Dropped(DropReason.TOO_SHORT)
    next_header, plen, _reserved, _spi, seq_low = _AH.unpack_from(packet, ihl)
    length = (plen + 2) * 4
    expected = ah_length(sa)
    if length != expected:
        raise Dropped(DropReason.BAD_LENGTH)
    if len(packet) < ihl + length:
        raise Dropped(DropReason.TOO_SHORT)
    replay = sa.replay
    seq = replay.check(seq_low) if replay is not None else seq_low
    if seq is None:
        raise Dropped(DropReason.REPLAY)
    header = packet[:ihl]
    icv_len = length - 12
    received = packet[ihl + 12:ihl + 12 + sa.integrity.icv_size]
    rest = packet[ihl + length:]
    data = _icv_input(sa, header, packet[ihl:ihl + 12], icv_len, rest, seq)
    if not sa.integrity.verify(data, received):
        raise Dropped(DropReason.BAD_ICV)
    if replay is not None:
        replay.accept(seq)
    return header, next_header, rest
