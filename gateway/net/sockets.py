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
BUFFER_BYTES = 8 * 1024 * 1024


def _tune(sock: socket.socket, mark: int) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        try:  # beyond net.core.*mem_max, as root
            sock.setsockopt(socket.SOL_SOCKET, opt + 32, BUFFER_BYTES)  # SO_*BUFFORCE
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
            natt = _tune(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), mark)
            opened.append(natt)
            natt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            natt.bind((public_address, natt_port))
            ike = _tune(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), mark)
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
