"""Many concurrent IKE initiators in one process, driven by our own sans-IO IKE cores.

The load for ``bench/handshakes`` and ``bench/scale``: initiator *i* is a whole IKE
endpoint of its own (IKEv2, or IKEv1 Main + Quick Mode) at its own source address, with
its own identity (that address: no two initiators share an identity, so INITIAL_CONTACT
replaces nothing) and one CHILD_SA for its own inner /32 toward the responder's LAN.
With ``l2tp`` each initiator is an L2TP/IPsec LAC instead (IKEv1 transport mode, then
L2TP and PPP through its own dataplane), as a dial-in client would be.

``LoadGenerator`` is itself sans-IO (bytes, addresses and time in; datagrams out), so the
same harness runs over real sockets (``run_udp``: one socket per port for every source
address, the source chosen per datagram with IP_PKTINFO) and in memory against an
in-process responder (``run_in_memory``, for the test suite).  Established SAs are kept:
the responder's memory for them is what ``bench/scale`` measures.

    python -m appliance.lab.ikeload --responder 198.18.0.1 --count 200 --window 20

(in a namespace where the ``--sources`` network is local, e.g. ``ip route add local
100.64.0.0/16 dev lo``); progress lines start with ``[ikeload]``, the last line is JSON.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from gateway.config.model import Secret
from gateway.dataplane.engine import SEND_UDP
from gateway.ike.events import (
    AuthFailed,
    ChildSaDown,
    ChildSaUp,
    Datagram,
    IkeSaDown,
    NegotiationFailed,
)
from gateway.ike.identity import ANY, Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig, Timing
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2.endpoint import IkeV2Endpoint

IKE_PORT = 500
NATT_PORT = 4500
NON_ESP_MARKER = bytes(4)
CONNECTION = "load"

#: What both responders are configured with, so the comparison is like for like.
PROPOSALS = {2: ("aes128gcm16-prfsha256-ecp256", "aes128gcm16"),
             1: ("aes128-sha256-modp2048", "aes128-sha256")}

# Linux <linux/in.h>: IP_PKTINFO, struct in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=I4s4s")


class Endpoint(Protocol):
    """The sans-IO interface both IKE cores share (what an initiator is driven through)."""

    def receive(self, data: bytes, local_port: int, remote: tuple[str, int], now: float) -> None: ...
    def datagrams_to_send(self) -> list[Datagram]: ...
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def initiate(self, name: str, now: float, *, keep_up: bool = True) -> None: ...


@dataclass(frozen=True)
class LoadPlan:
    """What to run: ``count`` handshakes, at most ``window`` of them in flight at once."""

    responder: str
    psk: str
    version: int = 2
    count: int = 100
    window: int = 20
    #: initiator i sends from host number ``first + i`` of this network
    sources: str = "100.64.0.0/16"
    first: int = 0
    #: initiator i asks for a CHILD_SA between host ``first + i`` of ``inner`` and ``responder_lan``
    inner: str = "10.64.0.0/10"
    responder_lan: str = "10.1.0.0/24"
    ike_proposal: str = ""  # "" -> PROPOSALS[version]
    esp_proposal: str = ""
    #: a handshake not up within this many seconds counts as failed (and is abandoned)
    timeout: float = 60.0
    initial_contact: bool = True
    #: L2TP/IPsec LACs (IKEv1 transport mode + L2TP + PPP) instead of tunnel-mode initiators
    l2tp: bool = False
    l2tp_user: str = "user{i}"  # ``{i}``: the initiator's number (first + i)
    l2tp_password: str = "password-{i}"

    def proposals(self) -> tuple[str, str]:
        ike, esp = PROPOSALS[1 if self.l2tp else self.version]
        return self.ike_proposal or ike, self.esp_proposal or esp

    def source(self, i: int) -> str:
        net = ipaddress.IPv4Network(self.sources)
        n = self.first + i + 1  # not the network address
        if n >= net.num_addresses - 1:
            raise ValueError(f"{self.sources} has no host number {n}: use a larger --sources")
        return str(net.network_address + n)

    def inner_address(self, i: int) -> str:
        net = ipaddress.IPv4Network(self.inner)
        n = self.first + i + 1
        if n >= net.num_addresses - 1:
            raise ValueError(f"{self.inner} has no host number {n}")
        return str(net.network_address + n)


@dataclass
class Initiator:
    """One simulated peer: its IKE endpoint (and, for L2TP, its LAC)."""

    index: int
    address: str
    endpoint: Endpoint
    started: float
    lac: Lac | None = None
    ipsec_up: float | None = None
    up_at: float | None = None
    failed: str | None = None
    down: str | None = None  # why an established SA went away later

    @property
    def finished(self) -> bool:
        return self.up_at is not None or self.failed is not None


@dataclass
class LoadReport:
    """The figures of one run (``seconds`` from the first initiation to the last result)."""

    version: int
    l2tp: bool
    count: int
    window: int
    ike_proposal: str
    esp_proposal: str
    established: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    lost_after_up: int = 0
    seconds: float = 0.0
    per_s: float = 0.0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_max: float | None = None
    datagrams_sent: int = 0
    datagrams_received: int = 0
    send_errors: int = 0
    #: the generator's own CPU seconds (user + system) during the run: near ``seconds``
    #: means the generator, not the responder, may have set the pace
    generator_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outgoing:
    """A UDP datagram to send from ``local`` (address, port) to ``remote``."""

    data: bytes
    local: tuple[str, int]
    remote: tuple[str, int]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


class Lac:
    """An L2TP/IPsec client (LAC) made of our own cores: dataplane, TunnelTable, dial-up
    service, fed by the generator (what ``tests/unit/test_dialup.py`` wires in memory)."""

    def __init__(self, plan: LoadPlan, index: int, address: str, random: Callable[[int], bytes]) -> None:
        from gateway.config import load_config_text
        from gateway.dataplane.edge import EdgePolicy
        from gateway.dataplane.engine import Dataplane
        from gateway.dialup.service import DialupService
        from gateway.ike.v2 import fromconfig
        from gateway.tunnels import TunnelTable

        n = plan.first + index
        ike, esp = plan.proposals()
        text = (f"gateway: {{name: lac{n}, public_interface: lo, public_address: {address}}}\n"
                "connections:\n"
                "  lns:\n"
                f"    remote: {plan.responder}\n"
                f"    auth: {{method: psk, psk: {json.dumps(plan.psk)}}}\n"
                "    encapsulation: udp\n"
                f"    proposals: {{ike: [{ike}], esp: [{esp}]}}\n"
                "    dpd: {interval: null}\n"
                f"    ike: {{initial_contact: {str(plan.initial_contact).lower()}}}\n"
                f"    l2tp: {{role: lac, user: {json.dumps(plan.l2tp_user.format(i=n))}, "
                f"password: {json.dumps(plan.l2tp_password.format(i=n))}, auth: [mschapv2]}}\n")
        self.config = load_config_text(text).config
        self.peer = fromconfig.peer_config("lns", self.config.connections["lns"], self.config, None)
        self.engine = Dataplane(EdgePolicy("lo", ipaddress.IPv4Address(address), ()))
        self.tunnels = TunnelTable(self.engine, 0)
        self.dialup = DialupService(self.config, self.engine, self.tunnels, {}, random)
        self.l2tp_in: list[tuple[str, tuple[str, int], bytes]] = []
        self.engine.l2tp_handler = lambda tunnel, peer, data: self.l2tp_in.append((tunnel, peer, data))

    @property
    def up(self) -> bool:
        return self.dialup.stats["ppp_links_up"] > 0


class LoadGenerator:
    """``plan.count`` initiators, ``plan.window`` in flight; sans-IO like the cores it drives.

    ``start(now)``, then feed ``receive`` and ``handle_timer`` (when ``get_timer`` says) and
    send ``datagrams_to_send``; ``done`` once every handshake is up or failed.
    """

    def __init__(self, plan: LoadPlan, *, random: Callable[[int], bytes] = os.urandom,
                 timing: Timing | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        ike, esp = plan.proposals()
        self.plan = plan
        self.random = random
        self.timing = timing or Timing()
        self.progress = progress
        self._ike = (parse_ike_proposal(ike),)
        self._esp = (parse_child_proposal(esp),)
        self._lan = TsRange.of_network(ipaddress.IPv4Network(plan.responder_lan))
        self.initiators: dict[str, Initiator] = {}  # by source address
        self.started = 0
        self.in_flight = 0
        self.established = 0
        self.failures: Counter[str] = Counter()
        self.lost_after_up = 0
        self.first_start: float | None = None
        self.last_result: float | None = None
        self._out: list[Outgoing] = []
        self._heap: list[tuple[float, int]] = []
        self._deadline: dict[int, float] = {}
        self._by_index: dict[int, Initiator] = {}
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self._cpu0 = 0.0
        self._next_progress = 0.0

    # -- building initiators ----------------------------------------------------------------
    def _peer_config(self, i: int, address: str) -> PeerConfig:
        plan = self.plan
        inner = TsRange.of_network(ipaddress.IPv4Network(plan.inner_address(i)))
        child = ChildConfig("net", (inner,), (self._lan,), self._esp)
        return PeerConfig(CONNECTION, address, plan.responder, self._ike, child,
                          Identity.from_address(address), ANY, psk=Secret(plan.psk.encode()),
                          dpd_interval=None, initial_contact=plan.initial_contact,
                          version=plan.version)

    def _new_initiator(self, i: int, now: float) -> Initiator:
        address = self.plan.source(i)
        lac = None
        endpoint: Endpoint
        if self.plan.l2tp:
            lac = Lac(self.plan, i, address, self.random)
            endpoint = IkeV1Endpoint(address, [lac.peer], random=self.random, timing=self.timing)
        elif self.plan.version == 1:
            endpoint = IkeV1Endpoint(address, [self._peer_config(i, address)], random=self.random,
                                     timing=self.timing)
        else:
            endpoint = IkeV2Endpoint(address, [self._peer_config(i, address)], random=self.random,
                                     timing=self.timing)
        return Initiator(i, address, endpoint, now, lac)

    # -- the sans-IO interface ----------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin: the first ``window`` initiators send their first message."""
        self._cpu0 = _cpu_seconds()
        self.first_start = now
        self._fill(now)

    @property
    def done(self) -> bool:
        return self.started >= self.plan.count and self.in_flight == 0

    def datagrams_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        self.sent += len(out)
        return out

    def receive(self, data: bytes, local: tuple[str, int], remote: tuple[str, int], now: float) -> None:
        """A datagram that arrived for ``local`` (address, port) from ``remote``."""
        self.received += 1
        ini = self.initiators.get(local[0])
        if ini is None:
            self.failures["stray_datagram"] += 1
            return
        if local[1] == NATT_PORT:
            if data[:4] == NON_ESP_MARKER:
                ini.endpoint.receive(data[4:], NATT_PORT, remote, now)
            elif len(data) == 1 and data[0] == 0xFF:
                return  # a NAT keepalive
            elif ini.lac is not None:
                ini.lac.engine.inbound_udp(data, remote)  # ESP: L2TP comes out in lac.l2tp_in
            else:
                return  # ESP for a tunnel we carry no traffic on
        else:
            ini.endpoint.receive(data, local[1], remote, now)
        self._pump(ini, now)
        self._fill(now)

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap and self._deadline.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, index = heapq.heappop(heap)
            if self._deadline.get(index) != when:
                continue
            del self._deadline[index]
            ini = self._by_index[index]
            if not ini.finished and now >= ini.started + self.plan.timeout:
                self._fail(ini, "timeout", now)
            t = ini.endpoint.get_timer()
            if t is not None and now >= t:
                ini.endpoint.handle_timer(now)
            if ini.lac is not None:
                t = ini.lac.dialup.get_timer()
                if t is not None and now >= t:
                    ini.lac.dialup.handle_timer(now)
            self._pump(ini, now)
        self._fill(now)

    # -- inside ----------------------------------------------------------------------------
    def _fill(self, now: float) -> None:
        while self.in_flight < self.plan.window and self.started < self.plan.count:
            ini = self._new_initiator(self.started, now)
            self.started += 1
            self.in_flight += 1
            self.initiators[ini.address] = ini
            self._by_index[ini.index] = ini
            ini.endpoint.initiate(CONNECTION if ini.lac is None else "lns", now, keep_up=False)
            self._pump(ini, now)
        if self.progress is not None and now >= self._next_progress:
            self._next_progress = now + 2.0
            self.progress(f"{self.started} started, {self.established} up, "
                          f"{sum(self.failures.values())} failed, {self.in_flight} in flight")

    def _pump(self, ini: Initiator, now: float) -> None:
        """Move what the initiator's cores produced: datagrams out, events, L2TP and PPP."""
        ep, lac = ini.endpoint, ini.lac
        for _ in range(100):
            moved = False
            for d in ep.datagrams_to_send():
                data = NON_ESP_MARKER + d.data if d.local_port == NATT_PORT else d.data
                self._out.append(Outgoing(data, (ini.address, d.local_port), d.remote))
            while (ev := ep.next_event()) is not None:
                moved = True
                self._event(ini, ev, now)
            if lac is not None:
                while lac.l2tp_in:
                    moved = True
                    tunnel, peer, data = lac.l2tp_in.pop(0)
                    lac.dialup.receive(tunnel, peer, data, now)
                lac.dialup.to_tun.clear()
                lac.dialup.host_changes.clear()
                lac.dialup.log.clear()
                lac.dialup.lac_events.clear()
                while lac.dialup.transmits:
                    moved = True
                    kind, data, remote = lac.dialup.transmits.pop(0)
                    if kind != SEND_UDP:  # the LAC forces UDP encapsulation: never raw ESP
                        self.failures["raw_esp_dropped"] += 1
                        continue
                    self._out.append(Outgoing(data, (ini.address, NATT_PORT), remote))
                if lac.up and ini.up_at is None and ini.failed is None:
                    self._up(ini, now)
            if not moved:
                break
        self._schedule(ini)

    def _event(self, ini: Initiator, ev: object, now: float) -> None:
        lac = ini.lac
        if isinstance(ev, ChildSaUp):
            if lac is not None:
                lac.tunnels.up(ev, activate=ev.activate)
                lac.dialup.ipsec_up(ev.tunnel or ev.connection, ev.connection, now)
                ini.ipsec_up = now
            elif ini.up_at is None and ini.failed is None:
                self._up(ini, now)
        elif isinstance(ev, (ChildSaDown, IkeSaDown)):
            if lac is not None and isinstance(ev, ChildSaDown):
                lac.tunnels.down(ev)
                lac.dialup.ipsec_down(ev.tunnel or ev.connection, now)
            if ini.up_at is not None and ini.down is None:
                ini.down = getattr(ev, "reason", "down")
                self.lost_after_up += 1
            elif ini.up_at is None and ini.failed is None and isinstance(ev, IkeSaDown):
                self._fail(ini, f"ike_down: {ev.reason}", now)
        elif isinstance(ev, AuthFailed):
            self._fail(ini, f"auth: {ev.reason}", now)
        elif isinstance(ev, NegotiationFailed):
            self._fail(ini, f"{ev.stage}: {ev.reason}", now)

    def _up(self, ini: Initiator, now: float) -> None:
        ini.up_at = now
        self.established += 1
        self.in_flight -= 1
        self.last_result = now

    def _fail(self, ini: Initiator, reason: str, now: float) -> None:
        if ini.finished:
            return
        ini.failed = reason.split(" (")[0][:80]
        self.failures[ini.failed] += 1
        self.in_flight -= 1
        self.last_result = now
        if ini.up_at is None and now >= ini.started + self.plan.timeout:
            ini.endpoint = _Silent()  # abandoned: nothing more goes out for it
            ini.lac = None

    def _schedule(self, ini: Initiator) -> None:
        times = [t for t in (ini.endpoint.get_timer(),
                             ini.lac.dialup.get_timer() if ini.lac is not None else None) if t is not None]
        if not ini.finished:
            times.append(ini.started + self.plan.timeout)
        if not times:
            self._deadline.pop(ini.index, None)
            return
        when = min(times)
        if self._deadline.get(ini.index) != when:
            self._deadline[ini.index] = when
            heapq.heappush(self._heap, (when, ini.index))

    # -- results -----------------------------------------------------------------------------
    def report(self) -> LoadReport:
        ike, esp = self.plan.proposals()
        latencies = [i.up_at - i.started for i in self.initiators.values() if i.up_at is not None]
        seconds = (self.last_result or 0.0) - (self.first_start or 0.0)
        return LoadReport(
            version=1 if self.plan.l2tp else self.plan.version, l2tp=self.plan.l2tp,
            count=self.plan.count, window=self.plan.window, ike_proposal=ike,
            esp_proposal="" if self.plan.l2tp else esp, established=self.established,
            failed=sum(self.failures.values()), failures=dict(self.failures),
            lost_after_up=self.lost_after_up, seconds=round(seconds, 3),
            per_s=round(self.established / seconds, 2) if seconds > 0 else 0.0,
            latency_p50=_percentile(latencies, 0.5), latency_p95=_percentile(latencies, 0.95),
            latency_max=round(max(latencies), 4) if latencies else None,
            datagrams_sent=self.sent, datagrams_received=self.received, send_errors=self.send_errors,
            generator_cpu_s=round(_cpu_seconds() - self._cpu0, 3))


class _Silent:
    """Stands in for an abandoned initiator's endpoint: it neither sends nor wakes."""

    def receive(self, data: bytes, local_port: int, remote: tuple[str, int], now: float) -> None:
        return None

    def datagrams_to_send(self) -> list[Datagram]:
        return []

    def next_event(self) -> object | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None

    def initiate(self, name: str, now: float, *, keep_up: bool = True) -> None:
        return None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- shells ----------------------------------------------------------------------------------


def run_in_memory(gen: LoadGenerator, responder: Endpoint, responder_address: str, *,
                  limit: float = 300.0, step: float = 0.05,
                  on_event: Callable[[object], None] | None = None) -> LoadReport:
    """Run ``gen`` against an in-process responder endpoint on a fake clock (no sockets):
    for the test suite and for profiling a core without the daemon around it."""
    now = 1000.0
    gen.start(now)
    end = now + limit
    while not gen.done and now < end:
        moved = True
        while moved:
            moved = False
            for out in gen.datagrams_to_send():
                moved = True
                port = out.remote[1]
                data = out.data[4:] if port == NATT_PORT and out.data[:4] == NON_ESP_MARKER else out.data
                if port == NATT_PORT and data is out.data:
                    continue  # ESP: the in-memory responder has no dataplane
                responder.receive(data, port, out.local, now)
            for d in responder.datagrams_to_send():
                moved = True
                data = NON_ESP_MARKER + d.data if d.local_port == NATT_PORT else d.data
                gen.receive(data, d.remote, (responder_address, d.local_port), now)
            while (ev := responder.next_event()) is not None:
                if on_event is not None:
                    on_event(ev)
        now += step
        for core in (gen, responder):
            t = core.get_timer()
            if t is not None and t <= now:
                core.handle_timer(now)
    return gen.report()


def _pktinfo(source: str) -> list[tuple[int, int, bytes]]:
    return [(socket.IPPROTO_IP, IP_PKTINFO, _PKTINFO.pack(0, socket.inet_aton(source), bytes(4)))]


def _open(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def _recv_all(sock: socket.socket, limit: int = 512) -> Iterator[tuple[bytes, str, tuple[str, int]]]:
    """Datagrams waiting on ``sock``: (data, the local address they were sent to, sender)."""
    space = socket.CMSG_SPACE(_PKTINFO.size)
    for _ in range(limit):
        try:
            data, ancillary, _flags, sender = sock.recvmsg(65535, space)
        except BlockingIOError:
            return
        local = ""
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                local = socket.inet_ntoa(_PKTINFO.unpack(value[:_PKTINFO.size])[2])
        yield data, local, sender


def run_udp(gen: LoadGenerator, *, limit: float = 3600.0,
            on_report: Callable[[LoadReport], None] | None = None,
            hold: Callable[[], bool] | None = None) -> LoadReport:
    """Run ``gen`` over real UDP sockets (ports 500 and 4500 on every local address).

    The report goes to ``on_report`` as soon as every handshake is done (or ``limit``
    seconds passed); with ``hold``, the generator then keeps answering for its SAs (DPD,
    rekeys, PPP echoes) while ``hold()`` is true, so they stay established.
    """
    socks = {IKE_PORT: _open(IKE_PORT), NATT_PORT: _open(NATT_PORT)}
    sel = selectors.DefaultSelector()
    for port, sock in socks.items():
        sel.register(sock, selectors.EVENT_READ, port)
    report: LoadReport | None = None

    def flush() -> None:
        for out in gen.datagrams_to_send():
            try:
                socks[out.local[1]].sendmsg([out.data], _pktinfo(out.local[0]), 0, out.remote)
            except OSError:
                gen.send_errors += 1  # lost: the cores retransmit

    try:
        start = time.monotonic()
        gen.start(start)
        while True:
            now = time.monotonic()
            flush()
            if report is None and (gen.done or now - start > limit):
                report = gen.report()
                if on_report is not None:
                    on_report(report)
            if report is not None and (hold is None or not hold()):
                break
            t = gen.get_timer()
            wait = 0.5 if t is None else max(0.0, min(0.5, t - now))
            for key, _mask in sel.select(wait):
                port = key.data
                for data, local, sender in _recv_all(socks[port]):
                    gen.receive(data, (local, port), sender, time.monotonic())
                    flush()  # at once: the responder works on it while we read the next
            now = time.monotonic()
            t = gen.get_timer()
            if t is not None and now >= t:
                gen.handle_timer(now)
    finally:
        sel.close()
        for sock in socks.values():
            sock.close()
    return report


def _stdin_open() -> bool:
    """False once stdin is closed (the bench's signal to let go of the SAs)."""
    try:
        return os.read(sys.stdin.fileno(), 4096) != b""
    except BlockingIOError:
        return True


def main(argv: list[str] | None = None) -> int:
    """The command line (run it inside the initiators' namespace)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responder", required=True)
    parser.add_argument("--psk", default="gwbench-load-psk-0123456789")
    parser.add_argument("--version", type=int, choices=(1, 2), default=2, help="IKE version")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--sources", default=LoadPlan.sources)
    parser.add_argument("--first", type=int, default=0, help="host number offset into --sources")
    parser.add_argument("--inner", default=LoadPlan.inner)
    parser.add_argument("--responder-lan", default=LoadPlan.responder_lan)
    parser.add_argument("--ike-proposal", default="")
    parser.add_argument("--esp-proposal", default="")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=3600.0, help="give up the run after this long")
    parser.add_argument("--no-initial-contact", action="store_true")
    parser.add_argument("--l2tp", action="store_true", help="L2TP/IPsec LACs (IKEv1 + L2TP + PPP)")
    parser.add_argument("--wait-start", action="store_true",
                        help="print 'ready', then wait for a line on stdin before initiating "
                             "(several generators start together)")
    parser.add_argument("--hold", action="store_true",
                        help="after the report, keep the SAs (and answer for them) until stdin closes")
    args = parser.parse_args(argv)
    plan = LoadPlan(responder=args.responder, psk=args.psk, version=args.version, count=args.count,
                    window=args.window, sources=args.sources, first=args.first, inner=args.inner,
                    responder_lan=args.responder_lan, ike_proposal=args.ike_proposal,
                    esp_proposal=args.esp_proposal, timeout=args.timeout,
                    initial_contact=not args.no_initial_contact, l2tp=args.l2tp)
    plan.source(plan.count - 1)  # fail early on too small a network

    def say(message: str) -> None:
        print(f"[ikeload] {message}", flush=True)

    def on_report(report: LoadReport) -> None:
        if args.hold:
            say("holding the SAs until stdin closes")
        print(json.dumps(report.to_dict()), flush=True)

    gen = LoadGenerator(plan, progress=say)
    if args.wait_start:
        say("ready")
        sys.stdin.readline()
    if args.hold:
        os.set_blocking(sys.stdin.fileno(), False)
    say(f"go: {plan.count} x IKEv{1 if plan.l2tp else plan.version}"
        f"{' + L2TP/PPP' if plan.l2tp else ''}, window {plan.window}, to {plan.responder}")
    report = run_udp(gen, limit=args.limit, on_report=on_report,
                     hold=_stdin_open if args.hold else None)
    return 0 if report.established == plan.count else 1


if __name__ == "__main__":
    sys.exit(main())
