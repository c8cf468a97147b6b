"""End to end: IKE floods against HQ while an established tunnel carries a ping.

A bounded flood generator (`appliance.lab.flood`) in the internet namespace sends
IKE_SA_INIT requests (or IKEv1 Main Mode first messages) from 5000 spoofed addresses,
which the internet router routes into a blackhole (our answers vanish, as they would on
the internet), plus a burst from one address, at HQ: 2000 packets/s for 10 s.  Meanwhile
HQ's LAN pings the branch's through their IKEv2 tunnel every 20 ms, and a new peer (our
gateway in a namespace of its own) connects to HQ.

Checked, and printed as the figures of the run: the flood rate HQ held, its half-open SAs
at their peak, its memory (VmRSS) at its peak, pings lost on the tunnel (0), the new
peer's setup time, and the log lines the flood caused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, REPO, assert_lab_gone, diagnostics, lab, lab_prefix, wait_for

from appliance.lab.gateways import GatewayPair, LabGateway
from appliance.lab.topology import Site, Topology
from gateway.control.protocol import ControlError

pytestmark = NETNS

PREFIX = lab_prefix("fld")
SPOOFED = "100.64.0.0/10"  # blackholed on the internet router
FLOOD_SOURCES, FLOOD_ADDRESSES = "100.64.0.0/18", 5000
FLOOD_RATE, FLOOD_SECONDS = 2000, 10.0
BURST_SOURCE, BURST_RATE, BURST_SECONDS = "100.127.255.0/30", 2000, 1.0  # one address
NEW_PUBLIC, NEW_INET = "198.18.0.1", "198.18.0.254"
NEW_ID = "newpeer.example.net"
PING_INTERVAL = 0.02
RSS_GROWTH_LIMIT_KIB = 48 * 1024  # what the flood may add to HQ's resident memory
LOG_LINES_LIMIT = 80  # lines HQ may log during the flood (the rate limit allows ~30 per 10 s)


# -- helpers --------------------------------------------------------------------------------------


def vm_kib(pid: int, key: str) -> int:
    """VmRSS or VmHWM of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for pid {pid}")


def socket_drops(topology: Topology, namespace: str, table: str, port: int) -> int:
    """Packets the kernel dropped at full sockets of ``table`` ("udp": bound to ``port``,
    "raw": of IP protocol ``port``) in a namespace."""
    text = topology.ns(namespace, "cat", f"/proc/net/{table}").stdout
    suffix = f":{port:04X}"
    return sum(int(line.split()[-1]) for line in text.splitlines()[1:] if line.split()[1].endswith(suffix))


def start_flood(topology: Topology, kind: str, target: str, *, sources: str, addresses: int,
                rate: float, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", topology.inet_ns, sys.executable, "-m", "appliance.lab.flood", kind,
         "--target", target, "--sources", sources, "--addresses", str(addresses), "--rate", str(rate),
         "--seconds", str(seconds)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def flood_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, f"flood failed ({proc.returncode}): {err}"
    return dict(json.loads(out))


class TimedPing:
    """Pings at ``interval`` in the background; which ones got no answer, and when they left."""

    def __init__(self, topology: Topology, namespace: str, dst: str, *, count: int, interval: float) -> None:
        self.interval = interval
        self.timeout = count * interval + 15
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
             dst], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[int, list[float]]:
        """(pings sent, seconds after the start at which each unanswered one left)."""
        out, err = self.proc.communicate(timeout=self.timeout)
        summary = re.search(r"(\d+) packets transmitted", out)
        assert summary, f"ping gave no summary: {out[-500:]} {err}"
        sent = int(summary.group(1))
        answered = {int(n) for n in re.findall(r"icmp_seq=(\d+) ttl=", out)}
        lost = [seq for seq in range(1, sent + 1) if seq not in answered]
        return sent, [round((seq - 1) * self.interval, 2) for seq in lost]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@dataclass
class Sampler:
    """HQ's half-open SAs (of one IKE version) and resident memory, every 0.2 s, in a thread."""

    gw: LabGateway
    pid: int
    version: str
    half_open: list[int] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    misses: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.rss_kib.append(vm_kib(self.pid, "VmRSS"))
            try:
                status = self.gw.request("status")
            except ControlError:
                self.misses += 1
                continue
            self.half_open.append(status["ike"]["half_open"][self.version])

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def new_peer_config(version: int, psk: str) -> dict[str, Any]:
    return {
        "gateway": {"name": "new", "public_interface": "wan0", "public_address": NEW_PUBLIC},
        "logging": {"level": "info"},
        "connections": {"hq": {
            "remote": "192.0.2.1", "mode": "transport", "ike": {"start": "start", "version": version},
            "auth": {"method": "psk", "psk": psk, "id": NEW_ID},
        }},
    }


def established(gw: LabGateway) -> bool:
    try:
        return any(sa["state"] == "established" and sa["children"] for sa in gw.request("sas")["ike_sas"])
    except ControlError:
        return False


def log_lines(gw: LabGateway) -> list[str]:
    return gw.log_text().splitlines()


@dataclass
class FloodRun:
    """What one flood run measured (the figures of the issue's closing note)."""

    kind: str
    sent: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    handled: int = 0
    udp_dropped: int = 0
    half_open_peak: int = 0
    rss_base_kib: int = 0
    rss_peak_kib: int = 0
    pings_sent: int = 0
    pings_lost: int = 0
    new_peer_setup_s: float | None = None
    new_peer_cookie: bool = False
    log_lines: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: seconds after the ping started: lost pings left, the flood, burst and new peer started
    lost_at: list[float] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)
    dataplane_drops: dict[str, dict[str, int]] = field(default_factory=dict)

    def report(self) -> str:
        return (f"[{self.kind} flood] sent {self.sent} in {self.seconds:.1f} s ({self.rate:.0f}/s); "
                f"HQ handled {self.handled} ({self.handled / max(self.seconds, 1e-9):.0f}/s), kernel dropped "
                f"{self.udp_dropped} at UDP 500; half-open peak {self.half_open_peak}; RSS "
                f"{self.rss_base_kib / 1024:.1f} -> peak {self.rss_peak_kib / 1024:.1f} MiB; pings lost "
                f"{self.pings_lost} of {self.pings_sent}; new peer up in {self.new_peer_setup_s} s "
                f"(cookie round trip: {self.new_peer_cookie}); {self.log_lines} log lines; counters "
                f"{self.dropped}" + (f"; lost pings left at {self.lost_at} s, events {self.events}, "
                                     f"dataplane drops {self.dataplane_drops}" if self.lost_at else ""))


def run_flood(topo: Topology, pair: GatewayPair, new: Site, tmp_path: Path, *, kind: str, version: str,
              new_peer: dict[str, Any]) -> FloodRun:
    """The flood with the ping running, the new peer connecting during it; the figures."""
    hq = pair.gateways["hq"]
    sent, received = topo.ping(topo.hq.lan_ns, topo.branch.lan_host, count=3)
    assert received == sent, f"no ping before the flood\n{diagnostics(pair)}"
    pid = int(pair.status("hq")["pid"])
    result = FloodRun(kind, rss_base_kib=vm_kib(pid, "VmRSS"))
    before = dict(pair.status("hq")["ike"]["dropped"])
    drops_before = {site: dict(pair.status(site)["drops"]) for site in ("hq", "branch")}
    esp_before = {site.name: socket_drops(topo, site.gw_ns, "raw", 50) for site in (topo.hq, topo.branch)}
    udp_before = socket_drops(topo, topo.hq.gw_ns, "udp", 500)
    lines_before = len(log_lines(hq))
    count = int((FLOOD_SECONDS + 3) / PING_INTERVAL)
    pings = TimedPing(topo, topo.hq.lan_ns, topo.branch.lan_host, count=count, interval=PING_INTERVAL)

    def mark(what: str) -> None:
        result.events[what] = round(time.monotonic() - pings.started, 2)

    new_gw: LabGateway | None = None
    try:
        with Sampler(hq, pid, version).running() as sampler:
            time.sleep(0.5)
            mark("flood")
            flood = start_flood(topo, kind, topo.hq.gw_public, sources=FLOOD_SOURCES,
                                addresses=FLOOD_ADDRESSES, rate=FLOOD_RATE, seconds=FLOOD_SECONDS)
            time.sleep(2.0)
            mark("burst")
            burst = start_flood(topo, kind, topo.hq.gw_public, sources=BURST_SOURCE, addresses=1,
                                rate=BURST_RATE, seconds=BURST_SECONDS)
            time.sleep(1.0)
            started = time.monotonic()  # the new peer starts in the thick of it
            mark("new_peer")
            new_gw = LabGateway.start(new, tmp_path, "new", new_peer)
            up = wait_for(lambda: established(new_gw), bool, timeout=20, interval=0.1)
            if up:
                result.new_peer_setup_s = round(time.monotonic() - started, 2)
                mark("new_peer_up")
            flooded, bursted = flood_result(flood), flood_result(burst)
        time.sleep(0.5)  # what HQ still had queued
        result.sent = flooded["sent"] + bursted["sent"]
        result.seconds = flooded["seconds"]
        result.rate = result.sent / max(result.seconds, 1e-9)
        result.pings_sent, result.lost_at = pings.result()
        result.pings_lost = len(result.lost_at)
        for site, old in drops_before.items():
            new_drops = pair.status(site)["drops"]
            result.dataplane_drops[site] = {k: v - old.get(k, 0) for k, v in new_drops.items()
                                            if v != old.get(k, 0)}
        for site in (topo.hq, topo.branch):  # the kernel's, at the raw ESP socket
            result.dataplane_drops[site.name]["esp_socket_full"] = (
                socket_drops(topo, site.gw_ns, "raw", 50) - esp_before[site.name])
        result.half_open_peak = max(sampler.half_open, default=0)
        result.rss_peak_kib = max([*sampler.rss_kib, vm_kib(pid, "VmRSS")])
        after = dict(pair.status("hq")["ike"]["dropped"])
        result.dropped = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        # what HQ answered or refused (counted), and what it holds (half-open now)
        result.handled = sum(v for k, v in result.dropped.items()
                             if k.startswith("ikev1_") == (version == "v1"))
        result.handled += int(pair.status("hq")["ike"]["half_open"][version])
        result.udp_dropped = socket_drops(topo, topo.hq.gw_ns, "udp", 500) - udp_before
        result.log_lines = len(log_lines(hq)) - lines_before
        result.new_peer_cookie = "ike.cookie_requested" in new_gw.log_text()
        assert sampler.misses < len(sampler.half_open), f"HQ's control socket missed {sampler.misses}"
        print(result.report())
        assert up, f"the new peer did not connect during the flood\n{new_gw.log_tail(40)}\n{hq.log_tail(40)}"
        # the new peer's SA carries traffic (transport mode: its own packets to HQ)
        sent, received = topo.ping(new.gw_ns, topo.hq.gw_public, count=3)
        assert received == sent, f"no ping over the new peer's SA\n{new_gw.log_tail(30)}"
        return result
    finally:
        pings.stop()
        if new_gw is not None:
            new_gw.stop()


def check_common(result: FloodRun, hq_log_tail: str) -> None:
    assert result.sent >= 0.8 * FLOOD_RATE * FLOOD_SECONDS, f"the flood fell short: {result.report()}"
    assert result.pings_lost == 0, f"pings lost on the established tunnel: {result.report()}"
    growth = result.rss_peak_kib - result.rss_base_kib
    assert growth < RSS_GROWTH_LIMIT_KIB, f"HQ grew by {growth} KiB: {result.report()}"
    assert result.log_lines < LOG_LINES_LIMIT, f"{result.log_lines} lines: {result.report()}\n{hq_log_tail}"


@pytest.fixture
def topo() -> Iterator[tuple[Topology, Site]]:
    with lab(PREFIX) as topology:
        topology.blackhole(SPOOFED)
        new = topology.add_peer_site("new", NEW_PUBLIC, NEW_INET)
        yield topology, new
    assert_lab_gone(PREFIX)


# -- tests ----------------------------------------------------------------------------------------


def test_ikev2_flood_cookies_bound_half_open_and_the_tunnel_carries_on(
        topo: tuple[Topology, Site], tmp_path: Path) -> None:
    topology, new = topo
    psk = os.urandom(16).hex()
    # HQ also answers any address (road warriors): spoofed requests match that connection, so
    # the first ones make half-open SAs (without it they are refused statelessly: no_config)
    road = {"remote": "%any", "mode": "transport",
            "auth": {"method": "psk", "psk": os.urandom(16).hex(), "remote_id": "road.example.net"}}
    hq_extra = {"ike": {"cookie_threshold": 10},
                "connections": {"road": road,
                                "newpeer": {"remote": NEW_PUBLIC, "mode": "transport",
                                            "auth": {"method": "psk", "psk": psk, "remote_id": NEW_ID}}}}
    with GatewayPair(topology, tmp_path, keying="ike", hq_extra=hq_extra) as pair:
        pair.wait_tunnel()
        result = run_flood(topology, pair, new, tmp_path, kind="ikev2", version="v2",
                           new_peer=new_peer_config(2, psk))
        check_common(result, pair.log_tail("hq", 40))
        # spoofed sources never return a cookie: at most the threshold of them are half-open,
        # plus the new peer's own (proven) one while it connects
        assert result.half_open_peak <= 10 + 2, result.report()
        assert result.dropped.get("cookie_sent", 0) >= 0.5 * result.sent, result.report()
        assert result.new_peer_cookie, "the new peer was not asked for a cookie (no flood?)"
        assert len(pair.status("hq", "sas")["ike_sas"]) <= 10 + 2 + 2
        # the tunnel is the same one (no rekey, no restart) and still carries traffic
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=3)
        assert received == sent


def test_ikev1_main_mode_flood_stays_bounded_and_the_tunnel_carries_on(
        topo: tuple[Topology, Site], tmp_path: Path) -> None:
    topology, new = topo
    psk = os.urandom(16).hex()
    hq_extra = {"connections": {"roadv1": {"remote": "%any", "mode": "transport", "ike": {"version": 1},
                                           "auth": {"method": "psk", "psk": psk, "remote_id": NEW_ID}}}}
    with GatewayPair(topology, tmp_path, keying="ike", hq_extra=hq_extra) as pair:
        pair.wait_tunnel()
        result = run_flood(topology, pair, new, tmp_path, kind="ikev1", version="v1",
                           new_peer=new_peer_config(1, psk))
        check_common(result, pair.log_tail("hq", 40))
        # Main Mode has no cookie exchange: the unproven SAs fill up to half_open_max (2000)
        # and then the oldest give way
        assert result.half_open_peak <= 2000 + 2, result.report()
        assert result.dropped.get("ikev1_half_open_evicted", 0) > 0, result.report()
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=3)
        assert received == sent
