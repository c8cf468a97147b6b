"""Faults: the branch sits behind a NAT that forgets its mapping (a home router rebooted, a
carrier NAT timed out): the next packet leaves from a new port, and HQ follows it.

HQ accepts the branch as %any behind the masquerading internet router. After the tunnel is
up, the router's connection tracking is flushed; the branch's next ESP-in-UDP packet gets a
new source port. HQ sees authenticated ESP from there and moves the tunnel and its IKE SA
to it at once, so its replies reach the branch through the new mapping (without waiting for
the branch's next IKE message)."""

from __future__ import annotations

from pathlib import Path

from e2e_support import NETNS, assert_lab_gone, diagnostics, lab, lab_prefix

from appliance.lab.gateways import GatewayPair

pytestmark = NETNS

PREFIX = lab_prefix("nr")


def ike_remote(pair: GatewayPair) -> str:
    [sa] = [s for s in pair.status("hq", "sas")["ike_sas"] if s["state"] == "established"]
    return str(sa["remote"])


def test_hq_follows_the_branch_to_its_new_nat_mapping(tmp_path: Path) -> None:
    with lab(PREFIX) as topo:
        topo.enable_nat()
        pair = GatewayPair(topo, tmp_path, keying="ike")
        hq, br = topo.hq, topo.branch
        pair.hq_extra = {"connections": {"branch1": {
            "remote": "%any", "local_subnets": [hq.lan_subnet], "remote_subnets": [br.lan_subnet],
            "auth": {"method": "psk", "psk": pair.psk, "remote_id": br.gw_public},
            "proposals": {"esp": [pair.algorithm]}, "dpd": {"interval": None}}}}
        pair.branch_connection = {"dpd": {"interval": None}}  # no IKE message to move it for us
        with pair:
            pair.wait_tunnel()
            assert topo.ping(br.lan_ns, hq.lan_host, count=2) == (2, 2), diagnostics(pair)
            before = ike_remote(pair)
            assert before.startswith(topo.nat_address + ":"), before
            topo.flush_conntrack()  # the NAT forgets: the next packet gets a new port
            sent, received = topo.ping(br.lan_ns, hq.lan_host, count=5)
            assert received == sent, diagnostics(pair)
            after = ike_remote(pair)
            assert after != before and after.startswith(topo.nat_address + ":"), (before, after)
            log = pair.log_path("hq").read_text()
            assert f"peer={after} by=esp" in log and "tunnel.peer_moved tunnel=branch1" in log, log
            assert "ike.peer_moved" in log and "by=esp" in log
            # HQ's own traffic goes to the new mapping too
            assert topo.ping(hq.lan_ns, br.lan_host, count=3) == (3, 3), diagnostics(pair)
    assert_lab_gone(PREFIX)
