"""Demand-dial between two real gateways: the branch's tunnel to HQ comes up when a LAN
host sends, the packet that dialed arrives, the tunnel goes down when idle and comes back
for the next packet; nothing crosses the internet in clear meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from e2e_support import (
    NETNS,
    PROTO_ICMP,
    Capture,
    assert_lab_gone,
    diagnostics,
    gateway_cli,
    lab,
    lab_prefix,
    wait_for,
)

from appliance.lab.gateways import GatewayPair

pytestmark = NETNS

PREFIX = lab_prefix("dd")
IDLE = 3


def ike_sas(pair: GatewayPair, site: str) -> list[dict]:  # type: ignore[type-arg]
    return [sa for sa in pair.status(site, "sas")["ike_sas"] if sa["state"] != "deleted"]


def child_spis(pair: GatewayPair, site: str) -> set[str]:
    return {sa["spi"] for sa in pair.status(site, "sas")["sas"]}


def demand_row(pair: GatewayPair) -> dict:  # type: ignore[type-arg]
    [row] = pair.status("branch")["demand"]
    return row


def test_the_first_packet_dials_idle_hangs_up_and_the_next_dials_again(tmp_path: Path) -> None:
    branch_conn = {"ike": {"start": "none"}, "demand_dial": {"idle_timeout": IDLE, "queue": 16}}
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike", algorithm="aes128gcm16",
                                          branch_connection=branch_conn) as pair:
        time.sleep(1.0)
        assert ike_sas(pair, "branch") == [] and ike_sas(pair, "hq") == [], diagnostics(pair)
        assert demand_row(pair)["state"] == "idle"
        with Capture(topo, topo.inet_ns, "to-branch", tmp_path / "dial.pcap") as cap:
            # one echo request, so the reply proves that the packet which dialed got through
            started = time.monotonic()
            sent, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=1, wait=5)
            first_rtt = time.monotonic() - started
        assert (sent, received) == (1, 1), diagnostics(pair)
        clear_icmp = [p for p in cap.packets() if p.proto == PROTO_ICMP]
        assert clear_icmp == [], [str(p) for p in clear_icmp]
        log = pair.gateways["branch"].log_text()
        assert "demand.dial connection=hq" in log and "delivered=1" in log, log
        row = demand_row(pair)
        assert row["state"] == "up" and row["connects"] == 1 and row["dials"] == 1, row
        first_spis = child_spis(pair, "branch")
        assert len(first_spis) == 2
        status = gateway_cli("status", "-s", str(pair.socket("branch")))
        assert "hq: up" in status and "demand-dial: up, idle" in status, status

        # idle: both ends lose every SA, the trap stays
        gone = wait_for(lambda: (ike_sas(pair, "branch"), ike_sas(pair, "hq")),
                        lambda v: v == ([], []), timeout=IDLE + 6)
        assert gone == ([], []), diagnostics(pair)
        assert child_spis(pair, "branch") == set() and child_spis(pair, "hq") == set()
        row = demand_row(pair)
        assert row["state"] == "idle" and row["idle_disconnects"] == 1, row
        assert "demand.idle_hangup connection=hq" in pair.gateways["branch"].log_text()
        status = gateway_cli("status", "-s", str(pair.socket("branch")))
        assert "demand-dial: on hook; 1 of 1 dial(s) up, 0 failed, 1 idle hang-up(s)" in status, status

        # the next packet dials again: new SAs
        sent, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=1, wait=5)
        assert (sent, received) == (1, 1), diagnostics(pair)
        assert child_spis(pair, "branch").isdisjoint(first_spis)
        row = demand_row(pair)
        assert row["connects"] == 2 and row["failures"] == 0, row
        metrics = topo.ns(topo.branch.gw_ns, "curl", "-s", "http://127.0.0.1:9436/metrics").stdout
        assert 'gateway_demand_dial_connects_total{connection="hq"} 2.0' in metrics, metrics
        assert 'gateway_demand_dial_idle_disconnects_total{connection="hq"} 1.0' in metrics
        assert 'gateway_demand_dial_state{connection="hq",state="up"} 1.0' in metrics
        print(f"first ping through a dial: {first_rtt * 1000:.0f} ms")
    assert_lab_gone(PREFIX)


def test_a_failed_dial_drops_what_waited_and_backs_off(tmp_path: Path) -> None:
    """A wrong PSK: the dial fails, the held packet is dropped and counted, and traffic
    during the backoff does not dial again before the wait is over."""
    branch_conn = {"ike": {"start": "none"}, "auth": {"method": "psk", "psk": "not-the-key-hq-has"},
                   "demand_dial": {"idle_timeout": IDLE, "redial_min": 4, "redial_max": 8}}
    with lab(PREFIX) as topo, GatewayPair(topo, tmp_path, keying="ike",
                                          branch_connection=branch_conn) as pair:
        assert topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=1, wait=2) == (1, 0)
        row = wait_for(lambda: demand_row(pair), lambda r: r["state"] == "backoff", timeout=10)
        assert row["state"] == "backoff" and row["failures"] == 1 and row["dials"] == 1, diagnostics(pair)
        assert pair.status("branch")["drops"].get("hold_expired") == 1
        log = pair.gateways["branch"].log_text()
        assert "demand.dial_failed connection=hq" in log and "retry_in=4" in log, log
        topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=1, wait=1)  # during the backoff
        assert demand_row(pair)["dials"] == 1
        # when the wait is over, the traffic that came meanwhile dials again (and fails again)
        row = wait_for(lambda: demand_row(pair), lambda r: r["failures"] == 2, timeout=12)
        assert row["dials"] == 2 and row["failures"] == 2, diagnostics(pair)
        assert "retry_in=8" in pair.gateways["branch"].log_text()
        assert ike_sas(pair, "hq") == []
    assert_lab_gone(PREFIX)
