"""TCP segmentation and coalescing for a TUN device with offloads (IFF_VNET_HDR).

Why: on this path the kernel's per-packet work (a syscall, a trip through the stack on
each side) costs more than the ESP transform.  With TSO offered on the TUN the kernel
hands us a whole TCP burst (up to 64 KiB) in one read; we cut it into MSS-sized segments
as ``tcp_gso_segment`` would, each to be protected on its own (ESP never carries more
than the path takes).  On the way in, the decrypted segments of one flow are joined again
into one GSO packet for one write, as GRO would have, and the kernel (or the receiving
host) splits it only if it must.

Each read and write on such a TUN starts with a ``struct virtio_net_hdr``
(include/uapi/linux/virtio_net.h): flags, gso_type, hdr_len, gso_size, csum_start,
csum_offset, in host byte order.

Checksums are the cost here: every payload octet is summed once when a burst is cut and
once when segments are joined (the kernel would do it in C otherwise).  The sums of the
equal-sized segments of a burst are taken in one vectorised numpy call (`chunk_sums`,
~0.3 us per 1.4 KB segment against ~3.4 us for the pure-Python way); a single buffer uses
one big-integer remainder: the one's complement sum of 16-bit words (RFC 1071) is the
number's value modulo 0xFFFF, because 2^16 = 1 (mod 0xFFFF).
"""

from __future__ import annotations

import os
import struct

# numpy's BLAS starts worker threads when it is imported.  Nothing here uses BLAS, and a
# thread the daemon does not know would keep the capabilities it drops after start
# (gateway.net.privileges refuses that): one thread, none started.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import numpy  # noqa: E402

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
#: the header of a packet without offload (the kernel verifies its checksums)
PLAIN_HDR = bytes(VNET_HDR_LEN)

_VNET = struct.Struct("=BBHHHH")
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_ACK = 0x10
_TCP_CWR = 0x80
#: the largest IPv4 packet a coalesced write may make
_MAX_PACKET = 0xFFFF


class OffloadError(ValueError):
    """A packet from the TUN that its virtio header does not describe."""


def parse_vnet_header(frame: bytes) -> tuple[int, int, int, int, int, int]:
    """(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) of a TUN frame."""
    if len(frame) < VNET_HDR_LEN:
        raise OffloadError("frame shorter than its virtio header")
    return _VNET.unpack_from(frame)


def gso_header(hdr_len: int, gso_size: int, csum_start: int) -> bytes:
    """The virtio header of a coalesced TCP/IPv4 packet: its checksum field holds the
    pseudo-header sum, the kernel completes it (CHECKSUM_PARTIAL) for every segment."""
    return _VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, hdr_len, gso_size, csum_start, 16)


def _fold(total: int) -> int:
    """The one's complement sum of a value that is a sum of 16-bit big-endian words."""
    rest = total % 0xFFFF
    return rest if rest or not total else 0xFFFF


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit one's complement sum of ``data`` (odd length: padded with a zero)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value


_WORDS = numpy.dtype(">u2")


def chunk_sums(data: memoryview, size: int) -> list[int]:
    """Numbers congruent (mod 0xFFFF) to the one's complement sums of the consecutive
    ``size``-octet chunks of ``data`` (the last may be shorter)."""
    full = len(data) // size
    sums: list[int] = []
    if full > 1 and not size & 1:
        words = numpy.frombuffer(data, dtype=_WORDS, count=full * size // 2)
        sums = words.reshape(full, size // 2).sum(axis=1, dtype=numpy.uint64).tolist()
        start = full * size
    else:
        start = 0
    while start < len(data):
        sums.append(ones_sum(data[start:start + size]))
        start += size
    return sums


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a checksum the kernel left partial (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field
    holds the pseudo-header sum; the checksum covers everything from ``csum_start``."""
    at = csum_start + csum_offset
    if at + 2 > len(packet) or csum_start < 20:
        raise OffloadError("checksum offsets outside the packet")
    csum = (~_fold(ones_sum(memoryview(packet)[csum_start:])) & 0xFFFF) or 0xFFFF
    return b"".join((packet[:at], csum.to_bytes(2, "big"), packet[at + 2:]))


def _ip_checksum(header: bytes | bytearray) -> int:
    return ~_fold(ones_sum(header)) & 0xFFFF


_IP20 = struct.Struct("!BBHHHBBH8s")
_TCP20 = struct.Struct("!4sI5sB2sH2s")


def segment_tcp4(packet: bytes, gso_size: int) -> list[bytes]:
    """Cut a TSO packet (IPv4/TCP, payload beyond ``gso_size``) into segments of
    ``gso_size`` payload octets: IP ID counting up, sequence numbers advanced, FIN and
    PSH only on the last, CWR only on the first, both checksums complete.

    The headers' sums are taken once; per segment only the changing fields and the
    payload are added (RFC 1624 arithmetic on small integers)."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != 6 or gso_size <= 0:
        raise OffloadError("TSO frame is not TCP over IPv4")
    ihl = (packet[0] & 0x0F) * 4
    thl = (packet[ihl + 12] >> 4) * 4 if len(packet) > ihl + 12 else 0
    hdr_len = ihl + thl
    if ihl != 20 or thl < 20 or len(packet) < hdr_len:
        raise OffloadError("TSO frame with IP options or bad header lengths")
    vihl, tos, _, ident, frag, ttl, proto, _, addresses = _IP20.unpack_from(packet)
    ports, seq, ack_offset, flags, window, _, urgent = _TCP20.unpack_from(packet, 20)
    options = packet[40:hdr_len]
    addr_sum = int.from_bytes(addresses, "big")
    ip_sum = (vihl << 8 | tos) + frag + (ttl << 8 | proto) + addr_sum
    tcp_sum = (int.from_bytes(ports, "big") + int.from_bytes(ack_offset, "big") * 256
               + int.from_bytes(window, "big") + int.from_bytes(urgent, "big")
               + int.from_bytes(options, "big") + addr_sum + 6) % 0xFFFF
    data = memoryview(packet)[hdr_len:]
    total = len(data)
    last_flags = flags
    middle_flags = flags & ~(_TCP_FIN | _TCP_PSH) & 0xFF
    segments = []
    pack_ip = _IP20.pack
    pack_tcp = _TCP20.pack
    sums = chunk_sums(data, gso_size) or [0]
    start = 0
    while start < total or not segments:
        end = start + gso_size
        if end >= total:
            end = total
            seg_flags = last_flags
        else:
            seg_flags = middle_flags
        if segments:
            seg_flags &= ~_TCP_CWR
        chunk = data[start:end]
        size = end - start
        ip_csum = ~_fold(ip_sum + hdr_len + size + ident) & 0xFFFF
        csum = (tcp_sum + sums[len(segments)] + (seq >> 16) + (seq & 0xFFFF) + seg_flags
                + thl + size)
        segments.append(b"".join((
            pack_ip(vihl, tos, hdr_len + size, ident, frag, ttl, proto, ip_csum, addresses),
            pack_tcp(ports, seq, ack_offset, seg_flags, window,
                     (~_fold(csum) & 0xFFFF) or 0xFFFF, urgent),
            options, chunk)))
        start = end
        ident = (ident + 1) & 0xFFFF
        seq = (seq + size) & 0xFFFFFFFF
    return segments


def _key_mask(hdr_len: int) -> int:
    """What must be equal in the headers of segments that join: all but IP total length,
    ID and checksum, the sequence number, PSH and the TCP checksum."""
    mask = bytearray(b"\xff" * hdr_len)
    for start, end in ((2, 6), (10, 12), (24, 28), (36, 38)):
        mask[start:end] = bytes(end - start)
    mask[33] = 0xFF & ~_TCP_PSH
    return int.from_bytes(mask, "big")


_KEY_MASKS = {hdr_len: _key_mask(hdr_len) for hdr_len in range(40, 81, 4)}


class _Run:
    """Consecutive segments of one TCP flow being joined."""

    __slots__ = ("hdr_len", "heads", "key", "next_seq", "packets", "psh", "size", "total")

    def __init__(self, packet: bytes, hdr_len: int, key: int) -> None:
        self.hdr_len = hdr_len
        self.key = key
        self.size = len(packet) - hdr_len  # gso_size: every segment but the last has it
        self.total = len(packet)
        self.packets = [packet]
        #: each segment's TCP header and pseudo-header length, summed (for its checksum)
        self.heads = [int.from_bytes(packet[20:hdr_len], "big") + len(packet) - 20]
        self.psh = bool(packet[33] & _TCP_PSH)
        self.next_seq = (int.from_bytes(packet[24:28], "big") + self.size) & 0xFFFFFFFF

    def add(self, packet: bytes) -> None:
        size = len(packet) - self.hdr_len
        self.packets.append(packet)
        self.heads.append(int.from_bytes(packet[20:self.hdr_len], "big") + len(packet) - 20)
        self.total += size
        self.next_seq = (self.next_seq + size) & 0xFFFFFFFF
        self.psh = bool(packet[33] & _TCP_PSH)

    def frames(self) -> list[bytes]:
        """The coalesced packet with its virtio header; each segment alone (plain) when
        there is just one or a checksum is wrong (the kernel then drops that one)."""
        packets = self.packets
        if len(packets) == 1:
            return [PLAIN_HDR + packets[0]]
        hdr_len = self.hdr_len
        first = packets[0]
        head = bytearray(first[:hdr_len])
        total = self.total
        head[2:4] = total.to_bytes(2, "big")
        head[10:12] = b"\0\0"
        head[10:12] = _ip_checksum(head[:20]).to_bytes(2, "big")
        if self.psh:
            head[33] |= _TCP_PSH
        pseudo = int.from_bytes(head[12:20], "big") + 6
        head[36:38] = _fold(pseudo + total - 20).to_bytes(2, "big")
        frame = b"".join((gso_header(hdr_len, self.size, 20), head,
                          *[memoryview(p)[hdr_len:] for p in packets]))
        sums = chunk_sums(memoryview(frame)[VNET_HDR_LEN + hdr_len:], self.size)
        for head_sum, payload_sum in zip(self.heads, sums, strict=True):
            if (pseudo + head_sum + payload_sum) % 0xFFFF:
                return [PLAIN_HDR + p for p in packets]
        return [frame]


def _candidate(packet: bytes) -> int:
    """The header length (IP + TCP) of a packet that may join others, else 0: IPv4 TCP
    without IP options, not a fragment, exactly ACK or ACK|PSH, with payload."""
    if len(packet) < 41 or packet[0] != 0x45 or packet[9] != 6:
        return 0
    if (packet[6] & 0x3F) or packet[7] or (packet[2] << 8 | packet[3]) != len(packet):
        return 0
    flags = packet[33]
    if flags != _TCP_ACK and flags != _TCP_ACK | _TCP_PSH:
        return 0
    hdr_len = 20 + (packet[32] >> 4) * 4
    if hdr_len < 40 or len(packet) <= hdr_len:
        return 0
    return hdr_len


def coalesce_tcp4(packets: list[bytes]) -> list[bytes]:
    """TUN frames for ``packets`` in order: runs of in-sequence, equal-sized segments of
    one TCP flow become one GSO packet (only when every segment's checksum is right, so
    the kernel's check is not skipped for a bad one); everything else passes alone."""
    frames: list[bytes] = []
    run: _Run | None = None
    for packet in packets:
        hdr_len = _candidate(packet)
        if hdr_len:
            key = int.from_bytes(packet[:hdr_len], "big") & _KEY_MASKS[hdr_len]
            if run is not None:
                size = len(packet) - hdr_len
                if (key == run.key and not run.psh and size <= run.size
                        and run.total + size <= _MAX_PACKET
                        and int.from_bytes(packet[24:28], "big") == run.next_seq
                        and (run.total - hdr_len) % run.size == 0):
                    run.add(packet)
                    continue
                frames.extend(run.frames())
            run = _Run(packet, hdr_len, key)
            continue
        if run is not None:
            frames.extend(run.frames())
            run = None
        frames.append(PLAIN_HDR + packet)
    if run is not None:
        frames.extend(run.frames())
    return frames
