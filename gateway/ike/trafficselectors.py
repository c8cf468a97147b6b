"""Traffic selectors and their narrowing (RFC 7296 2.9).

The responder answers with the intersection of what the initiator proposed and what
its own policy allows; the initiator accepts an answer only if it stays within what it
proposed.  Ranges are compared as integers; protocol 0 and the full port range are
wildcards.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class TsRange:
    """One traffic selector: an IPv4 address range, a protocol and a port range.

    IKEv2 carries it in TS payloads (RFC 7296 3.13.1), IKEv1 in Quick Mode IDs (RFC 2407 4.6.2).
    """

    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    protocol: int = 0
    port_start: int = 0
    port_end: int = 65535

    @classmethod
    def of_network(cls, net: ipaddress.IPv4Network, protocol: int = 0,
                   port_start: int = 0, port_end: int = 65535) -> TsRange:
        return cls(net.network_address, net.broadcast_address, protocol, port_start, port_end)

    def __str__(self) -> str:
        nets = list(ipaddress.summarize_address_range(self.start, self.end)) if self.start <= self.end else []
        text = str(nets[0]) if len(nets) == 1 else f"{self.start}-{self.end}"
        if self.protocol or self.port_start != 0 or self.port_end != 65535:
            ports = f"{self.port_start}" if self.port_start == self.port_end else \
                f"{self.port_start}-{self.port_end}"
            text += f"[{self.protocol}/{ports}]"
        return text


def _intersect(a: TsRange, b: TsRange) -> TsRange | None:
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return None
    start = max(int(a.start), int(b.start))
    end = min(int(a.end), int(b.end))
    port_start = max(a.port_start, b.port_start)
    port_end = min(a.port_end, b.port_end)
    if start > end or port_start > port_end:
        return None
    return TsRange(ipaddress.IPv4Address(start), ipaddress.IPv4Address(end), a.protocol or b.protocol,
                   port_start, port_end)


def narrow(proposed: list[TsRange], allowed: list[TsRange]) -> list[TsRange]:
    """Every non-empty intersection, in the proposer's order, without duplicates."""
    out: list[TsRange] = []
    for p in proposed:
        for a in allowed:
            both = _intersect(p, a)
            if both is not None and both not in out:
                out.append(both)
    return out


def _inside(inner: TsRange, outer: TsRange) -> bool:
    return (int(outer.start) <= int(inner.start) and int(inner.end) <= int(outer.end)
            and (outer.protocol == 0 or outer.protocol == inner.protocol)
            and outer.port_start <= inner.port_start and inner.port_end <= outer.port_end)


def within(answer: list[TsRange], proposed: tuple[TsRange, ...] | list[TsRange]) -> bool:
    """Whether every selector of the answer lies inside one we proposed."""
    return bool(answer) and all(any(_inside(a, p) for p in proposed) for a in answer)
