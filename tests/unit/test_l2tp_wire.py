"""A simulated UDP wire between L2TP endpoints (virtual time, optional loss, duplication and
reordering), and the basic back-to-back exchanges it carries.

The other test_l2tp_* files import `Wire` and `seeded` from here.
"""

from __future__ import annotations

import heapq
import itertools
import random as stdrandom
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.l2tp import (
    FrameReceived,
    L2tpEndpoint,
    SessionDown,
    SessionUp,
    TunnelDown,
    TunnelUp,
)

LAC_ADDR = ("192.0.2.10", 1701)
LNS_ADDR = ("198.51.100.1", 1701)
LATENCY = 0.01

#: fault(sender name, index of the datagram from that sender, data) -> delays of its copies:
#: [] drops it, [d] delivers it after d, [d1, d2] duplicates it
Fault = Callable[[str, int, bytes], list[float]]


def seeded(seed: int = 1) -> Callable[[int], bytes]:
    return stdrandom.Random(seed).randbytes


@dataclass
class Node:
    name: str
    endpoint: L2tpEndpoint
    address: tuple[str, int]
    events: list[object] = field(default_factory=list)
    timeline: list[tuple[float, object]] = field(default_factory=list)  # (when, event)
    sent: list[bytes] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class Wire:
    """Endpoints that reach each other by address, with a virtual clock."""

    def __init__(self, *nodes: Node, fault: Fault | None = None, latency: float = LATENCY,
                 tamper: Callable[[str, int, bytes], bytes] | None = None) -> None:
        self.nodes = {n.address: n for n in nodes}
        self.by_name = {n.name: n for n in nodes}
        self.fault = fault
        self.tamper = tamper
        self.latency = latency
        self.now = 0.0
        self._queue: list[tuple[float, int, bytes, tuple[str, int], tuple[str, int]]] = []
        self._seq = itertools.count()
        self._counts: dict[str, int] = {}
        self.delivered: list[tuple[str, bytes]] = []
        self.log: list[tuple[float, str, bytes]] = []  # (time, to whom, datagram) as delivered

    def __getitem__(self, name: str) -> Node:
        return self.by_name[name]

    def collect(self) -> None:
        for node in self.nodes.values():
            for data, dest in node.endpoint.datagrams_to_send():
                node.sent.append(data)
                index = self._counts.get(node.name, 0)
                self._counts[node.name] = index + 1
                delays = self.fault(node.name, index, data) if self.fault else [self.latency]
                if self.tamper is not None:
                    data = self.tamper(node.name, index, data)
                for delay in delays:
                    heapq.heappush(self._queue, (self.now + delay, next(self._seq), data, node.address, dest))
            while (event := node.endpoint.next_event()) is not None:
                node.events.append(event)
                node.timeline.append((self.now, event))

    def step(self) -> bool:
        """Run the next thing due (a delivery or a timer); False when nothing is left."""
        self.collect()
        times = [t for t in (n.endpoint.get_timer() for n in self.nodes.values()) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times:
            return False
        self.now = max(self.now, min(times))
        if self._queue and self._queue[0][0] <= self.now:
            _, _, data, source, dest = heapq.heappop(self._queue)
            node = self.nodes.get(dest)
            if node is not None:
                self.delivered.append((node.name, data))
                self.log.append((self.now, node.name, data))
                node.endpoint.receive(data, source, self.now)
        else:
            for node in self.nodes.values():
                timer = node.endpoint.get_timer()
                if timer is not None and timer <= self.now:
                    node.endpoint.handle_timer(self.now)
        self.collect()
        return True

    def run(self, until: float) -> None:
        """Run everything due up to ``until`` (then stop the clock there)."""
        while True:
            self.collect()
            times = [t for t in (n.endpoint.get_timer() for n in self.nodes.values()) if t is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > until:
                break
            self.step()
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run(self.now + seconds)


def pair(*, lac: dict | None = None, lns: dict | None = None, fault: Fault | None = None,
         seed: int = 1, tamper: Callable[[str, int, bytes], bytes] | None = None) -> Wire:
    """A LAC (branch router) and an LNS endpoint on one wire."""
    lac_settings = {"host_name": "branch", "accept_tunnels": False, **(lac or {})}
    lac_ep = L2tpEndpoint(random=seeded(seed), **lac_settings)
    lns_ep = L2tpEndpoint(random=seeded(seed + 1000), **{"host_name": "gw", **(lns or {})})
    return Wire(Node("lac", lac_ep, LAC_ADDR), Node("lns", lns_ep, LNS_ADDR), fault=fault, tamper=tamper)


def up(wire: Wire, *, calls: int = 1) -> tuple[int, list]:
    """Open a tunnel from the LAC and place ``calls`` calls; our tunnel id and the session keys."""
    lac = wire["lac"].endpoint
    tid = lac.open_tunnel(LNS_ADDR, wire.now)
    keys = [lac.place_call(tid, wire.now, calling_number=f"caller-{i}") for i in range(calls)]
    wire.run_for(5)
    return tid, keys


# -- tests --------------------------------------------------------------------------------------


def test_tunnel_and_session_come_up_and_frames_flow() -> None:
    wire = pair()
    tid, (key,) = up(wire)
    lac, lns = wire["lac"], wire["lns"]
    (lac_up,) = lac.of(TunnelUp)
    (lns_up,) = lns.of(TunnelUp)
    assert lac_up.tunnel == tid and lac_up.host_name == "gw" and lac_up.initiator
    assert lns_up.host_name == "branch" and not lns_up.initiator and lns_up.peer == LAC_ADDR
    assert lac_up.peer_tunnel == lns_up.tunnel and lns_up.peer_tunnel == tid
    (lac_call,) = lac.of(SessionUp)
    (lns_call,) = lns.of(SessionUp)
    assert lac_call.session == key and lac_call.lac and lac_call.call == "incoming"
    assert not lns_call.lac and lns_call.calling_number == "caller-0" and lns_call.serial == 1
    assert lns_call.peer_session == key.session and lac_call.peer_session == lns_call.session.session

    assert lac.endpoint.send_frame(key, b"\xff\x03\xc0\x21\x01\x01\x00\x04")
    assert lns.endpoint.send_frame(lns_call.session, b"\xc0\x21\x02\x01\x00\x04")
    wire.run_for(1)
    (to_lns,) = lns.of(FrameReceived)
    (to_lac,) = lac.of(FrameReceived)
    assert to_lns.session == lns_call.session and to_lns.frame == b"\xff\x03\xc0\x21\x01\x01\x00\x04"
    assert to_lac.session == key and to_lac.frame == b"\xc0\x21\x02\x01\x00\x04"
    assert "octets" in repr(to_lns) and "c021" not in repr(to_lns)


def test_cdn_then_stopccn_tear_down_both_sides() -> None:
    wire = pair()
    tid, (key,) = up(wire)
    lac, lns = wire["lac"], wire["lns"]
    assert lac.endpoint.close_session(key, wire.now, message="user hung up")
    wire.run_for(2)
    (lns_down,) = lns.of(SessionDown)
    assert lns_down.reason == "cdn" and lns_down.result == 3 and "user hung up" in lns_down.text
    assert lac.of(SessionDown)[0].reason == "closed"
    assert lac.endpoint.close_tunnel(tid, wire.now)
    wire.run_for(1)
    assert lac.of(TunnelDown)[0].reason == "closed"
    (lns_gone,) = lns.of(TunnelDown)
    assert lns_gone.reason == "stopccn" and lns_gone.result == 1
    assert lac.endpoint.tunnel_ids == []  # the StopCCN was acknowledged
    assert lns.endpoint.tunnel_state(lns_gone.tunnel) == "linger"
    wire.run_for(40)
    assert lns.endpoint.tunnel_ids == [] and lns.endpoint.get_timer() is None
    assert lac.endpoint.drops == {} and lns.endpoint.drops == {}


def test_lns_places_an_outgoing_call() -> None:
    wire = pair(lac={"accept_outgoing_calls": True})
    lac, lns = wire["lac"], wire["lns"]
    lac.endpoint.open_tunnel(LNS_ADDR, 0.0)
    wire.run_for(2)
    lns_tunnel = lns.of(TunnelUp)[0].tunnel
    key = lns.endpoint.place_call(lns_tunnel, wire.now, outgoing=True, called_number="5551234")
    wire.run_for(2)
    (lns_call,) = lns.of(SessionUp)
    (lac_call,) = lac.of(SessionUp)
    assert lns_call.session == key and lns_call.call == "outgoing" and not lns_call.lac
    assert lac_call.lac and lac_call.called_number == "5551234" and lac_call.call == "outgoing"
    assert lns.endpoint.send_frame(key, b"\xc0\x21hello")
    wire.run_for(1)
    assert lac.of(FrameReceived)[0].frame == b"\xc0\x21hello"
