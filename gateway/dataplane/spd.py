"""The security policy database (RFC 4301 4.4.1): what to do with an outbound packet.

Policies are kept in priority order; the first whose selectors match decides.  Lookups
are cached per (source, destination, protocol[, ports]) so that the common case costs one
dict probe; the cache is dropped whenever the SPD changes.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field

from gateway.dataplane import ip
from gateway.dataplane.sa import Mode, SecurityAssociation
from gateway.dataplane.selectors import SelectorPair

_CACHE_LIMIT = 65536


class Action(enum.Enum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


@dataclass(eq=False)
class Policy:
    """A rule: selectors, an action, and (to protect) the outbound SAs to apply."""

    name: str
    selectors: tuple[SelectorPair, ...]
    action: Action = Action.PROTECT
    mode: Mode = Mode.TUNNEL
    priority: int = 1000
    esp_out: SecurityAssociation | None = None
    ah_out: SecurityAssociation | None = None
    hits: int = field(default=0)
    acquired: bool = field(default=False)  # an Acquire was reported since the SA went
    #: without an SA: hold up to this many packets until one is installed (demand-dial)
    hold: int = 0
    #: without an SA: send in clear while one is negotiated ("request security")
    fallback_clear: bool = False

    @property
    def uses_ports(self) -> bool:
        return any(s.uses_ports for s in self.selectors)

    def matches(self, src: int, dst: int, proto: int, sport: int, dport: int) -> bool:
        return any(s.matches_outbound(src, dst, proto, sport, dport) for s in self.selectors)

    def matches_inbound(self, src: int, dst: int, proto: int, sport: int, dport: int) -> bool:
        return any(s.matches_inbound(src, dst, proto, sport, dport) for s in self.selectors)


class SecurityPolicyDatabase:
    """Policies in priority order.  ``inbound``: packets are matched as arriving (source on
    the remote side of the selectors), for the check of what comes out of an SA."""

    def __init__(self, *, inbound: bool = False) -> None:
        self.inbound = inbound
        self._policies: list[Policy] = []
        self._cache: dict[tuple[int, ...], Policy | None] = {}
        self.uses_ports = False

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def add(self, policy: Policy) -> None:
        """Insert after the policies of the same priority. Not a sort and a scan of every
        policy: a gateway with a policy per peer adds thousands (bench/handshakes)."""
        bisect.insort_right(self._policies, policy, key=lambda p: p.priority)
        self._cache.clear()
        self.uses_ports = self.uses_ports or policy.uses_ports

    def remove(self, name: str) -> None:
        self._policies = [p for p in self._policies if p.name != name]
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self.uses_ports = any(p.uses_ports for p in self._policies)

    def lookup_packet(self, packet: bytes, src: int, dst: int) -> Policy | None:
        """`lookup` for an IPv4 packet whose addresses are ``src`` and ``dst``: its ports
        are read only when some policy names ports."""
        if self.uses_ports:
            sport, dport = ip.ports(packet, ip.header_length(packet))
            return self.lookup(src, dst, packet[9], sport, dport)
        return self.lookup(src, dst, packet[9])

    def lookup(self, src: int, dst: int, proto: int, sport: int = 0, dport: int = 0) -> Policy | None:
        key = (src, dst, proto, sport, dport) if self.uses_ports else (src, dst, proto)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        test = Policy.matches_inbound if self.inbound else Policy.matches
        for policy in self._policies:
            if test(policy, src, dst, proto, sport, dport):
                found = policy
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found
