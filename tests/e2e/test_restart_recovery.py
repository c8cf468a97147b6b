"""Faults: a gateway process killed (SIGKILL, no DELETE sent) and started again.

The peer that restarts as initiator says INITIAL_CONTACT, so the other side drops the
stale SAs at once (RFC 7296 2.4); a restarted responder is found out by the initiator's
DPD, which then starts afresh. Both recoveries are measured from the moment the restarted
gateway is ready to the first ping answered through the tunnel, and bounded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from e2e_support import NETNS, assert_lab_gone, diagnostics, lab, lab_prefix, wait_for

from appliance.lab.gateways import GatewayPair, LabGateway
from appliance.lab.topology import Topology

pytestmark = NETNS

PREFIX = lab_prefix("rr")
DPD = {"interval": 2, "timeout": 4, "action": "restart"}


def kill_and_restart(pair: GatewayPair, site: str) -> float:
    """SIGKILL the gateway of ``site`` and start it again; when it is ready (monotonic)."""
    old = pair.gateways[site]
    os.killpg(old.proc.pid, signal.SIGKILL)
    old.proc.wait(timeout=5)
    gw = LabGateway.launch(old.site, old.config_path, old.socket, old.log_path.with_suffix(".2.log"))
    gw.wait_ready(time.monotonic() + 15)
    pair.gateways[site] = gw
    return time.monotonic()


def first_answer(topo: Topology, since: float, timeout: float) -> float:
    """Seconds from ``since`` to the first answered ping (one every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=1, wait=0.2)[1]:
            return time.monotonic() - since
    raise AssertionError(f"no ping answered within {timeout} s")


def established(pair: GatewayPair, site: str) -> list[dict]:  # type: ignore[type-arg]
    return [sa for sa in pair.status(site, "sas")["ike_sas"] if sa["state"] == "established"]


def test_a_restarted_initiator_recovers_at_once_by_initial_contact(tmp_path: Path) -> None:
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike",
                                          branch_connection={"dpd": DPD}) as pair:
        pair.wait_tunnel()
        assert topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=2)[1] == 2
        [old] = established(pair, "hq")
        ready = kill_and_restart(pair, "branch")
        seconds = first_answer(topo, ready, timeout=10)
        assert seconds < 3.0, diagnostics(pair)
        # the stale IKE SA is gone at HQ (INITIAL_CONTACT), not left to time out
        now = wait_for(lambda: established(pair, "hq"),
                       lambda s: len(s) == 1 and s[0]["ike_sa"] != old["ike_sa"], timeout=5)
        assert len(now) == 1 and now[0]["ike_sa"] != old["ike_sa"], now
        assert "initial_contact" in pair.log_path("hq").read_text().lower()
        print(f"initiator restart: traffic again {seconds:.2f} s after it was ready")
    assert_lab_gone(PREFIX)


def test_a_restarted_responder_is_found_by_dpd_and_the_tunnel_comes_back(tmp_path: Path) -> None:
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike",
                                          branch_connection={"dpd": DPD}) as pair:
        pair.wait_tunnel()
        assert topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=2)[1] == 2
        ready = kill_and_restart(pair, "hq")
        # DPD: a probe every 2 s while nothing comes in, given up after 4 s; then the
        # branch initiates again (dpd action restart)
        seconds = first_answer(topo, ready, timeout=20)
        assert seconds < 12.0, diagnostics(pair)
        log = pair.log_path("branch").read_text()
        assert "ike.peer_dead" in log and "action=restart" in log, log
        assert len(established(pair, "branch")) == 1
        print(f"responder restart: traffic again {seconds:.2f} s after it was ready")
    assert_lab_gone(PREFIX)
