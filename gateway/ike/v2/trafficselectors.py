"""Traffic selector narrowing (RFC 7296 2.9).

The responder answers with the intersection of what the initiator proposed and what
its own policy allows; the initiator accepts an answer only if it stays within what it
proposed.  Ranges are compared as integers; protocol 0 and the full port range are
wildcards.
"""

from __future__ import annotations

import ipaddress

from gateway.ike.v2.message import TsRange


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
