"""The gateway process: asyncio wiring of config, dataplane backend, control and metrics.

Everything protocol-shaped lives in sans-IO cores; this module only connects them to
sockets, timers and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.config.model import Config, Connection, L2tpClient, ManualSa
from gateway.control.protocol import ControlError, ControlServer
from gateway.dataplane.edge import EdgePolicy, ManagementRule
from gateway.dataplane.engine import Acquire, Dataplane, IkeDatagram, MappingChanged, SaExhausted
from gateway.dataplane.sa import Mode, SecurityAssociation
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Policy
from gateway.demand import DemandDialer, DemandSettings
from gateway.dialup.service import DialupService, LacEvent
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
    PeerMoved,
)
from gateway.ike.pool import AddressPool
from gateway.ike.settings import PeerConfig
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2 import fromconfig
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ikestats import IkeStats
from gateway.keylog import EspSaKeys, KeyLog, KeyLogError
from gateway.logs import event, report_suppressed
from gateway.manual import ManualTunnel, build_manual
from gateway.policy.model import PolicyError
from gateway.policy.runtime import PolicyRuntime, plan_policy
from gateway.reload import ReloadPlan, fingerprints
from gateway.reload import plan as reload_plan
from gateway.tunnels import TrafficTotals, TunnelTable

log = logging.getLogger("gateway")

HOUSEKEEPING_SECONDS = 1.0
DROP_REPORT_SECONDS = 10.0
#: a LAC hung up for being idle: time for its StopCCN to go out before IKE deletes the SAs
LAC_HANGUP_GRACE = 0.5
ANY = ipaddress.IPv4Network("0.0.0.0/0")
def lac_trap(connection: str) -> str:
    """The name of a demand-dial LAC's trap policy (its IPsec tunnel has the connection's)."""
    return f"{connection}.demand"


#: the SPD priority of traps that only catch what the per-peer tunnels leave
TRAP_BEHIND = 5000


class StartupError(RuntimeError):
    """The gateway cannot start; the message says why, for the operator."""


class ReloadError(RuntimeError):
    """A reload changed nothing; the message says why (the log has it too)."""


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

    def __init__(self, loaded: LoadedConfig, *, least_privilege: bool = False, tune_gc: bool = False) -> None:
        #: drop capabilities once started (`_drop_privileges`); `run` does, tests need not
        self.least_privilege = least_privilege
        #: freeze what start made and collect less often (`tune_gc`); `run` does, tests need not
        self.tune_gc = tune_gc
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
        #: demand-dial interfaces by connection, and their trap policies' names
        self.demand: dict[str, DemandDialer] = {}
        self._trap_of: dict[str, str] = {}
        for name, conn in cfg.connections.items():
            self._add_dialer(name, conn)
        self._engine_pending = False
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
            "reload": self._control_reload,
            "policy": self._control_policy,
        })
        self._stop = asyncio.Event()
        self._last_drops: dict[str, int] = {}
        self._last_drop_report = 0.0
        self.edge_applied = False
        # config reload (SIGHUP, `gateway reload`): see reload()
        self._reload_lock = asyncio.Lock()
        self._reloadable = False  # until start() is done
        self._auth_files = fingerprints(cfg, self._config_dir())

    # -- start / stop ------------------------------------------------------------------
    def _make_backend(self) -> Any:
        dp = self.config.dataplane
        if dp.backend == "kernel":
            raise StartupError("the kernel (XFRM) backend is not available in this build; "
                               "use dataplane.backend: userspace")
        from gateway.net.userspace import UserspaceBackend

        return UserspaceBackend(self.engine, tun_name=dp.tun_name, tun_mtu=dp.tun_mtu,
                                offload=dp.offload,
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
        self.engine.on_event = self._engine_wake
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
        if cfg.policy is not None:  # planned first: the traps of its connections are its own
            try:
                self.policy = plan_policy(cfg)
            except PolicyError as exc:
                raise StartupError(f"policy: {exc}") from exc
        await self._install_traps()
        self._start_ike(peers)
        await self._policy_start()
        await self.control.start()
        metrics = None
        if cfg.metrics.listen is not None:
            from gateway.metrics import MetricsServer

            try:
                metrics = MetricsServer(cfg.metrics.listen, self._on_loop(self.metrics_snapshot))
            except OSError as exc:
                raise StartupError(f"cannot listen for metrics on "
                                   f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}: {exc}") from exc
        if self.least_privilege:  # everything is bound and created: the rest runs with less
            await self._drop_privileges()
        if metrics is not None:
            metrics.start()  # its thread is born with what the main thread kept
            event(log, "metrics.listening", address=f"{cfg.metrics.listen[0]}:{cfg.metrics.listen[1]}")
        event(log, "gateway.ready", name=cfg.gateway.name, version=__version__,
              control=cfg.control.socket, connections=len(self.tunnels))
        sd_notify("READY=1\nSTATUS=running")

    async def _drop_privileges(self) -> None:
        """Keep only the capabilities the running gateway uses (`gateway.net.privileges`:
        CAP_NET_ADMIN for routes, addresses, rules and nft counters), on every thread.
        Where that cannot be done, a warning says so: never silently."""
        from gateway.net import privileges

        result = privileges.drop(privileges.RUNTIME)
        if result.problem is None and hasattr(self.backend, "on_netlink_thread"):
            result = result.also(await self.backend.on_netlink_thread(privileges.drop, privileges.RUNTIME))
        result = result.checked()  # no thread of ours kept more
        if result.problem is not None or result.after is None:
            event(log, "privileges.not_dropped", logging.WARNING, detail=result.problem, kept=result.kept)
            return
        notes = {"detail": "; ".join(result.notes)} if result.notes else {}
        event(log, "privileges.dropped", kept=result.kept, bounding=privileges.names(result.after.bounding),
              no_new_privs=result.after.no_new_privs, **notes)

    def _config_dir(self) -> Path | None:
        return Path(self.loaded.path).resolve().parent if self.loaded.path else None

    # -- IKE -------------------------------------------------------------------------------
    def _start_ike(self, peers: list[Any]) -> None:
        cfg = self.config
        epoch = time.time() - time.monotonic()  # certificates are judged by the wall clock
        address = str(cfg.gateway.public_address)
        timing = fromconfig.timing(cfg, epoch)
        v2 = IkeV2Endpoint(address, [p for p in peers if p.version == 2], timing=timing, pools=self.pools)
        v1 = IkeV1Endpoint(address, [p for p in peers if p.version == 1], timing=timing)
        self.ike = IkeEndpoints(v2, v1)
        self.ike.set_limits(fromconfig.limits(cfg))
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
            if ev.connection not in self.demand:
                self._send_held(tunnel.name)
            event(log, "child.up", connection=ev.connection, spi_in=f"0x{ev.spi_in:08x}",
                  spi_out=f"0x{ev.spi_out:08x}", algorithm=ev.suite.name, mode=ev.mode,
                  encap=f"udp:{ev.encap_remote_port}" if ev.encap_remote_port else "none",
                  local_ts=",".join(map(str, ev.local_ts)), remote_ts=",".join(map(str, ev.remote_ts)),
                  rekey_of=f"0x{ev.rekey_of:08x}" if ev.rekey_of else None)
            if new_routes and not (self.dialup is not None and self.dialup.serves(ev.connection)):
                # none for nets inside the connection's trap routes (a %any connection's
                # peers inside its remote subnets): those are in place since start
                routes = self.ike_tunnels.own_routes(tunnel)
                if routes:
                    self._spawn(self.backend.route(Mode(ev.mode), tunnel.local_nets, routes))
            if self.dialup is not None:
                self.dialup.ipsec_up(ev.tunnel or ev.connection, ev.connection, time.monotonic())
                self._dialup_flush()
            if ev.connection in self.demand and not self._carries_l2tp(ev.connection):
                self._demand_connected(ev.connection, time.monotonic())
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
            if ev.connection in self.demand and (remaining is None or not remaining.pairs) \
                    and not self._carries_l2tp(ev.connection):
                self._demand_down(ev.connection, time.monotonic(), ev.reason)
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
            if ev.connection in self.demand:
                self._demand_failed(ev.connection, time.monotonic(), f"authentication failed ({ev.reason})")
        elif isinstance(ev, NegotiationFailed):
            event(log, "ike.negotiation_failed", logging.WARNING, connection=ev.connection, peer=ev.remote,
                  stage=ev.stage, reason=ev.reason, detail=ev.detail)
            if ev.connection in self.demand and self.demand[ev.connection].state == "dialing":
                self._demand_failed(ev.connection, time.monotonic(), f"{ev.stage}: {ev.reason}")
        elif isinstance(ev, PeerDead):
            event(log, "ike.peer_dead", logging.WARNING, connection=ev.connection, ike_sa=ev.ike_sa,
                  peer=ev.remote, action=ev.action)
        elif isinstance(ev, PeerMoved):
            for tunnel in list(self.ike_tunnels.tunnels.values()):
                if any(spi in tunnel.pairs for spi in ev.spis_in):
                    self._move_tunnel(tunnel.name, ev.remote, "ike")
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
        changes = []
        while d.host_changes:
            c = d.host_changes.pop(0)
            changes.append(self._spawn(self.backend.link_change(c.op, c.network, c.source)))
            if c.op == "address_del":
                # the TUN's last address going takes every route through it (the kernel's
                # fib_disable_ip): the tunnels' routes go back in
                changes.append(self._spawn(self._restore_routes()))
        while d.log:
            line = d.log.pop(0)
            event(log, line.what, getattr(logging, line.level.upper(), logging.INFO), **dict(line.fields))
        while d.lac_events:
            lac_event = d.lac_events.pop(0)
            if lac_event.what == "up" and changes:
                # the held packets go once the link's address and routes are on the host:
                # their replies come back to that address
                self._spawn(self._after(changes, self._lac_event, lac_event))
            else:
                self._lac_event(lac_event)
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
            raise ControlError("kick needs a user")
        count = self.dialup.kick(user, time.monotonic()) if self.dialup is not None else 0
        self._dialup_flush()
        return {"user": user, "sessions": count}

    # -- demand-dial ---------------------------------------------------------------------------
    async def _install_traps(self) -> None:
        """Every site-to-site connection's routes and policy are in place from the start,
        before any SA (a trap, RFC 4301 5.1.1): its traffic never leaks in clear while the
        tunnel is down, and the responder has its routes before the first packet arrives.

        A demand-dial interface's trap also holds the first packets and dials. A demand-dial
        LAC's trap is a policy of its own (``NAME.demand``): once its PPP link is up, the
        link takes those packets before the SPD sees them."""
        for name, conn in self.config.connections.items():
            await self._install_trap(name, conn)

    async def _install_trap(self, name: str, conn: Connection) -> None:
        ruled = self.policy.trap_of(name) if self.policy is not None else None
        if ruled is not None:
            # the policy's trap: its selectors, place and hold, routes in the table of
            # unmarked packets (`_policy_start`); again here when a reload brings it back
            self.ike_tunnels.install_trap(name, ruled.selectors, ruled.mode, hold=ruled.hold,
                                          fallback_clear=ruled.fallback_clear, priority=ruled.priority)
            return
        dd = conn.demand_dial if name in self.demand else None
        if isinstance(conn.l2tp, L2tpClient) and dd is not None:
            trap = lac_trap(name)
            remote = list(conn.l2tp.remote_subnets)
            selectors = tuple(SelectorPair(TrafficSelector(ANY), TrafficSelector(net)) for net in remote)
            self.engine.install_policy(Policy(trap, selectors, mode=Mode.TUNNEL, hold=dd.queue))
            for net in remote:
                await self.backend.link_change("route_add", net)
        elif (conn.keying == "ike" and conn.l2tp is None and conn.mode == "tunnel"
              and conn.local_subnets and conn.remote_subnets):
            trap = name
            selectors = tuple(SelectorPair(TrafficSelector(lo), TrafficSelector(re))
                              for lo in conn.local_subnets for re in conn.remote_subnets)
            # a connection that answers any peer has a tunnel per peer: its trap only keeps
            # the rest from leaking
            behind = TRAP_BEHIND if conn.remote == "%any" else 1000
            tunnel = self.ike_tunnels.install_trap(name, selectors, Mode.TUNNEL, priority=behind,
                                                   hold=dd.queue if dd is not None else 0)
            remote = tunnel.remote_nets
            tunnel.routes = tuple(remote)  # (before the await: a peer's CHILD_SA may come meanwhile)
            await self.backend.route(Mode.TUNNEL, tunnel.local_nets, remote)
        else:
            return
        if dd is not None:
            self._trap_of[trap] = name
            event(log, "demand.ready", connection=name, remote=",".join(map(str, remote)),
                  queue=dd.queue, idle_timeout=dd.idle_timeout, persistent=dd.persistent)

    def _add_dialer(self, name: str, conn: Connection) -> None:
        dd = conn.demand_dial
        if dd is not None and conn.keying == "ike":
            idle = float(dd.idle_timeout) if dd.idle_timeout is not None else None
            self.demand[name] = DemandDialer(name, DemandSettings(
                idle, dd.persistent, float(dd.dial_timeout), float(dd.redial_min), float(dd.redial_max)))

    def _remove_dialer(self, name: str) -> None:
        """A connection that goes in a reload: its demand-dialer and its LAC's trap go too
        (an IKE connection's trap is its tunnel's policy, which goes with the tunnel)."""
        self.demand.pop(name, None)
        for trap in [t for t, c in self._trap_of.items() if c == name]:
            del self._trap_of[trap]
            if trap != name:
                self.engine.remove_policy(trap)
                self.engine.discard_held(trap)

    def _engine_wake(self) -> None:
        """The dataplane queued an event (an Acquire): handle it now, not at the next tick."""
        if not self._engine_pending:
            self._engine_pending = True
            asyncio.get_running_loop().call_soon(self._engine_events)

    def _engine_events(self) -> None:
        self._engine_pending = False
        while self.engine.events:
            ev = self.engine.events.popleft()
            if isinstance(ev, Acquire):
                self._acquire(ev.policy)
            elif isinstance(ev, SaExhausted):
                event(log, "sa.seq_exhausted", logging.ERROR, connection=ev.sa_name,
                      spi=f"0x{ev.spi:08x}", detail="sequence numbers used up: rekey required")
            elif isinstance(ev, MappingChanged):
                self._mapping_changed(ev)

    def _mapping_changed(self, ev: MappingChanged) -> None:
        """A peer behind a NAT got a new mapping (authenticated ESP from a new address or
        port): the tunnel and its IKE SA follow it at once (as strongSwan does on the
        kernel's mapping event), so traffic toward the peer is not lost to the old one."""
        tunnel = self.ike_tunnels.tunnels.get(ev.tunnel)
        if tunnel is None or ev.spi not in tunnel.pairs:
            return
        if self.ike is not None:
            self.ike.peer_moved(ev.spi, ev.address)
            self._ike_flush()
        self._move_tunnel(tunnel.name, ev.address, "esp")

    def _move_tunnel(self, name: str, address: tuple[str, int], by: str) -> None:
        tunnel = self.ike_tunnels.tunnels.get(name)
        if tunnel is None:
            return
        moved = 0
        for pair in tunnel.pairs.values():
            for sa in (pair.outbound, pair.inbound):
                if sa.encap is not None and (sa.remote_str, sa.encap.remote_port) != address:
                    sa.move_peer(address[0], address[1])
                    moved += 1
        if moved:
            event(log, "tunnel.peer_moved", tunnel=name, peer=f"{address[0]}:{address[1]}", by=by)

    def _demand_poll(self, now: float) -> None:
        """Do what the demand-dialers want: dial, hang up idle ones, give up slow dials."""
        ike = self.ike
        if ike is None:
            return
        for name, dialer in self.demand.items():
            lac = self._carries_l2tp(name)
            trap = self._trap_name(name)
            if dialer.state in ("idle", "backoff"):
                for policy in self.engine.spd:
                    if policy.name == trap and policy.esp_out is None:
                        policy.acquired = False  # the next packet asks again
                if dialer.state == "idle" and self.engine.held.get(trap):
                    dialer.trigger(now)  # packets held since the link went: dial for them
            if dialer.state == "dialing" and not ike.negotiating(name) and dialer.since < now:
                # the IKE attempt is over without a tunnel (no SA left at all)
                self._demand_failed(name, now, "IKE did not come up")
            if dialer.state == "up":
                dialer.traffic(self.dialup.lac_packets(name) if lac and self.dialup is not None else
                               self._tunnel_packets(name), now)
            action = dialer.poll(now)
            if action == "dial":
                event(log, "demand.dial", connection=name, attempt=dialer.stats.dials,
                      reason="persistent" if dialer.settings.persistent and not self.engine.held.get(
                          self._trap_name(name)) else "traffic")
                ike.initiate(name, now, keep_up=False)
            elif action == "hangup":
                event(log, "demand.idle_hangup", connection=name, idle=dialer.settings.idle_timeout)
                self._hang_up(name, now)
            elif action == "failed":
                event(log, "demand.dial_failed", logging.WARNING, connection=name, reason=dialer.last_failure,
                      retry_in=round(dialer.backoff, 1),
                      dropped=self.engine.discard_held(self._trap_name(name)))
                ike.terminate(name, now)
        self._ike_flush()

    def _demand_rows(self, now: float) -> list[dict[str, Any]]:
        """Each demand-dial interface's state and counters (status and metrics)."""
        return [{"connection": name, **dialer.describe(now),
                 "held": len(self.engine.held.get(self._trap_name(name), ()))}
                for name, dialer in self.demand.items()]

    def _carries_l2tp(self, connection: str) -> bool:
        """A LAC is up when its PPP link is, not when its IPsec SAs are."""
        return self.dialup is not None and self.dialup.serves(connection)

    def _trap_name(self, connection: str) -> str:
        """A demand-dial LAC's trap has a policy of its own; an IKE connection's is its tunnel's."""
        return lac_trap(connection) if self._carries_l2tp(connection) else connection

    def _tunnel_packets(self, connection: str) -> int:
        t = self.ike_tunnels.totals(connection)
        return t.packets_in + t.packets_out

    def _hang_up(self, name: str, now: float) -> None:
        assert self.ike is not None
        if self.dialup is not None and self.dialup.hang_up(name, now):
            self._dialup_flush()  # StopCCN first, then the SAs it travels in
            asyncio.get_running_loop().call_later(LAC_HANGUP_GRACE, self._terminate, name)
        else:
            self._terminate(name)

    def _terminate(self, name: str) -> None:
        if self.ike is not None:
            self.ike.terminate(name, time.monotonic())
            self._ike_flush()

    def _demand_failed(self, name: str, now: float, reason: str) -> None:
        dialer = self.demand[name]
        if dialer.state not in ("dialing", "up"):
            return
        dialer.failed(now, reason)
        dropped = self.engine.discard_held(self._trap_name(name))
        event(log, "demand.dial_failed", logging.WARNING, connection=name, reason=reason,
              retry_in=round(dialer.backoff, 1), dropped=dropped)

    def _demand_connected(self, name: str, now: float) -> None:
        dialer = self.demand[name]
        if dialer.state == "up":
            return
        seconds = round(now - dialer.since, 3) if dialer.state == "dialing" else None
        dialer.connected(now)
        source = self.dialup.lac_address(name) if self._carries_l2tp(name) and self.dialup else None
        delivered = self._send_held(self._trap_name(name), source.packed if source else None)
        event(log, "demand.up", connection=name, seconds=seconds, delivered=delivered)

    def _demand_down(self, name: str, now: float, reason: str) -> None:
        dialer = self.demand[name]
        was = dialer.state
        dialer.disconnected(now, reason)
        if was == "up":
            event(log, "demand.down", connection=name, reason=reason)
        elif was == "dialing":
            event(log, "demand.dial_failed", logging.WARNING, connection=name, reason=reason,
                  retry_in=round(dialer.backoff, 1), dropped=self.engine.discard_held(self._trap_name(name)))

    async def _restore_routes(self) -> None:
        for tunnel in list(self.ike_tunnels.tunnels.values()):
            if tunnel.policy.mode is Mode.TUNNEL and (nets := self.ike_tunnels.routes_of(tunnel)):
                await self.backend.route(Mode.TUNNEL, tunnel.local_nets, nets)
        for manual in list(self.tunnels.values()):
            if manual.policy.mode is Mode.TUNNEL:
                await self.backend.route(Mode.TUNNEL, manual.local_subnets, manual.remote_subnets)

    @staticmethod
    async def _after(tasks: list[asyncio.Task[Any]], then: Any, *args: Any) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        then(*args)

    def _lac_event(self, ev: LacEvent) -> None:
        if ev.connection not in self.demand:
            return
        now = time.monotonic()
        if ev.what == "up":
            self._demand_connected(ev.connection, now)
        elif ev.what == "down":
            was = self.demand[ev.connection].state
            self._demand_down(ev.connection, now, ev.reason or "PPP link down")
            if was == "up":  # dropped by the LNS (our own hang-up terminates IKE after a grace)
                self._terminate(ev.connection)  # on hook: no IPsec SAs kept for it
        elif ev.what == "failed":
            self._demand_failed(ev.connection, now, ev.reason)
            self._terminate(ev.connection)

    def _acquire(self, name: str) -> None:
        """Traffic waits on a connection without SAs: a demand-dial interface dials; with DPD
        action "hold" a connection comes back up on demand."""
        if self._policy_acquire(name):
            return
        ike = self.ike
        connection = self._trap_of.get(name)
        if connection is not None:
            self.demand[connection].trigger(time.monotonic())
            self._demand_poll(time.monotonic())
            return
        conn = self.config.connections.get(name)
        if ike is None or conn is None or conn.keying != "ike" or conn.dpd.action != "hold":
            return
        if conn.remote == "%any" or ike.established(name):
            return
        event(log, "ike.acquire", connection=name, detail="traffic for a held connection: initiating")
        ike.initiate(name, time.monotonic(), keep_up=False)
        self._ike_flush()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
                if tunnel.name not in self._trap_of:  # (demand-dialers drop theirs themselves)
                    self.engine.discard_held(tunnel.name)
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
            raise ControlError(f"no IKE connection named {name!r} (known: {known or 'none'})")
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
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)  # systemd's ExecReload
        try:
            await self.start()
            if self.tune_gc:
                tune_gc()
            self._reloadable = True
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

    # -- reload (SIGHUP, `gateway reload`) -----------------------------------------------
    def _on_sighup(self) -> None:
        if not self._reloadable:
            event(log, "config.reload_ignored", logging.WARNING, detail="SIGHUP before the gateway was ready")
            return
        self._spawn(self._reload_logged())

    async def _reload_logged(self) -> None:
        with contextlib.suppress(ReloadError):  # logged by reload()
            await self.reload()

    async def _control_reload(self, req: dict[str, Any]) -> Any:
        if not self._reloadable:
            raise ControlError("the gateway is still starting")
        try:
            return await self.reload()
        except ReloadError as exc:
            raise ControlError(f"config not reloaded: {exc}") from None

    async def reload(self) -> dict[str, Any]:
        """Read the config file again and apply what changed (`gateway.reload` plans it);
        unchanged connections and their SAs are left alone. A file that does not load, or a
        connection whose keys or certificates do not, changes nothing: ReloadError (logged)."""
        async with self._reload_lock:
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                return await self._reload()
            except ReloadError:
                raise
            except Exception as exc:  # a bug must not take the gateway down with it
                log.exception("config.reload_internal_error")
                raise ReloadError(f"internal error ({type(exc).__name__}): see the gateway log") from None
            finally:
                sd_notify("READY=1\nSTATUS=running")

    def _reload_refused(self, detail: str) -> ReloadError:
        event(log, "config.reload_failed", logging.ERROR, file=str(self.loaded.path),
              detail=f"{detail}; the running config stays")
        return ReloadError(detail)

    async def _reload(self) -> dict[str, Any]:
        path = self.loaded.path
        if path is None:
            raise self._reload_refused("the running config was not read from a file")
        try:
            loaded = load_config(path)
        except ConfigError as exc:
            raise self._reload_refused("; ".join(map(str, exc.issues))) from None
        base = self._config_dir()
        files = fingerprints(loaded.config, base)
        in_use = {name: n for name, pool in self.pools.items()
                  if (n := sum(1 for owner in pool.leases.values() if not owner.startswith("lns:")))}
        plan = reload_plan(self.config, loaded.config, running_files=self._auth_files, new_files=files,
                           pools_in_use=in_use)
        cfg = plan.config
        peers: dict[str, PeerConfig] = {}
        manual: dict[str, ManualTunnel] = {}
        for name in plan.coming:  # everything new is loaded before anything is changed
            conn = cfg.connections[name]
            try:
                if conn.keying == "ike":
                    peers[name] = fromconfig.peer_config(name, conn, cfg, base)
                else:
                    manual[name] = build_manual(name, conn, cfg.gateway.public_address,
                                                cfg.dataplane.replay_window)
            except (fromconfig.AuthConfigError, OSError, ValueError) as exc:
                raise self._reload_refused(f"connection {name}: {exc}") from None
        for warning in loaded.warnings:
            event(log, "config.warning", logging.WARNING, detail=str(warning))
        for item in plan.restart:
            event(log, "config.needs_restart", logging.WARNING, key=item.key, detail=item.reason)
        self._log_plan(plan)
        stale = self._reload_apply(plan, peers, manual, time.monotonic())
        self._auth_files = files
        self.loaded = LoadedConfig(cfg, loaded.warnings, path)
        for mode, nets in stale.items():
            await self.backend.unroute(mode, nets)
        for tunnel in manual.values():
            await self._install(tunnel)
        for name in plan.coming:  # routes and traps, as at start
            await self._install_trap(name, cfg.connections[name])
        event(log, "config.reloaded", file=str(path), added=len(plan.added), removed=len(plan.removed),
              changed=len(plan.changed), unchanged=len(plan.unchanged), needs_restart=len(plan.restart))
        return {"added": list(plan.added), "removed": list(plan.removed),
                "changed": {c.name: list(c.keys) for c in plan.changed}, "unchanged": list(plan.unchanged),
                "pools": {"added": list(plan.pools_added), "removed": list(plan.pools_removed),
                          "changed": list(plan.pools_changed)},
                "users": {"added": list(plan.users_added), "removed": list(plan.users_removed),
                          "changed": list(plan.users_changed)},
                "needs_restart": [r.key for r in plan.restart]}

    def _log_plan(self, plan: ReloadPlan) -> None:
        for name in plan.added:
            conn = plan.config.connections[name]
            event(log, "config.connection_added", connection=name, keying=conn.keying, remote=conn.remote)
        for name in plan.removed:
            event(log, "config.connection_removed", connection=name)
        for change in plan.changed:
            event(log, "config.connection_changed", connection=change.name, keys=",".join(change.keys))
        for what, names in (("pool_added", plan.pools_added), ("pool_removed", plan.pools_removed),
                            ("pool_changed", plan.pools_changed)):
            for name in names:
                event(log, f"config.{what}", pool=name)
        for what, names in (("user_added", plan.users_added), ("user_removed", plan.users_removed),
                            ("user_changed", plan.users_changed)):
            for name in names:
                event(log, f"config.{what}", user=name)

    def _reload_apply(self, plan: ReloadPlan, peers: dict[str, PeerConfig], manual: dict[str, ManualTunnel],
                      now: float) -> dict[Mode, list[ipaddress.IPv4Network]]:
        """A reload's changes, without an await from the first to the last (status, metrics and
        packets never see half of it); returns the routes no connection needs any more.

        Dial-up goes first (its StopCCN still travels inside the SAs), then the IKE
        connections (DELETE to the peer; changed ones come back with the new settings) and
        the manual ones; pools are removed last (leases come back as SAs close)."""
        cfg, old, ike = plan.config, self.config, self.ike
        assert ike is not None
        for name in plan.pools_added + plan.pools_changed:
            self.pools[name] = AddressPool(name, cfg.pools[name].subnet, tuple(cfg.pools[name].dns))
        ike.v2.pools = self.pools  # the same dict (an empty one was not shared)
        if self.dialup is not None:
            self.dialup.reconfigure(cfg, plan.going, plan.coming, now)
            for user in plan.users_removed:
                self.dialup.kick(user, now)
        elif any(c.l2tp is not None for c in cfg.connections.values()):
            self._start_dialup(cfg)
        self._dialup_flush()
        routes: list[tuple[Mode, list[ipaddress.IPv4Network]]] = []
        for name in plan.going:
            self._remove_dialer(name)
            lac = old.connections[name].l2tp
            if isinstance(lac, L2tpClient) and old.connections[name].demand_dial is not None:
                routes.append((Mode.TUNNEL, list(lac.remote_subnets)))  # its trap's
            tunnel = self.tunnels.pop(name, None)
            if tunnel is not None:  # manually keyed
                self.engine.remove_inbound(tunnel.inbound)
                self.engine.remove_policy(name)
                routes.append((tunnel.policy.mode, tunnel.remote_subnets))
                continue
            reason = "removed from the config" if name in plan.removed else "changed in the config"
            ike.remove(name, now, reason)
            tunnels = self.ike_tunnels.of_connection(name)
            if old.connections[name].l2tp is None:  # L2TP connections have no routes of their own
                # what was routed for them: the trap's routes, and the peers' outside those
                routes.extend((t.policy.mode, self.ike_tunnels.routes_of(t)) for t in tunnels)
            for t in tunnels:
                self.ike_tunnels.remove(t.name)
        if plan.ike_settings:
            for ep in (ike.v1, ike.v2):
                ep.timing = replace(ep.timing, retransmit_timeout=cfg.ike.retransmit_timeout,
                                    retransmit_tries=cfg.ike.retransmit_tries,
                                    half_open_timeout=cfg.ike.half_open_timeout)
            ike.set_limits(fromconfig.limits(cfg))
        self.config = cfg
        for name in plan.coming:
            self._add_dialer(name, cfg.connections[name])
        for peer in peers.values():
            self._add_ike_connection(peer, now)
        for name in plan.pools_removed:
            self.pools.pop(name, None)
        self._ike_flush()
        wanted = {(t.policy.mode, n) for t in self.ike_tunnels.tunnels.values() for n in t.remote_nets}
        wanted |= {(t.policy.mode, n) for t in [*self.tunnels.values(), *manual.values()]
                   for n in t.remote_subnets}
        wanted |= {(Mode(c.mode), n) for c in cfg.connections.values() for n in c.remote_subnets}
        wanted |= {(Mode.TUNNEL, n) for c in cfg.connections.values()
                   if isinstance(c.l2tp, L2tpClient) and c.demand_dial is not None
                   for n in c.l2tp.remote_subnets}
        stale: dict[Mode, list[ipaddress.IPv4Network]] = {}
        for mode, nets in routes:
            for net in nets:
                if (mode, net) not in wanted and net not in stale.get(mode, []):
                    stale.setdefault(mode, []).append(net)
        return stale

    def _add_ike_connection(self, peer: PeerConfig, now: float) -> None:
        """An IKE connection a reload added (or changed): known to the IKE cores from now on,
        initiated if it is to be kept up."""
        assert self.ike is not None
        self.ike.add(peer)
        if self.config.connections[peer.name].ike.start == "start":
            self.ike.initiate(peer.name, now)

    def _start_dialup(self, cfg: Config) -> None:
        """The first L2TP connection came with a reload: the dial-up service starts, wired as
        __init__ and _start_ike wire it."""
        self.dialup = DialupService(cfg, self.engine, self.ike_tunnels, self.pools, os.urandom)
        self.dialup.wake = self._dialup_wake
        self.engine.l2tp_handler = self._l2tp_datagram
        self._dialup_task = asyncio.get_running_loop().create_task(self._dialup_timers())

    # -- periodic ------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._engine_events()  # first: an Acquire not yet acted on is not a finished attempt
        self._ike_liveness()
        now = time.monotonic()
        if self.demand:
            self._demand_poll(now)
        if now - self._last_drop_report >= DROP_REPORT_SECONDS:
            self._last_drop_report = now
            drops = dict(self.engine.drops)
            delta = {k: v - self._last_drops.get(k, 0) for k, v in drops.items()
                     if v != self._last_drops.get(k, 0)}
            if delta:  # one summary line per period: a flood cannot flood the log
                event(log, "dataplane.drops", logging.WARNING,
                      **{k: delta[k] for k in sorted(delta)})
            self._last_drops = drops
        report_suppressed(log)  # what the log's rate limit left out (gateway.logs)

    # -- the IPsec policy (gateway.policy.runtime) -------------------------------------------
    async def _policy_start(self) -> None:
        """Install the configured policy: SPD entries, the inbound check, the traps of the
        connections its rules negotiate through, its routes, and its say on the CHILD_SAs
        peers ask for."""
        policy = self.policy
        if policy is None:
            return
        assert self.ike is not None
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

    def _send_held(self, name: str, source: bytes | None = None) -> int:
        """What a trap held while its SAs were negotiated: sent first, now that they are up
        (``source``: a LAC's IPCP address, see `Dataplane.release_held`); how many went."""
        held = self.engine.release_held(name, source)
        for result in held:
            self.backend.transmit(result)
        return len(held)

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
        snap["ike_dropped"] = dict(self.ike.counters) if self.ike is not None else {}
        tunnels = []
        for name, conn in conns.items():
            if conn.keying == "ike":
                totals = self.ike_tunnels.totals(name)
                up = any(t.pairs for t in self.ike_tunnels.of_connection(name))
                dd = conn.demand_dial
                expected = conn.ike.start == "start" or (dd is not None and dd.persistent)
                tunnels.append({"connection": name, "up": up, "expected": expected, **vars(totals)})
            elif name in self.tunnels:
                totals = TrafficTotals()
                totals.add(self.tunnels[name])
                tunnels.append({"connection": name, "up": True, "expected": True, **vars(totals)})
        snap["tunnels"] = tunnels
        snap["pools"] = [{"pool": name, "used": pool.in_use, "total": pool.size}
                         for name, pool in self.pools.items()]
        snap["demand"] = self._demand_rows(now)
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
            "io": backend.io_status() if backend is not None and hasattr(backend, "io_status") else {},
            "public_address": str(self.config.gateway.public_address),
            "connections": connections, "drops": snap["drops"],
            "edge": {"nftables": self.edge_applied, "counters": snap.get("edge_counters", {})},
            "keepalives_received": snap["keepalives_received"],
            "ike": {
                "connections": sorted(self.ike.configs) if self.ike else [],
                "ike_sas": len(self.ike.sas(time.monotonic())) if self.ike else 0,
                "half_open": self.ike.half_open if self.ike else {},
                **self.ike_stats.status(),
                "dropped": dict(self.ike.counters) if self.ike else {},
            },
            "dialup": snap.get("dialup"),
            "demand": self._demand_rows(time.monotonic()),
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


#: the cyclic garbage collector's thresholds once the gateway runs (`tune_gc`)
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """The cyclic garbage collector for a long-running gateway, once it has started.

    ``gc.freeze()``: what the imports, the config and the start made stays for good, so no
    collection looks at it again.  A collection every 10,000 new container objects instead
    of 700: an IKE handshake makes a few thousand (SAs, messages, keys, events), nearly all
    freed by their reference counts or kept as long as their SA; with the defaults the
    collections took ~10% of the responder's CPU in bench/handshakes (in-process
    measurement: 0.27 s of collections for 2000 handshakes, 0.05-0.1 s with these).  The
    few reference cycles (a closed SA and its callbacks) wait a little longer to go."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(loaded: LoadedConfig) -> None:
    gateway = Gateway(loaded, least_privilege=True, tune_gc=True)
    asyncio.run(gateway.run())
