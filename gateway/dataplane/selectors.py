"""Traffic selectors (RFC 4301 4.4.1.1, RFC 7296 3.13.1): which packets a policy covers.

A selector pair is (local side, remote side).  Each side is an address range (a prefix
here), and the pair shares one IP protocol and a port range per side.  Matching works on
integers, not ``ipaddress`` objects, because it runs per packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficSelector:
    """One side: a prefix, and a port range (0..65535 means any port)."""

    network: ipaddress.IPv4Network
    port_start: int = 0
    port_end: int = 65535

    def __post_init__(self) -> None:
        object.__setattr__(self, "_net", int(self.network.network_address))
        object.__setattr__(self, "_mask", int(self.network.netmask))

    @property
    def any_port(self) -> bool:
        return self.port_start == 0 and self.port_end == 65535

    def covers(self, address: int, port: int) -> bool:
        return (address & self._mask) == self._net and self.port_start <= port <= self.port_end  # type: ignore[attr-defined]

    def __str__(self) -> str:
        if self.any_port:
            return str(self.network)
        if self.port_start == self.port_end:
            return f"{self.network}[{self.port_start}]"
        return f"{self.network}[{self.port_start}-{self.port_end}]"


@dataclass(frozen=True)
class SelectorPair:
    """Local and remote selectors and the IP protocol (0: any) they share."""

    local: TrafficSelector
    remote: TrafficSelector
    protocol: int = 0

    @property
    def uses_ports(self) -> bool:
        return not (self.local.any_port and self.remote.any_port)

    def matches_outbound(self, src: int, dst: int, proto: int, sport: int, dport: int) -> bool:
        return ((self.protocol == 0 or self.protocol == proto)
                and self.local.covers(src, sport) and self.remote.covers(dst, dport))

    def matches_inbound(self, src: int, dst: int, proto: int, sport: int, dport: int) -> bool:
        return ((self.protocol == 0 or self.protocol == proto)
                and self.remote.covers(src, sport) and self.local.covers(dst, dport))

    def __str__(self) -> str:
        proto = f" proto {self.protocol}" if self.protocol else ""
        return f"{self.local} === {self.remote}{proto}"
