"""ExecReload (issue 6): SIGHUP re-reads the config without dropping unchanged tunnels.

Two of our gateways over IKEv2 in the lab; HQ's file gains a connection, becomes broken,
loses the connection again, and finally changes the running one. Through the first three
reloads the tunnel keeps exactly its IKE and CHILD SPIs on both sides and carries pings
without loss; a changed connection is negotiated afresh (new SPIs) and carries them again.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from e2e_support import NETNS, assert_lab_gone, gateway_cli, lab, lab_prefix, wait_for

from appliance.lab.gateways import GatewayPair, LabGateway, write_config
from appliance.lab.topology import Topology, wait_text

pytestmark = NETNS

PREFIX = lab_prefix("rld")
ABSENT_PEER = "203.0.113.7"  # nobody answers there: branch2 keeps trying, which is fine


def spis(pair: GatewayPair, name: str, connection: str) -> tuple[list[Any], list[str]]:
    """The connection's IKE SAs with their CHILD_SAs' SPIs, and its dataplane SAs."""
    sas = pair.status(name, "sas")
    ike = sorted((s["ike_sa"], s["state"], sorted((c["spi_in"], c["spi_out"]) for c in s["children"]))
                 for s in sas["ike_sas"] if s["name"] == connection)
    return ike, sorted(f"{s['direction']}:{s['spi']}" for s in sas["sas"] if s["name"] == connection)


def both(pair: GatewayPair) -> dict[str, Any]:
    return {"hq": spis(pair, "hq", "branch1"), "branch": spis(pair, "branch", "hq")}


def reload_hq(hq: LabGateway, config: dict[str, Any] | str, expect: str) -> str:
    """Write HQ's file, send SIGHUP, wait for the log line ``expect``; the log after it."""
    start = len(hq.log_text())
    if isinstance(config, str):
        hq.config_path.write_text(config)
    else:
        write_config(hq.config_path, config, "lab gateway hq (reloaded)")
    os.kill(hq.proc.pid, signal.SIGHUP)  # `ip netns exec` execs: this is the daemon
    wait_text(hq.log_text, expect, 5.0, start, "the hq log", hq.log_tail)
    assert hq.proc.poll() is None, hq.log_tail()
    return hq.log_text()[start:]


def no_loss(topo: Topology, count: int = 5) -> None:
    sent, received = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=count, interval=0.05)
    assert received == sent == count


def test_sighup_adds_and_removes_a_connection_and_the_tunnel_keeps_its_spis(tmp_path: Path) -> None:
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike", algorithm="aes256gcm16") as pair:
        pair.wait_tunnel()
        no_loss(topo)
        hq = pair.gateways["hq"]
        before = both(pair)
        assert before["hq"][0] and len(before["hq"][1]) == 2 and before["hq"][0][0][2]
        original = yaml.safe_load(pair.config_path("hq").read_text())

        # 1. a second IKE connection, to a peer that does not answer, kept up
        added = yaml.safe_load(yaml.safe_dump(original))
        added["connections"]["branch2"] = {
            "remote": ABSENT_PEER, "local_subnets": [topo.hq.lan_subnet], "remote_subnets": ["10.3.0.0/24"],
            "auth": {"method": "psk", "psk": os.urandom(16).hex()}, "ike": {"start": "start"}}
        with ThreadPoolExecutor(1) as pool:  # pings across the reload: none may be lost
            pinging = pool.submit(no_loss, topo, 40)
            time.sleep(0.5)  # in the middle of the pings
            text = reload_hq(hq, added, r"config\.reloaded .*")
            pinging.result(timeout=15)
        assert "config.connection_added connection=branch2" in text
        assert "config.reloaded file=" in text and "added=1 removed=0 changed=0 unchanged=1" in text
        assert f"ike.initiate connection=branch2 peer={ABSENT_PEER}:500" in hq.log_text()
        status = gateway_cli("status", "-s", str(pair.socket("hq")))
        assert "branch1: up (ike, tunnel, aes256gcm16)" in status and "branch2: " in status, status
        assert both(pair) == before
        no_loss(topo)

        # 2. a broken file: an error, and everything runs on as it was
        text = reload_hq(hq, "connections: [this is not a config\n", r"config\.reload_failed .*")
        assert " ERROR config.reload_failed " in text and "the running config stays" in text
        assert sorted(pair.status("hq")["ike"]["connections"]) == ["branch1", "branch2"]
        assert both(pair) == before
        no_loss(topo)

        # 3. branch2 goes again: its SAs and route with it, branch1 untouched
        text = reload_hq(hq, original, r"config\.reloaded .*")
        assert "config.connection_removed connection=branch2" in text
        assert "added=0 removed=1 changed=0 unchanged=1" in text
        assert pair.status("hq")["ike"]["connections"] == ["branch1"]
        assert not [s for s in pair.status("hq", "sas")["ike_sas"] if s["name"] == "branch2"]
        routes = topo.ns(topo.hq.gw_ns, "ip", "route", "show", "10.3.0.0/24").stdout
        assert routes.strip() == ""
        assert both(pair) == before
        no_loss(topo)
        # the control socket reloads too (what `gateway reload` sends): nothing changed
        result = pair.status("hq", "reload")
        assert result["unchanged"] == ["branch1"] and not result["added"] and not result["changed"]
        text = gateway_cli("reload", "-s", str(pair.socket("hq")))
        assert "unchanged: branch1" in text and "added: -" in text and "changed: -" in text, text

        # 4. branch1 itself changes: negotiated afresh (the branch keeps it up), traffic again
        changed = yaml.safe_load(yaml.safe_dump(original))
        changed["connections"]["branch1"]["lifetimes"] = {"child": "30m"}
        text = reload_hq(hq, changed, r"config\.reloaded .*")
        assert "config.connection_changed connection=branch1 keys=lifetimes" in text
        def renewed(b: dict[str, Any]) -> bool:
            return all(len(b[n][1]) == 2 and not set(b[n][1]) & set(before[n][1]) for n in b) \
                and all(sa[1] == "established" for n in b for sa in b[n][0])

        after = wait_for(lambda: both(pair), renewed, timeout=10)
        assert renewed(after), (after, before)
        no_loss(topo)
    assert_lab_gone(PREFIX)
