"""The IPsec policy in the running gateway: SPD entries, traps, routes, the responder's say.

Sans-IO.  `plan_policy(config)` decides everything from the config (and raises
`PolicyError` with the config path); `PolicyRuntime.install(engine, tunnels)` puts it in a
dataplane; the daemon adds `routes` and hands `responder_check` to the IKE endpoints.

SPD (RFC 4301 4.4.1: ordered, the first match decides).  Entries keep the compiler's
order: entry *i* of *n* gets priority ``10 * (i - n)`` (negative), so the policy comes
before the policies of connections no rule names (1000) and of manual tunnels.  What a
policy route brings into the TUN and nothing decides goes out in clear
(``policy:no-rule``, BYPASS, last), as "no rule" means.

* block -> DISCARD (counted ``policy_discard``), permit -> BYPASS (sent in clear on the
  marked socket).  A mirrored filter covers both orientations, so a filter between
  networks may be written either way round.  Blocks (with the entries before them) also
  decide what comes out of an SA: the engine's inbound SPD drops it.
* negotiate -> the trap of the rule's connection (`TunnelTable.install_trap`): *require*
  holds the first `TRAP_HOLD` packets until the SA is up, *request* sends them in clear
  meanwhile; the first packet raises an `Acquire` naming the connection, which initiates.
  The connection negotiates exactly its rules' selectors (`negotiated`, in place of its
  configured subnets, which must contain them), so the SA covers what the trap covers.
  One connection has one SPD policy, at the place of its first (most specific) entry; a
  filter of another rule between its entries that overlaps them is refused.  A connection
  open to any peer (``%any``) cannot initiate: its trap drops (require) or passes
  (request) until a peer negotiates, and each peer's SAs go just before the trap.  An
  L2TP connection may be named so that its clients' requests are accepted; its SAs stay
  the dial-up service's (no trap, its own selectors).

Routes.  Only what the kernel routes into the TUN meets the SPD.  The remote networks of
traps and of block filters (never ``any``, never this gateway's own side) are routed into
the TUN in the table of unmarked packets (``dataplane.routing_table``), so what the
engine sends in clear on its marked socket (a permit, request's fallback, no rule) leaves
by the main table instead of coming back.  ``any`` is not routed (every packet of the host
would pass through userspace): such a rule decides what other routes bring (a warning
says so for block and require).

Responder (RFC 4301 4.4.1, RFC 7296 2.9).  A peer's CHILD_SA request (its selectors and
ours, as narrowed) is looked up inbound, pair by pair: the first entry that *contains*
the pair decides.  A negotiate entry of the connection the peer authenticated for
accepts; one of another connection, a block or a permit refuses; when no entry contains
it, the default response rule accepts, or refuses when off.  Smaller entries that only
overlap the request (an ICMP permit inside "all IP traffic") go on deciding their own
packets in the dataplane.  Permit and block rules for ``remote-access`` connections only
apply here: the dataplane does not tell links apart.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import Config, Connection
from gateway.dataplane.engine import Dataplane
from gateway.dataplane.sa import Mode
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Action, Policy
from gateway.ike.trafficselectors import TsRange
from gateway.policy.compiler import CompiledPolicy, PolicyEntry, compile_policy
from gateway.policy.config import build_policy
from gateway.policy.model import ConnectionType, PolicyError, protocol_name
from gateway.tunnels import TunnelTable, selector_pairs

#: Packets a *require* trap holds while its connection negotiates.
TRAP_HOLD = 32
#: The clear fallback for policy routes: after every connection's policy (1000).
NO_RULE_PRIORITY = 1_000_000
NO_RULE = "policy:no-rule"

Path = tuple[str | int, ...]
_ANY = ipaddress.IPv4Network("0.0.0.0/0")


def entry_priority(position: int, count: int) -> int:
    """Negative and in the compiler's order: before every connection's own policy."""
    return 10 * (position - count)


def swapped(pair: SelectorPair) -> SelectorPair:
    return SelectorPair(pair.remote, pair.local, pair.protocol)


def orientations(entry: PolicyEntry) -> tuple[SelectorPair, ...]:
    """The entry's selectors, and for a mirrored filter also the other way round."""
    pairs = list(entry.selectors)
    if entry.filter.mirrored:
        pairs += [s for s in map(swapped, entry.selectors) if s not in pairs]
    return tuple(pairs)


def _range(net: ipaddress.IPv4Network) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def _overlap(a: SelectorPair, b: SelectorPair) -> bool:
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return False
    for x, y in ((a.local, b.local), (a.remote, b.remote)):
        (xs, xe), (ys, ye) = _range(x.network), _range(y.network)
        if xe < ys or ye < xs or x.port_end < y.port_start or y.port_end < x.port_start:
            return False
    return True


def _contains(pair: SelectorPair, remote: TsRange, local: TsRange) -> bool:
    """Whether `pair` covers every packet from `remote` to `local` (an inbound request)."""
    protocol = remote.protocol or local.protocol
    if pair.protocol and pair.protocol != protocol:
        return False
    for side, ts in ((pair.remote, remote), (pair.local, local)):
        start, end = _range(side.network)
        if not (start <= int(ts.start) and int(ts.end) <= end
                and side.port_start <= ts.port_start and ts.port_end <= side.port_end):
            return False
    return True


def _ts(selector: TrafficSelector, protocol: int) -> TsRange:
    return TsRange.of_network(selector.network, protocol, selector.port_start, selector.port_end)


def _unique(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _pair_text(pair: SelectorPair) -> str:
    proto = f" {protocol_name(pair.protocol)}" if pair.protocol else ""
    return f"{pair.local} -> {pair.remote}{proto}"


@dataclass(frozen=True)
class Trap:
    """A connection that negotiates for the policy: its entries, what it negotiates and
    the SPD policy it starts with (no SA)."""

    connection: str
    entries: tuple[PolicyEntry, ...]
    local_ts: tuple[TsRange, ...]
    remote_ts: tuple[TsRange, ...]
    mode: Mode
    priority: int
    require: bool
    initiates: bool  # a definite peer: the first packet brings the connection up

    @property
    def selectors(self) -> tuple[SelectorPair, ...]:
        return selector_pairs(self.local_ts, self.remote_ts)

    @property
    def hold(self) -> int:
        return TRAP_HOLD if self.require and self.initiates else 0

    @property
    def fallback_clear(self) -> bool:
        return not self.require


@dataclass(frozen=True)
class Route:
    """Networks to route into the TUN for the policy (see the module docstring)."""

    mode: Mode
    local: tuple[ipaddress.IPv4Network, ...]
    remote: tuple[ipaddress.IPv4Network, ...]
    reason: str


@dataclass(frozen=True)
class PolicyRuntime:
    compiled: CompiledPolicy
    #: the connection each negotiate rule negotiates with
    connection_of: Mapping[str, str]
    #: each IKE connection's kind (a rule's connection type)
    links: Mapping[str, ConnectionType]
    traps: tuple[Trap, ...]
    routes: tuple[Route, ...]
    warnings: tuple[tuple[Path, str], ...] = ()
    #: where each rule is written in the config (for messages)
    paths: Mapping[str, Path] = field(default_factory=dict)
    #: this gateway's side: its public address and the connections' local subnets
    ours: tuple[ipaddress.IPv4Network, ...] = ()

    def is_ours(self, address: ipaddress.IPv4Address) -> bool:
        return any(address in n for n in self.ours)

    # -- what goes into the dataplane -----------------------------------------------------
    def priority(self, entry: PolicyEntry) -> int:
        return entry_priority(entry.position, len(self.compiled.entries))

    def in_dataplane(self, entry: PolicyEntry) -> bool:
        """Permit and block rules for remote-access links are for the responder only."""
        return entry.action is Action.PROTECT or entry.rule.connection_type != "remote-access"

    def outbound_policies(self) -> list[Policy]:
        """DISCARD and BYPASS policies for the SPD (traps come from `traps`), and the
        clear fallback for what policy routes bring and nothing decides."""
        out = []
        for entry in self.compiled.entries:
            if entry.action is Action.PROTECT or not self.in_dataplane(entry):
                continue
            if entry.filter.mirrored:
                selectors = orientations(entry)
            elif entry.direction == "out":
                selectors = entry.selectors
            else:
                continue
            out.append(Policy(entry.name, selectors, action=entry.action, mode=Mode.TRANSPORT,
                              priority=self.priority(entry)))
        routed = [n for r in self.routes for n in r.remote]
        if routed:
            out.append(Policy(NO_RULE, tuple(SelectorPair(TrafficSelector(_ANY), TrafficSelector(n))
                                             for n in routed),
                              action=Action.BYPASS, mode=Mode.TRANSPORT, priority=NO_RULE_PRIORITY))
        return out

    def inbound_policies(self) -> list[Policy]:
        """What decides packets out of SAs: every entry that covers inbound traffic, so
        that a block and the entries before it keep their order; none without a block."""
        entries = [e for e in self.compiled.entries if e.direction != "out" and self.in_dataplane(e)]
        if not any(e.action is Action.DISCARD for e in entries):
            return []
        return [Policy(e.name, orientations(e) if e.filter.mirrored else e.selectors, action=e.action,
                       mode=Mode.TRANSPORT, priority=self.priority(e)) for e in entries]

    def install(self, engine: Dataplane, tunnels: TunnelTable) -> None:
        """Put the policy in the dataplane: SPD entries, the inbound check, the traps."""
        for policy in self.outbound_policies():
            engine.install_policy(policy)
        for policy in self.inbound_policies():
            engine.spd_in.add(policy)
        for trap in self.traps:
            tunnels.install_trap(trap.connection, trap.selectors, trap.mode, hold=trap.hold,
                                 fallback_clear=trap.fallback_clear, priority=trap.priority)

    # -- IKE -----------------------------------------------------------------------------
    def trap_of(self, connection: str) -> Trap | None:
        return next((t for t in self.traps if t.connection == connection), None)

    def negotiated(self, connection: str) -> tuple[tuple[TsRange, ...], tuple[TsRange, ...]] | None:
        """(local, remote) traffic selectors the connection negotiates, when rules use it."""
        trap = self.trap_of(connection)
        return None if trap is None else (trap.local_ts, trap.remote_ts)

    def initiates(self, connection: str) -> bool:
        """Whether traffic on the connection's trap should bring it up."""
        trap = self.trap_of(connection)
        return trap is not None and trap.initiates

    def deciding(self, remote: TsRange, local: TsRange, link: ConnectionType | None = None
                 ) -> PolicyEntry | None:
        """The first entry that contains a peer's request to send `remote` -> `local`."""
        for entry in self.compiled.entries:
            if entry.direction == "out":
                continue
            if link is not None and entry.rule.connection_type not in ("all", link):
                continue
            pairs = orientations(entry) if entry.filter.mirrored else entry.selectors
            if any(_contains(p, remote, local) for p in pairs):
                return entry
        return None

    def responder_check(self, connection: str, remote_ts: Sequence[TsRange],
                        local_ts: Sequence[TsRange]) -> str | None:
        """The IKE endpoints' `ChildPolicy`: None to accept, else why it is refused."""
        link = self.links.get(connection)
        for remote in remote_ts:
            for local in local_ts:
                if remote.protocol and local.protocol and remote.protocol != local.protocol:
                    continue
                what = f"{remote} -> {local}"
                entry = self.deciding(remote, local, link)
                if entry is None:
                    if self.compiled.default_response is None:
                        return f"no rule covers {what} and the default response rule is off"
                    continue
                rule = entry.rule.name
                if entry.action is Action.DISCARD:
                    return f"rule {rule!r} blocks {what}"
                if entry.action is Action.BYPASS:
                    return f"rule {rule!r} permits {what} in clear"
                via = self.connection_of[rule]
                if via != connection:
                    return f"rule {rule!r} negotiates {what} with connection {via!r}"
        return None

    # -- reporting -------------------------------------------------------------------------
    def describe(self, engine: Dataplane | None = None) -> dict[str, Any]:
        """The entries in order with their dataplane hits (for `gateway policy show`)."""
        out_spd = {p.name: p for p in engine.spd} if engine is not None else {}
        in_spd = {p.name: p for p in engine.spd_in} if engine is not None else {}
        entries = []
        for entry in self.compiled.entries:
            connection = self.connection_of.get(entry.rule.name)
            if connection is not None:
                hits = sum(p.hits for name, p in out_spd.items()
                           if name == connection or name.startswith(connection + "@"))
            else:
                hits = out_spd[entry.name].hits if entry.name in out_spd else 0
            entries.append({
                "position": entry.position + 1, "name": entry.name, "rule": entry.rule.name,
                "filter_list": entry.rule.filter_list.name, "filter": str(entry.filter),
                "mirrored": entry.filter.mirrored, "action": entry.rule.action.kind,
                "security": (None if entry.action is not Action.PROTECT
                             else "request" if entry.fallback_to_clear else "require"),
                "connection": connection, "connection_type": entry.rule.connection_type,
                "hits": hits, "hits_in": in_spd[entry.name].hits if entry.name in in_spd else 0,
            })
        traps = []
        for trap in self.traps:
            policy = out_spd.get(trap.connection)
            traps.append({
                "connection": trap.connection, "mode": trap.mode.value,
                "security": "require" if trap.require else "request", "hold": trap.hold,
                "initiates": trap.initiates, "selectors": [str(s) for s in trap.selectors],
                "sa": policy is not None and (policy.esp_out is not None or policy.ah_out is not None),
                "held": len(engine.held.get(trap.connection, ())) if engine is not None else 0,
            })
        return {
            "policy": self.compiled.name, "me": [str(a) for a in self.compiled.me],
            "default_response": self.compiled.default_response is not None,
            "entries": entries, "traps": traps,
            "routes": [{"mode": r.mode.value, "remote": [str(n) for n in r.remote], "reason": r.reason}
                       for r in self.routes],
            "no_rule_hits": out_spd[NO_RULE].hits if NO_RULE in out_spd else 0,
        }


# --------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------


def _link(conn: Connection) -> ConnectionType:
    remote_access = conn.remote == "%any" or conn.pool is not None
    return "remote-access" if remote_access else "lan"


def _reach(name: str, conn: Connection, config: Config
           ) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv4Network], str, str]:
    """What a connection can negotiate (as `gateway.ike.v2.fromconfig` configures it):
    local and remote networks, and how to name them in messages."""
    me = ipaddress.IPv4Network(config.gateway.public_address)
    if conn.mode == "tunnel":
        remote = list(conn.remote_subnets)
        if not remote and conn.pool is not None and conn.pool in config.pools:
            remote = [config.pools[conn.pool].subnet]
        return list(conn.local_subnets), remote, "local_subnets", "remote_subnets"
    local = list(conn.local_subnets) or [me]
    if conn.remote_subnets:
        remote = list(conn.remote_subnets)
    elif conn.remote == "%any" or not _is_address(conn.remote):
        remote = [_ANY]  # any peer, or a host name only resolved when the daemon starts
    else:
        remote = [ipaddress.IPv4Network(conn.remote)]
    return local, remote, "own address" if not conn.local_subnets else "local_subnets", \
        "peer" if not conn.remote_subnets else "remote_subnets"


def _is_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _within(net: ipaddress.IPv4Network, nets: Sequence[ipaddress.IPv4Network]) -> bool:
    return any(net.subnet_of(n) for n in nets)


def _text(nets: Sequence[ipaddress.IPv4Network]) -> str:
    return ", ".join(map(str, nets)) or "none"


class _Planner:
    def __init__(self, config: Config) -> None:
        assert config.policy is not None
        self.config = config
        self.section = config.policy
        self.warnings: list[tuple[Path, str]] = []
        self.paths: dict[str, Path] = {r.name: ("policy", "rules", i)
                                       for i, r in enumerate(self.section.rules)}

    def path(self, rule: str, *more: str | int) -> Path:
        if rule in self.paths:
            return (*self.paths[rule], *more)
        return ("policy", "predefined")  # a rule of the predefined policy

    def run(self) -> PolicyRuntime:
        config = self.config
        policy = build_policy(self.section, config.connections)
        try:
            compiled = compile_policy(policy, [config.gateway.public_address])
        except PolicyError as exc:
            rule = next((r.name for r in policy.rules if f"rule {r.name!r}" in str(exc)), "")
            raise PolicyError(str(exc), exc.path or self.path(rule)) from None
        connection_of = self.connections(compiled)
        links = {name: _link(conn) for name, conn in config.connections.items() if conn.keying == "ike"}
        traps = self.traps(compiled, connection_of)
        self.check_places(compiled, traps)
        routes = self.routes(compiled, traps)
        return PolicyRuntime(compiled, connection_of, links, tuple(traps), tuple(routes),
                             tuple(self.warnings), dict(self.paths), tuple(self.ours()))

    def ours(self) -> list[ipaddress.IPv4Network]:
        nets = [ipaddress.IPv4Network(self.config.gateway.public_address)]
        nets += [n for c in self.config.connections.values() for n in c.local_subnets]
        return list(_unique(nets))

    def connections(self, compiled: CompiledPolicy) -> dict[str, str]:
        """The connection each negotiate rule negotiates with, checked."""
        out: dict[str, str] = {}
        for entry in compiled.entries:
            rule = entry.rule
            if entry.action is not Action.PROTECT or rule.name in out:
                continue
            name = rule.connection or self.section.connection
            where = self.path(rule.name, "connection") if rule.connection else (
                self.path(rule.name) if rule.name in self.paths else ("policy", "connection"))
            if name is None:
                raise PolicyError(
                    f"rule {rule.name!r} negotiates security, and an IKE connection must do the "
                    "negotiating: give the rule a connection (or the policy one)", where)
            conn = self.config.connections[name]  # build_policy checked that it exists
            if conn.keying != "ike":
                raise PolicyError(f"rule {rule.name!r} negotiates security through connection {name!r}, "
                                  "which is manually keyed: only an IKE connection (keying: ike) can "
                                  "negotiate", where)
            if conn.l2tp is not None:
                out[rule.name] = name  # for its peers' requests only: no trap (see `traps`)
                continue
            if (rule.tunnel_endpoint is not None) != (conn.mode == "tunnel"):
                mode = "tunnel" if rule.tunnel_endpoint is not None else "transport"
                raise PolicyError(f"rule {rule.name!r} is {mode} mode but connection {name!r} is "
                                  f"{conn.mode} mode", where)
            # (a host name as the remote: the rule's endpoint stands for it)
            if rule.tunnel_endpoint is not None and _is_address(conn.remote) \
                    and str(rule.tunnel_endpoint) != conn.remote:
                raise PolicyError(f"rule {rule.name!r}: tunnel endpoint {rule.tunnel_endpoint} is not "
                                  f"the peer of connection {name!r} ({conn.remote}), which the SAs are "
                                  "negotiated with", self.path(rule.name, "tunnel_endpoint"))
            out[rule.name] = name
        return out

    def traps(self, compiled: CompiledPolicy, connection_of: Mapping[str, str]) -> list[Trap]:
        by_connection: dict[str, list[PolicyEntry]] = {}
        for entry in compiled.entries:
            if entry.action is Action.PROTECT:
                by_connection.setdefault(connection_of[entry.rule.name], []).append(entry)
        traps = []
        for name, entries in by_connection.items():
            conn = self.config.connections[name]
            if conn.l2tp is not None:
                continue  # the dial-up service's SAs: its own selectors, never called by traffic
            local, remote, local_what, remote_what = _reach(name, conn, self.config)
            for entry in entries:
                for pair in entry.selectors:
                    for net, nets, what in ((pair.local.network, local, local_what),
                                            (pair.remote.network, remote, remote_what)):
                        if not _within(net, nets):
                            raise PolicyError(
                                f"rule {entry.rule.name!r}, filter {entry.filter}: {net} is outside "
                                f"the {what} of connection {name!r} ({_text(nets)}), so it cannot "
                                "negotiate it (a filter between networks is written from this gateway's "
                                "side: the source ours, the destination the peer's)",
                                self.path(entry.rule.name))
            requires = {not e.fallback_to_clear for e in entries}
            if len(requires) > 1:
                rules = ", ".join(dict.fromkeys(repr(e.rule.name) for e in entries))
                raise PolicyError(f"connection {name!r} negotiates for rules {rules}, some requiring and "
                                  "some requesting security: its one trap cannot both hold packets and send "
                                  "them in clear; use one kind of filter action per connection",
                                  self.path(entries[0].rule.name))
            pairs = [p for e in entries for p in e.selectors]
            local_ts = _unique(_ts(p.local, p.protocol) for p in pairs)
            remote_ts = _unique(_ts(p.remote, p.protocol) for p in pairs)
            if conn.ike.version == 1 and (len(local_ts) > 1 or len(remote_ts) > 1):
                raise PolicyError(f"connection {name!r} is IKEv1, which negotiates one local and one "
                                  f"remote selector, but its rules need {len(local_ts)} and "
                                  f"{len(remote_ts)}: use one filter (or one connection per filter)",
                                  self.path(entries[0].rule.name))
            trap = Trap(name, tuple(entries), local_ts, remote_ts,
                        Mode.TUNNEL if conn.mode == "tunnel" else Mode.TRANSPORT,
                        entry_priority(entries[0].position, len(compiled.entries)), requires.pop(),
                        conn.remote != "%any")
            extra = [p for p in trap.selectors if p not in pairs]
            if extra:
                self.warnings.append((self.path(entries[0].rule.name), (
                    f"connection {name!r} negotiates every pairing of its rules' sources and destinations "
                    "(IKE traffic selectors are two lists), so its SAs also carry "
                    f"{', '.join(map(_pair_text, extra))}")))
            traps.append(trap)
        return traps

    def check_places(self, compiled: CompiledPolicy, traps: list[Trap]) -> None:
        """One connection is one SPD policy at its first entry's place: no other filter may
        come between its entries and overlap it."""
        for trap in traps:
            first, last = trap.entries[0].position, trap.entries[-1].position
            selectors = trap.selectors
            for entry in compiled.entries[first + 1:last]:
                if entry in trap.entries:
                    continue
                other = self.trap_selectors(entry, traps)
                if any(_overlap(a, b) for a in other for b in selectors):
                    raise PolicyError(
                        f"rule {entry.rule.name!r}, filter {entry.filter} comes between the filters of "
                        f"connection {trap.connection!r} in the policy's order and overlaps them; the "
                        "connection is one SPD policy, at the place of its first filter: make the filters "
                        "disjoint or negotiate them through separate connections", self.path(entry.rule.name))

    @staticmethod
    def trap_selectors(entry: PolicyEntry, traps: list[Trap]) -> tuple[SelectorPair, ...]:
        trap = next((t for t in traps if entry in t.entries), None)
        if trap is not None:
            return trap.selectors
        return orientations(entry)

    def routes(self, compiled: CompiledPolicy, traps: list[Trap]) -> list[Route]:
        ours = self.ours()
        routes = []
        routed: list[ipaddress.IPv4Network] = []
        for trap in traps:
            remote = _unique(p.remote.network for p in trap.selectors if p.remote.network != _ANY)
            if len(remote) < len({p.remote.network for p in trap.selectors}):
                self.any_warning(trap.entries[0], trap.require)
            if not trap.initiates and trap.mode is Mode.TRANSPORT:
                continue  # each peer's SAs bring their own route
            local = _unique(p.local.network for p in trap.selectors)
            if remote:
                routes.append(Route(trap.mode, local, remote, f"connection {trap.connection}"))
                routed += remote
        for entry in compiled.entries:
            if entry.action is not Action.DISCARD or entry.rule.connection_type == "remote-access":
                continue
            pairs = orientations(entry) if entry.filter.mirrored else (
                entry.selectors if entry.direction == "out" else ())
            nets = []
            for pair in pairs:
                net = pair.remote.network
                if net == _ANY:
                    self.any_warning(entry, True)
                elif not any(net.overlaps(o) for o in ours) and not _within(net, routed):
                    nets.append(net)
            if nets:
                routes.append(Route(Mode.TRANSPORT, (), _unique(nets), f"rule {entry.rule.name}"))
                routed += nets
        return routes

    def any_warning(self, entry: PolicyEntry, strict: bool) -> None:
        if not strict:
            return
        message = (f"rule {entry.rule.name!r}: traffic to 'any' destination is not routed into the dataplane "
                   "(every packet of the host would pass through userspace), so the rule decides only what "
                   "connections and other rules route to it; the rest is sent as the host routes it")
        if (self.path(entry.rule.name), message) not in self.warnings:
            self.warnings.append((self.path(entry.rule.name), message))


def plan_policy(config: Config) -> PolicyRuntime | None:
    """The policy for this config, or None when it has no ``policy`` section."""
    if config.policy is None:
        return None
    return _Planner(config).run()
