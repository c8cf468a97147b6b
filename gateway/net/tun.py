"""The TUN device: where the kernel hands us cleartext packets and takes them back."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02


class TunDevice:
    """A non-persistent TUN interface (it disappears, with its routes, when closed).

    With ``offload`` each read and write carries a virtio_net_hdr and the kernel may hand
    over (and take) whole TCP bursts with partial checksums (`gateway.net.offload`);
    ``vnet`` says whether it does.  A kernel that refuses the offload gets a plain TUN.
    """

    def __init__(self, name: str, offload: bool = False) -> None:
        self.vnet = False
        if offload:
            try:
                self._open(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
                self.vnet = True
                return
            except OSError:
                self.close()
        self._open(name, IFF_TUN | IFF_NO_PI)

    def _open(self, name: str, flags: int) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH", name.encode(), flags)
            result = fcntl.ioctl(self.fd, TUNSETIFF, ifr)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise
        self.name = result[:16].rstrip(b"\0").decode()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
