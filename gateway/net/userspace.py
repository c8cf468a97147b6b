"""The userspace dataplane backend: TUN + raw/UDP sockets driven by asyncio.

This is the I/O shell around `gateway.dataplane.engine.Dataplane`.  Each readiness
callback drains up to ``BATCH`` packets before returning to the loop, which keeps the
per-packet cost to one syscall in, one out and the transform.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

from gateway.dataplane.drops import DropReason
from gateway.dataplane.engine import SEND_ESP, SEND_UDP, Dataplane, IkeDatagram
from gateway.dataplane.sa import Mode
from gateway.net.links import Links, prepare_tun_sysctls
from gateway.net.sockets import WireSockets
from gateway.net.tun import TunDevice

log = logging.getLogger("gateway.dataplane")

BATCH = 256


class UserspaceBackend:
    """Owns the TUN device, the wire sockets and the routes into the TUN."""

    name = "userspace"

    def __init__(self, engine: Dataplane, *, tun_name: str, tun_mtu: int, public_interface: str,
                 public_address: str, mark: int, table: int) -> None:
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
        self.tun = TunDevice(self.tun_name)
        self.tun_name = self.tun.name
        changed = prepare_tun_sysctls(self.tun_name)  # before "up": no IPv6 chatter
        self.tun_index = await self._nl(self.links.bring_up, self.tun_name, self.tun_mtu)  # type: ignore[assignment]
        if changed:
            log.info("sysctl.changed %s", " ".join(changed))
        self.sockets = WireSockets.open(self.public_address, self.mark)
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
            os.write(self.tun.fd, packet)
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
        assert self.tun is not None and self.sockets is not None
        fd = self.tun.fd
        read = os.read
        outbound = self.engine.outbound
        esp_send = self.sockets.esp.sendto
        udp_send = self.sockets.natt.sendto
        raw_send = self.sockets.hdrincl.sendto
        for _ in range(BATCH):
            try:
                packet = read(fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("tun.read_failed %s", exc)
                return
            result = outbound(packet)
            if result is None:
                continue
            kind, data, address = result
            try:
                if kind == SEND_UDP:
                    udp_send(data, address)
                elif kind == SEND_ESP:
                    esp_send(data, address)
                else:
                    raw_send(data, address)
            except OSError:
                self.engine.drops.count(DropReason.SEND_FAILED)

    def _on_raw(self, sock: socket.socket) -> None:
        assert self.tun is not None
        fd = self.tun.fd
        write = os.write
        recv = sock.recv
        inbound = self.engine.inbound_ip
        for _ in range(BATCH):
            try:
                packet = recv(65536)
            except BlockingIOError:
                return
            inner = inbound(packet)
            if inner is not None:
                try:
                    write(fd, inner)
                except OSError:
                    self.tun_write_errors += 1

    def _on_natt(self) -> None:
        assert self.tun is not None and self.sockets is not None
        fd = self.tun.fd
        write = os.write
        recvfrom = self.sockets.natt.recvfrom
        inbound = self.engine.inbound_udp
        for _ in range(BATCH):
            try:
                data, address = recvfrom(65536)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. ICMP port unreachable reported on the socket
            inner = inbound(data, address)
            if inner is None:
                continue
            if type(inner) is bytes:
                try:
                    write(fd, inner)
                except OSError:
                    self.tun_write_errors += 1
            elif self.ike_handler is not None:
                self.ike_handler(inner)  # type: ignore[arg-type]
