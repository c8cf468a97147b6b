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
from collections import Counter
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import LoadedConfig
from gateway.config.model import ManualSa
from gateway.control.protocol import ControlServer
from gateway.dataplane.edge import EdgePolicy, ManagementRule
from gateway.dataplane.engine import Acquire, Dataplane, IkeDatagram, SaExhausted
from gateway.dataplane.sa import Mode, SecurityAssociation
from gateway.dialup.service import DialupService
from gateway.ike.endpoints import IkeEndpoints
from gateway.ike.events import (
    AuthFailed,
    ChildSaActivate,
    ChildSaDown,
    ChildSaUp,
    IkeSaDown,
    IkeSaUp,
    NegotiationFailed,
    Note,
    PeerDead,
)
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2 import fromconfig
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ikestats import IkeStats
from gateway.keylog import EspSaKeys, KeyLog, KeyLogError
from gateway.logs import event
from gateway.manual import ManualTunnel, build_manual
from gateway.policy.model import PolicyError
from gateway.policy.runtime import PolicyRuntime, plan_policy
from gateway.tunnels import TrafficTotals, TunnelTable

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
    #: the IPsec policy in force (`gateway.policy.runtime`), installed at start
    policy: PolicyRuntime | None = None

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
        self.ike: IkeEndpoints | None = None
        self.keylog: KeyLog | None = None
        if cfg.logging.save_keys is not None:
            try:
                self.keylog = KeyLog(cfg.logging.save_keys)
            except KeyLogError as exc:
                raise StartupError(f"logging.save_keys: {exc}") from exc
        self.ike_tunnels = TunnelTable(self.engine, cfg.dataplane.replay_window, self.keylog)
        self.pools = fromconfig.pools(cfg)
        self.dialup: DialupService | None = None
        if any(c.l2tp is not None for c in cfg.connections.values()):
            self.dialup = DialupService(cfg, self.engine, self.ike_tunnels, self.pools, os.urandom)
            self.dialup.wake = self._dialup_wake
            self.engine.l2tp_handler = self._l2tp_datagram
        self._dialup_pending = False
        self._dialup_task: asyncio.Task[None] | None = None
        self._dialup_timer = asyncio.Event()
        self.ike_stats = IkeStats()
        self._ike_wake = asyncio.Event()
        self._ike_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._child_seen: dict[int, int] = {}
        self.control = ControlServer(cfg.control.socket, {
            "status": lambda req: self.status(),
            "sas": lambda req: self.sas(),
            "up": self._control_up,
            "down": self._control_down,
            "rekey": self._control_rekey,
            "sessions": self._control_sessions,
            "kick": self._control_kick,
            "policy": self._control_policy,
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
        if self.keylog is not None:
            event(log, "keys.saving", logging.WARNING, dir=str(self.keylog.directory),
                  detail="ESP keys are written to this directory: whoever reads them can decrypt "
                         "the traffic; for debugging only")
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
        peers = []
        for name, conn in cfg.connections.items():
            if conn.keying == "ike":
                try:
                    peers.append(fromconfig.peer_config(name, conn, cfg, self._config_dir()))
                except (fromconfig.AuthConfigError, OSError, ValueError) as exc:
                    raise StartupError(f"connection {name}: {exc}") from exc
                continue
            tunnel = build_manual(name, conn, cfg.gateway.public_address,
                                  cfg.dataplane.replay_window)
            await self._install(tunnel)
        self._start_ike(peers)
        await self._policy_start()
        await self.control.start()
        if cfg.metrics.listen is not None:
            from gateway.metrics import serve

            try:
                serve(cfg.metrics.listen, self._on_loop(self.metrics_snapshot))
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on "
                                   f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}: {exc}") from exc
            event(log, "metrics.listening", address=f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}")
        event(log, "gateway.ready", name=cfg.gateway.name, version=__version__,
              control=cfg.control.socket, connections=len(self.tunnels))
        sd_notify("READY=1\nSTATUS=running")

    def _config_dir(self) -> Path | None:
        return Path(self.loaded.path).resolve().parent if self.loaded.path else None

    # -- IKE -------------------------------------------------------------------------------
    def _start_ike(self, peers: list[Any]) -> None:
        cfg = self.config
        epoch = time.time() - time.monotonic()  # certificates are judged by the wall clock
        address = str(cfg.gateway.public_address)
        timing = fromconfig.timing(cfg, epoch)
        v2 = IkeV2Endpoint(address, [p for p in peers if p.version == 2], timing=timing,
                           cookie_threshold=cfg.ike.cookie_threshold, pools=self.pools)
        v1 = IkeV1Endpoint(address, [p for p in peers if p.version == 1], timing=timing)
        self.ike = IkeEndpoints(v2, v1)
        now = time.monotonic()
        for peer in peers:
            event(log, "connection.loaded", connection=peer.name, remote=peer.remote_address,
                  auth=peer.auth_method, local_id=str(peer.local_id), remote_id=str(peer.remote_id),
                  ike_version=peer.version,
                  ike=",".join(map(str, peer.ike_proposals)), esp=",".join(map(str, peer.child.proposals)))
            if cfg.connections[peer.name].ike.start == "start":
                self.ike.initiate(peer.name, now)
        self._ike_task = asyncio.get_running_loop().create_task(self._ike_timers())
        if self.dialup is not None:
            self._dialup_task = asyncio.get_running_loop().create_task(self._dialup_timers())
            self._dialup_flush()
        self._ike_flush()

    async def _ike_timers(self) -> None:
        while True:
            assert self.ike is not None
            deadline = self.ike.get_timer()
            now = time.monotonic()
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
            self._ike_wake.clear()
            try:
                await asyncio.wait_for(self._ike_wake.wait(), wait)
            except TimeoutError:
                pass
            now = time.monotonic()
            deadline = self.ike.get_timer()
            if deadline is not None and now >= deadline:
                self.ike.handle_timer(now)
                self._ike_flush()

    def _ike_datagram(self, datagram: IkeDatagram) -> None:
        if self.ike is None:
            return
        self.ike.receive(datagram.data, datagram.local_port, datagram.address, time.monotonic())
        self._ike_flush()

    def _ike_flush(self) -> None:
        """Send what the IKE core wants sent; act on and log what it reports."""
        ike = self.ike
        assert ike is not None
        for d in ike.datagrams_to_send():
            self.backend.send_ike(d.data, d.local_port, d.remote)
        while (ev := ike.next_event()) is not None:
            self._ike_event(ev)
        self._ike_wake.set()

    def _count_ike(self, key: str) -> None:
        self.ike_stats.other[key] += 1

    def _ike_event(self, ev: object) -> None:
        conn = self.config.connections.get(getattr(ev, "connection", None) or "")
        self.ike_stats.observe(ev, conn.ike.version if conn is not None else 0)
        if isinstance(ev, ChildSaUp):
            tunnel, new_routes = self.ike_tunnels.up(ev, activate=ev.activate)
            self._send_held(tunnel.name)
            event(log, "child.up", connection=ev.connection, spi_in=f"0x{ev.spi_in:08x}",
                  spi_out=f"0x{ev.spi_out:08x}", algorithm=ev.suite.name, mode=ev.mode,
                  encap=f"udp:{ev.encap_remote_port}" if ev.encap_remote_port else "none",
                  local_ts=",".join(map(str, ev.local_ts)), remote_ts=",".join(map(str, ev.remote_ts)),
                  rekey_of=f"0x{ev.rekey_of:08x}" if ev.rekey_of else None)
            if new_routes and not (self.dialup is not None and self.dialup.serves(ev.connection)):
                self._spawn(self.backend.route(Mode(ev.mode), tunnel.local_nets, tunnel.remote_nets))
            if self.dialup is not None:
                self.dialup.ipsec_up(ev.tunnel or ev.connection, ev.connection, time.monotonic())
                self._dialup_flush()
        elif isinstance(ev, ChildSaActivate):
            self.ike_tunnels.activate(ev.tunnel or ev.connection, ev.spi_in)
        elif isinstance(ev, ChildSaDown):
            self.ike_tunnels.down(ev)
            self._child_seen.pop(ev.spi_in, None)
            key = ev.tunnel or ev.connection
            remaining = self.ike_tunnels.tunnels.get(key)
            if self.dialup is not None and (remaining is None or not remaining.pairs):
                self.dialup.ipsec_down(key, time.monotonic())
                self._dialup_flush()
            event(log, "child.down", connection=ev.connection, spi_in=f"0x{ev.spi_in:08x}",
                  spi_out=f"0x{ev.spi_out:08x}", reason=ev.reason)
        elif isinstance(ev, IkeSaUp):
            assert self.ike is not None
            self.ike.note_established(ev.connection)
            event(log, "ike.up", connection=ev.connection, ike_sa=ev.ike_sa, peer=ev.remote,
                  role="initiator" if ev.initiator else "responder", suite=ev.suite, local_id=ev.local_id,
                  remote_id=ev.remote_id, auth=ev.auth, nat_local=ev.nat_local, nat_remote=ev.nat_remote,
                  seconds=ev.seconds)
        elif isinstance(ev, IkeSaDown):
            event(log, "ike.down", connection=ev.connection, ike_sa=ev.ike_sa, peer=ev.remote,
                  reason=ev.reason)
        elif isinstance(ev, AuthFailed):
            event(log, "ike.auth_failed", logging.WARNING, connection=ev.connection, peer=ev.remote,
                  reason=ev.reason, detail=ev.detail)
        elif isinstance(ev, NegotiationFailed):
            event(log, "ike.negotiation_failed", logging.WARNING, connection=ev.connection, peer=ev.remote,
                  stage=ev.stage, reason=ev.reason, detail=ev.detail)
        elif isinstance(ev, PeerDead):
            event(log, "ike.peer_dead", logging.WARNING, connection=ev.connection, ike_sa=ev.ike_sa,
                  peer=ev.remote, action=ev.action)
        elif isinstance(ev, Note):
            level = getattr(logging, ev.level.upper(), logging.INFO)
            event(log, ev.what, level, **dict(ev.fields))

    # -- L2TP/PPP ---------------------------------------------------------------------------
    def _l2tp_datagram(self, tunnel: str, peer: tuple[str, int], data: bytes) -> None:
        """From the dataplane: L2TP that came out of an ESP transport SA."""
        assert self.dialup is not None
        try:
            self.dialup.receive(tunnel, peer, data, time.monotonic())
        except Exception:  # a bug must not take the dataplane down with it
            log.exception("dialup.internal_error tunnel=%s", tunnel)
            self._count_ike("dialup_internal_error")
        self._dialup_wake()

    def _dialup_wake(self) -> None:
        if not self._dialup_pending:
            self._dialup_pending = True
            asyncio.get_running_loop().call_soon(self._dialup_flush)

    def _dialup_flush(self) -> None:
        """Send what the dial-up service made, hand PPP's packets to the kernel, apply its
        host changes and log its lines."""
        self._dialup_pending = False
        d = self.dialup
        if d is None or self.backend is None:
            return
        while d.transmits:
            self.backend.transmit(d.transmits.pop(0))
        while d.to_tun:
            self.backend.write_tun(d.to_tun.pop(0))
        while d.host_changes:
            c = d.host_changes.pop(0)
            self._spawn(self.backend.link_change(c.op, c.network, c.source))
        while d.log:
            line = d.log.pop(0)
            event(log, line.what, getattr(logging, line.level.upper(), logging.INFO), **dict(line.fields))
        restarts, d.ipsec_restarts = d.ipsec_restarts, []
        if restarts and self.ike is not None:
            # The L2TP tunnel died inside live SAs (an LNS restarted without DPD): fresh
            # IPsec SAs, then the LAC dials again once they are up.
            now = time.monotonic()
            for name in restarts:
                self.ike.terminate(name, now)
                self.ike.initiate(name, now)
            self._ike_flush()
        self._dialup_timer.set()

    async def _dialup_timers(self) -> None:
        d = self.dialup
        assert d is not None
        while True:
            deadline = d.get_timer()
            now = time.monotonic()
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
            self._dialup_timer.clear()
            try:
                await asyncio.wait_for(self._dialup_timer.wait(), wait)
            except TimeoutError:
                pass
            now = time.monotonic()
            deadline = d.get_timer()
            if deadline is not None and now >= deadline:
                try:
                    d.handle_timer(now)
                except Exception:
                    log.exception("dialup.internal_error in timers")
                    self._count_ike("dialup_internal_error")
                self._dialup_flush()

    def _control_sessions(self, req: dict[str, Any]) -> Any:
        return {"sessions": self.dialup.describe(time.monotonic()) if self.dialup is not None else []}

    def _control_kick(self, req: dict[str, Any]) -> Any:
        user = req.get("user")
        if not isinstance(user, str) or not user:
            raise ValueError("kick needs a user")
        count = self.dialup.kick(user, time.monotonic()) if self.dialup is not None else 0
        self._dialup_flush()
        return {"user": user, "sessions": count}

    def _acquire(self, name: str) -> None:
        """Traffic waits on a connection without SAs: with DPD action "hold" it comes back
        up on demand (the trap that demand-dial builds on)."""
        if self._policy_acquire(name):
            return
        ike = self.ike
        conn = self.config.connections.get(name)
        if ike is None or conn is None or conn.keying != "ike" or conn.dpd.action != "hold":
            return
        if conn.remote == "%any" or ike.established(name):
            return
        event(log, "ike.acquire", connection=name, detail="traffic for a held connection: initiating")
        ike.initiate(name, time.monotonic(), keep_up=False)
        self._ike_flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ike_liveness(self) -> None:
        """Traffic on a CHILD_SA proves the peer alive: no DPD needed (RFC 7296 2.4)."""
        ike = self.ike
        if ike is None:
            return
        now = time.monotonic()
        for tunnel in self.ike_tunnels.tunnels.values():
            policy = tunnel.policy
            if policy.acquired and policy.esp_out is None and not ike.negotiating(tunnel.name):
                policy.acquired = False  # the last attempt is over: the next packet may retry
        for tunnel in self.ike_tunnels.tunnels.values():
            for spi, pair in tunnel.pairs.items():
                sa = ike.ike_sa_of_child(spi)
                if sa is None:
                    continue
                out, inb = pair.outbound.counters, pair.inbound.counters
                if inb.packets != self._child_seen.get(spi):
                    self._child_seen[spi] = inb.packets
                    sa.child_used(now)
                sa.child_usage(spi, max(out.bytes, inb.bytes), max(out.packets, inb.packets), now)
        self._ike_flush()

    def _control_up(self, req: dict[str, Any]) -> Any:
        name = self._ike_connection(req)
        assert self.ike is not None
        self.ike.initiate(name, time.monotonic())
        self._ike_flush()
        return {"initiated": name}

    def _control_down(self, req: dict[str, Any]) -> Any:
        name = self._ike_connection(req)
        assert self.ike is not None
        count = self.ike.terminate(name, time.monotonic())
        self._ike_flush()
        return {"terminated": name, "ike_sas": count}

    def _control_rekey(self, req: dict[str, Any]) -> Any:
        name = self._ike_connection(req)
        assert self.ike is not None
        count = self.ike.rekey(name, time.monotonic(), ike=bool(req.get("ike")))
        self._ike_flush()
        return {"rekeyed": name, "ike_sas": count}

    def _ike_connection(self, req: dict[str, Any]) -> str:
        name = req.get("name")
        if self.ike is None or name not in self.ike.configs:
            known = ", ".join(sorted(self.ike.configs)) if self.ike else ""
            raise ValueError(f"no IKE connection named {name!r} (known: {known or 'none'})")
        return str(name)

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
        self._save_manual_keys(tunnel)
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

    def _save_manual_keys(self, tunnel: ManualTunnel) -> None:
        manual = self.config.connections[tunnel.name].manual
        if self.keylog is None or manual is None or tunnel.outbound.esp is None:
            return

        def keys(sa: SecurityAssociation, spec: ManualSa) -> EspSaKeys:
            return EspSaKeys.of(sa, spec.encryption_key.reveal() if spec.encryption_key else b"",
                                spec.integrity_key.reveal() if spec.integrity_key else b"")

        self.keylog.save_esp([keys(tunnel.outbound, manual.outbound), keys(tunnel.inbound, manual.inbound)])

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
        if self.dialup is not None and self.backend is not None and self.backend.sockets is not None:
            self.dialup.close_all(time.monotonic())  # StopCCN to every L2TP peer, best effort
            self._dialup_flush()
        if self._dialup_task is not None:
            self._dialup_task.cancel()
        if self.ike is not None and self.backend is not None and self.backend.sockets is not None:
            now = time.monotonic()
            for name in list(self.ike.configs):
                self.ike.terminate(name, now)
            for d in self.ike.datagrams_to_send():  # best-effort DELETEs to the peers
                self.backend.send_ike(d.data, d.local_port, d.remote)
        if self._ike_task is not None:
            self._ike_task.cancel()
        await self.control.stop()
        if self.backend is not None:
            self.backend.stop()
        event(log, "gateway.stopped", name=self.config.gateway.name)

    # -- periodic ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._ike_liveness()
        while self.engine.events:
            ev = self.engine.events.popleft()
            if isinstance(ev, Acquire):
                self._acquire(ev.policy)
            elif isinstance(ev, SaExhausted):
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

    # -- the IPsec policy (gateway.policy.runtime) -------------------------------------------
    async def _policy_start(self) -> None:
        """Install the configured policy: SPD entries, the inbound check, the traps of the
        connections its rules negotiate through, its routes, and its say on the CHILD_SAs
        peers ask for."""
        if self.config.policy is None:
            return
        try:
            policy = plan_policy(self.config)
        except PolicyError as exc:
            raise StartupError(f"policy: {exc}") from exc
        assert policy is not None and self.ike is not None
        self.policy = policy
        policy.install(self.engine, self.ike_tunnels)
        self.ike.set_child_policy(policy.responder_check)
        for route in policy.routes:
            await self.backend.route_unmarked(route.mode, list(route.local), list(route.remote))
        event(log, "policy.installed", policy=policy.compiled.name, entries=len(policy.compiled.entries),
              traps=",".join(t.connection for t in policy.traps) or "none",
              routes=",".join(str(n) for r in policy.routes for n in r.remote) or "none",
              default_response="on" if policy.compiled.default_response is not None else "off")

    def _policy_acquire(self, name: str) -> bool:
        """Traffic hit a policy's trap: bring its connection up (the trap holds the packets,
        or sends them in clear, meanwhile).  False if the policy has no such trap."""
        policy, ike = self.policy, self.ike
        if policy is None or ike is None or not policy.initiates(name):
            return False
        if not ike.negotiating(name):  # neither connecting nor up
            event(log, "ike.acquire", connection=name, detail="traffic for the policy's rules: initiating")
            ike.initiate(name, time.monotonic(), keep_up=False)
            self._ike_flush()
        return True

    def _send_held(self, name: str) -> None:
        """What a trap held while its SAs were negotiated: sent first, now that they are up."""
        for result in self.engine.release_held(name):
            self.backend.transmit(result)

    def _control_policy(self, req: dict[str, Any]) -> Any:
        if self.policy is None:
            return {"policy": None, "entries": [], "traps": [], "routes": []}
        return self.policy.describe(self.engine)

    # -- metrics ---------------------------------------------------------------------------
    def metrics_snapshot(self) -> dict[str, Any]:
        """What the Prometheus collector reads (on the event loop: see `_on_loop`)."""
        snap = self.snapshot()
        now = time.monotonic()
        ike_sas = self.ike.sas(now) if self.ike is not None else []
        conns = self.config.connections
        sa_states: Counter[tuple[int, str]] = Counter()
        child_states: Counter[tuple[int, str]] = Counter()
        for sa in ike_sas:
            version = conns[sa["name"]].ike.version if sa["name"] in conns else 0
            sa_states[version, sa["state"]] += 1
            child_states.update((version, child["state"]) for child in sa["children"])
        snap["ike_sa_states"] = [{"version": v, "state": st, "count": n}
                                 for (v, st), n in sa_states.items()]
        snap["child_sa_states"] = [{"version": v, "state": st, "count": n}
                                   for (v, st), n in child_states.items()]
        snap["ike"] = self.ike_stats.snapshot()
        tunnels = []
        for name, conn in conns.items():
            if conn.keying == "ike":
                totals = self.ike_tunnels.totals(name)
                up = any(t.pairs for t in self.ike_tunnels.of_connection(name))
                expected = conn.ike.start == "start"
                tunnels.append({"connection": name, "up": up, "expected": expected, **vars(totals)})
            elif name in self.tunnels:
                totals = TrafficTotals()
                totals.add(self.tunnels[name])
                tunnels.append({"connection": name, "up": True, "expected": True, **vars(totals)})
        snap["tunnels"] = tunnels
        snap["pools"] = [{"pool": name, "used": pool.in_use, "total": pool.size}
                         for name, pool in self.pools.items()]
        return snap

    def _on_loop(self, func: Any) -> Any:
        """``func`` made callable from another thread (the metrics HTTP server's): it runs on
        the event loop, so it never sees the daemon's state half-changed."""
        loop = asyncio.get_running_loop()

        async def on_loop() -> Any:
            return func()

        return lambda: asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=10)

    # -- control ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        snap = self.engine.snapshot()
        if self.edge_applied:
            from appliance import edge as nft

            snap["edge_counters"] = nft.counters()
        if self.dialup is not None:
            snap["dialup"] = self.dialup.summary()
        return snap

    def status(self) -> dict[str, Any]:
        snap = self.snapshot()
        connections = []
        for name, tunnel in self.tunnels.items():
            totals = TrafficTotals()
            totals.add(tunnel)
            connections.append({
                "name": name, "state": "up", "keying": "manual", "mode": tunnel.policy.mode.value,
                "peer": str(tunnel.outbound.remote), "local": [str(n) for n in tunnel.local_subnets],
                "remote": [str(n) for n in tunnel.remote_subnets], "algorithm": tunnel.outbound.algorithm,
                **vars(totals),
            })
        connections += self._ike_connections()
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
            "ike": {
                "connections": sorted(self.ike.configs) if self.ike else [],
                "ike_sas": len(self.ike.sas(time.monotonic())) if self.ike else 0,
                **self.ike_stats.status(),
                "dropped": dict(self.ike.counters) if self.ike else {},
            },
            "dialup": snap.get("dialup"),
        }

    def _ike_connections(self) -> list[dict[str, Any]]:
        """IKE connections in `status`: state, peer, the active pair's algorithm and counters."""
        ike = self.ike
        if ike is None:
            return []
        now = time.monotonic()
        sas = ike.sas(now)
        out = []
        for name, peer in ike.configs.items():
            mine = [sa for sa in sas if sa["name"] == name]
            up = [sa for sa in mine if sa["state"] == "established"]
            state = "up" if up else (mine[0]["state"] if mine else "down")
            tunnels = self.ike_tunnels.of_connection(name)
            out_sa = next((t.policy.esp_out for t in tunnels if t.policy.esp_out is not None), None)
            totals = self.ike_tunnels.totals(name)
            conn = self.config.connections[name]
            if len(up) > 1:
                shown_peer = f"{len(up)} peers"
            else:
                shown_peer = (up or mine)[0]["remote"] if mine else (peer.remote_address or "%any")
            out.append({
                "name": name, "state": state, "keying": "ike", "mode": conn.mode, "peer": shown_peer,
                "peers": len(up), "local": [str(n) for n in conn.local_subnets],
                "remote": [str(n) for n in conn.remote_subnets],
                "algorithm": out_sa.algorithm if out_sa else "-",
                "packets_out": totals.packets_out, "bytes_out": totals.bytes_out,
                "packets_in": totals.packets_in, "bytes_in": totals.bytes_in, "drops_in": totals.drops_in,
            })
        return out

    def sas(self) -> dict[str, Any]:
        ike = self.ike.sas(time.monotonic()) if self.ike is not None else []
        return {"sas": self.engine.snapshot()["sas"], "ike_sas": ike}


def run(loaded: LoadedConfig) -> None:
    gateway = Gateway(loaded)
    asyncio.run(gateway.run())
