"""L2TP/IPsec dial-up in memory: our LAC dials our LNS over IKEv1 transport-mode ESP.

Two gateways, each with an IKEv1 endpoint, a dataplane and a DialupService, wired back to
back: IKE datagrams cross directly, ESP goes through the dataplanes as the backends would
carry it. Nothing is faked between them: the L2TP control connection, the PPP
negotiation, authentication and IPCP all run over the negotiated SAs.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

import pytest
from ike_loopback import seeded
from ipsec_testkit import icmp_echo, outer_ip

from gateway.config import load_config_text
from gateway.config.model import Config
from gateway.dataplane import ip
from gateway.dataplane.edge import EdgePolicy
from gateway.dataplane.engine import SEND_ESP, SEND_UDP, Dataplane
from gateway.dialup.service import DialupService, HostChange
from gateway.ike.events import ChildSaDown, ChildSaUp
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2 import fromconfig
from gateway.ppp.auth import nt_hash
from gateway.tunnels import TunnelTable

HQ, BRANCH = "192.0.2.1", "198.51.100.1"
HQ_LAN_HOST = "10.1.0.10"

LNS = f"""\
gateway: {{name: hq, public_interface: wan0, public_address: {HQ}}}
pools:
  dialin: {{subnet: 10.9.0.0/24, dns: [10.1.0.53]}}
users:
  branch1: {{nt_hash: "{nt_hash('branch-password').hex()}", password: branch-password}}
  carol: {{password: carol-pw, address: 10.77.0.5}}
connections:
  dialin:
    remote: "%any"
    auth: {{method: psk, psk: group-key-for-l2tp}}
    l2tp: {{role: lns, pool: dialin, auth: [mschapv2, chap-md5, pap]}}
"""

LAC = f"""\
gateway: {{name: branch, public_interface: wan0, public_address: {BRANCH}}}
connections:
  to-hq:
    remote: {HQ}
    auth: {{method: psk, psk: group-key-for-l2tp}}
    ike: {{start: start}}
    l2tp: {{role: lac, user: branch1, password: branch-password, auth: [mschapv2],
           remote_subnets: [10.1.0.0/24]}}
"""


@dataclass
class Gw:
    address: str
    config: Config
    ike: IkeV1Endpoint
    engine: Dataplane
    tunnels: TunnelTable
    dialup: DialupService
    l2tp_in: list[tuple[str, tuple[str, int], bytes]] = field(default_factory=list)
    tun: list[bytes] = field(default_factory=list)
    events: list[object] = field(default_factory=list)


def gateway(text: str, seed: int) -> Gw:
    cfg = load_config_text(text).config
    address = str(cfg.gateway.public_address)
    peers = [fromconfig.peer_config(n, c, cfg, None) for n, c in cfg.connections.items()]
    ike = IkeV1Endpoint(address, peers, random=seeded(seed))
    engine = Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(address), ()))
    tunnels = TunnelTable(engine, 64)
    dialup = DialupService(cfg, engine, tunnels, fromconfig.pools(cfg), seeded(seed + 1))
    gw = Gw(address, cfg, ike, engine, tunnels, dialup)
    engine.l2tp_handler = lambda tunnel, peer, data: gw.l2tp_in.append((tunnel, peer, data))
    return gw


@dataclass
class Lab:
    hq: Gw
    branch: Gw
    now: float = 100.0

    def other(self, gw: Gw) -> Gw:
        return self.branch if gw is self.hq else self.hq

    def carry(self, sender: Gw, t: tuple[int, bytes, tuple[str, int]]) -> None:
        kind, data, (addr, _port) = t
        receiver = self.other(sender)
        assert addr == receiver.address
        if kind == SEND_UDP:
            inner = receiver.engine.inbound_udp(data, (sender.address, 4500))
        else:
            assert kind == SEND_ESP
            inner = receiver.engine.inbound_ip(outer_ip(sender.address, addr, ip.PROTO_ESP, data))
        if isinstance(inner, bytes):
            receiver.tun.append(inner)

    def step(self) -> bool:
        moved = False
        for gw in (self.hq, self.branch):
            self.ike_events(gw)
            for d in gw.ike.datagrams_to_send():
                moved = True
                other = self.other(gw)
                other.ike.receive(d.data, d.remote[1], (gw.address, d.local_port), self.now)
                self.ike_events(other)  # SAs are installed before the next packet, as in the daemon
            while gw.l2tp_in:
                moved = True
                tunnel, peer, data = gw.l2tp_in.pop(0)
                gw.dialup.receive(tunnel, peer, data, self.now)
            gw.tun += gw.dialup.to_tun
            gw.dialup.to_tun.clear()
            while gw.dialup.transmits:
                moved = True
                self.carry(gw, gw.dialup.transmits.pop(0))
        return moved

    def ike_events(self, gw: Gw) -> None:
        while (ev := gw.ike.next_event()) is not None:
            gw.events.append(ev)
            if isinstance(ev, ChildSaUp):
                gw.tunnels.up(ev, activate=ev.activate)
                gw.dialup.ipsec_up(ev.tunnel or ev.connection, ev.connection, self.now)
            elif isinstance(ev, ChildSaDown):
                gw.tunnels.down(ev)
                key = ev.tunnel or ev.connection
                t = gw.tunnels.tunnels.get(key)
                if t is None or not t.pairs:
                    gw.dialup.ipsec_down(key, self.now)

    def pump(self) -> None:
        for _ in range(500):
            if not self.step():
                return
        raise AssertionError("the lab never went quiet")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for gw in (self.hq, self.branch):
                for core in (gw.ike, gw.dialup):
                    t = core.get_timer()
                    if t is not None and t <= self.now:
                        core.handle_timer(self.now)
            self.pump()

    def send_from(self, gw: Gw, packet: bytes) -> None:
        """A packet the kernel routed into ``gw``'s TUN."""
        t = gw.engine.outbound(packet)
        assert t is not None, dict(gw.engine.drops)
        self.carry(gw, t)
        self.pump()


def lab(lns: str = LNS, lac: str = LAC) -> Lab:
    lab = Lab(gateway(lns, 1), gateway(lac, 2))
    lab.branch.ike.initiate("to-hq", lab.now)
    lab.pump()
    lab.advance(5)
    return lab


def log(gw: Gw, what: str) -> list[dict[str, str]]:
    return [dict(line.fields) for line in gw.dialup.log if line.what == what]


def test_lac_dials_lns_and_traffic_crosses() -> None:
    lb = lab()
    (ppp_up,) = log(lb.branch, "ppp.up")
    assert ppp_up["address"] == "10.9.0.2" and ppp_up["method"] == "mschapv2"  # .1 is the LNS's own
    assert ppp_up["dns"] == "10.1.0.53"
    (hq_up,) = log(lb.hq, "ppp.up")
    assert hq_up["user"] == "branch1" and hq_up["address"] == "10.9.0.2"
    # the host is told what to route: the pool into the HQ TUN, HQ's LAN into the branch TUN
    assert HostChange("route_add", ipaddress.IPv4Network("10.9.0.0/24"),
                      ipaddress.IPv4Address("10.9.0.1")) in lb.hq.dialup.host_changes
    assert HostChange("route_add", ipaddress.IPv4Network("10.1.0.0/24"),
                      ipaddress.IPv4Address("10.9.0.2")) in lb.branch.dialup.host_changes
    # a ping from the branch's PPP address to an HQ LAN host, and the answer
    lb.send_from(lb.branch, icmp_echo("10.9.0.2", HQ_LAN_HOST))
    assert len(lb.hq.tun) == 1 and lb.hq.tun[0][12:20] == ipaddress.IPv4Address("10.9.0.2").packed + \
        ipaddress.IPv4Address(HQ_LAN_HOST).packed
    lb.send_from(lb.hq, icmp_echo(HQ_LAN_HOST, "10.9.0.2"))
    assert len(lb.branch.tun) == 1 and lb.branch.tun[0][16:20] == ipaddress.IPv4Address("10.9.0.2").packed
    assert lb.hq.dialup.summary() | {"events": {}} == {
        "l2tp_tunnels": 1, "sessions": 1, "sessions_up": 1, "auth_failures": {}, "events": {},
        "refused": {}, "drops": {}}
    assert lb.hq.dialup.summary()["events"]["auth_ok:mschapv2"] == 1
    (session,) = lb.hq.dialup.describe(lb.now)
    assert session["user"] == "branch1" and session["packets_in"] == 1 and session["packets_out"] == 1
    assert not lb.hq.engine.drops and not lb.branch.engine.drops


def test_mss_is_clamped_both_ways() -> None:
    from scapy.layers.inet import IP, TCP

    lb = lab()

    def syn(src: str, dst: str) -> bytes:
        return bytes(IP(src=src, dst=dst) / TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460)]))

    lb.send_from(lb.branch, syn("10.9.0.2", HQ_LAN_HOST))
    assert dict(IP(lb.hq.tun[-1])[TCP].options)["MSS"] == 1360
    lb.send_from(lb.hq, syn(HQ_LAN_HOST, "10.9.0.2"))
    assert dict(IP(lb.branch.tun[-1])[TCP].options)["MSS"] == 1360


def test_spoofed_source_from_a_client_is_dropped() -> None:
    lb = lab()
    lb.send_from(lb.branch, icmp_echo("10.9.0.2", HQ_LAN_HOST))
    # the branch routes 10.1.0.0/24 into the link: a packet with another source rides it
    lb.send_from(lb.branch, icmp_echo("10.9.0.99", HQ_LAN_HOST))
    assert len(lb.hq.tun) == 1
    assert lb.hq.dialup.stats["drop:ppp_spoofed_source"] == 1


def test_wrong_password_is_refused_and_reported_then_redialed() -> None:
    lb = lab(lac=LAC.replace("password: branch-password", "password: not-the-password"))
    (failed,) = log(lb.hq, "ppp.auth_failed")[:1]
    assert failed["user"] == "branch1" and failed["method"] == "mschapv2"
    lac_failed = log(lb.branch, "ppp.auth_failed")
    assert lac_failed and "E=691" in lac_failed[0]["reason"], lac_failed
    assert lb.hq.dialup.auth_failures["mschapv2"] >= 1
    summary = lb.hq.dialup.summary()  # what `gateway status` and the metrics show
    assert summary["auth_failures"]["mschapv2"] >= 1 and summary["sessions_up"] == 0
    assert lb.branch.dialup.summary()["auth_failures"]["mschapv2"] >= 1
    assert not log(lb.branch, "ppp.up") and not lb.hq.dialup.describe(lb.now)
    assert log(lb.branch, "l2tp.redial")
    dials = lb.branch.dialup.stats["lac_dials"]
    lb.advance(12)
    assert lb.branch.dialup.stats["lac_dials"] > dials  # it tries again, after its backoff


@pytest.mark.parametrize("method", ["pap", "chap-md5"])
def test_other_methods(method: str) -> None:
    lb = lab(lac=LAC.replace("auth: [mschapv2]", f"auth: [{method}]"))
    (up,) = log(lb.branch, "ppp.up")
    assert up["method"] == method


def test_kick_then_the_lac_redials() -> None:
    lb = lab()
    assert lb.hq.dialup.kick("branch1", lb.now) == 1
    lb.pump()
    lb.advance(2)
    assert log(lb.hq, "ppp.down") and not lb.hq.dialup.describe(lb.now)
    assert lb.hq.engine.links == {}
    assert lb.hq.dialup.pools["dialin"].in_use == 1  # only the LNS's own address
    lb.advance(30)  # the LAC dials again after its backoff
    assert len(log(lb.branch, "ppp.up")) == 2


def test_max_sessions_per_user() -> None:
    lb = lab()
    second = gateway(LAC.replace(BRANCH, "203.0.113.7"), 3)
    lb2 = Lab(lb.hq, second, lb.now)
    second.ike.initiate("to-hq", lb2.now)
    lb2.pump()
    lb2.advance(5)
    refused = log(lb.hq, "ppp.refused")
    assert refused and "max_sessions 1" in refused[0]["reason"], refused
    assert lb.hq.dialup.stats["refused:max_sessions"] >= 1
    assert len(lb.hq.dialup.describe(lb2.now)) >= 1


def test_idle_timeout() -> None:
    lb = lab(lns=LNS.replace("auth: [mschapv2, chap-md5, pap]}", "auth: [mschapv2], idle_timeout: 20}"))
    assert log(lb.hq, "ppp.up")
    lb.advance(25)
    assert lb.hq.dialup.stats["idle_timeouts"] == 1
    assert log(lb.hq, "ppp.down")


def test_no_secret_in_log_or_describe() -> None:
    lb = lab()
    text = repr(lb.hq.dialup.log) + repr(lb.branch.dialup.log) + repr(lb.hq.dialup.describe(lb.now)) + \
        repr(lb.hq.dialup.summary()) + repr(lb.branch.dialup.summary())
    for secret in ("branch-password", "group-key-for-l2tp", nt_hash("branch-password").hex()):
        assert secret not in text


def timeline(lb: Lab, gw: Gw, seconds: float, step: float = 0.25) -> list[tuple[float, str, dict[str, str]]]:
    """Advance the lab; (time, what, fields) of every line ``gw``'s dial-up service logged."""
    seen: list[tuple[float, str, dict[str, str]]] = []
    start = len(gw.dialup.log)
    end = lb.now + seconds
    while lb.now < end:
        lb.advance(step, step)
        seen += [(lb.now, line.what, dict(line.fields)) for line in gw.dialup.log[start:]]
        start = len(gw.dialup.log)
    return seen


def test_redial_backoff_doubles_up_to_redial_max() -> None:
    lac = LAC.replace("password: branch-password", "password: not-the-password") \
        .replace("auth: [mschapv2],", "auth: [mschapv2], redial_min: 1s, redial_max: 4s,")
    lb = Lab(gateway(LNS, 1), gateway(lac, 2))
    lb.branch.ike.initiate("to-hq", lb.now)
    lb.pump()  # IKE, L2TP, PPP, the refusal: all at once in memory
    seen = [(lb.now, line.what, dict(line.fields)) for line in lb.branch.dialup.log]
    seen += timeline(lb, lb.branch, 20)
    redials = [float(f["seconds"]) for _, what, f in seen if what == "l2tp.redial"]
    assert redials[:5] == [1.0, 2.0, 4.0, 4.0, 4.0], redials
    reasons = {f["reason"] for _, what, f in seen if what == "l2tp.redial"}
    assert all(r.startswith("PPP down (") and "E=691" in r for r in reasons), reasons
    dials = [t for t, what, _ in seen if what == "l2tp.dialing"]
    gaps = [round(b - a) for a, b in itertools.pairwise(dials)]
    assert gaps[:4] == [1, 2, 4, 4], gaps  # each dial fails at once: the gap is the backoff


def test_ipsec_down_hangs_up_and_dials_again_when_ipsec_is_back() -> None:
    lb = lab()
    assert log(lb.branch, "ppp.up")
    del lb.branch.dialup.log[:]
    lb.branch.ike.terminate("to-hq", lb.now)  # what DPD does to a dead peer, less the restart
    lb.pump()
    (down,) = log(lb.branch, "ppp.down")
    assert down["reason"] == "IPsec SA down", down
    (redial,) = log(lb.branch, "l2tp.redial")
    assert redial == {"connection": "to-hq", "reason": "IPsec SA down", "when": "ipsec_up"}
    net, address = ipaddress.IPv4Network("10.1.0.0/24"), ipaddress.IPv4Network("10.9.0.2/32")
    assert HostChange("route_del", net) in lb.branch.dialup.host_changes
    assert HostChange("address_del", address) in lb.branch.dialup.host_changes
    assert lb.branch.dialup.get_timer() is None  # no redial timer: nothing to dial through
    assert log(lb.hq, "ppp.down")  # the LNS got the Delete: its session went too, logged
    lb.advance(20)
    assert not log(lb.branch, "l2tp.dialing")
    lb.branch.ike.initiate("to-hq", lb.now)
    lb.pump()
    lb.advance(5)
    assert len(log(lb.branch, "l2tp.dialing")) == 1 and len(log(lb.branch, "ppp.up")) == 1
    lb.send_from(lb.branch, icmp_echo("10.9.0.2", HQ_LAN_HOST))
    assert lb.hq.tun


def test_lns_restarted_without_dpd_the_lac_asks_for_fresh_ipsec() -> None:
    """The LNS restarts and forgets our SAs; no DPD (off here; some LNSs do none) tells IKE.
    The L2TP tunnel times out inside the stale SAs: redialing through them would never get
    through, so the LAC asks for IPsec afresh (the daemon deletes and re-initiates)."""
    lac = LAC.replace("ike: {start: start}", "ike: {start: start}\n    dpd: {interval: null}") \
        .replace("auth: [mschapv2],", "auth: [mschapv2], hello_interval: 5s, redial_min: 1s,")
    lb = lab(lac=lac)
    assert log(lb.branch, "ppp.up")
    restarted = Lab(gateway(LNS, 11), lb.branch, lb.now)  # the same LNS, all state lost
    seen = timeline(restarted, lb.branch, 45)
    what = [w for _, w, _ in seen]
    assert "l2tp.ipsec_restart" in what, what
    timed_out = next(f for _, w, f in seen if w == "l2tp.tunnel_down")
    assert timed_out["reason"] == "timeout" and "HELLO" in timed_out["detail"], timed_out
    assert lb.branch.dialup.ipsec_restarts == ["to-hq"]
    assert lb.branch.dialup.stats["lac_ipsec_restarts"] == 1
    # what the daemon does with it
    lb.branch.dialup.ipsec_restarts.clear()
    lb.branch.ike.terminate("to-hq", restarted.now)
    lb.branch.ike.initiate("to-hq", restarted.now)
    restarted.pump()
    restarted.advance(5)
    assert len(log(lb.branch, "ppp.up")) == 2 and log(restarted.hq, "ppp.up")
    restarted.send_from(lb.branch, icmp_echo("10.9.0.2", HQ_LAN_HOST))
    assert restarted.hq.tun
