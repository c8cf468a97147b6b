"""The edge policy: what may reach the gateway from its public side.

Only ESP (IP protocol 50), AH (51), IKE (UDP 500) and NAT-T (UDP 4500) reach the
gateway, plus an explicit management allow-list.  L2TP (UDP 1701) is accepted only from
inside an IPsec SA, never in clear.  The same model renders the nftables ruleset
(`appliance.edge`) and is checked by the userspace dataplane on every packet it takes
from the wire, so the rule holds even where nftables is absent.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gateway.dataplane import ip
from gateway.dataplane.drops import DropReason

IKE_PORT = 500
NATT_PORT = 4500
L2TP_PORT = 1701


@dataclass(frozen=True)
class ManagementRule:
    """Allow ``protocol`` (tcp/udp/icmp) to ``port`` from ``source``."""

    source: ipaddress.IPv4Network
    protocol: str
    port: int | None = None

    @property
    def proto_number(self) -> int:
        return {"tcp": ip.PROTO_TCP, "udp": ip.PROTO_UDP, "icmp": ip.PROTO_ICMP}[self.protocol]


@dataclass
class EdgePolicy:
    public_interface: str
    public_address: ipaddress.IPv4Address
    management: tuple[ManagementRule, ...] = ()
    _public_packed: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._public_packed = self.public_address.packed

    def check(self, packet: bytes, *, inside_ipsec: bool = False) -> DropReason | None:
        """None if ``packet`` (a whole IPv4 packet addressed to us) may reach the gateway.

        ``inside_ipsec`` is true for packets that were just decapsulated from an SA.
        """
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return DropReason.MALFORMED
        if inside_ipsec:
            return None
        proto = packet[9]
        _sport, dport = ip.ports(packet, ip.header_length(packet))
        if proto == ip.PROTO_UDP and dport == L2TP_PORT:
            return DropReason.CLEAR_L2TP
        if packet[16:20] != self._public_packed:
            return DropReason.EDGE_FILTER
        if proto in (ip.PROTO_ESP, ip.PROTO_AH):
            return None
        if proto == ip.PROTO_UDP and dport in (IKE_PORT, NATT_PORT):
            return None
        src = ipaddress.IPv4Address(packet[12:16])
        for rule in self.management:
            if (rule.proto_number == proto and src in rule.source
                    and (rule.port is None or rule.port == dport)):
                return None
        return DropReason.EDGE_FILTER
