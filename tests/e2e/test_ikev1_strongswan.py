"""IKEv1 interop: our gateway against strongSwan 5.9.8 (charon, IKEv1, kernel-libipsec).

kernel-libipsec does ESP tunnel mode only, UDP-encapsulated (it fakes NAT-D), so these
tests are tunnel mode; transport mode is proven against SoftEther with L2TP.  Our gateway
runs in the hq gateway namespace, one charon in the branch gateway namespace; LAN hosts
behind both ping each other through the tunnel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e_support import (
    NETNS,
    STRONGSWAN,
    assert_lab_gone,
    lab,
    lab_prefix,
    running_peers,
    strongswan_peer,
    wait_for,
)

from appliance.lab.gateways import LabGateway
from appliance.lab.strongswan import PSK, PeerSettings, StrongswanPeer
from appliance.lab.topology import Topology

pytestmark = [*NETNS, *STRONGSWAN]

PREFIX = lab_prefix("ik1")
V1 = PeerSettings(version=1, ike_proposals="aes256-sha256-modp2048", esp_proposals="aes128-sha1")


def our_config(topology: Topology, *, start: bool = False, psk: str = PSK,
               conn_extra: dict[str, Any] | None = None, remote: str | None = None) -> dict[str, Any]:
    hq, br = topology.hq, topology.branch
    conn: dict[str, Any] = {
        "remote": remote or br.gw_public, "local_subnets": [hq.lan_subnet], "remote_subnets": [br.lan_subnet],
        "auth": {"method": "psk", "psk": psk},
        "ike": {"version": 1, "start": "start" if start else "none"},
    }
    conn.update(conn_extra or {})
    return {
        "gateway": {"name": "hq", "public_interface": "wan0", "public_address": hq.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": "debug"},
        "connections": {"branch": conn},
    }


@contextmanager
def interop(tmp_path: Path, settings: PeerSettings, config_of: Any, *,
            nat: bool = False) -> Iterator[tuple[Topology, StrongswanPeer, LabGateway]]:
    with lab(PREFIX) as topology:
        if nat:
            topology.enable_nat()
        peer = strongswan_peer(topology, "branch", tmp_path, settings)
        with running_peers(peer):
            gw = LabGateway.start(topology.hq, tmp_path, "hq", config_of(topology))
            try:
                yield topology, peer, gw
            except BaseException:
                print(gw.log_tail(80))
                print(peer.log_tail(80))
                raise
            finally:
                gw.stop()
    assert_lab_gone(PREFIX)


def ping_ok(topology: Topology, count: int = 3) -> None:
    for _ in range(5):
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=count)
        if received == sent:
            return
        time.sleep(0.5)
    raise AssertionError(f"ping through the tunnel: {received}/{sent}")


def established(gw: LabGateway) -> list[dict[str, Any]]:
    return [s for s in gw.request("sas")["ike_sas"] if s["state"] == "established" and s["children"]]


def wait_established(gw: LabGateway, timeout: float = 15.0) -> dict[str, Any]:
    sas = wait_for(lambda: established(gw), bool, timeout=timeout)
    assert sas, f"no established ISAKMP SA with IPsec SAs:\n{gw.log_tail(40)}"
    return sas[0]


def test_strongswan_initiates_main_mode_psk(tmp_path: Path) -> None:
    with interop(tmp_path, V1, our_config) as (topology, peer, gw):
        peer.initiate()
        sa = wait_established(gw)
        assert sa["version"] == 1 and not sa["initiator"] and sa["auth"] == "psk"
        assert sa["nat_remote"], "kernel-libipsec fakes NAT-D: we must see a NAT"
        assert sa["children"][0]["local_ts"] == ["10.1.0.0/24"]
        ping_ok(topology)


def test_we_initiate_main_mode_psk(tmp_path: Path) -> None:
    with interop(tmp_path, V1, lambda t: our_config(t, start=True)) as (topology, peer, gw):
        sa = wait_established(gw)
        assert sa["version"] == 1 and sa["initiator"]
        ping_ok(topology)
        assert peer.child_sa() is not None
