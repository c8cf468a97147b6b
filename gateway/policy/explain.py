"""`gateway policy explain SRC DST PROTO [PORT]`: which rule decides a packet, and how.

The direction comes from this gateway's point of view: a packet from one of its addresses
is outbound, one to them inbound; any other packet is forwarded, and is matched both
ways (from our networks to the peer's, and back), the first entry in match order that
covers it either way deciding, as the dataplane would on the way out or on the way in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.dataplane.spd import Action
from gateway.policy.compiler import AddressLike, CompiledPolicy, Direction, PolicyEntry
from gateway.policy.model import ConnectionType, parse_protocol, protocol_name

_NO_RULE = {"out": "sent in clear", "in": "accepted in clear", None: "forwarded in clear"}


@dataclass(frozen=True)
class Explanation:
    """The answer for one packet; `str()` gives it as one line."""

    policy: str
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    protocol: int
    source_port: int
    destination_port: int
    forwarded: bool
    direction: Direction | None  # None: forwarded, and no entry covers it either way
    entry: PolicyEntry | None
    default_response: bool

    @property
    def packet(self) -> str:
        src = f"{self.src}:{self.source_port}" if self.source_port else str(self.src)
        dst = f"{self.dst}:{self.destination_port}" if self.destination_port else str(self.dst)
        return f"{src} -> {dst} {protocol_name(self.protocol)}"

    @property
    def where(self) -> str:
        if self.direction is None:
            return "forwarded"
        word = "outbound" if self.direction == "out" else "inbound"
        return f"forwarded {word}" if self.forwarded else word

    @property
    def verdict(self) -> str:
        entry = self.entry
        if entry is None:
            text = f"no rule matches: {_NO_RULE[self.direction]} (no policy)"
            if self.default_response:
                text += "; the default response rule secures it if the peer asks"
            return text
        rule = entry.rule
        details = [f"filter list {rule.filter_list.name!r}", f"filter {entry.filter}"]
        if self.direction is not None and entry.by_mirror(self.direction):
            details.append("matched by its mirror")
        elif entry.filter.mirrored:
            details.append("mirrored")
        if rule.connection_type != "all":
            details.append(f"{rule.connection_type} connections only")
        named = f"rule {rule.name!r} ({', '.join(details)})"
        if entry.action is Action.DISCARD:
            return f"blocked by {named}"
        if entry.action is Action.BYPASS:
            return f"permitted in clear by {named}"
        how = "request" if entry.fallback_to_clear else "require"
        methods = " or ".join(str(m) for m in entry.methods)
        via = "in transport mode"
        if entry.tunnel_endpoint is not None:
            via = f"via tunnel {entry.tunnel_endpoint}"
        text = f"{named}: negotiate security, {how} {methods} {via}"
        if entry.fallback_to_clear:
            text += ", in clear if the peer does not negotiate"
        if self.direction == "in":
            text += (", accepted unsecured too" if entry.accept_unsecured_inbound
                     else ", dropped if it arrives unsecured")
        return text

    def __str__(self) -> str:
        return f"{self.packet} ({self.where}): {self.verdict}"


def explain(compiled: CompiledPolicy, src: AddressLike, dst: AddressLike, proto: int | str,
            port: int = 0, *, source_port: int = 0, link: ConnectionType | None = None) -> Explanation:
    """Explain what the policy does with a packet (`port`: its destination port, 0: none)."""
    s, d = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
    p = parse_protocol(proto)
    for name, value in (("port", port), ("source_port", source_port)):
        if not 0 <= value <= 65535:
            raise ValueError(f"{name} {value} is not between 0 and 65535")
    if (port or source_port) and p not in (6, 17):
        raise ValueError(f"ports only go with tcp or udp, not {protocol_name(p)}")
    forwarded = False
    direction: Direction | None
    entry: PolicyEntry | None
    if compiled.is_me(s) or compiled.is_me(d):
        direction = "out" if compiled.is_me(s) else "in"
        entry = compiled.match(s, d, p, source_port, port, direction, link=link)
    else:
        forwarded = True
        both: tuple[Direction, ...] = ("out", "in")
        found = [(e, dirn) for dirn in both
                 if (e := compiled.match(s, d, p, source_port, port, dirn, link=link)) is not None]
        if found:
            entry, direction = min(found, key=lambda item: item[0].position)
        else:
            entry, direction = None, None
    return Explanation(compiled.name, s, d, p, source_port, port, forwarded, direction, entry,
                       compiled.default_response is not None)
