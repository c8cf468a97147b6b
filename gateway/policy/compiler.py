"""Compile an `IpsecPolicy` into ordered SPD entries, and match packets against them.

Direction.  Each entry's selectors are (local, remote) pairs as the dataplane keeps them
(`gateway.dataplane.selectors`): *local* is our side (this gateway, or the networks behind
it), *remote* the peer's.  A packet travels ``out`` (from our side towards the peer's:
sent by us, or forwarded from our networks) or ``in`` (from the peer's side to ours).
A filter is written in one of these directions:

* its source is ours (``me``, or a host address of ours): written ``out``, source = local;
* else its destination is ours: written ``in``, destination = local;
* else (a filter between networks, as a gateway's tunnel rules have): written ``out``,
  the source being the networks behind us.

A mirrored filter covers both directions (`PolicyEntry.direction` ``both``): the packet
as written, and the reply, with addresses and ports swapped, the other way.  A filter
that is not mirrored covers only the direction it is written in.

Order (RFC 4301 4.4.1: the SPD is ordered, the first match decides).  Rules are not
ordered by the operator; entries are sorted by filter specificity, most specific first:

1. more address prefix bits on both sides together (``me`` and hosts count 32, ``any`` 0);
2. then a filter naming a protocol before one for any protocol;
3. then more ports given (source and destination port count one each);
4. for equal filters, block before permit before negotiate (the safe choice wins);
5. then the order of rules in the policy, then of filters in their list.

Disabled rules are left out.  A packet no entry matches is not IPsec traffic: it passes
in clear, and with the default response rule on, a peer may still ask to secure it
(`CompiledPolicy.responder`); the gateway never initiates for it.

Only entries that cover ``out`` become dataplane SPD policies (`spd_policies`): the
userspace dataplane looks up outbound packets; inbound packets are checked against their
SA's selectors (RFC 4301 5.2), and inbound clear traffic never reaches it.  The running
gateway builds its SPD with `gateway.policy.runtime` (traps for negotiate entries, and an
inbound SPD so that blocks apply to what comes out of SAs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

from gateway.dataplane.sa import Mode
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Action, Policy
from gateway.policy.model import (
    AddressSpec,
    AuthMethod,
    ConnectionType,
    Filter,
    IpsecPolicy,
    PolicyError,
    Rule,
    SecurityMethod,
    parse_protocol,
)

Direction = Literal["out", "in"]
Coverage = Literal["out", "in", "both"]
AddressLike = ipaddress.IPv4Address | str | int

_ACTIONS = {"block": Action.DISCARD, "permit": Action.BYPASS, "negotiate": Action.PROTECT}
#: Tie-break between equal filters: block, then permit, then negotiate.
_ACTION_RANK = {"block": 0, "permit": 1, "negotiate": 2}
_ANY = ipaddress.IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class PolicyEntry:
    """One filter of one enabled rule, resolved: selectors, coverage and what to do."""

    position: int
    rule: Rule
    filter: Filter
    filter_index: int
    selectors: tuple[SelectorPair, ...]
    direction: Coverage
    written: Direction

    @property
    def name(self) -> str:
        """A stable name for the dataplane policy (``policy:RULE:N``, N = filter index)."""
        return f"policy:{self.rule.name}:{self.filter_index}"

    @property
    def action(self) -> Action:
        return _ACTIONS[self.rule.action.kind]

    @property
    def mode(self) -> Mode | None:
        """Tunnel with a tunnel endpoint, else transport; None unless negotiating."""
        if self.action is not Action.PROTECT:
            return None
        return Mode.TUNNEL if self.rule.tunnel_endpoint is not None else Mode.TRANSPORT

    @property
    def tunnel_endpoint(self) -> ipaddress.IPv4Address | None:
        return self.rule.tunnel_endpoint

    @property
    def fallback_to_clear(self) -> bool:
        return self.rule.action.fallback_to_clear

    @property
    def accept_unsecured_inbound(self) -> bool:
        return self.rule.action.accept_unsecured_inbound

    @property
    def methods(self) -> tuple[SecurityMethod, ...]:
        return self.rule.action.methods

    @property
    def esp_proposals(self) -> tuple[str, ...]:
        """ESP proposals in preference order, PFS group included (``aes256-sha256-ecp256``)."""
        return tuple(p for m in self.methods if (p := m.esp_proposal) is not None)

    @property
    def ah_proposals(self) -> tuple[str, ...]:
        return tuple(p for m in self.methods if (p := m.ah_proposal) is not None)

    def covers(self, src: int, dst: int, proto: int, sport: int, dport: int, direction: Direction) -> bool:
        """Whether the packet, travelling `direction`, falls under this entry."""
        if direction == "out":
            return self.direction != "in" and any(
                s.matches_outbound(src, dst, proto, sport, dport) for s in self.selectors)
        return self.direction != "out" and any(
            s.matches_inbound(src, dst, proto, sport, dport) for s in self.selectors)

    def by_mirror(self, direction: Direction) -> bool:
        """Whether a match in `direction` is the mirror of the filter as written."""
        return direction != self.written


@dataclass(frozen=True)
class DefaultResponse:
    """The default response rule: answer a peer's request to secure traffic no rule covers."""

    methods: tuple[SecurityMethod, ...]
    auth: tuple[AuthMethod, ...]


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy resolved against this gateway's addresses: entries in match order."""

    name: str
    entries: tuple[PolicyEntry, ...]
    me: tuple[ipaddress.IPv4Address, ...]
    default_response: DefaultResponse | None

    def is_me(self, address: AddressLike) -> bool:
        return ipaddress.IPv4Address(address) in self.me

    def match(self, src: AddressLike, dst: AddressLike, proto: int | str, sport: int = 0, dport: int = 0,
              direction: Direction = "out", *, link: ConnectionType | None = None) -> PolicyEntry | None:
        """The first entry covering the packet in `direction`, or None (no policy: clear).

        `link` (``lan`` / ``remote-access``) skips rules for the other kind of connection.
        """
        if direction not in ("out", "in"):
            raise ValueError(f"direction must be 'out' or 'in', not {direction!r}")
        s, d, p = int(ipaddress.IPv4Address(src)), int(ipaddress.IPv4Address(dst)), parse_protocol(proto)
        for entry in self.entries:
            if link is not None and entry.rule.connection_type not in ("all", link):
                continue
            if entry.covers(s, d, p, sport, dport, direction):
                return entry
        return None

    def responder(self, src: AddressLike, dst: AddressLike, proto: int | str, sport: int = 0,
                  dport: int = 0, *, link: ConnectionType | None = None
                  ) -> PolicyEntry | DefaultResponse | None:
        """Who answers a peer that asks (IKE) to secure its traffic `src` -> `dst` to us:
        the negotiate entry that covers it, else the default response rule when nothing
        covers it; None (refuse) when a permit or block entry covers it, or nothing does
        and the default response rule is off."""
        entry = self.match(src, dst, proto, sport, dport, "in", link=link)
        if entry is not None:
            return entry if entry.action is Action.PROTECT else None
        return self.default_response

    def spd_policies(self, base_priority: int = 100) -> list[Policy]:
        """Dataplane policies for the entries that cover outbound traffic, in order.

        PROTECT policies carry no SA yet: the dataplane reports an `Acquire` on the
        first packet (negotiate on demand); SAs are attached when IKE brings them up.
        """
        out = []
        for entry in self.entries:
            if entry.direction == "in":
                continue
            out.append(Policy(entry.name, entry.selectors, action=entry.action,
                              mode=entry.mode or Mode.TRANSPORT, priority=base_priority + entry.position))
        return out


def _expand(side: AddressSpec, me: Sequence[ipaddress.IPv4Address]) -> list[ipaddress.IPv4Network]:
    if side == "me":
        return [ipaddress.IPv4Network(a) for a in me]
    if side == "any":
        return [_ANY]
    assert isinstance(side, ipaddress.IPv4Network)
    return [side]


def _ours(side: AddressSpec, me: Sequence[ipaddress.IPv4Address]) -> bool:
    if side == "me":
        return True
    return isinstance(side, ipaddress.IPv4Network) and side.prefixlen == 32 and side.network_address in me


def written_direction(flt: Filter, me: Sequence[ipaddress.IPv4Address]) -> Direction:
    """The direction a filter is written in (see the module docstring)."""
    if _ours(flt.source, me):
        return "out"
    if _ours(flt.destination, me):
        return "in"
    return "out"


def _entry_parts(rule: Rule, flt: Filter, me: Sequence[ipaddress.IPv4Address]
                 ) -> tuple[tuple[SelectorPair, ...], Direction]:
    where = f"rule {rule.name!r}, filter {flt}"
    if "me" in (flt.source, flt.destination) and not me:
        raise PolicyError(f"{where}: 'me' needs the gateway's own addresses, and none were given")
    written = written_direction(flt, me)
    local, local_port = flt.source, flt.source_port
    remote, remote_port = flt.destination, flt.destination_port
    if written == "in":
        local, local_port, remote, remote_port = remote, remote_port, local, local_port
    if rule.action.kind == "negotiate" and rule.tunnel_endpoint is None and not _ours(local, me):
        raise PolicyError(f"{where}: transport mode protects only this gateway's own traffic, so one "
                          "side must be 'me' (or one of its addresses); for traffic between networks, "
                          "give the rule a tunnel endpoint")

    def ports(port: int) -> tuple[int, int]:
        return (port, port) if port else (0, 65535)

    pairs = tuple(
        SelectorPair(TrafficSelector(ln, *ports(local_port)), TrafficSelector(rn, *ports(remote_port)),
                     flt.protocol)
        for ln, rn in product(_expand(local, me), _expand(remote, me)))
    return pairs, written


def sort_key(rule_index: int, rule: Rule, filter_index: int, flt: Filter) -> tuple[int, ...]:
    """The documented match order (module docstring): smaller sorts first."""
    bits, protocol, ports = flt.specificity
    return (-bits, -protocol, -ports, _ACTION_RANK[rule.action.kind], rule_index, filter_index)


def compile_policy(policy: IpsecPolicy, me: Sequence[ipaddress.IPv4Address | str]) -> CompiledPolicy:
    """Resolve ``me`` to `me` (this gateway's addresses), check what the model cannot
    check alone, and order the entries; raises `PolicyError` naming the rule and filter."""
    addresses = tuple(dict.fromkeys(ipaddress.IPv4Address(a) for a in me))
    keyed = []
    for rule_index, rule in enumerate(policy.rules):
        if not rule.enabled:
            continue
        if not rule.filter_list.filters:
            raise PolicyError(f"rule {rule.name!r}: filter list {rule.filter_list.name!r} has no filters")
        if rule.tunnel_endpoint is not None and rule.tunnel_endpoint in addresses:
            raise PolicyError(f"rule {rule.name!r}: tunnel endpoint {rule.tunnel_endpoint} is one of this "
                              "gateway's addresses; it must be the peer gateway's (one mirrored rule "
                              "covers both directions)")
        for filter_index, flt in enumerate(rule.filter_list.filters):
            selectors, written = _entry_parts(rule, flt, addresses)
            keyed.append((sort_key(rule_index, rule, filter_index, flt),
                          rule, filter_index, flt, selectors, written))
    keyed.sort(key=lambda item: item[0])
    entries = tuple(
        PolicyEntry(position, rule, flt, filter_index, selectors,
                    "both" if flt.mirrored else written, written)
        for position, (_, rule, filter_index, flt, selectors, written) in enumerate(keyed))
    default = None
    if policy.default_response:
        default = DefaultResponse(policy.default_response_methods, policy.default_response_auth)
    return CompiledPolicy(policy.name, entries, addresses, default)
