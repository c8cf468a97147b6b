"""Dial-in in the lab: our LNS on the HQ gateway, our LAC in client namespaces.

    home = HomeNetwork(topology, clients=2)     # after topology.up()
    home.up()
    hq = LabGateway.start(topology.hq, workdir, "hq", lns_config(topology.hq, psk=..., users=...))
    alice = LabGateway.start(home.clients[0], workdir, "alice",
                             lac_config(home.clients[0], remote=topology.hq.gw_public, psk=...,
                                        user="alice", password=..., remote_subnets=["10.1.0.0/24"]))

The home network is what remote users sit behind: a router that masquerades a private
LAN (10.99.0.0/24) to one public address (203.0.113.2) on the internet router, like a
home or hotel NAT.  Several clients behind it reach HQ from the same address with
different ports, which is exactly what an LNS must keep apart.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from appliance.lab.topology import LabError, Site, Topology, run

#: The LNS's pool and its own PPP address (the first of the pool).
POOL = "10.3.0.0/24"
LNS_ADDRESS = "10.3.0.1"


@dataclass
class HomeNetwork:
    """A NAT router on the internet with ``clients`` dial-in hosts behind it."""

    topology: Topology
    clients_wanted: int = 2
    public: str = "203.0.113.2"
    inet_side: str = "203.0.113.254"
    subnet: str = "10.99.0.0/24"
    router_lan: str = "10.99.0.1"
    clients: list[Site] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = self.topology.prefix
        self.router_ns = f"{p}home"
        self.clients = [
            Site(f"dial{i}", f"{p}dial{i}", f"{p}dial{i}", self.subnet, f"10.99.0.{10 + i}",
                 f"10.99.0.{10 + i}", f"10.99.0.{10 + i}", self.subnet, self.router_lan)
            for i in range(1, self.clients_wanted + 1)]

    def up(self) -> None:
        """Create the router and the clients (inside the topology: its ``down`` removes them)."""
        t = self.topology
        names = [self.router_ns, *(c.gw_ns for c in self.clients)]
        for name in names:
            run(["ip", "netns", "add", name])
            t.namespaces.append(name)
            t.ns(name, "ip", "link", "set", "lo", "up")
        run(["ip", "-n", self.router_ns, "link", "add", "up0", "type", "veth", "peer", "name", "to-home",
             "netns", t.inet_ns])
        t.ns(self.router_ns, "ip", "addr", "add", f"{self.public}/24", "dev", "up0")
        t.ns(t.inet_ns, "ip", "addr", "add", f"{self.inet_side}/24", "dev", "to-home")
        t.ns(self.router_ns, "ip", "link", "set", "up0", "up")
        t.ns(t.inet_ns, "ip", "link", "set", "to-home", "up")
        t.ns(self.router_ns, "ip", "route", "add", "default", "via", self.inet_side)
        t.ns(self.router_ns, "ip", "link", "add", "br0", "type", "bridge")
        t.ns(self.router_ns, "ip", "addr", "add", f"{self.router_lan}/24", "dev", "br0")
        t.ns(self.router_ns, "ip", "link", "set", "br0", "up")
        for client in self.clients:
            port = f"p-{client.name}"
            run(["ip", "-n", self.router_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", client.gw_ns])
            t.ns(self.router_ns, "ip", "link", "set", port, "master", "br0")
            t.ns(self.router_ns, "ip", "link", "set", port, "up")
            t.ns(client.gw_ns, "ip", "addr", "add", f"{client.gw_public}/24", "dev", "eth0")
            t.ns(client.gw_ns, "ip", "link", "set", "eth0", "up")
            t.ns(client.gw_ns, "ip", "route", "add", "default", "via", self.router_lan)
        t.ns(self.router_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ruleset = ("table ip home_nat {\n"
                   "  chain postrouting {\n"
                   "    type nat hook postrouting priority srcnat; policy accept;\n"
                   '    oifname "up0" masquerade\n'
                   "  }\n"
                   "}\n")
        proc = subprocess.run(["ip", "netns", "exec", self.router_ns, "nft", "-f", "-"], input=ruleset,
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise LabError(f"nft in {self.router_ns}: {proc.stderr.strip()}")


def lns_sections(*, psk: str, users: dict[str, dict[str, Any]],
                 methods: tuple[str, ...] = ("mschapv2", "chap-md5", "pap"),
                 dns: str = "10.1.0.53") -> dict[str, Any]:
    """The config sections that make a gateway an LNS (``users``: the config's section), to
    add to any gateway's config (the HQ of a site-to-site pair serves dial-in users too)."""
    return {
        "pools": {"dialin": {"subnet": POOL, "dns": [dns]}},
        "users": users,
        "connections": {"dialin": {
            "remote": "%any", "auth": {"method": "psk", "psk": psk},
            "l2tp": {"role": "lns", "pool": "dialin", "local_address": LNS_ADDRESS, "auth": list(methods)},
        }},
    }


def lns_config(site: Site, *, psk: str, users: dict[str, dict[str, Any]],
               methods: tuple[str, ...] = ("mschapv2", "chap-md5", "pap"), dns: str = "10.1.0.53",
               log_level: str = "info") -> dict[str, Any]:
    """Our gateway at ``site`` as the LNS for dial-in users, and nothing else."""
    return {
        "gateway": {"name": site.name, "public_interface": "wan0", "public_address": site.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": log_level},
        **lns_sections(psk=psk, users=users, methods=methods, dns=dns),
    }


def lac_config(site: Site, *, remote: str, psk: str, user: str, password: str,
               remote_subnets: list[str], method: str = "mschapv2", public_interface: str = "eth0",
               log_level: str = "info", **l2tp: Any) -> dict[str, Any]:
    """Our gateway at ``site`` as a LAC dialing the LNS at ``remote`` (``l2tp``: more options)."""
    return {
        "gateway": {"name": site.name, "public_interface": public_interface,
                    "public_address": site.gw_public},
        "logging": {"level": log_level},
        "connections": {"hq": {
            "remote": remote, "auth": {"method": "psk", "psk": psk}, "ike": {"start": "start"},
            "l2tp": {"role": "lac", "user": user, "password": password, "auth": [method],
                     "remote_subnets": remote_subnets, **l2tp},
        }},
    }
