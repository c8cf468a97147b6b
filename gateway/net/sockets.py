"""The wire-side sockets of the userspace dataplane.

* ``esp``: raw IP protocol 50. Receives whole IPv4 packets; sends ESP payloads (the
  kernel adds the IPv4 header).
* ``ah``: raw IP protocol 51, receive only.
* ``hdrincl``: IPPROTO_RAW, sends complete IPv4 packets we built (AH covers the header).
* ``natt``: UDP 4500 on the public address (RFC 3948), shared by ESP and IKE.
* ``ike``: UDP 500 on the public address (RFC 7296 2).

Every socket carries the gateway's fwmark so its packets bypass the transport-mode
routing table (see `gateway.net.links`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

SO_MARK = 36
#: UDP generic receive offload (Linux 5.0): datagrams of one flow arrive joined, their size
#: in a control message
UDP_GRO = 104
#: What may wait to be sent (a UDP GSO send is up to 64 KiB at once).
SEND_BYTES = 8 * 1024 * 1024
#: What may wait for the dataplane on the NAT-T socket: enough for a stall of some 10 ms
#: at 1 Gbit/s, not more.  A deeper queue only adds delay under load (with 8 MiB a ping
#: through a saturated tunnel waited 17 ms in it; with 1 MiB, 8 ms: bench/latency) and TCP
#: learns nothing from it until it overflows.
NATT_RECEIVE_BYTES = 1024 * 1024
#: The raw ESP/AH sockets keep a deep queue: when a raw socket's queue overflows, this
#: kernel answers the peer with ICMP "protocol 50 unreachable" (seen in the lab with
#: 1 MiB), which must never leave the gateway.
RECEIVE_BYTES = 8 * 1024 * 1024
#: UDP 500 carries only IKE: a short receive queue, so that in a flood beyond what we can
#: process the kernel drops (the initiators retransmit) rather than queue for seconds.  A
#: Main Mode's message 3 must be read before the unproven SA it answers gives way to newer
#: message 1s (gateway.ike.v1.endpoint): 256 KiB hold some 300 datagrams, 0.1 s of work.
IKE_RECEIVE_BYTES = 256 * 1024


def _tune(sock: socket.socket, mark: int, receive: int = RECEIVE_BYTES) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    for opt, size in ((socket.SO_RCVBUF, receive), (socket.SO_SNDBUF, SEND_BYTES)):
        sock.setsockopt(socket.SOL_SOCKET, opt, size)
        try:  # beyond net.core.*mem_max, as root
            sock.setsockopt(socket.SOL_SOCKET, opt + 32, size)  # SO_*BUFFORCE
        except OSError:
            pass
    return sock


@dataclass
class WireSockets:
    esp: socket.socket
    ah: socket.socket
    hdrincl: socket.socket
    natt: socket.socket
    ike: socket.socket

    @classmethod
    def open(cls, public_address: str, mark: int, natt_port: int = 4500, ike_port: int = 500) -> WireSockets:
        opened: list[socket.socket] = []
        try:
            esp = _tune(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP), mark)
            opened.append(esp)
            ah = _tune(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_AH), mark)
            opened.append(ah)
            raw = _tune(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW), mark)
            opened.append(raw)
            natt = _tune(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), mark, NATT_RECEIVE_BYTES)
            opened.append(natt)
            natt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            natt.bind((public_address, natt_port))
            ike = _tune(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), mark, IKE_RECEIVE_BYTES)
            opened.append(ike)
            ike.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ike.bind((public_address, ike_port))
            esp.bind((public_address, 0))
        except OSError:
            for s in opened:
                s.close()
            raise
        return cls(esp, ah, raw, natt, ike)

    def close(self) -> None:
        for s in (self.esp, self.ah, self.hdrincl, self.natt, self.ike):
            s.close()
