"""Our LAC dials SoftEther VPN Server 5.01 (an independent L2TP/IPsec server) for real.

IKEv1 Main Mode with a PSK, UDP-encapsulated ESP transport mode (SoftEther forces it, and
HMAC-SHA1 in Phase 2), L2TP, PPP with MS-CHAPv2 or PAP, IPCP from SoftEther's SecureNAT
DHCP pool; then traffic: pings to SecureNAT (10.250.0.1) and to a LAN host behind the
server's tap bridge (10.250.0.2), and a TCP exchange with that host.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, lab_prefix, tcp_exchange, wait_for
from softether_support import SOFTETHER, softether_lab

from appliance.lab.gateways import LabGateway
from appliance.lab.softether import SoftetherSettings
from appliance.lab.topology import Topology, run

pytestmark = [*NETNS, *SOFTETHER]

PREFIX = lab_prefix("e2l2")
PSK = "l2tp-interop-psk-7c1e"
USER, PASSWORD = "branch1", "branch1-password"


def lac_config(topo: Topology, method: str, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "gateway": {"name": "hq", "public_interface": "wan0", "public_address": topo.hq.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": "debug"},
        "connections": {"lns": {
            "remote": topo.branch.gw_public, "auth": {"method": "psk", "psk": PSK},
            "ike": {"start": "start"},
            "l2tp": {"role": "lac", "user": USER, "password": password, "auth": [method],
                     "remote_subnets": ["10.250.0.0/24"]},
        }},
    }


def settings() -> SoftetherSettings:
    return SoftetherSettings(psk=PSK, users=[(USER, PASSWORD)], bridge=True)


def ping(topo: Topology, namespace: str, address: str) -> bool:
    proc = run(["ip", "netns", "exec", namespace, "ping", "-c", "3", "-i", "0.2", "-W", "2", address],
               check=False)
    return proc.returncode == 0


@pytest.mark.parametrize("method", ["mschapv2", "pap"])
def test_lac_dials_softether(tmp_path: Path, method: str) -> None:
    with softether_lab(f"{PREFIX}{method[0]}-", tmp_path, settings()) as (topo, server):
        gw = LabGateway.start(topo.hq, tmp_path, "hq", lac_config(topo, method))
        try:
            up = wait_for(lambda: re.search(r"ppp\.up .*", gw.log_text()), bool, timeout=20)
            assert up is not None, f"{gw.log_tail(60)}\n{server.log_tail(40)}"
            line = up.group(0)
            assert f"method={method}" in line and "address=10.250.0." in line, line
            sessions = gw.request("sessions")["sessions"]
            assert len(sessions) == 1 and sessions[0]["state"] == "up", sessions
            assert ping(topo, topo.hq.gw_ns, "10.250.0.1"), gw.log_tail(30)  # SecureNAT
            assert ping(topo, topo.hq.gw_ns, "10.250.0.2"), gw.log_tail(30)  # the LAN host
            assert server.lan_namespace is not None
            reply = tcp_exchange(topo, server.lan_namespace, "10.250.0.2", topo.hq.gw_ns, "over PPP")
            assert "over PPP" in reply, reply
            after = gw.request("sessions")["sessions"][0]
            assert after["packets_in"] >= 6 and after["packets_out"] >= 6, after
        except BaseException:
            print(gw.log_tail(80))
            raise
        finally:
            gw.stop()


def test_wrong_password_refused_with_e691(tmp_path: Path) -> None:
    with softether_lab(f"{PREFIX}w-", tmp_path, settings()) as (topo, server):
        gw = LabGateway.start(topo.hq, tmp_path, "hq", lac_config(topo, "mschapv2", "not-the-password"))
        try:
            failed = wait_for(lambda: re.search(r"ppp\.auth_failed .*", gw.log_text()), bool, timeout=20)
            assert failed is not None, f"{gw.log_tail(60)}\n{server.log_tail(40)}"
            assert "E=691" in failed.group(0) and "method=mschapv2" in failed.group(0), failed.group(0)
            assert "ppp.up" not in gw.log_text()
            assert "l2tp.redial" in wait_for(gw.log_text, lambda t: "l2tp.redial" in t, timeout=5)
        finally:
            gw.stop()
