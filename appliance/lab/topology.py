"""The lab topology: two sites joined by an "internet" router, in network namespaces.

    hq-lan 10.1.0.10 --- 10.1.0.1 hq-gw 192.0.2.1 --- 192.0.2.254 inet 198.51.100.254
        --- 198.51.100.1 br-gw 10.2.0.1 --- 10.2.0.10 br-lan

Every namespace name carries a prefix so that several labs (the demo, a test run, a
benchmark) can exist side by side.  Addresses come from the documentation ranges
(RFC 5737) and 10/8, so nothing ever leaves the machine.  The internet router has no
route to the 10.x LANs: without a tunnel the sites cannot reach each other, which is
what makes "traffic crossed the tunnel" a meaningful observation.

With NAT (``Topology(nat=True)`` or ``enable_nat()``) the internet router masquerades
what the branch side sends toward hq: hq sees the branch gateway as 192.0.2.254 (the
router's hq-side address) with rewritten source ports, as behind a home router.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class LabError(RuntimeError):
    """A command that sets up or inspects the lab failed."""


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a lab process's whole group (a peer daemon and what it started), if alive."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_text(read: Callable[[], str], pattern: str, timeout: float, start: int, what: str,
              tail: Callable[[], str]) -> re.Match[str]:
    """Wait until ``pattern`` (a regex) appears in ``read()`` after character ``start``; a
    LabError naming ``what`` (and ``tail()``) if it does not within ``timeout`` seconds."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        match = regex.search(read(), start)
        if match:
            return match
        if time.monotonic() > deadline:
            raise LabError(f"{pattern!r} not in {what} within {timeout}s\n{tail()}")
        time.sleep(0.05)


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command, raising LabError with its stderr when it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class Site:
    """One site: its LAN host, its gateway and the addresses on either side."""

    name: str
    lan_ns: str
    gw_ns: str
    lan_subnet: str
    lan_host: str
    gw_lan: str
    gw_public: str
    public_subnet: str
    inet_side: str


def remove_namespaces(names: Sequence[str]) -> None:
    """Delete these network namespaces (those that exist), killing what runs in them first."""
    listed = run(["ip", "netns", "list"]).stdout
    present = {line.split()[0] for line in listed.splitlines() if line.strip()}
    for name in names:
        if name in present:
            pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
            if pids:
                run(["kill", "-9", *pids], check=False)
            run(["ip", "netns", "del", name], check=False)


@dataclass
class Topology:
    """Creates and removes the namespaces, links and addresses of the lab."""

    prefix: str = "gwlab-"
    mtu: int = 1500
    namespaces: list[str] = field(default_factory=list)
    nat: bool = False

    def __post_init__(self) -> None:
        p = self.prefix
        self.inet_ns = f"{p}inet"
        self.hq = Site("hq", f"{p}hq-lan", f"{p}hq-gw", "10.1.0.0/24", "10.1.0.10",
                       "10.1.0.1", "192.0.2.1", "192.0.2.0/24", "192.0.2.254")
        self.branch = Site("branch", f"{p}br-lan", f"{p}br-gw", "10.2.0.0/24", "10.2.0.10",
                           "10.2.0.1", "198.51.100.1", "198.51.100.0/24", "198.51.100.254")
        self.namespaces = [self.hq.lan_ns, self.hq.gw_ns, self.inet_ns,
                           self.branch.gw_ns, self.branch.lan_ns]

    # -- helpers -------------------------------------------------------------------
    def ns(self, namespace: str, *cmd: str, check: bool = True,
           timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace."""
        return run(["ip", "netns", "exec", namespace, *cmd], check=check, timeout=timeout)

    def exists(self) -> bool:
        listed = run(["ip", "netns", "list"]).stdout
        return any(line.split()[0] == self.inet_ns for line in listed.splitlines() if line)

    # -- life cycle ------------------------------------------------------------------
    def up(self) -> None:
        """Create the whole topology (removing a stale one of the same prefix first)."""
        self.down()
        for name in self.namespaces:
            run(["ip", "netns", "add", name])
            self.ns(name, "ip", "link", "set", "lo", "up")
        for site in (self.hq, self.branch):
            self._link(site.lan_ns, "eth0", site.gw_ns, "lan0")
            self._link(site.gw_ns, "wan0", self.inet_ns, f"to-{site.name}")
            self._like_a_nic(site.gw_ns, "wan0", f"to-{site.name}")
            plen = site.lan_subnet.split("/")[1]
            pub_len = site.public_subnet.split("/")[1]
            self._addr(site.lan_ns, "eth0", f"{site.lan_host}/{plen}")
            self._addr(site.gw_ns, "lan0", f"{site.gw_lan}/{plen}")
            self._addr(site.gw_ns, "wan0", f"{site.gw_public}/{pub_len}")
            self._addr(self.inet_ns, f"to-{site.name}", f"{site.inet_side}/{pub_len}")
            self.ns(site.lan_ns, "ip", "route", "add", "default", "via", site.gw_lan)
            self.ns(site.gw_ns, "ip", "route", "add", "default", "via", site.inet_side)
            self.ns(site.gw_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns(self.inet_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.nat:
            self.enable_nat()

    def down(self) -> None:
        """Remove every namespace of this lab; processes in them are killed first."""
        remove_namespaces(self.namespaces)

    def add_peer_site(self, name: str, public: str, inet_side: str, prefix_len: int = 24) -> Site:
        """One more gateway namespace, without a LAN, on its own link (``wan0``) to the
        internet router: a new peer.  ``down`` removes it with the rest."""
        namespace = f"{self.prefix}{name}"
        run(["ip", "netns", "add", namespace])
        self.namespaces.append(namespace)
        self.ns(namespace, "ip", "link", "set", "lo", "up")
        self._link(namespace, "wan0", self.inet_ns, f"to-{name}")
        self._like_a_nic(namespace, "wan0", f"to-{name}")
        self._addr(namespace, "wan0", f"{public}/{prefix_len}")
        self._addr(self.inet_ns, f"to-{name}", f"{inet_side}/{prefix_len}")
        self.ns(namespace, "ip", "route", "add", "default", "via", inet_side)
        subnet = str(ipaddress.IPv4Interface(f"{public}/{prefix_len}").network)
        return Site(name, namespace, namespace, subnet, public, public, public, subnet, inet_side)

    def blackhole(self, network: str) -> None:
        """The internet router drops, silently, what goes to ``network``: the spoofed
        sources of a flood, so the answers to them vanish as on the internet."""
        self.ns(self.inet_ns, "ip", "route", "replace", "blackhole", network)

    def enable_plain_routing(self) -> None:
        """Let the internet router route the LANs in clear (the no-tunnel baseline)."""
        for site in (self.hq, self.branch):
            self.ns(self.inet_ns, "ip", "route", "replace", site.lan_subnet, "via", site.gw_public)

    def disable_plain_routing(self) -> None:
        for site in (self.hq, self.branch):
            self.ns(self.inet_ns, "ip", "route", "del", site.lan_subnet, check=False)

    # -- NAT ---------------------------------------------------------------------------
    NAT_TABLE = "lab_nat"

    @property
    def nat_address(self) -> str:
        """The address hq sees a NATed branch as: the router's hq-side address."""
        return self.hq.inet_side

    def enable_nat(self, block_inbound: bool = False) -> None:
        """Masquerade branch -> hq traffic on the internet router (nftables ``lab_nat``).

        Source addresses become 192.0.2.254 and source ports are rewritten (``random``:
        port 500 does not stay 500), so NAT traversal has something real to detect.  With
        ``block_inbound`` the router also drops connections the hq side starts toward the
        branch (as a NAT without port forwarding would); replies to the branch still pass.
        Connection tracking is flushed so no flow keeps a pre-NAT mapping.
        """
        to_hq, to_branch = f"to-{self.hq.name}", f"to-{self.branch.name}"
        block = (f'    iifname "{to_hq}" oifname "{to_branch}" ct state new drop\n'
                 if block_inbound else "")
        ruleset = (
            f"table ip {self.NAT_TABLE} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    iifname "{to_branch}" oifname "{to_hq}" masquerade random\n'
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            f"{block}"
            "  }\n"
            "}\n")
        self.ns(self.inet_ns, "nft", "delete", "table", "ip", self.NAT_TABLE, check=False)
        proc = subprocess.run(["ip", "netns", "exec", self.inet_ns, "nft", "-f", "-"], input=ruleset,
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"nft in {self.inet_ns}: {proc.stderr.strip()}\n{ruleset}")
        self.nat = True
        self.flush_conntrack()

    def disable_nat(self) -> None:
        """Remove the NAT table (and flush conntrack, so established mappings end too)."""
        self.ns(self.inet_ns, "nft", "delete", "table", "ip", self.NAT_TABLE, check=False)
        self.nat = False
        self.flush_conntrack()

    def flush_conntrack(self) -> None:
        """Forget every tracked flow (and NAT mapping) of the internet router."""
        self.ns(self.inet_ns, sys.executable, "-c",
                "from pyroute2 import Conntrack\nc = Conntrack()\nc.flush()\nc.close()")

    # -- traffic -----------------------------------------------------------------
    def ping(self, src_ns: str, dst: str, count: int = 3, interval: float = 0.2,
             size: int = 56, wait: float = 1.0) -> tuple[int, int]:
        """Ping and return (sent, received)."""
        proc = self.ns(src_ns, "ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                       "-s", str(size), "-W", str(wait), dst, check=False,
                       timeout=count * (interval + wait) + 10)
        for line in proc.stdout.splitlines():
            if "packets transmitted" in line:
                parts = line.split(",")
                sent = int(parts[0].split()[0])
                received = int(parts[1].split()[0])
                return sent, received
        raise LabError(f"ping gave no summary: {proc.stdout} {proc.stderr}")

    def _link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        run(["ip", "-n", ns_a, "link", "add", if_a, "mtu", str(self.mtu), "type", "veth",
             "peer", "name", if_b, "netns", ns_b, "mtu", str(self.mtu)])
        self.ns(ns_a, "ip", "link", "set", if_a, "up")
        self.ns(ns_b, "ip", "link", "set", if_b, "up")

    def _like_a_nic(self, namespace: str, ifname: str, peer: str) -> None:
        """Make a gateway's internet link carry what a wire carries: packets no larger than
        the MTU from both ends (a veth would pass the kernel's 64 KiB TCP and UDP GSO
        packets whole, and a capture on the link would show those), and the gateway's end
        receive like a NIC, with GRO (a veth does GRO only for what its peer sends
        without TSO)."""
        wire = ("tso", "off", "gso", "off", "tx-udp-segmentation", "off")
        self.ns(namespace, "ethtool", "-K", ifname, *wire, "gro", "on")
        self.ns(self.inet_ns, "ethtool", "-K", peer, *wire)

    def _addr(self, namespace: str, ifname: str, cidr: str) -> None:
        self.ns(namespace, "ip", "addr", "add", cidr, "dev", ifname)
