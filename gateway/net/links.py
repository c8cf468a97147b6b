"""Links, routes and rules through pyroute2 (netlink), and the sysctls a TUN needs.

Tunnel-mode remote subnets are routed into the TUN in the main table, with the gateway's
LAN address as preferred source so its own packets match the selectors.  Transport-mode
peers are routed into the TUN from a separate table that only unmarked packets consult:
the gateway's own ESP/IKE sockets carry the mark, so they keep reaching the peer
directly while everything else to the peer is protected.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("gateway.net")

#: how long `Links.local_source_for` trusts its copy of the host's addresses (ours are
#: changed through `address_on`, which forgets it; this bounds how late a change made by
#: someone else is seen)
ADDRESS_CACHE_SECONDS = 1.0


class Links:
    def __init__(self) -> None:
        self.ipr = IPRoute()
        self._rules: list[dict[str, int]] = []
        self._addresses: tuple[float, list[ipaddress.IPv4Interface]] | None = None

    def close(self) -> None:
        for rule in self._rules:
            try:
                self.ipr.rule("del", **rule)
            except NetlinkError:
                pass
        self._rules.clear()
        self.ipr.close()

    def index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"no interface named {ifname}")
        return int(found[0])

    def check_address(self, ifname: str, address: str) -> None:
        """Raise LookupError unless ``address`` is configured on ``ifname``."""
        idx = self.index(ifname)
        for addr in self.ipr.get_addr(family=2, index=idx):
            if addr.get_attr("IFA_ADDRESS") == address:
                return
        raise LookupError(f"{address} is not an address of {ifname}")

    def bring_up(self, ifname: str, mtu: int) -> int:
        idx = self.index(ifname)
        self.ipr.link("set", index=idx, mtu=mtu, state="up")
        return idx

    def addresses(self) -> list[ipaddress.IPv4Interface]:
        out = []
        for addr in self.ipr.get_addr(family=2):
            out.append(ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}"))
        return out

    def local_source_for(self, subnets: Iterable[ipaddress.IPv4Network]) -> str | None:
        """An address of this host inside one of ``subnets`` (the preferred source).

        The addresses come from a copy at most `ADDRESS_CACHE_SECONDS` old: one netlink dump
        of every address per route would cost more than the route."""
        subnets = list(subnets)
        now = time.monotonic()
        if self._addresses is None or now - self._addresses[0] >= ADDRESS_CACHE_SECONDS:
            self._addresses = (now, self.addresses())
        for iface in self._addresses[1]:
            if any(iface.ip in s for s in subnets):
                return str(iface.ip)
        return None

    def route_into(self, idx: int, dst: ipaddress.IPv4Network, *, table: int | None = None,
                   source: str | None = None) -> None:
        kwargs: dict[str, object] = {"dst": str(dst), "oif": idx}
        if table is not None:
            kwargs["table"] = table
        if source is not None:
            kwargs["prefsrc"] = source
        self.ipr.route("replace", **kwargs)

    def route_remove(self, idx: int, dst: ipaddress.IPv4Network, *, table: int | None = None) -> None:
        kwargs: dict[str, object] = {"dst": str(dst), "oif": idx}
        if table is not None:
            kwargs["table"] = table
        try:
            self.ipr.route("del", **kwargs)
        except NetlinkError as exc:
            if exc.code not in (3, 2):  # ESRCH / ENOENT: gone already
                raise

    def address_on(self, idx: int, address: ipaddress.IPv4Network, *, add: bool) -> None:
        """Our address on a point-to-point link, put on the TUN (as pppd puts it on ppp0)."""
        try:
            self.ipr.addr("add" if add else "del", index=idx, address=str(address.network_address),
                          prefixlen=address.prefixlen)
        except NetlinkError as exc:
            if exc.code not in (17, 99, 2):  # EEXIST / EADDRNOTAVAIL / ENOENT
                raise
        finally:
            self._addresses = None  # local_source_for looks again

    def rule_unmarked_to_table(self, mark: int, table: int, priority: int = 1000) -> None:
        """`ip rule add not fwmark MARK lookup TABLE`: the gateway's own sockets are exempt."""
        rule = {"table": table, "priority": priority, "fwmark": mark, "fwmask": 0xFFFFFFFF,
                "flags": 0x2}  # FIB_RULE_INVERT
        try:
            self.ipr.rule("add", **rule)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST
                raise
        self._rules.append(rule)


def set_sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(value)


def prepare_tun_sysctls(tun: str) -> list[str]:
    """Loosen reverse-path filtering where the TUN needs it; returns what was changed.

    Decapsulated transport-mode packets come from the peer's public address but arrive on
    the TUN: strict rp_filter (1) would drop them.  Loose mode (2) keeps the protection.
    """
    changed = []
    set_sysctl(f"net/ipv4/conf/{tun}/rp_filter", "0")
    try:  # the dataplane carries IPv4; keep the kernel from sending IPv6 chatter into it
        set_sysctl(f"net/ipv6/conf/{tun}/disable_ipv6", "1")
    except OSError:
        pass
    for scope in ("all", "default"):
        path = f"net/ipv4/conf/{scope}/rp_filter"
        try:
            if Path("/proc/sys", path).read_text().strip() == "1":
                set_sysctl(path, "2")
                changed.append(f"{path}=2")
        except OSError:
            pass
    return changed
