"""Our LAC dials SoftEther VPN Server 5.01 (an independent L2TP/IPsec server) for real.

IKEv1 Main Mode with a PSK, UDP-encapsulated ESP transport mode (SoftEther forces it, and
HMAC-SHA1 in Phase 2), L2TP, PPP with MS-CHAPv2 or PAP, IPCP from SoftEther's SecureNAT
DHCP pool; then traffic: pings to SecureNAT (10.250.0.1) and to a LAN host behind the
server's tap bridge (10.250.0.2), and a TCP exchange with that host.

Then failures, and the LAC coming back by itself (short timers in the config): the server
ends the session (its administrator's SessionDisconnect: a CDN), and the server dies
(SIGKILL: nothing says goodbye) and comes back a while later with no memory of us. Each
prints its figures: detection, redial delays, recovery until pings pass again.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import subprocess
import threading
import time
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
    """Refused, reported, and dialed again and again, each time after a longer wait."""
    with softether_lab(f"{PREFIX}w-", tmp_path, settings()) as (topo, server):
        config = lac_config(topo, "mschapv2", "not-the-password")
        config["connections"]["lns"]["l2tp"].update(redial_min="1s", redial_max="4s")
        gw = LabGateway.start(topo.hq, tmp_path, "hq", config)
        try:
            failed = wait_for(lambda: re.search(r"ppp\.auth_failed .*", gw.log_text()), bool, timeout=20)
            assert failed is not None, f"{gw.log_tail(60)}\n{server.log_tail(40)}"
            assert "E=691" in failed.group(0) and "method=mschapv2" in failed.group(0), failed.group(0)
            redials = wait_event(gw, "l2tp.redial", 0.0, 20, count=4, where="(wrong password) ")
            dials = [t for t, _ in log_events(gw, "l2tp.dialing")]
            assert "ppp.up" not in gw.log_text()
            delays = [float(f["seconds"]) for _, f in redials]
            gaps = [b - a for a, b in itertools.pairwise(dials)]
            print(f"\nwrong password: redial delays {delays} s; dials {[round(g, 2) for g in gaps]} s apart")
            assert delays[:4] == [1.0, 2.0, 4.0, 4.0], delays  # doubling up to redial_max
            assert all("E=691" in f["reason"] for _, f in redials), redials
            for gap, delay in zip(gaps, delays, strict=False):  # a dial waits its delay, then fails fast
                assert delay <= gap < delay + 3, (gaps, delays)
        finally:
            gw.stop()


# -- failures and recovery --------------------------------------------------------------------

#: how long a dead peer may go unnoticed, and how long the LAC may take to be back
DETECT_WITHIN = 15.0
RECOVER_WITHIN = 15.0


def redial_config(topo: Topology) -> dict[str, Any]:
    """The LAC with short timers: redial after 1 s (doubling up to 8 s), L2TP HELLO after
    2 s of silence, DPD after 2 s of silence (dead after 5 s more), and IKE retransmissions
    every 0.5 s (x1.8, 2 tries: a Main Mode to nobody gives up after 3 s; IKE's own backoff
    between attempts, 5 s doubling, is not configurable)."""
    config = lac_config(topo, "mschapv2")
    conn = config["connections"]["lns"]
    conn["l2tp"].update(redial_min="1s", redial_max="8s", hello_interval="2s")
    conn["dpd"] = {"interval": "2s", "timeout": "5s", "action": "restart"}
    config["ike"] = {"retransmit_timeout": 0.5, "retransmit_tries": 2}
    return config


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def log_events(gw: LabGateway, what: str, since: float = 0.0) -> list[tuple[float, dict[str, str]]]:
    """(wall-clock time, fields) of each ``what`` line in the gateway's log at or after ``since``."""
    found = []
    for line in gw.log_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[2] != what:
            continue
        stamp = datetime.datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        when = stamp.timestamp()
        if when >= since - 0.002:  # the log has milliseconds
            fields = {k: json.loads(v) if v.startswith('"') else v
                      for k, v in _FIELD.findall(parts[3] if len(parts) > 3 else "")}
            found.append((when, fields))
    return found


def wait_event(gw: LabGateway, what: str, since: float, timeout: float, count: int = 1,
               where: str = "") -> list[tuple[float, dict[str, str]]]:
    events = wait_for(lambda: log_events(gw, what, since), lambda e: len(e) >= count, timeout=timeout,
                      interval=0.1)
    assert len(events) >= count, f"{count} {what} {where}within {timeout} s, got {events}\n{gw.log_tail(60)}"
    return events


class Prober:
    """One ping to ``dst`` every ``interval`` (after the last one was answered or ``wait``
    passed) in the background, each a new process (so it picks its source address afresh
    when the PPP address comes back)."""

    def __init__(self, namespace: str, dst: str, interval: float = 0.2, wait: float = 0.5) -> None:
        self.namespace, self.dst, self.interval, self.wait = namespace, dst, interval, wait
        self.results: list[tuple[float, bool]] = []  # (sent at, answered)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.time()
            cmd = ["ip", "netns", "exec", self.namespace, "ping", "-n", "-q", "-c", "1", "-W", str(self.wait),
                   self.dst]
            proc = subprocess.run(cmd, capture_output=True, check=False, timeout=20)
            self.results.append((sent, proc.returncode == 0))
            self._stop.wait(self.interval)

    def answered_after(self, since: float, timeout: float) -> float | None:
        """When the first ping sent after ``since`` that was answered went out."""
        def first() -> float | None:
            return next((t for t, ok in list(self.results) if ok and t >= since), None)
        return wait_for(first, lambda t: t is not None, timeout=timeout, interval=0.1)

    def recovered_after(self, since: float, timeout: float) -> float | None:
        """When the first answered ping after the outage that began after ``since`` went out
        (the first unanswered one sent after ``since`` marks the outage)."""
        def first() -> float | None:
            results = list(self.results)
            lost = next((t for t, ok in results if not ok and t >= since), None)
            return None if lost is None else next((t for t, ok in results if ok and t > lost), None)
        return wait_for(first, lambda t: t is not None, timeout=timeout, interval=0.1)

    def lost_after(self, since: float) -> int:
        return sum(1 for t, ok in list(self.results) if t >= since and not ok)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=25)


def test_server_disconnects_the_session_and_the_lac_redials(tmp_path: Path) -> None:
    with softether_lab(f"{PREFIX}d-", tmp_path, settings()) as (topo, server):
        gw = LabGateway.start(topo.hq, tmp_path, "hq", redial_config(topo))
        prober = None
        try:
            wait_event(gw, "ppp.up", 0.0, 20)
            assert ping(topo, topo.hq.gw_ns, "10.250.0.1"), gw.log_tail(30)
            (session,) = server.l2tp_sessions(USER)
            prober = Prober(topo.hq.gw_ns, "10.250.0.1")
            assert prober.answered_after(time.time(), 10) is not None
            cut = time.time()
            server.disconnect(session)  # SoftEther's administrator: SessionDisconnect

            (down_at, down), *_ = wait_event(gw, "l2tp.session_down", cut, 10, where="after the disconnect ")
            assert down["reason"] == "cdn" and "result 3" in down["detail"], down  # administrative
            (_, ppp_down), *_ = wait_event(gw, "ppp.down", cut, 5)
            assert "cdn" in ppp_down["reason"], ppp_down
            (redial_at, redial), *_ = wait_event(gw, "l2tp.redial", cut, 5)
            assert redial["seconds"] == "1.0" and "cdn" in redial["reason"], redial
            (dial_at, _), *_ = wait_event(gw, "l2tp.dialing", cut, 10)
            (up_at, up), *_ = wait_event(gw, "ppp.up", cut, 20, where="again ")
            assert up["address"].startswith("10.250.0."), up
            back = prober.recovered_after(cut, RECOVER_WITHIN + 10)
            assert back is not None, f"no ping answered after the disconnect\n{gw.log_tail(40)}"
            lost = prober.lost_after(cut)
            prober.stop()
            assert ping(topo, topo.hq.gw_ns, "10.250.0.1") and ping(topo, topo.hq.gw_ns, "10.250.0.2"), \
                gw.log_tail(30)
            (again,) = server.l2tp_sessions(USER)
            assert again != session
            print(f"\nSessionDisconnect {session}: CDN seen after {down_at - cut:.2f} s; "
                  f"redial in {redial['seconds']} s (dialed {dial_at - redial_at:.2f} s after the CDN); "
                  f"PPP up again after {up_at - cut:.2f} s ({up['address']}, as {again}); "
                  f"pings pass again after {back - cut:.2f} s ({lost} lost)")
            assert lost >= 1  # the outage was real
            assert 0.9 <= dial_at - redial_at <= 3.0, (redial_at, dial_at)  # redial_min, not sooner
            assert back - cut < RECOVER_WITHIN
        except BaseException:
            print(gw.log_tail(80))
            raise
        finally:
            if prober is not None:
                prober.stop()
            gw.stop()


def test_server_killed_then_back_the_lac_comes_back_by_itself(tmp_path: Path) -> None:
    with softether_lab(f"{PREFIX}k-", tmp_path, settings()) as (topo, server):
        gw = LabGateway.start(topo.hq, tmp_path, "hq", redial_config(topo))
        prober = None
        try:
            wait_event(gw, "ppp.up", 0.0, 20)
            assert ping(topo, topo.hq.gw_ns, "10.250.0.2"), gw.log_tail(30)
            prober = Prober(topo.hq.gw_ns, "10.250.0.1")
            assert prober.answered_after(time.time(), 10) is not None
            killed = time.time()
            server.stop()  # SIGKILL: no StopCCN, no Delete, nothing

            # Detection: DPD (2 s + 5 s) before L2TP (HELLO after 2 s, then 31 s of retransmissions).
            (dead_at, dead), *_ = wait_event(gw, "ike.peer_dead", killed, DETECT_WITHIN + 10,
                                             where="after the SIGKILL ")
            assert dead["action"] == "restart", dead
            (_, ppp_down), *_ = wait_event(gw, "ppp.down", killed, 5)
            assert ppp_down["reason"] == "IPsec SA down", ppp_down
            (_, redial), *_ = wait_event(gw, "l2tp.redial", killed, 5)
            assert redial == {"connection": "lns", "reason": "IPsec SA down", "when": "ipsec_up"}, redial
            # IKE tries again at once, then after its backoff; bring the server back after two
            # failed attempts, so that the third one finds it
            failed = wait_event(gw, "ike.negotiation_failed", dead_at, 25, count=2, where="(server down) ")
            restart = time.time()
            server.start()
            ready = time.time()
            (up_at, up), *_ = wait_event(gw, "ppp.up", killed, 60, where="after the server came back ")
            back = prober.recovered_after(killed, RECOVER_WITHIN + 30)
            assert back is not None, f"no ping answered after the server came back\n{gw.log_tail(40)}"
            lost = prober.lost_after(killed)
            prober.stop()
            assert ping(topo, topo.hq.gw_ns, "10.250.0.1") and ping(topo, topo.hq.gw_ns, "10.250.0.2"), \
                gw.log_tail(30)

            attempts = [t for t, _ in log_events(gw, "ike.initiate", dead_at)]
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            redials = log_events(gw, "l2tp.redial", killed)
            l2tp_first = [t for t, f in log_events(gw, "l2tp.tunnel_down", killed)
                          if f["reason"] == "timeout" and t <= dead_at]
            print(f"\nSIGKILL: detected by DPD after {dead_at - killed:.2f} s "
                  f"(L2TP timed out first: {bool(l2tp_first)}); L2TP redials: "
                  f"{[f.get('seconds') or 'when ' + f['when'] for _, f in redials]}; "
                  f"IKE attempts {[round(t - dead_at, 2) for t in attempts]} s after detection, "
                  f"gaps {[round(g, 2) for g in gaps]} s ({len(failed)} failed before the restart); "
                  f"server started again {restart - killed:.2f} s after the kill, "
                  f"ready in {ready - restart:.2f} s; "
                  f"PPP up {up_at - ready:.2f} s after that ({up['address']}); pings pass again "
                  f"{back - ready:.2f} s after the server was ready, {back - killed:.2f} s after the kill "
                  f"({lost} lost)")
            assert dead_at - killed < DETECT_WITHIN
            assert len(gaps) >= 2 and gaps[1] > gaps[0] * 1.5, gaps  # the IKE backoff grows
            assert back - ready < RECOVER_WITHIN
        except BaseException:
            print(gw.log_tail(80))
            raise
        finally:
            if prober is not None:
                prober.stop()
            gw.stop()
