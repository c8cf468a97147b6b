"""The gateway process: asyncio wiring of config, dataplane backend, control and metrics.

Everything protocol-shaped lives in sans-IO cores; this module only connects them to
sockets, timers and signals.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any

from gateway import __version__
from gateway.config import LoadedConfig
from gateway.control.protocol import ControlServer
from gateway.dataplane.edge import EdgePolicy, ManagementRule
from gateway.dataplane.engine import Dataplane, IkeDatagram, SaExhausted
from gateway.logs import event
from gateway.manual import ManualTunnel, build_manual

log = logging.getLogger("gateway")

HOUSEKEEPING_SECONDS = 1.0
DROP_REPORT_SECONDS = 10.0


class StartupError(RuntimeError):
    """The gateway cannot start; the message says why, for the operator."""


def sd_notify(message: str) -> None:
    """systemd readiness (Type=notify), without a libsystemd dependency."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
    except OSError:
        pass


class Gateway:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.config = cfg
        self.started = time.time()
        mgmt = tuple(ManagementRule(m.source, m.protocol, m.port) for m in cfg.edge.management)
        self.edge = EdgePolicy(cfg.gateway.public_interface, cfg.gateway.public_address, mgmt)
        self.engine = Dataplane(self.edge)
        self.tunnels: dict[str, ManualTunnel] = {}
        self.backend: Any = None
        self.control = ControlServer(cfg.control.socket, {
            "status": lambda req: self.status(),
            "sas": lambda req: self.sas(),
        })
        self._stop = asyncio.Event()
        self._last_drops: dict[str, int] = {}
        self._last_drop_report = 0.0
        self.edge_applied = False

    # -- start / stop ------------------------------------------------------------------
    def _make_backend(self) -> Any:
        dp = self.config.dataplane
        if dp.backend == "kernel":
            raise StartupError("the kernel (XFRM) backend is not available in this build; "
                               "use dataplane.backend: userspace")
        from gateway.net.userspace import UserspaceBackend

        return UserspaceBackend(self.engine, tun_name=dp.tun_name, tun_mtu=dp.tun_mtu,
                                public_interface=self.config.gateway.public_interface,
                                public_address=str(self.config.gateway.public_address),
                                mark=dp.socket_mark, table=dp.routing_table)

    async def start(self) -> None:
        cfg = self.config
        for warning in self.loaded.warnings:
            event(log, "config.warning", logging.WARNING, detail=str(warning))
        self.backend = self._make_backend()
        loop = asyncio.get_running_loop()
        try:
            await self.backend.start(loop)
        except (OSError, LookupError) as exc:
            raise StartupError(f"cannot start the {self.backend.name} dataplane: {exc}") from exc
        if cfg.edge.nftables:
            self._apply_edge()
        self.backend.ike_handler = self._ike_datagram
        event(log, "dataplane.started", backend=self.backend.name, tun=self.backend.tun_name,
              mtu=cfg.dataplane.tun_mtu, public=str(cfg.gateway.public_address))
        for name, conn in cfg.connections.items():
            if conn.keying != "manual":
                event(log, "connection.skipped", logging.WARNING, connection=name,
                       reason="IKE keying is not available in this build")
                continue
            tunnel = build_manual(name, conn, cfg.gateway.public_address,
                                  cfg.dataplane.replay_window)
            await self._install(tunnel)
        await self.control.start()
        if cfg.metrics.listen is not None:
            from gateway.metrics import serve

            try:
                serve(cfg.metrics.listen, self.snapshot)
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on "
                                   f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}: {exc}") from exc
            event(log, "metrics.listening", address=f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}")
        event(log, "gateway.ready", name=cfg.gateway.name, version=__version__,
              control=cfg.control.socket, connections=len(self.tunnels))
        sd_notify("READY=1\nSTATUS=running")

    def _apply_edge(self) -> None:
        from appliance import edge as nft

        if not nft.available():
            event(log, "edge.nftables_absent", logging.WARNING,
                  detail="nft not found: only the userspace edge check applies")
            return
        try:
            nft.apply(nft.render(self.edge, self.config.gateway.name))
        except nft.EdgeError as exc:
            raise StartupError(str(exc)) from exc
        self.edge_applied = True
        event(log, "edge.applied", interface=self.edge.public_interface,
              address=str(self.edge.public_address), management=len(self.edge.management))

    async def _install(self, tunnel: ManualTunnel) -> None:
        self.engine.install_inbound(tunnel.inbound)
        self.engine.install_policy(tunnel.policy)
        await self.backend.route(tunnel.policy.mode, tunnel.local_subnets, tunnel.remote_subnets)
        self.tunnels[tunnel.name] = tunnel
        for sa in (tunnel.outbound, tunnel.inbound):
            if sa.esp is not None and sa.esp.weak:
                event(log, "sa.weak_algorithm", logging.WARNING, connection=tunnel.name,
                      algorithm=sa.algorithm, detail="legacy algorithm: only for old peers")
            event(log, "sa.installed", connection=tunnel.name, direction=sa.direction.value,
                  spi=f"0x{sa.spi:08x}", protocol="esp" if sa.protocol == 50 else "ah",
                  mode=sa.mode.value, algorithm=sa.algorithm, esn=sa.esn,
                  encap=f"udp:{sa.encap.remote_port}" if sa.encap else "none",
                  peer=str(sa.remote))
        event(log, "tunnel.up", connection=tunnel.name, keying="manual",
              local=",".join(map(str, tunnel.local_subnets)),
              remote=",".join(map(str, tunnel.remote_subnets)))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            await self.start()
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), HOUSEKEEPING_SECONDS)
                except TimeoutError:
                    pass
                self._housekeeping()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        await self.control.stop()
        if self.backend is not None:
            self.backend.stop()
        event(log, "gateway.stopped", name=self.config.gateway.name)

    # -- periodic ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        while self.engine.events:
            ev = self.engine.events.popleft()
            if isinstance(ev, SaExhausted):
                event(log, "sa.seq_exhausted", logging.ERROR, connection=ev.sa_name,
                      spi=f"0x{ev.spi:08x}", detail="sequence numbers used up: rekey required")
        now = time.monotonic()
        if now - self._last_drop_report >= DROP_REPORT_SECONDS:
            self._last_drop_report = now
            drops = dict(self.engine.drops)
            delta = {k: v - self._last_drops.get(k, 0) for k, v in drops.items()
                     if v != self._last_drops.get(k, 0)}
            if delta:  # one summary line per period: a flood cannot flood the log
                event(log, "dataplane.drops", logging.WARNING,
                      **{k: delta[k] for k in sorted(delta)})
            self._last_drops = drops

    def _ike_datagram(self, datagram: IkeDatagram) -> None:
        event(log, "ike.ignored", logging.DEBUG, peer=f"{datagram.address[0]}:{datagram.address[1]}",
              reason="no IKE responder in this build")

    # -- control ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        snap = self.engine.snapshot()
        if self.edge_applied:
            from appliance import edge as nft

            snap["edge_counters"] = nft.counters()
        return snap

    def status(self) -> dict[str, Any]:
        snap = self.snapshot()
        connections = []
        for name, tunnel in self.tunnels.items():
            out_sa, in_sa = tunnel.outbound, tunnel.inbound
            connections.append({
                "name": name, "state": "up", "keying": "manual", "mode": tunnel.policy.mode.value,
                "peer": str(out_sa.remote), "local": [str(n) for n in tunnel.local_subnets],
                "remote": [str(n) for n in tunnel.remote_subnets], "algorithm": out_sa.algorithm,
                "packets_out": out_sa.counters.packets, "bytes_out": out_sa.counters.bytes,
                "packets_in": in_sa.counters.packets, "bytes_in": in_sa.counters.bytes,
                "drops_in": in_sa.counters.drops,
            })
        backend = self.backend
        return {
            "name": self.config.gateway.name, "version": __version__, "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "backend": backend.name if backend else None,
            "tun": backend.tun_name if backend else None,
            "public_address": str(self.config.gateway.public_address),
            "connections": connections, "drops": snap["drops"],
            "edge": {"nftables": self.edge_applied, "counters": snap.get("edge_counters", {})},
            "keepalives_received": snap["keepalives_received"],
        }

    def sas(self) -> dict[str, Any]:
        return {"sas": self.engine.snapshot()["sas"]}


def run(loaded: LoadedConfig) -> None:
    gateway = Gateway(loaded)
    asyncio.run(gateway.run())
