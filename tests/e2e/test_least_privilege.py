"""Least privilege (issue 7): a running gateway keeps only CAP_NET_ADMIN, on every thread,
with no_new_privs, and what needs that capability still works afterwards.

Read from the outside, in /proc/PID/task/*/status of real `gateway run` processes: the
effective, permitted and bounding sets are exactly cap_net_admin, the inheritable and
ambient sets empty, NoNewPrivs 1.  Then the things done with it at runtime: a demand-dial
tunnel comes up on traffic, a reload adds a connection and its route into the TUN (and a
second reload removes it), `gateway status` shows the nftables counters (``nft`` runs as
a child), and a LAC/LNS PPP link puts its address and routes on both hosts.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from e2e_support import NETNS, assert_lab_gone, gateway_cli, lab, lab_prefix, wait_for

from appliance.lab.dialup import POOL, HomeNetwork, lac_config, lns_config
from appliance.lab.gateways import GatewayPair, LabGateway, write_config
from appliance.lab.topology import wait_text
from gateway.net.privileges import CAP_NET_ADMIN, thread_sets

pytestmark = NETNS

PREFIX = lab_prefix("lpv")
NET_ADMIN = 1 << CAP_NET_ADMIN
PSK = "least-privilege-group-key"


def assert_least_privilege(gw: LabGateway) -> None:
    """Every thread of the daemon (`ip netns exec` execs: its pid is the daemon's)."""
    threads = thread_sets(gw.proc.pid)
    assert len(threads) >= 2, threads  # the main thread and the netlink one, at least
    for name, sets in threads.items():
        assert (sets.effective, sets.permitted, sets.bounding) == (NET_ADMIN,) * 3, (name, sets)
        assert sets.inheritable == 0 and sets.ambient == 0 and sets.no_new_privs, (name, sets)
    assert re.search(r"INFO privileges\.dropped kept=cap_net_admin bounding=cap_net_admin "
                     r"no_new_privs=True", gw.log_text()), gw.log_tail()
    assert "privileges.not_dropped" not in gw.log_text()


def reload(gw: LabGateway, config: dict[str, Any]) -> str:
    start = len(gw.log_text())
    write_config(gw.config_path, config, "lab gateway (reloaded)")
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_text(gw.log_text, r"config\.reload(ed|_failed) .*", 10.0, start, "the log", gw.log_tail)
    return gw.log_text()[start:]


def test_a_site_pair_keeps_only_net_admin_and_still_routes(tmp_path: Path) -> None:
    with lab(PREFIX) as topo, GatewayPair(
            topo, tmp_path, keying="ike",
            branch_connection={"ike": {"start": "none"}, "demand_dial": {"idle_timeout": 60}}) as pair:
        for gw in pair.gateways.values():
            assert_least_privilege(gw)
        # demand-dial: the first packet dials (IKE from the unprivileged daemon), then traffic
        _, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=5, wait=3.0)
        assert received >= 3, pair.log_tail("branch")
        # the edge's counters come from `nft`, which the daemon runs with what it kept
        status = pair.status("hq")
        assert status["edge"]["nftables"] and "edge_dropped" in status["edge"]["counters"], status["edge"]
        assert "edge_dropped" in gateway_cli("status", "--json", "-s", str(pair.socket("hq")))

        # a reload adds a connection: its route into the TUN goes in (netlink, CAP_NET_ADMIN)
        hq = pair.gateways["hq"]
        original = yaml.safe_load(pair.config_path("hq").read_text())
        added = yaml.safe_load(yaml.safe_dump(original))
        added["connections"]["branch2"] = {
            "remote": "203.0.113.7", "local_subnets": [topo.hq.lan_subnet], "remote_subnets": ["10.3.0.0/24"],
            "auth": {"method": "psk", "psk": os.urandom(16).hex()}}
        text = reload(hq, added)
        assert "config.reloaded" in text and "config.connection_added connection=branch2" in text, text
        route = wait_for(lambda: topo.ns(topo.hq.gw_ns, "ip", "route", "show", "10.3.0.0/24").stdout,
                         lambda out: "dev gw0" in out)
        assert "dev gw0" in route, hq.log_tail()
        text = reload(hq, original)  # and goes again with the connection
        assert "config.connection_removed connection=branch2" in text, text
        assert wait_for(lambda: topo.ns(topo.hq.gw_ns, "ip", "route", "show", "10.3.0.0/24").stdout,
                        lambda out: not out.strip()) == ""
        assert topo.ping(topo.hq.lan_ns, topo.branch.lan_host)[1] == 3
        for gw in pair.gateways.values():
            assert_least_privilege(gw)  # nothing raised them again
            assert "Traceback" not in gw.log_text() and "Operation not permitted" not in gw.log_text()
        hq.stop()
        assert "gateway.stopped" in hq.log_text() and "Traceback" not in hq.log_text(), hq.log_tail()
    assert_lab_gone(PREFIX)


def test_a_ppp_link_puts_its_address_and_routes_on_both_hosts(tmp_path: Path) -> None:
    password = "alice-least-privilege"
    with lab(PREFIX) as topo:
        home = HomeNetwork(topo, clients_wanted=1)
        home.up()
        client = home.clients[0]
        lns = lns_config(topo.hq, psk=PSK, users={"alice": {"password": password}})
        lac = lac_config(client, remote=topo.hq.gw_public, psk=PSK, user="alice", password=password,
                         method="chap-md5", remote_subnets=[topo.hq.lan_subnet])
        with LabGateway.start(topo.hq, tmp_path, "hq", lns) as hq, \
                LabGateway.start(client, tmp_path, "alice", lac) as alice:
            found = wait_for(lambda: re.search(r"ppp\.up .*address=(\S+)", alice.log_text()), bool,
                             timeout=25)
            assert found is not None, alice.log_tail(40)
            address = found.group(1)
            # the LAC's PPP address on its TUN and the HQ LAN routed into it, both after the drop
            assert f"inet {address}" in topo.ns(client.gw_ns, "ip", "-4", "addr", "show", "dev", "gw0").stdout
            assert "dev gw0" in topo.ns(client.gw_ns, "ip", "route", "show", topo.hq.lan_subnet).stdout
            # the LNS's PPP address and its pool routed into its TUN
            hq_routes = wait_for(lambda: topo.ns(topo.hq.gw_ns, "ip", "route", "show", "dev", "gw0").stdout,
                                 lambda out: POOL in out)
            assert POOL in hq_routes, hq_routes
            sent, received = topo.ping(client.gw_ns, "10.1.0.10", count=3, wait=2.0)
            assert received == sent, alice.log_tail(30)
            for gw in (hq, alice):
                assert_least_privilege(gw)
            time.sleep(0.2)
    assert_lab_gone(PREFIX)
