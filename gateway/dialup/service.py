"""L2TP/IPsec dial-up in one place: an LNS for dial-in users and LACs for branch routers.

It wires the sans-IO L2TP core (RFC 2661) and PPP sessions (RFC 1661) to the dataplane
and stays deterministic itself: the daemon hands it what the dataplane's L2TP handler got
(the IPsec tunnel it came through, the sender, the UDP payload) and the time; it returns
what to send (ESP-protected L2TP, as dataplane `Transmit` tuples), the IP packets that
came out of PPP links (for the TUN), the routes and addresses the host needs, and log
lines. So it runs in memory between two dataplanes in the tests, byte for byte.

One L2TP endpoint per IPsec tunnel: clients behind one NAT all appear as the NAT's
address and port 1701 inside their SAs, so the SA, not the address, tells them apart.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import Config, Connection, L2tpClient, L2tpServer, User
from gateway.dataplane import ip
from gateway.dataplane.engine import Dataplane, Transmit
from gateway.ike.pool import AddressPool, PoolExhausted
from gateway.l2tp import (
    FrameReceived,
    L2tpEndpoint,
    L2tpRefused,
    L2tpSettings,
    SessionDown,
    SessionKey,
    SessionUp,
    TunnelDown,
    TunnelUp,
)
from gateway.l2tp import Note as L2tpNote
from gateway.ppp.auth import UserSecret
from gateway.ppp.config import ClientConfig, LcpConfig, PppConfig, ServerConfig
from gateway.ppp.events import AuthFailed, AuthSucceeded, IpPacket, LinkDown, LinkUp
from gateway.ppp.events import Note as PppNote
from gateway.ppp.session import PppSession
from gateway.tunnels import TunnelTable

L2TP_PORT = 1701
#: CDN result code 3: administrative (RFC 2661 4.4.2), for kicks, limits and idle timeouts
_CDN_ADMIN = 3


@dataclass(frozen=True)
class LogLine:
    """A line for the daemon's log: what happened, how loud, and the fields."""

    what: str
    level: str = "info"
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HostChange:
    """Something the host must do for a PPP link: ``op`` is address_add / address_del (our
    address on the TUN) or route_add / route_del (``network`` into the TUN, from ``source``)."""

    op: str
    network: ipaddress.IPv4Network
    source: ipaddress.IPv4Address | None = None


@dataclass
class DialSession:
    """One PPP session inside one L2TP session inside one IPsec tunnel."""

    key: SessionKey
    tunnel: str  # the IPsec (dataplane) tunnel
    connection: str
    role: str  # "lns" | "lac"
    peer: tuple[str, int]
    ppp: PppSession
    started: float
    mss: int
    user: str | None = None
    method: str | None = None
    address: ipaddress.IPv4Address | None = None  # the client's (LNS) or ours (LAC)
    local: ipaddress.IPv4Address | None = None  # ours on the link
    leased: bool = False
    up_at: float | None = None
    last_activity: float = 0.0
    idle_timeout: float | None = None
    session_limit: float | None = None
    closing: bool = False
    #: why PPP ended, when it ended first (the L2TP session goes after it, for this reason)
    down_reason: str | None = None
    routed: list[ipaddress.IPv4Network] = field(default_factory=list)
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    link: PppLink | None = None


class PppLink:
    """The dataplane's view of a PPP session: IP packets for its destinations are clamped,
    framed as PPP, carried in an L2TP data message and protected by the session's SA."""

    def __init__(self, service: DialupService, session: DialSession) -> None:
        self.service = service
        self.session = session

    def transmit(self, packet: bytes) -> Transmit | None:
        s = self.session
        if s.closing:
            return None
        packet = ip.clamp_mss(packet, s.mss)
        if not s.ppp.send_ip(packet, self.service.now):
            self.service.stats["ppp_not_ready"] += 1
            return None
        s.packets_out += 1
        s.bytes_out += len(packet)
        s.last_activity = self.service.now
        service = self.service
        queue, wake = service.transmits, service.wake
        before = len(queue)
        service.wake = None  # the packet goes back to the dataplane: no flush needed for it
        try:
            service._session_output(s)
        finally:
            service.wake = wake
        if len(queue) == before:
            return None
        first = queue.pop(before)
        if len(queue) > before and wake is not None:
            wake()  # the rest (rare: control messages) the daemon sends after
        return first


@dataclass
class _Dialer:
    """A LAC connection's dialing state (redial with backoff after failures)."""

    connection: str
    config: L2tpClient
    remote: str
    tunnel_id: int | None = None
    session: SessionKey | None = None
    next_dial: float | None = None
    backoff: float = 0.0
    #: a demand-dial LAC: the daemon dials and redials it (`gateway.demand`), not the backoff here
    demand: bool = False
    linked: bool = False  # its PPP link came up since it last dialed


@dataclass(frozen=True)
class LacEvent:
    """For the daemon's demand-dialer: a demand-dial LAC's link came ``up``, went ``down``,
    or its call ``failed`` before the link came up."""

    connection: str
    what: str
    reason: str = ""


@dataclass
class _L2tpPeer:
    tunnel: str  # the IPsec tunnel key
    connection: str
    endpoint: L2tpEndpoint


class DialupService:
    """All L2TP/PPP of the gateway: LNS connections, LAC connections, users and pools."""

    def __init__(self, config: Config, engine: Dataplane, tunnels: TunnelTable,
                 pools: dict[str, AddressPool], random: Callable[[int], bytes], *,
                 host_name: str | None = None) -> None:
        self.config = config
        self.engine = engine
        self.tunnels = tunnels
        self.pools = pools
        self.random = random
        self.host_name = host_name or config.gateway.name
        self.now = 0.0
        self.peers: dict[str, _L2tpPeer] = {}  # by IPsec tunnel key
        self.sessions: dict[tuple[str, SessionKey], DialSession] = {}
        self.dialers: dict[str, _Dialer] = {}
        self.lns: dict[str, L2tpServer] = {}
        self.local_address: dict[str, ipaddress.IPv4Address] = {}  # an LNS's own PPP address
        self.stats: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()  # by method
        self.transmits: list[Transmit] = []
        self.to_tun: list[bytes] = []
        self.host_changes: list[HostChange] = []
        self.log: list[LogLine] = []
        #: LAC connections whose IPsec SAs should be negotiated afresh: their L2TP peer
        #: stopped answering inside them, so they may be stale (the LNS restarted and
        #: forgot them, and no DPD told IKE). For the daemon to take, delete and initiate
        #: again (IkeEndpoints.terminate, then initiate).
        self.ipsec_restarts: list[str] = []
        #: what demand-dial LACs did (`LacEvent`), for the daemon to take
        self.lac_events: list[LacEvent] = []
        #: called when there is output to send (the daemon schedules a flush)
        self.wake: Callable[[], None] | None = None
        for name, conn in config.connections.items():
            self._add_connection(name, conn)

    def _add_connection(self, name: str, conn: Connection) -> None:
        l2tp = conn.l2tp
        if isinstance(l2tp, L2tpServer):
            self.lns[name] = l2tp
            pool = self.pools[l2tp.pool]
            local = l2tp.local_address
            if local is None:
                local = pool.lease(f"lns:{name}")  # the first free address: ours
            elif local in pool.subnet:
                pool.leases[local] = f"lns:{name}"
            self.local_address[name] = local
            self.host_changes.append(HostChange("address_add", ipaddress.IPv4Network(local)))
            self.host_changes.append(HostChange("route_add", pool.subnet, local))
        elif isinstance(l2tp, L2tpClient):
            self.dialers[name] = _Dialer(name, l2tp, conn.remote, demand=conn.demand_dial is not None)

    # -- reload ------------------------------------------------------------------------------
    def reconfigure(self, config: Config, going: Iterable[str], coming: Iterable[str], now: float) -> None:
        """A config reload: the L2TP connections in ``going`` end (StopCCN to their peers,
        their sessions, addresses and routes go), those in ``coming`` start as at startup,
        and users are looked up in ``config`` from now on (sessions that are up stay).
        Call it before the IPsec SAs of ``going`` are deleted: the StopCCN goes through them."""
        self.now = now
        for name in going:
            self._remove_connection(name, now)
        self.config = config
        for name in coming:
            self._add_connection(name, config.connections[name])

    def _remove_connection(self, name: str, now: float) -> None:
        self.dialers.pop(name, None)  # first: the end of its call must not schedule a redial
        for p in [p for p in self.peers.values() if p.connection == name]:
            p.endpoint.close_all(now, message="connection removed or changed")
            self._pump(p, now)
            for key in [k for k in self.sessions if k[0] == p.tunnel]:
                self._session_gone(self.sessions[key], "connection removed or changed", now)
            del self.peers[p.tunnel]
        lns = self.lns.pop(name, None)
        if lns is not None:
            local = self.local_address.pop(name)
            pool = self.pools.get(lns.pool)
            if pool is not None and pool.leases.get(local) == f"lns:{name}":
                pool.release(local)
            # the subnet this LNS routed (its pool may be new by now)
            self.host_changes.append(HostChange("route_del", self.config.pools[lns.pool].subnet))
            self.host_changes.append(HostChange("address_del", ipaddress.IPv4Network(local)))

    # -- input -------------------------------------------------------------------------------
    def receive(self, tunnel: str, peer: tuple[str, int], data: bytes, now: float) -> None:
        """An L2TP datagram that came out of the ESP transport SA of ``tunnel``."""
        self.now = now
        p = self.peers.get(tunnel)
        if p is None:
            self.stats["drop:no_l2tp_connection"] += 1
            return
        p.endpoint.receive(data, peer, now)
        self._pump(p, now)

    def ipsec_up(self, tunnel: str, connection: str, now: float) -> None:
        """The IPsec SAs of an L2TP connection are up (again): an LNS waits for its clients,
        a LAC dials."""
        self.now = now
        if not self.serves(connection):
            return
        if tunnel not in self.peers:
            self.peers[tunnel] = _L2tpPeer(tunnel, connection, self._endpoint(connection))
        dialer = self.dialers.get(connection)
        if dialer is not None and dialer.tunnel_id is None and dialer.next_dial is None:
            self._dial(dialer, now)

    def ipsec_down(self, tunnel: str, now: float) -> None:
        """The last IPsec SA of ``tunnel`` is gone: what ran inside it is gone too."""
        self.now = now
        p = self.peers.pop(tunnel, None)
        if p is None:
            return
        dialer = self.dialers.get(p.connection)
        if dialer is not None:  # before the sessions go: their end must not start a redial timer
            calling = dialer.tunnel_id is not None or dialer.next_dial is not None
            dialer.tunnel_id = dialer.session = None
            dialer.next_dial = None  # dial again when IPsec is back
            if calling and not dialer.demand:
                self._log("l2tp.redial", "warning", connection=dialer.connection, reason="IPsec SA down",
                          when="ipsec_up")
        for key in [k for k in self.sessions if k[0] == tunnel]:
            self._session_gone(self.sessions[key], "IPsec SA down", now)

    def _endpoint(self, connection: str) -> L2tpEndpoint:
        conn = self.config.connections[connection]
        l2tp = conn.l2tp
        assert l2tp is not None
        secret = l2tp.secret.reveal() if l2tp.secret is not None else None
        lns = l2tp.role == "lns"
        settings = L2tpSettings(host_name=self.host_name, vendor_name="gateway",
                                accept_tunnels=lns, accept_incoming_calls=lns,
                                accept_outgoing_calls=not lns, default_secret=secret,
                                hello_interval=float(l2tp.hello_interval))
        return L2tpEndpoint(settings, random=self.random)

    # -- LAC ---------------------------------------------------------------------------------
    def _dial(self, dialer: _Dialer, now: float) -> None:
        p = self.peers.get(dialer.connection)
        dialer.next_dial = None
        if p is None:  # IPsec is down: ipsec_up dials
            return
        ep = p.endpoint
        secret = dialer.config.secret.reveal() if dialer.config.secret is not None else None
        try:
            dialer.tunnel_id = ep.open_tunnel((dialer.remote, L2TP_PORT), now, secret=secret)
            dialer.session = ep.place_call(dialer.tunnel_id, now)
        except L2tpRefused as exc:
            self._log("l2tp.dial_failed", "warning", connection=dialer.connection, detail=str(exc))
            self._redial_later(dialer, now, "dial failed")
            return
        self.stats["lac_dials"] += 1
        dialer.linked = False
        self._log("l2tp.dialing", connection=dialer.connection, lns=dialer.remote, user=dialer.config.user)
        self._pump(p, now)

    def _redial_later(self, dialer: _Dialer, now: float, reason: str) -> None:
        """Dial again after the backoff: ``redial_min``, doubled after every failure up to
        ``redial_max``, back to ``redial_min`` once a PPP link came up."""
        if dialer.demand:  # the daemon's demand-dialer decides when to dial again
            dialer.next_dial = None
            dialer.tunnel_id = dialer.session = None
            if not dialer.linked:
                self.lac_events.append(LacEvent(dialer.connection, "failed", reason))
            self._log("l2tp.on_hook", connection=dialer.connection, reason=reason)
            return
        cfg = dialer.config
        dialer.backoff = min(float(cfg.redial_max), max(float(cfg.redial_min), dialer.backoff * 2))
        dialer.next_dial = now + dialer.backoff
        dialer.tunnel_id = dialer.session = None
        self._log("l2tp.redial", connection=dialer.connection, seconds=round(dialer.backoff, 1),
                  reason=reason)

    # -- the L2TP core's output --------------------------------------------------------------
    def _pump(self, p: _L2tpPeer, now: float) -> None:
        ep = p.endpoint
        while True:
            for data, address in ep.datagrams_to_send():
                self._send_l2tp(p.tunnel, address, data)
            ev = ep.next_event()
            if ev is None:
                return
            self._l2tp_event(p, ev, now)

    def _send_l2tp(self, tunnel: str, address: tuple[str, int], payload: bytes) -> None:
        t = self.tunnels.tunnels.get(tunnel)
        sa = t.policy.esp_out if t is not None else None
        if sa is None:
            self.stats["drop:no_sa"] += 1
            return
        # UDP without a checksum (RFC 768; it is inside ESP, whose ICV covers it, and a NAT
        # would make a checksum wrong anyway: RFC 3948 3.1.2)
        segment = struct.pack("!HHHH", L2TP_PORT, address[1], 8 + len(payload), 0) + payload
        out = self.engine.send_transport(sa, ip.PROTO_UDP, segment)
        if out is not None:
            self.transmits.append(out)
            if self.wake is not None:
                self.wake()

    def _l2tp_event(self, p: _L2tpPeer, ev: object, now: float) -> None:
        if isinstance(ev, FrameReceived):
            s = self.sessions.get((p.tunnel, ev.session))
            if s is None:
                self.stats["drop:frame_without_session"] += 1
                return
            s.ppp.receive(ev.frame, now)
            self._session_output(s)
        elif isinstance(ev, SessionUp):
            self._session_up(p, ev, now)
        elif isinstance(ev, SessionDown):
            s = self.sessions.get((p.tunnel, ev.session))
            self._log("l2tp.session_down", connection=p.connection, tunnel=p.tunnel, session=str(ev.session),
                      reason=ev.reason, detail=ev.text)
            if s is not None:
                self._session_gone(s, f"L2TP session down ({ev.reason}: {ev.text})", now)
            self._lac_failed(p, ev.session.tunnel, now, f"L2TP session down ({ev.reason}: {ev.text})")
        elif isinstance(ev, TunnelUp):
            self.stats["l2tp_tunnels_up"] += 1
            self._log("l2tp.tunnel_up", connection=p.connection, tunnel=p.tunnel,
                      peer=f"{ev.peer[0]}:{ev.peer[1]}", host=ev.host_name, vendor=ev.vendor,
                      authenticated=ev.authenticated)
        elif isinstance(ev, TunnelDown):
            self._log("l2tp.tunnel_down", "warning" if ev.reason not in ("closed", "stopccn") else "info",
                      connection=p.connection, tunnel=p.tunnel, reason=ev.reason, detail=ev.text)
            for key in [k for k in self.sessions if k[0] == p.tunnel and k[1].tunnel == ev.tunnel]:
                self._session_gone(self.sessions[key], f"L2TP tunnel down ({ev.reason})", now)
            if ev.reason in ("timeout", "setup_timeout") and p.connection in self.dialers \
                    and not self.dialers[p.connection].demand and p.connection not in self.ipsec_restarts:
                # A LAC's tunnel (it opens them all): the LNS stopped answering inside IPsec. If
                # it restarted, it forgot our SAs and drops what we send through them, and only
                # DPD would tell IKE so (if the LNS does DPD at all): redialing through them
                # would never get through.
                self.stats["lac_ipsec_restarts"] += 1
                self.ipsec_restarts.append(p.connection)
                self._log("l2tp.ipsec_restart", "warning", connection=p.connection, tunnel=p.tunnel,
                          reason=f"L2TP tunnel down ({ev.reason})")
            self._lac_failed(p, ev.tunnel, now, f"L2TP tunnel down ({ev.reason})")
        elif isinstance(ev, L2tpNote):
            self.log.append(LogLine(ev.what, ev.level, ev.fields))

    def _lac_failed(self, p: _L2tpPeer, tunnel_id: int, now: float, reason: str) -> None:
        dialer = self.dialers.get(p.connection)
        if dialer is not None and dialer.tunnel_id == tunnel_id and dialer.next_dial is None:
            self._hang_up(dialer, now, reason)

    def _hang_up(self, dialer: _Dialer, now: float, reason: str) -> None:
        """A LAC's call failed or ended: close its L2TP tunnel and dial again later. The
        redial is set first, so the events the close brings see it and do not recurse."""
        tunnel_id = dialer.tunnel_id
        self._redial_later(dialer, now, reason)
        p = self.peers.get(dialer.connection)
        if p is not None and tunnel_id is not None:
            p.endpoint.close_tunnel(tunnel_id, now)
            self._pump(p, now)

    # -- PPP sessions ------------------------------------------------------------------------
    def _session_up(self, p: _L2tpPeer, ev: SessionUp, now: float) -> None:
        conn = self.config.connections[p.connection]
        l2tp = conn.l2tp
        assert l2tp is not None
        lcp = LcpConfig(mru=l2tp.mru)
        if isinstance(l2tp, L2tpServer):
            pool = self.pools[l2tp.pool]
            dns = tuple(str(d) for d in (l2tp.dns or pool.dns))[:2]
            cfg = PppConfig(lcp=lcp, server=ServerConfig(str(self.local_address[p.connection]), dns,
                                                        tuple(l2tp.auth), name=self.host_name))
            holder: list[DialSession] = []
            ppp = PppSession("server", cfg, self.random, now, credentials=self._credentials,
                             address_for=lambda user: self._address_for(holder[0], user))
        else:
            cfg = PppConfig(lcp=lcp, client=ClientConfig(l2tp.user, l2tp.password.reveal().decode(),
                                                        tuple(l2tp.auth)))
            holder = []
            ppp = PppSession("client", cfg, self.random, now)
        s = DialSession(ev.session, p.tunnel, p.connection, l2tp.role, ev.peer, ppp, now, l2tp.mss,
                        last_activity=now)
        if isinstance(l2tp, L2tpServer):
            s.local = self.local_address[p.connection]
            s.idle_timeout = l2tp.idle_timeout
            s.session_limit = l2tp.session_limit
        holder.append(s)
        self.sessions[(p.tunnel, ev.session)] = s
        self.stats["l2tp_sessions_up"] += 1
        self._log("l2tp.session_up", connection=p.connection, tunnel=p.tunnel, session=str(ev.session),
                  peer=f"{ev.peer[0]}:{ev.peer[1]}", calling=ev.calling_number or None)
        ppp.start(now)
        self._session_output(s)

    def _credentials(self, user: str) -> UserSecret | None:
        u = self._user(user)
        if u is None:
            return None
        return UserSecret(password=u.password.reveal().decode() if u.password is not None else None,
                          nt_hash=u.nt_hash.reveal() if u.nt_hash is not None else None,
                          salted=u.password_hash)

    def _user_name(self, name: str) -> str:
        """The configured name: clients may write ``DOMAIN\\user`` (Windows)."""
        return name if name in self.config.users else name.rsplit("\\", 1)[-1]

    def _user(self, name: str) -> User | None:
        return self.config.users.get(self._user_name(name))

    def _address_for(self, s: DialSession, user: str) -> str | None:
        """After authentication: enforce the user's session limit, then give an address."""
        name = self._user_name(user)
        u = self._user(user)
        if u is None:
            return None
        active = [o for o in self.sessions.values() if o is not s and o.user == name and not o.closing]
        if len(active) >= u.max_sessions:
            self.stats["refused:max_sessions"] += 1
            self._log("ppp.refused", "warning", connection=s.connection, user=name,
                      reason=f"already {len(active)} session(s), max_sessions {u.max_sessions}")
            return None
        l2tp = self.lns[s.connection]
        if u.address is not None:
            if any(o.address == u.address for o in self.sessions.values() if o is not s):
                self._log("ppp.refused", "warning", connection=s.connection, user=name,
                          reason=f"static address {u.address} in use")
                return None
            s.address, s.leased = u.address, False
        else:
            try:
                s.address = self.pools[l2tp.pool].lease(f"ppp:{s.tunnel}:{s.key}")
            except PoolExhausted as exc:
                self.stats["refused:pool_exhausted"] += 1
                self._log("ppp.refused", "warning", connection=s.connection, user=name, reason=str(exc))
                return None
            s.leased = True
        s.user = name
        if u.idle_timeout is not None:
            s.idle_timeout = u.idle_timeout
        if u.session_limit is not None:
            s.session_limit = u.session_limit
        return str(s.address)

    def _session_output(self, s: DialSession) -> None:
        """Frames the PPP session wants sent go into L2TP and out; its events are handled."""
        p = self.peers.get(s.tunnel)
        if p is None:
            return
        ep = p.endpoint
        for frame in s.ppp.frames_to_send():
            ep.send_frame(s.key, frame)
        for data, address in ep.datagrams_to_send():
            self._send_l2tp(s.tunnel, address, data)
        while (ev := s.ppp.next_event()) is not None:
            self._ppp_event(s, ev)

    def _ppp_event(self, s: DialSession, ev: object) -> None:
        now = self.now
        if isinstance(ev, IpPacket):
            pkt = ev.packet
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                self.stats["drop:ppp_not_ipv4"] += 1
                return
            if s.role == "lns" and (s.address is None or pkt[12:16] != s.address.packed):
                self.stats["drop:ppp_spoofed_source"] += 1  # a client sends only from its address
                return
            if s.role == "lac" and (s.address is None or pkt[16:20] != s.address.packed):
                self.stats["drop:ppp_not_for_us"] += 1  # the LNS sends to our link address only
                return
            s.packets_in += 1
            s.bytes_in += len(pkt)
            s.last_activity = now
            self.to_tun.append(ip.clamp_mss(pkt, s.mss))
        elif isinstance(ev, AuthSucceeded):
            if s.role == "lns":
                s.user = self._user_name(ev.user)
            s.method = ev.method
            self.stats[f"auth_ok:{ev.method}"] += 1
            self._log("ppp.auth_ok", connection=s.connection, user=ev.user, method=ev.method,
                      peer=f"{s.peer[0]}:{s.peer[1]}")
        elif isinstance(ev, AuthFailed):
            self.auth_failures[ev.method] += 1
            self._log("ppp.auth_failed", "warning", connection=s.connection, user=ev.user, method=ev.method,
                      reason=ev.reason, peer=f"{s.peer[0]}:{s.peer[1]}")
        elif isinstance(ev, LinkUp):
            self._link_up(s, ev)
        elif isinstance(ev, LinkDown):
            self._log("ppp.down", connection=s.connection, user=s.user, reason=ev.reason,
                      seconds=round(now - s.started, 1))
            s.down_reason = f"PPP down ({ev.reason})"
            p = self.peers.get(s.tunnel)
            if p is not None and not s.closing:
                s.closing = True
                p.endpoint.close_session(s.key, now, message=ev.reason[:60])
                self._pump(p, now)
            self._session_gone(s, s.down_reason, now)
        elif isinstance(ev, PppNote):
            self.log.append(LogLine(ev.what, ev.level, ev.fields))

    def _link_up(self, s: DialSession, ev: LinkUp) -> None:
        s.up_at = self.now
        link = s.link or PppLink(self, s)
        s.link = link
        if s.role == "lns":
            assert s.address is not None
            self.engine.links[int(s.address)] = link
            pool = self.pools[self.lns[s.connection].pool]
            if s.address not in pool.subnet:
                s.routed = [ipaddress.IPv4Network(s.address)]
                self.host_changes.append(HostChange("route_add", s.routed[0], s.local))
        else:
            address = ipaddress.IPv4Address(ev.local_address)
            if s.address is not None and s.address != address:
                self._unroute(s)
            s.address = address
            s.local = address
            dialer = self.dialers[s.connection]
            s.routed = list(dialer.config.remote_subnets)
            self.host_changes.append(HostChange("address_add", ipaddress.IPv4Network(address)))
            for net in s.routed:
                self.engine.link_nets.append((int(net.network_address), int(net.netmask), link))
                self.host_changes.append(HostChange("route_add", net, address))
            if ev.peer_address:
                self.engine.links[int(ipaddress.IPv4Address(ev.peer_address))] = link
            dialer.backoff = 0.0
            if dialer.demand:
                dialer.linked = True
                self.lac_events.append(LacEvent(s.connection, "up"))
        self.stats["ppp_links_up"] += 1
        self._log("ppp.up", connection=s.connection, user=s.user, method=s.method,
                  address=str(s.address), local=ev.local_address, peer=ev.peer_address,
                  dns=",".join(ev.dns) or None, mtu=ev.mtu)

    def _unroute(self, s: DialSession) -> None:
        link = s.link
        self.engine.links = {a: li for a, li in self.engine.links.items() if li is not link}
        self.engine.link_nets = [e for e in self.engine.link_nets if e[2] is not link]
        dialer = self.dialers.get(s.connection) if s.role == "lac" else None
        demand = dialer is not None and dialer.demand
        if s.role == "lac" and s.address is not None:
            # first: removing the TUN's last address flushes every route through it
            self.host_changes.append(HostChange("address_del", ipaddress.IPv4Network(s.address)))
        for net in s.routed:
            # a demand-dial interface keeps its routes into the dataplane's trap
            self.host_changes.append(HostChange("route_add", net) if demand else HostChange("route_del", net))
        if demand and s.routed and link is not None:
            self.lac_events.append(LacEvent(s.connection, "down", s.down_reason or ""))
        s.routed = []

    def _session_gone(self, s: DialSession, reason: str, now: float) -> None:
        if self.sessions.pop((s.tunnel, s.key), None) is None:
            return
        reason = s.down_reason or reason
        if not s.ppp.finished:  # the layers below went first: LinkDown comes now, unlogged yet
            s.ppp.lower_down(now, reason)
            while s.ppp.next_event() is not None:
                pass
            self._log("ppp.down", connection=s.connection, user=s.user, reason=reason,
                      seconds=round(now - s.started, 1))
        self._unroute(s)
        if s.leased and s.address is not None and s.role == "lns":
            self.pools[self.lns[s.connection].pool].release(s.address)
        self.stats["sessions_ended"] += 1
        dialer = self.dialers.get(s.connection)
        if dialer is not None and dialer.session == s.key and dialer.next_dial is None:
            self._hang_up(dialer, now, reason)

    # -- commands ----------------------------------------------------------------------------
    def serves(self, connection: str) -> bool:
        """Whether ``connection`` carries L2TP (its SAs need no routes: the service uses them)."""
        return connection in self.lns or connection in self.dialers

    def hang_up(self, connection: str, now: float) -> bool:
        """Hang a LAC up for good (a demand-dial interface gone idle): StopCCN, no redial."""
        self.now = now
        dialer = self.dialers.get(connection)
        if dialer is None or dialer.tunnel_id is None:
            return False
        tunnel_id = dialer.tunnel_id
        dialer.tunnel_id = dialer.session = None
        dialer.next_dial = None
        p = self.peers.get(connection)
        if p is not None:
            p.endpoint.close_tunnel(tunnel_id, now)
            self._pump(p, now)
        return True

    def lac_address(self, connection: str) -> ipaddress.IPv4Address | None:
        """Our address on a LAC's PPP link (IPCP), while it is up."""
        return next((s.address for s in self.sessions.values()
                     if s.connection == connection and s.role == "lac" and s.link is not None
                     and s.routed), None)

    def lac_packets(self, connection: str) -> int:
        """Data packets both ways over a LAC's PPP sessions (its demand-dial activity)."""
        return sum(s.packets_in + s.packets_out for s in self.sessions.values() if s.connection == connection)

    def kick(self, user: str, now: float) -> int:
        """End every session of ``user`` (LCP Terminate, then CDN)."""
        self.now = now
        count = 0
        for s in list(self.sessions.values()):
            if s.user == user and not s.closing:
                self._close(s, "kicked by operator", now)
                count += 1
        return count

    def _close(self, s: DialSession, reason: str, now: float) -> None:
        s.ppp.close(now, reason)
        self._session_output(s)

    def close_all(self, now: float) -> None:
        self.now = now
        for p in list(self.peers.values()):
            p.endpoint.close_all(now)
            self._pump(p, now)

    # -- timers ------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        times = [t for p in self.peers.values() if (t := p.endpoint.get_timer()) is not None]
        for s in self.sessions.values():
            t = s.ppp.get_timer()
            if t is not None:
                times.append(t)
            if s.idle_timeout is not None and not s.closing:
                times.append(s.last_activity + s.idle_timeout)
            if s.session_limit is not None and not s.closing:
                times.append(s.started + s.session_limit)
        times += [d.next_dial for d in self.dialers.values() if d.next_dial is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self.now = now
        for p in list(self.peers.values()):
            t = p.endpoint.get_timer()
            if t is not None and now >= t:
                p.endpoint.handle_timer(now)
                self._pump(p, now)
        for s in list(self.sessions.values()):
            t = s.ppp.get_timer()
            if t is not None and now >= t:
                s.ppp.handle_timer(now)
                self._session_output(s)
            if s.closing or (s.tunnel, s.key) not in self.sessions:
                continue
            if s.idle_timeout is not None and now >= s.last_activity + s.idle_timeout:
                self.stats["idle_timeouts"] += 1
                self._close(s, f"idle for {s.idle_timeout} s", now)
            elif s.session_limit is not None and now >= s.started + s.session_limit:
                self.stats["session_limits"] += 1
                self._close(s, f"session time limit {s.session_limit} s", now)
        for d in self.dialers.values():
            if d.next_dial is not None and now >= d.next_dial:
                self._dial(d, now)

    # -- reporting ---------------------------------------------------------------------------
    def describe(self, now: float) -> list[dict[str, Any]]:
        """What `gateway sessions` shows (never a password)."""
        return [{
            "connection": s.connection, "role": s.role, "tunnel": s.tunnel, "session": str(s.key),
            "user": s.user, "method": s.method, "address": str(s.address) if s.address else None,
            "peer": f"{s.peer[0]}:{s.peer[1]}", "state": "up" if s.up_at is not None else "negotiating",
            "uptime": round(now - (s.up_at if s.up_at is not None else s.started), 1),
            "packets_in": s.packets_in, "packets_out": s.packets_out,
            "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
        } for s in self.sessions.values()]

    def summary(self) -> dict[str, Any]:
        """The dial-up block of `gateway status` and of the metrics: counts, never secrets."""
        refused: Counter[str] = Counter()
        drops: Counter[str] = Counter(self.drops())
        events: dict[str, int] = {}
        for key, value in sorted(self.stats.items()):
            kind, _, reason = key.partition(":")
            if kind == "refused":
                refused[reason] += value
            elif kind == "drop":
                drops[reason] += value
            else:
                events[key] = value
        for p in self.peers.values():
            for reason, value in p.endpoint.refusals.items():
                refused[f"l2tp:{reason}"] += value
        return {
            "l2tp_tunnels": sum(len(p.endpoint.tunnel_ids) for p in self.peers.values()),
            "sessions": len(self.sessions),
            "sessions_up": sum(1 for s in self.sessions.values() if s.up_at is not None),
            "auth_failures": dict(sorted(self.auth_failures.items())),
            "events": events, "refused": dict(sorted(refused.items())), "drops": dict(sorted(drops.items())),
        }

    def drops(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for p in self.peers.values():
            for k, v in p.endpoint.drops.items():
                out[f"l2tp:{k}"] += v
        for s in self.sessions.values():
            for k, v in s.ppp.drops.items():
                out[f"ppp:{k}"] += v
        return dict(out)

    def _log(self, what: str, level: str = "info", **fields: object) -> None:
        self.log.append(LogLine(what, level, tuple((k, str(v)) for k, v in fields.items() if v is not None)))
