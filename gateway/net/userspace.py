"""The userspace dataplane backend: TUN + raw/UDP sockets driven by asyncio.

This is the I/O shell around `gateway.dataplane.engine.Dataplane`.  Each readiness
callback drains up to ``BATCH`` reads before returning to the loop.  With offloads (the
default) the system calls are fewer than the packets: a TUN read may be a whole TCP burst
(cut into segments here, `gateway.net.offload`), ESP-in-UDP to one peer leaves in one
``sendmsg`` (UDP GSO) and arrives joined (UDP GRO), and the decrypted segments of a flow
go back into the TUN as one write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence

from gateway.dataplane.drops import DropCounters, DropReason
from gateway.dataplane.engine import SEND_ESP, SEND_UDP, Dataplane, IkeDatagram
from gateway.dataplane.sa import Mode
from gateway.net.links import Links, prepare_tun_sysctls
from gateway.net.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    PLAIN_HDR,
    VNET_HDR_LEN,
    OffloadError,
    coalesce_tcp4,
    complete_checksum,
    parse_vnet_header,
    segment_tcp4,
)
from gateway.net.sockets import UDP_GRO, WireSockets
from gateway.net.tun import TunDevice

log = logging.getLogger("gateway.dataplane")

BATCH = 256
#: a TUN frame: a GSO packet of up to 64 KiB behind its virtio header
TUN_READ = 65536 + 2048
#: a UDP read: up to 64 KiB of datagrams joined by GRO
UDP_READ = 65536
#: room for the UDP_GRO control message (an int) and whatever else the kernel adds: with
#: only CMSG_SPACE(4) the kernel truncated it (MSG_CTRUNC) and joined datagrams were
#: taken for one
_CMSG_SPACE = 256
UDP_SEGMENT = 103
#: what one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS; an IPv4 packet)
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65535 - 20 - 8
#: decrypted packets gathered before they are joined and written to the TUN
WRITE_BATCH = 64


class UdpBatch:
    """ESP-in-UDP datagrams for one peer sent with one ``sendmsg`` (UDP_SEGMENT, Linux
    4.18): every datagram but the last has the size of the first.  Without GSO (or once
    the kernel refused it) each is sent on its own."""

    __slots__ = ("address", "closed", "datagrams", "drops", "gso", "parts", "sends", "size", "sock",
                 "total")

    def __init__(self, sock: socket.socket, drops: DropCounters, gso: bool) -> None:
        self.sock = sock
        self.drops = drops
        self.gso = gso
        self.parts: list[bytes] = []
        self.address: tuple[str, int] = ("", 0)
        self.size = 0
        self.total = 0
        self.closed = False
        self.sends = 0  # sendmsg calls that carried more than one datagram (GSO)
        self.datagrams = 0  # datagrams they carried

    def add(self, data: bytes, address: tuple[str, int]) -> None:
        n = len(data)
        parts = self.parts
        if parts:
            if (n <= self.size and not self.closed and address == self.address
                    and len(parts) < GSO_MAX_SEGMENTS and self.total + n <= GSO_MAX_BYTES):
                parts.append(data)
                self.total += n
                self.closed = n < self.size  # a short one must be the last
                return
            self.flush()
        if not self.gso:
            self._send_each([data], address)
            return
        self.parts = [data]
        self.address = address
        self.size = self.total = n
        self.closed = False

    def flush(self) -> None:
        parts = self.parts
        if not parts:
            return
        self.parts = []
        if len(parts) == 1:
            self._send_each(parts, self.address)
            return
        try:
            self.sock.sendmsg(parts, [(socket.SOL_UDP, UDP_SEGMENT,
                                       self.size.to_bytes(2, sys.byteorder))], 0, self.address)
            self.sends += 1
            self.datagrams += len(parts)
        except BlockingIOError:
            for _ in parts:
                self.drops.count(DropReason.SEND_FAILED)
        except OSError as exc:
            # no UDP GSO here (an old kernel, a route through a device without checksum
            # offload): from now on one datagram per send
            self.gso = False
            log.warning("dataplane.udp_gso_off error=%s", exc)
            self._send_each(parts, self.address)

    def _send_each(self, parts: Sequence[bytes], address: tuple[str, int]) -> None:
        sendto = self.sock.sendto
        for data in parts:
            try:
                sendto(data, address)
            except OSError:
                self.drops.count(DropReason.SEND_FAILED)


class UserspaceBackend:
    """Owns the TUN device, the wire sockets and the routes into the TUN."""

    name = "userspace"

    def __init__(self, engine: Dataplane, *, tun_name: str, tun_mtu: int, public_interface: str,
                 public_address: str, mark: int, table: int, offload: bool = True) -> None:
        self.public_interface = public_interface
        self.engine = engine
        self.tun_name = tun_name
        self.tun_mtu = tun_mtu
        self.public_address = public_address
        self.mark = mark
        self.table = table
        self.tun: TunDevice | None = None
        self.sockets: WireSockets | None = None
        self.links: Links | None = None
        self.tun_index = 0
        self.ike_handler: Callable[[IkeDatagram], None] | None = None
        self.tun_write_errors = 0
        #: how much the offloads saved: TCP bursts read and the segments cut from them,
        #: joined TUN writes and the segments in them, GRO reads and their datagrams
        self.offload_counters = {"tun_bursts": 0, "tun_burst_segments": 0, "tun_joined_writes": 0,
                                 "tun_joined_segments": 0, "udp_gro_reads": 0,
                                 "udp_gro_datagrams": 0}
        self.offload = offload
        self.udp_gro = False
        self._udp: UdpBatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # pyroute2's synchronous API runs its own event loop: keep it on one thread.
        self._netlink = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netlink")

    async def _nl(self, func: Callable[..., object], *args: object, **kwargs: object) -> object:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._netlink, lambda: func(*args, **kwargs))

    async def on_netlink_thread(self, func: Callable[..., object], *args: object) -> object:
        """Run ``func`` on the netlink thread (the daemon drops that thread's privileges too:
        capabilities are per thread)."""
        return await self._nl(func, *args)

    # -- life cycle ------------------------------------------------------------------
    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.links = await self._nl(Links)  # type: ignore[assignment]
        assert self.links is not None
        await self._nl(self.links.check_address, self.public_interface, self.public_address)
        self.tun = TunDevice(self.tun_name, offload=self.offload)
        self.tun_name = self.tun.name
        changed = prepare_tun_sysctls(self.tun_name)  # before "up": no IPv6 chatter
        self.tun_index = await self._nl(self.links.bring_up, self.tun_name, self.tun_mtu)  # type: ignore[assignment]
        if changed:
            log.info("sysctl.changed %s", " ".join(changed))
        self.sockets = WireSockets.open(self.public_address, self.mark)
        if self.offload:
            try:
                self.sockets.natt.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
                self.udp_gro = True
            except OSError:
                pass
        self._udp = UdpBatch(self.sockets.natt, self.engine.drops, gso=self.offload)
        log.info("dataplane.offload tun=%s udp_gso=%s udp_gro=%s",
                 "tso4" if self.tun.vnet else "off", "on" if self.offload else "off",
                 "on" if self.udp_gro else "off")
        loop.add_reader(self.tun.fd, self._on_tun)
        loop.add_reader(self.sockets.esp.fileno(), self._on_raw, self.sockets.esp)
        loop.add_reader(self.sockets.ah.fileno(), self._on_raw, self.sockets.ah)
        loop.add_reader(self.sockets.natt.fileno(), self._on_natt)
        loop.add_reader(self.sockets.ike.fileno(), self._on_ike)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None:
            if self.tun is not None:
                loop.remove_reader(self.tun.fd)
            if self.sockets is not None:
                for s in (self.sockets.esp, self.sockets.ah, self.sockets.natt, self.sockets.ike):
                    loop.remove_reader(s.fileno())
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None
        if self.tun is not None:
            self.tun.close()  # its routes go with it
            self.tun = None
        if self.links is not None:
            self._netlink.submit(self.links.close).result(timeout=10)
            self.links = None
        self._netlink.shutdown(wait=False)

    # -- routing ---------------------------------------------------------------------
    async def route(self, mode: Mode, local: list[ipaddress.IPv4Network],
                    remote: list[ipaddress.IPv4Network]) -> None:
        """Send packets for ``remote`` into the TUN."""
        links = self.links
        assert links is not None
        if mode is Mode.TUNNEL:
            source = await self._nl(links.local_source_for, local)
            for net in remote:
                await self._nl(links.route_into, self.tun_index, net, source=source)
        else:
            await self._nl(links.rule_unmarked_to_table, self.mark, self.table)
            # The TUN has no address: name the source, or the kernel would pick a LAN one.
            for net in remote:
                await self._nl(links.route_into, self.tun_index, net, table=self.table,
                               source=self.public_address)

    async def unroute(self, mode: Mode, remote: list[ipaddress.IPv4Network]) -> None:
        """Stop sending packets for ``remote`` into the TUN (their connection went away)."""
        links = self.links
        assert links is not None
        table = self.table if mode is Mode.TRANSPORT else None
        for net in remote:
            await self._nl(links.route_remove, self.tun_index, net, table=table)

    async def route_unmarked(self, mode: Mode, local: list[ipaddress.IPv4Network],
                             remote: list[ipaddress.IPv4Network]) -> None:
        """Send packets for ``remote`` into the TUN through the table only unmarked packets
        use (policy routes): what the engine sends in clear on its marked socket leaves by
        the main table instead of coming back.  Our own packets take a LAN source (tunnel
        mode, one in ``local``) or the public address."""
        links = self.links
        assert links is not None
        source = await self._nl(links.local_source_for, local) if mode is Mode.TUNNEL else None
        await self._nl(links.rule_unmarked_to_table, self.mark, self.table)
        for net in remote:
            await self._nl(links.route_into, self.tun_index, net, table=self.table,
                           source=source or self.public_address)

    def io_status(self) -> dict[str, object]:
        """What `gateway status` shows of the backend's I/O: the offloads in use and how
        many system calls they saved."""
        tun = self.tun
        udp = self._udp
        return {
            "offload": {"tun": "tso4" if tun is not None and tun.vnet else "off",
                        "udp_gso": bool(udp and udp.gso), "udp_gro": self.udp_gro},
            **self.offload_counters,
            "udp_gso_sends": udp.sends if udp else 0,
            "udp_gso_datagrams": udp.datagrams if udp else 0,
            "tun_write_errors": self.tun_write_errors,
        }

    # -- PPP links (L2TP/IPsec) ------------------------------------------------------------
    def transmit(self, result: tuple[int, bytes, tuple[str, int]]) -> None:
        """Send what the engine made (ESP-protected L2TP from the dial-up service)."""
        assert self.sockets is not None
        kind, data, address = result
        try:
            if kind == SEND_UDP:
                self.sockets.natt.sendto(data, address)
            elif kind == SEND_ESP:
                self.sockets.esp.sendto(data, address)
            else:
                self.sockets.hdrincl.sendto(data, address)
        except OSError:
            self.engine.drops.count(DropReason.SEND_FAILED)

    def write_tun(self, packet: bytes) -> None:
        """Hand a packet that came out of a PPP link to the kernel."""
        assert self.tun is not None
        try:
            os.write(self.tun.fd, PLAIN_HDR + packet if self.tun.vnet else packet)
        except OSError:
            self.tun_write_errors += 1

    async def link_change(self, op: str, network: ipaddress.IPv4Network,
                          source: ipaddress.IPv4Address | None = None) -> None:
        """Addresses and routes of PPP links on the TUN (ours on a link; a dial-in pool; a
        LAC's remote subnets), so the kernel sends their traffic into the dataplane."""
        links = self.links
        assert links is not None
        if op == "address_add":
            await self._nl(links.address_on, self.tun_index, network, add=True)
        elif op == "address_del":
            await self._nl(links.address_on, self.tun_index, network, add=False)
        elif op == "route_add":
            await self._nl(links.route_into, self.tun_index, network,
                           source=str(source) if source is not None else None)
        elif op == "route_del":
            await self._nl(links.route_remove, self.tun_index, network)

    # -- IKE ------------------------------------------------------------------------------
    def send_ike(self, data: bytes, local_port: int, remote: tuple[str, int]) -> None:
        """Send an IKE message from port 500, or from 4500 behind the non-ESP marker
        (RFC 3948 2.2); ``data`` of one 0xFF octet is a NAT-T keepalive, sent as is."""
        assert self.sockets is not None
        try:
            if local_port == 4500:
                self.sockets.natt.sendto(data if data == b"\xff" else b"\0\0\0\0" + data, remote)
            else:
                self.sockets.ike.sendto(data, remote)
        except OSError as exc:
            log.warning("ike.send_failed peer=%s:%d error=%s", remote[0], remote[1], exc)

    def _on_ike(self) -> None:
        assert self.sockets is not None
        recvfrom = self.sockets.ike.recvfrom
        for _ in range(BATCH):
            try:
                data, address = recvfrom(65536)
            except BlockingIOError:
                return
            except OSError:
                continue
            if self.ike_handler is not None:
                self.ike_handler(IkeDatagram(data, address, 500))

    # -- hot path ------------------------------------------------------------------------
    def _on_tun(self) -> None:
        assert self.tun is not None and self.sockets is not None and self._udp is not None
        fd = self.tun.fd
        vnet = self.tun.vnet
        read = os.read
        outbound = self.engine.outbound
        burst = self.engine.outbound_burst
        udp_add = self._udp.add
        esp_send = self.sockets.esp.sendto
        raw_send = self.sockets.hdrincl.sendto
        try:
            for _ in range(BATCH):
                try:
                    frame = read(fd, TUN_READ)
                except BlockingIOError:
                    return
                except OSError as exc:
                    log.error("tun.read_failed %s", exc)
                    return
                if not vnet:
                    results = (outbound(frame),)
                elif frame[:2] == b"\0\0":  # no offload: the common small packet
                    results = (outbound(frame[VNET_HDR_LEN:]),)
                else:
                    packets = self._from_tun_frame(frame)
                    results = burst(packets) if packets else ()  # type: ignore[assignment]
                for result in results:
                    if result is None:
                        continue
                    kind, data, address = result
                    if kind == SEND_UDP:
                        udp_add(data, address)
                        continue
                    try:
                        if kind == SEND_ESP:
                            esp_send(data, address)
                        else:
                            raw_send(data, address)
                    except OSError:
                        self.engine.drops.count(DropReason.SEND_FAILED)
        finally:
            self._udp.flush()

    def _from_tun_frame(self, frame: bytes) -> Sequence[bytes]:
        """The packets of a TUN frame with offload: a TCP burst cut into segments, or one
        packet with its checksum completed."""
        try:
            flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = parse_vnet_header(frame)
            packet = frame[VNET_HDR_LEN:]
            if gso_type == GSO_TCPV4:
                segments = segment_tcp4(packet, gso_size)
                self.offload_counters["tun_bursts"] += 1
                self.offload_counters["tun_burst_segments"] += len(segments)
                return segments
            if gso_type != GSO_NONE:
                raise OffloadError(f"GSO type {gso_type} was not offered")
            if flags & F_NEEDS_CSUM:
                packet = complete_checksum(packet, csum_start, csum_offset)
            return (packet,)
        except OffloadError:
            self.engine.drops.count(DropReason.MALFORMED)
            return ()

    def _write_tun(self, packets: list[bytes]) -> None:
        """Decrypted packets into the TUN: with offload, each run of one TCP flow's
        segments as one write."""
        assert self.tun is not None
        fd = self.tun.fd
        write = os.write
        frames = coalesce_tcp4(packets) if self.tun.vnet else packets
        if len(frames) < len(packets):  # some were joined: frames with a GSO type
            writes = sum(1 for frame in frames if frame[1])
            self.offload_counters["tun_joined_writes"] += writes
            self.offload_counters["tun_joined_segments"] += len(packets) - len(frames) + writes
        for frame in frames:
            try:
                write(fd, frame)
            except OSError:
                self.tun_write_errors += 1

    def _on_raw(self, sock: socket.socket) -> None:
        recv = sock.recv
        inbound = self.engine.inbound_ip
        out: list[bytes] = []
        try:
            for _ in range(BATCH):
                try:
                    packet = recv(65536)
                except BlockingIOError:
                    return
                inner = inbound(packet)
                if inner is not None:
                    out.append(inner)
                    if len(out) >= WRITE_BATCH:
                        self._write_tun(out)
                        out = []
        finally:
            if out:
                self._write_tun(out)

    def _on_natt(self) -> None:
        assert self.sockets is not None
        recvmsg = self.sockets.natt.recvmsg
        inbound = self.engine.inbound_udp
        out: list[bytes] = []
        try:
            for _ in range(BATCH):
                try:
                    data, ancillary, flags, address = recvmsg(UDP_READ, _CMSG_SPACE)
                except BlockingIOError:
                    return
                except OSError:
                    continue  # e.g. ICMP port unreachable reported on the socket
                if flags & socket.MSG_CTRUNC:  # the size of joined datagrams is lost
                    self.engine.drops.count(DropReason.MALFORMED)
                    continue
                size = 0
                for level, kind, value in ancillary:
                    if level == socket.SOL_UDP and kind == UDP_GRO:
                        size = int.from_bytes(value[:4], sys.byteorder)
                if size and len(data) > size:
                    datagrams: Sequence[bytes] = [data[i:i + size] for i in range(0, len(data), size)]
                    self.offload_counters["udp_gro_reads"] += 1
                    self.offload_counters["udp_gro_datagrams"] += len(datagrams)
                else:
                    datagrams = (data,)
                for datagram in datagrams:
                    inner = inbound(datagram, address)
                    if inner is None:
                        continue
                    if type(inner) is bytes:
                        out.append(inner)
                    elif self.ike_handler is not None:
                        self.ike_handler(inner)  # type: ignore[arg-type]
                if len(out) >= WRITE_BATCH:
                    self._write_tun(out)
                    out = []
        finally:
            if out:
                self._write_tun(out)
