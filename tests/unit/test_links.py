"""Links.local_source_for: one netlink dump of the host's addresses serves many routes; our own
address changes, and time, make it look again."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from gateway.net import links as links_module
from gateway.net.links import Links


class Addr(dict):  # type: ignore[type-arg]
    def __init__(self, address: str, prefixlen: int) -> None:
        super().__init__(prefixlen=prefixlen)
        self.address = address

    def get_attr(self, name: str) -> str:
        assert name == "IFA_ADDRESS"
        return self.address


class FakeIpr:
    def __init__(self) -> None:
        self.addrs = [Addr("192.0.2.1", 24), Addr("10.1.0.1", 24)]
        self.dumps = 0

    def get_addr(self, **kwargs: Any) -> list[Addr]:
        self.dumps += 1
        return list(self.addrs)

    def addr(self, op: str, **kwargs: Any) -> None:
        if op == "add":
            self.addrs.append(Addr(kwargs["address"], kwargs["prefixlen"]))


def links() -> tuple[Links, FakeIpr]:
    out = Links.__new__(Links)  # no netlink socket
    ipr = FakeIpr()
    out.ipr, out._rules, out._addresses = ipr, [], None
    return out, ipr


def test_the_addresses_are_dumped_once_for_many_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(links_module.time, "monotonic", lambda: clock[0])
    lk, ipr = links()
    lan = [ipaddress.IPv4Network("10.1.0.0/24")]
    for _ in range(100):
        assert lk.local_source_for(lan) == "10.1.0.1"
    assert lk.local_source_for([ipaddress.IPv4Network("10.9.0.0/24")]) is None
    assert ipr.dumps == 1
    # an address of ours (a PPP link's) is seen at once
    lk.address_on(7, ipaddress.IPv4Network("10.9.0.5/32"), add=True)
    assert lk.local_source_for([ipaddress.IPv4Network("10.9.0.0/24")]) == "10.9.0.5"
    assert ipr.dumps == 2
    # someone else's, once the copy is old
    ipr.addrs.insert(0, Addr("10.1.0.9", 24))
    assert lk.local_source_for(lan) == "10.1.0.1"
    clock[0] += links_module.ADDRESS_CACHE_SECONDS
    assert lk.local_source_for(lan) == "10.1.0.9" and ipr.dumps == 3
