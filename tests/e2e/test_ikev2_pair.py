"""Our gateway against itself over IKEv2 (what the lab demo runs): both roles in one lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import NETNS, assert_lab_gone, gateway_cli, lab, lab_prefix

from appliance.lab.gateways import GatewayPair

pytestmark = NETNS

PREFIX = lab_prefix("ikp")


@pytest.mark.parametrize("encapsulation", ["none", "udp"])
def test_two_gateways_negotiate_and_carry_traffic(tmp_path: Path, encapsulation: str) -> None:
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike", algorithm="aes256-sha256",
                                          encapsulation=encapsulation) as pair:
        pair.wait_tunnel()
        sent, received = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=5)
        assert received == sent
        status = gateway_cli("status", "-s", str(pair.socket("hq")))
        assert "branch1: up (ike, tunnel, aes256-sha256)" in status, status
        [ike] = pair.status("branch", "sas")["ike_sas"]
        assert ike["initiator"] and ike["encap"] == (encapsulation == "udp")
        sas = pair.status("hq", "sas")["sas"]
        assert {sa["encap"] is not None for sa in sas} == {encapsulation == "udp"}
    assert_lab_gone(PREFIX)
