"""Negotiated CHILD_SAs in the dataplane: SAD entries, one policy per connection.

An IKE core announces a CHILD_SA pair with `ChildSaUp`; this module turns it into an
inbound SA (installed at once) and an outbound SA that the connection's policy points to.
On a rekey the new inbound SA is installed next to the old one, and the policy switches
to the new outbound SA when the event says so (the rekey initiator, RFC 7296 2.8) or
when the old pair is deleted (the responder): no packet is sent on an SA the peer cannot
yet decrypt, and none arrives on an SA we removed.

With a key log (``logging.save_keys``) every pair's keys are also saved for Wireshark as
the pair is installed (`gateway.keylog`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from gateway.crypto.algorithms import EspSuite
from gateway.dataplane.engine import Dataplane
from gateway.dataplane.sa import Direction, Mode, SecurityAssociation, UdpEncap
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Policy
from gateway.ike.events import ChildSaDown, ChildSaUp
from gateway.ike.trafficselectors import TsRange
from gateway.keylog import EspSaKeys, KeyLog


def _networks(ts: TsRange) -> list[ipaddress.IPv4Network]:
    return list(ipaddress.summarize_address_range(ts.start, ts.end))


def selector_pairs(local_ts: tuple[TsRange, ...], remote_ts: tuple[TsRange, ...]) -> tuple[SelectorPair, ...]:
    pairs = []
    for lo in local_ts:
        for re in remote_ts:
            if lo.protocol and re.protocol and lo.protocol != re.protocol:
                continue
            proto = lo.protocol or re.protocol
            for ln in _networks(lo):
                for rn in _networks(re):
                    pairs.append(SelectorPair(TrafficSelector(ln, lo.port_start, lo.port_end),
                                              TrafficSelector(rn, re.port_start, re.port_end), proto))
    return tuple(pairs)


class SaPair(Protocol):
    """Anything with an inbound and an outbound SA: a negotiated pair, a manual tunnel."""

    inbound: SecurityAssociation
    outbound: SecurityAssociation


@dataclass
class TrafficTotals:
    packets_in: int = 0
    bytes_in: int = 0
    drops_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0

    def add(self, pair: SaPair) -> None:
        self.packets_in += pair.inbound.counters.packets
        self.bytes_in += pair.inbound.counters.bytes
        self.drops_in += pair.inbound.counters.drops
        self.packets_out += pair.outbound.counters.packets
        self.bytes_out += pair.outbound.counters.bytes

    def merge(self, other: TrafficTotals) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class ChildPair:
    outbound: SecurityAssociation
    inbound: SecurityAssociation
    event: ChildSaUp


@dataclass
class ConnectionTunnel:
    """What one IKE connection has in the dataplane."""

    name: str
    policy: Policy
    pairs: dict[int, ChildPair] = field(default_factory=dict)  # by inbound SPI
    remote_nets: list[ipaddress.IPv4Network] = field(default_factory=list)
    local_nets: list[ipaddress.IPv4Network] = field(default_factory=list)
    #: counters of the pairs already deleted (rekeys replace SAs; totals must not drop)
    retired: TrafficTotals = field(default_factory=lambda: TrafficTotals())
    #: the configured selectors of a trap (demand-dial): what the policy returns to
    #: when the last pair goes
    trap: tuple[SelectorPair, ...] = ()
    #: the IKE connection (a peer's tunnel is ``connection@address:port``)
    connection: str = ""
    #: the routes into the TUN the daemon installed for a trap at start (its remote
    #: subnets): they cover the nets of every peer of the connection that lie inside them
    routes: tuple[ipaddress.IPv4Network, ...] = ()

    def totals(self) -> TrafficTotals:
        """Packets and bytes each way over the tunnel's whole life, across rekeys."""
        t = TrafficTotals(**vars(self.retired))
        for pair in self.pairs.values():
            t.add(pair)
        return t


def build_pair(ev: ChildSaUp, replay_window: int) -> ChildPair:
    mode = Mode(ev.mode)
    selectors = selector_pairs(ev.local_ts, ev.remote_ts)
    encap = UdpEncap(4500, ev.encap_remote_port) if ev.encap_remote_port else None
    suite = ev.suite
    local = ipaddress.IPv4Address(ev.local)
    remote = ipaddress.IPv4Address(ev.remote)

    esp = EspSuite(suite.encryption, suite.integrity)

    def make(spi: int, direction: Direction, enc_key: bytes, integ_key: bytes) -> SecurityAssociation:
        return SecurityAssociation.build_esp(
            name=ev.connection, spi=spi, direction=direction, mode=mode, local=local, remote=remote,
            suite=esp, encryption_key=enc_key, integrity_key=integ_key, encap=encap, esn=suite.esn,
            selectors=selectors, replay_window=replay_window, tunnel=ev.tunnel or ev.connection)

    keys = ev.keys
    return ChildPair(make(ev.spi_out, Direction.OUT, keys.encr_out, keys.integ_out),
                     make(ev.spi_in, Direction.IN, keys.encr_in, keys.integ_in), ev)


class TunnelTable:
    """All IKE-keyed connections' SAs and policies in one dataplane engine."""

    def __init__(self, engine: Dataplane, replay_window: int, keylog: KeyLog | None = None) -> None:
        self.engine = engine
        self.replay_window = replay_window
        self.keylog = keylog
        self.tunnels: dict[str, ConnectionTunnel] = {}

    def up(self, ev: ChildSaUp, activate: bool = True) -> tuple[ConnectionTunnel, bool]:
        """Install a pair; returns the tunnel and whether its routes are new."""
        pair = build_pair(ev, self.replay_window)
        if self.keylog is not None:
            keys = ev.keys
            self.keylog.save_esp([EspSaKeys.of(pair.outbound, keys.encr_out, keys.integ_out),
                                  EspSaKeys.of(pair.inbound, keys.encr_in, keys.integ_in)])
        self.engine.install_inbound(pair.inbound)
        key = ev.tunnel or ev.connection
        tunnel = self.tunnels.get(key)
        new_routes = False
        if tunnel is None:
            # A peer of a connection open to many whose trap sits at a given priority takes
            # the place just before the trap (the trap holds the policy's order).
            trap = self.tunnels.get(ev.connection) if key != ev.connection else None
            priority = trap.policy.priority - 1 if trap is not None and trap.trap else 1000
            policy = Policy(key, pair.outbound.selectors, mode=Mode(ev.mode), priority=priority,
                            esp_out=pair.outbound)
            tunnel = ConnectionTunnel(key, policy, connection=ev.connection)
            self.tunnels[key] = tunnel
            self.engine.install_policy(policy)
            new_routes = True
        elif activate or tunnel.policy.esp_out is None:
            self._switch(tunnel, pair)
        tunnel.pairs[ev.spi_in] = pair
        remote_nets = sorted({p.remote.network for p in pair.outbound.selectors})
        local_nets = sorted({p.local.network for p in pair.outbound.selectors})
        if set(remote_nets) - set(tunnel.remote_nets):
            tunnel.remote_nets = sorted(set(tunnel.remote_nets) | set(remote_nets))
            new_routes = True
        tunnel.local_nets = sorted(set(tunnel.local_nets) | set(local_nets))
        return tunnel, new_routes

    def install_trap(self, name: str, selectors: tuple[SelectorPair, ...], mode: Mode, *,
                     hold: int = 0, fallback_clear: bool = False, priority: int = 1000) -> ConnectionTunnel:
        """A policy without SAs, installed before any negotiation (a "trap", RFC 4301 5.1.1):
        its first packet asks IKE for SAs and waits in the hold queue meanwhile.  The policy
        keeps `priority` (its place in the SPD) as SAs come and go."""
        tunnel = self.tunnels.get(name)
        if tunnel is not None:
            return tunnel
        policy = Policy(name, selectors, mode=mode, priority=priority, hold=hold,
                        fallback_clear=fallback_clear)
        tunnel = ConnectionTunnel(name, policy, trap=selectors, connection=name,
                                  remote_nets=sorted({p.remote.network for p in selectors}),
                                  local_nets=sorted({p.local.network for p in selectors}))
        self.tunnels[name] = tunnel
        self.engine.install_policy(policy)
        return tunnel

    def own_routes(self, tunnel: ConnectionTunnel) -> list[ipaddress.IPv4Network]:
        """The tunnel's remote nets that need routes of their own: those no route of its
        connection's trap covers (a tunnel-mode trap routes the configured remote subnets at
        start, so the peers inside them need none; transport mode, L2TP and connections
        without configured remote subnets have no such route)."""
        trap = self.tunnels.get(tunnel.connection or tunnel.name)
        covering = trap.routes if trap is not None and tunnel.policy.mode is Mode.TUNNEL else ()
        if not covering:
            return list(tunnel.remote_nets)
        return [n for n in tunnel.remote_nets if not any(n.subnet_of(c) for c in covering)]

    def routes_of(self, tunnel: ConnectionTunnel) -> list[ipaddress.IPv4Network]:
        """Every route into the TUN that is there for this tunnel: a trap's, then its own."""
        return [*tunnel.routes, *self.own_routes(tunnel)]

    def remove(self, name: str) -> ConnectionTunnel | None:
        """Forget a tunnel and its policy (its connection was removed from the config)."""
        tunnel = self.tunnels.pop(name, None)
        if tunnel is not None:
            for pair in tunnel.pairs.values():
                self.engine.remove_inbound(pair.inbound)
            self.engine.remove_policy(name)
            self.engine.discard_held(name)
        return tunnel

    def of_connection(self, connection: str) -> list[ConnectionTunnel]:
        """The tunnels of a connection: its own, or one per peer (``name@address:port``) when
        it answers any peer."""
        return [t for key, t in self.tunnels.items() if key == connection or key.startswith(connection + "@")]

    def totals(self, connection: str) -> TrafficTotals:
        total = TrafficTotals()
        for tunnel in self.of_connection(connection):
            total.merge(tunnel.totals())
        return total

    def _switch(self, tunnel: ConnectionTunnel, pair: ChildPair) -> None:
        """Point the connection's policy at this pair's outbound SA."""
        self._replace(tunnel, Policy(tunnel.name, pair.outbound.selectors, mode=tunnel.policy.mode,
                                     esp_out=pair.outbound))

    def _replace(self, tunnel: ConnectionTunnel, policy: Policy) -> None:
        old = tunnel.policy  # the policy stays what it was (its place, trap, counter); only its SAs change
        policy.hold, policy.fallback_clear, policy.priority = old.hold, old.fallback_clear, old.priority
        policy.hits = old.hits
        self.engine.remove_policy(tunnel.name)
        tunnel.policy = policy
        self.engine.install_policy(policy)

    def activate(self, connection: str, spi_in: int) -> None:
        """``connection`` is the event's tunnel key (its connection unless it names a tunnel)."""
        tunnel = self.tunnels.get(connection)
        pair = tunnel.pairs.get(spi_in) if tunnel is not None else None
        if tunnel is not None and pair is not None and tunnel.policy.esp_out is not pair.outbound:
            self._switch(tunnel, pair)

    def down(self, ev: ChildSaDown) -> None:
        tunnel = self.tunnels.get(ev.tunnel or ev.connection)
        if tunnel is None:
            return
        pair = tunnel.pairs.pop(ev.spi_in, None)
        if pair is None:
            return
        tunnel.retired.add(pair)
        self.engine.remove_inbound(pair.inbound)
        if tunnel.policy.esp_out is pair.outbound:
            if tunnel.pairs:
                self._switch(tunnel, list(tunnel.pairs.values())[-1])
            else:
                # Keep the policy (and routes): traffic waits for the next SA as a
                # counted "no_sa" drop instead of leaking in clear.
                self._replace(tunnel, Policy(tunnel.name, tunnel.trap or tunnel.policy.selectors,
                                             mode=tunnel.policy.mode))
