"""Virtual IP pools for remote-access clients (RFC 7296 3.15, the configuration payload).

A client that asks for an address gets the lowest free one; a client that comes back
with the same identity while its old lease is still held gets that address again, as
Windows and iOS expect after a reconnect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


class PoolExhausted(Exception):
    """No free address left (answered with INTERNAL_ADDRESS_FAILURE, 3.10.1)."""


@dataclass
class AddressPool:
    name: str
    subnet: ipaddress.IPv4Network
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    leases: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)  # address -> owner

    def lease(self, owner: str) -> ipaddress.IPv4Address:
        for address, holder in self.leases.items():
            if holder == owner:
                return address
        for address in self.subnet.hosts():
            if address not in self.leases:
                self.leases[address] = owner
                return address
        raise PoolExhausted(f"pool {self.name} ({self.subnet}) has no free address")

    def release(self, address: ipaddress.IPv4Address) -> None:
        self.leases.pop(address, None)

    @property
    def in_use(self) -> int:
        return len(self.leases)

    @property
    def size(self) -> int:
        return max(0, self.subnet.num_addresses - 2)
