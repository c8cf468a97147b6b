"""Just enough IPv4 for the dataplane: header fields, the checksum, building headers.

Packets are ``bytes``; offsets follow RFC 791 section 3.1.  Only what the ESP/AH and
selector code needs is here, kept cheap because it sits on the per-packet path.
"""

from __future__ import annotations

import struct

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_ESP = 50
PROTO_AH = 51
PROTO_NONE = 59  # "no next header": ESP dummy packets (RFC 4303 2.6)

_HDR = struct.Struct("!BBHHHBBH4s4s")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def header_length(packet: bytes) -> int:
    return (packet[0] & 0x0F) * 4


def build_header(src: bytes, dst: bytes, proto: int, payload_len: int, *, tos: int = 0,
                 ident: int = 0, ttl: int = 64, dont_fragment: bool = False) -> bytes:
    """A 20-octet IPv4 header with a correct checksum."""
    hdr = _HDR.pack(0x45, tos, 20 + payload_len, ident, 0x4000 if dont_fragment else 0,
                    ttl, proto, 0, src, dst)
    csum = checksum(hdr)
    return hdr[:10] + csum.to_bytes(2, "big") + hdr[12:]


def rewrite_header(header: bytes, *, proto: int, total_length: int) -> bytes:
    """Copy of ``header`` with a new protocol and total length, checksum recomputed."""
    hdr = bytearray(header)
    hdr[2:4] = total_length.to_bytes(2, "big")
    hdr[9] = proto
    hdr[10:12] = b"\0\0"
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr)


def ports(packet: bytes, ihl: int) -> tuple[int, int]:
    """(source, destination) port of a TCP/UDP packet, (0, 0) when absent or fragmented."""
    if packet[9] not in (PROTO_TCP, PROTO_UDP) or (packet[6] & 0x1F) or packet[7]:
        return 0, 0
    if len(packet) < ihl + 4:
        return 0, 0
    return (packet[ihl] << 8) | packet[ihl + 1], (packet[ihl + 2] << 8) | packet[ihl + 3]


def transport_checksum_fix(proto: int, src: bytes, dst: bytes, segment: bytes) -> bytes:
    """Recompute the TCP/UDP checksum of ``segment`` for a new pseudo-header.

    Needed when transport-mode packets crossed a NAT (RFC 3948 3.1.2): the addresses the
    sender used in its pseudo-header are not the ones the receiver sees.
    """
    if proto == PROTO_TCP and len(segment) >= 20:
        off = 16
    elif proto == PROTO_UDP and len(segment) >= 8:
        if segment[6:8] == b"\0\0":
            return segment  # IPv4 UDP without checksum stays without one
        off = 6
    else:
        return segment
    seg = bytearray(segment)
    seg[off:off + 2] = b"\0\0"
    pseudo = src + dst + bytes((0, proto)) + len(seg).to_bytes(2, "big")
    csum = checksum(pseudo + bytes(seg))
    if proto == PROTO_UDP and csum == 0:
        csum = 0xFFFF
    seg[off:off + 2] = csum.to_bytes(2, "big")
    return bytes(seg)


def with_source(packet: bytes, source: bytes) -> bytes:
    """``packet`` from another source address: IPv4 and TCP/UDP checksums recomputed (a
    packet that is a fragment past the first keeps its transport bytes as they are)."""
    ihl = header_length(packet)
    hdr = bytearray(packet[:ihl])
    hdr[12:16] = source
    hdr[10:12] = b"\0\0"
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    segment = packet[ihl:]
    if not ((packet[6] & 0x1F) or packet[7]):
        segment = transport_checksum_fix(packet[9], source, packet[16:20], segment)
    return bytes(hdr) + segment


def clamp_mss(packet: bytes, mss: int) -> bytes:
    """Lower the MSS option of a TCP SYN to ``mss`` (checksum recomputed), so that
    a connection through a link with a smaller MTU (PPP over L2TP over ESP) never sends
    segments that do not fit. Anything else comes back unchanged."""
    if len(packet) < 40 or packet[9] != PROTO_TCP or (packet[6] & 0x1F) or packet[7]:
        return packet
    ihl = header_length(packet)
    if len(packet) < ihl + 20 or not packet[ihl + 13] & 0x02:  # SYN
        return packet
    end = ihl + (packet[ihl + 12] >> 4) * 4
    i = ihl + 20
    while i < min(end, len(packet)):
        kind = packet[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(packet) or packet[i + 1] < 2:
            break
        if kind == 2 and packet[i + 1] == 4 and i + 4 <= len(packet):
            old = (packet[i + 2] << 8) | packet[i + 3]
            if old <= mss:
                return packet
            out = bytearray(packet)
            out[i + 2:i + 4] = mss.to_bytes(2, "big")
            # the option need not be 16-bit aligned: recompute (SYNs are rare)
            segment = transport_checksum_fix(PROTO_TCP, packet[12:16], packet[16:20], bytes(out[ihl:]))
            return packet[:ihl] + segment
        i += packet[i + 1]
    return packet
