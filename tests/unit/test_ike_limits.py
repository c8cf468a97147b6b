"""Responder limits under floods, sans-IO (RFC 7296 2.6, RFC 8019): cookies, half-open SAs
in all and per source address, their timeout, IKEv1's bounded Main Mode state, and many
honest clients behind one carrier-grade NAT address.

The flood packets come from `appliance.lab.flood` (what the end-to-end flood sends); time
is a parameter and randomness is seeded, as everywhere in the cores.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ike_loopback import BRANCH, HQ, Wire, of_type, psk_pair, seeded

from appliance.lab.flood import IKEV1_PROPOSAL, ike_sa_init_template, main_mode_1
from gateway.ike.events import ChildSaUp, Datagram, IkeSaUp
from gateway.ike.identity import ANY, Identity
from gateway.ike.settings import PeerConfig, ResponderLimits, Timing
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.constants import ExchangeType as V1Exchange
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v1.message import Header as V1Header
from gateway.ike.v2.constants import NotifyType
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ike.v2.message import HEADER_SIZE, Header, NotifyPayload, decode_payloads, encode_payloads

CGN = "198.18.0.1"  # one carrier-grade NAT address in front of many clients


def spoofed(n: int, network: str = "100.64.0.0/10") -> list[str]:
    hosts = ipaddress.IPv4Network(network).hosts()
    return [str(next(hosts)) for _ in range(n)]


def open_configs(version: int = 2) -> tuple[PeerConfig, PeerConfig]:
    """HQ open to any peer with the key (a remote-access style responder), and one peer."""
    hq, branch = psk_pair(version=1, ike=IKEV1_PROPOSAL, esp="aes128-sha1") if version == 1 else psk_pair()
    wide = TsRange.of_network(ipaddress.IPv4Network("10.0.0.0/8"))
    hq = replace(hq, remote_address=None, remote_id=ANY, child=replace(hq.child, remote_ts=(wide,)))
    return hq, branch


def v2_responder(**limits: Any) -> IkeV2Endpoint:
    hq, _ = open_configs()
    ep = IkeV2Endpoint(HQ, [hq], random=seeded(1))
    ep.set_limits(replace(ResponderLimits(), **limits))
    return ep


TEMPLATE = ike_sa_init_template(random=seeded(99))


def init_request(spi: int) -> bytes:
    return spi.to_bytes(8, "big") + TEMPLATE[8:]


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    """The request again with the COOKIE notify first (2.6)."""
    h = Header.decode(request)
    payloads = [NotifyPayload(NotifyType.COOKIE, cookie),
                *decode_payloads(h.next_payload, request[HEADER_SIZE:], HEADER_SIZE)]
    first, body = encode_payloads(payloads)
    return Header(h.spi_i, h.spi_r, first, h.exchange, h.flags, 0, HEADER_SIZE + len(body)).encode() + body


def answer(ep: IkeV2Endpoint) -> list[Any] | None:
    """The payloads of the one answer the endpoint sent, or None if it sent nothing."""
    out = ep.datagrams_to_send()
    if not out:
        return None
    [d] = out
    h = Header.decode(d.data)
    return decode_payloads(h.next_payload, d.data[HEADER_SIZE:], HEADER_SIZE)


def cookie_of(payloads: list[Any] | None) -> bytes | None:
    if payloads and isinstance(payloads[0], NotifyPayload) and payloads[0].type == NotifyType.COOKIE:
        return payloads[0].data
    return None


def proven_request(ep: IkeV2Endpoint, spi: int, source: tuple[str, int], now: float) -> list[Any] | None:
    """An initiator that receives at ``source``: asks, gets a COOKIE, asks again with it."""
    request = init_request(spi)
    ep.receive(request, 500, source, now)
    cookie = cookie_of(answer(ep))
    assert cookie is not None, "no cookie was demanded"
    ep.receive(with_cookie(request, cookie), 500, source, now)
    return answer(ep)


def accepted(payloads: list[Any] | None) -> bool:
    return payloads is not None and cookie_of(payloads) is None and len(payloads) > 1


# ======================================================================================
# IKEv2
# ======================================================================================


def test_spoofed_flood_leaves_at_most_the_cookie_threshold_half_open() -> None:
    """5000 IKE_SA_INIT requests from 5000 addresses that never answer: ten half-open SAs,
    then a COOKIE (smaller than the request) for each of the rest, and no state for them;
    a real peer still connects through the cookie round trip."""
    ep = v2_responder(cookie_threshold=10)
    now = 1000.0
    sizes = []
    for i, address in enumerate(spoofed(5000)):
        ep.receive(init_request(i + 1), 500, (address, 500), now)
        out = ep.datagrams_to_send()
        assert len(out) == 1
        if i >= 10:
            assert cookie_of(answer_of(out[0])) is not None
            sizes.append(len(out[0].data))
    assert ep.half_open == 10 and len(ep.sas(now)) == 10
    assert ep.counters["cookie_sent"] == 4990
    assert max(sizes) < len(TEMPLATE), "a COOKIE answer must not amplify the request"
    _, branch = open_configs()
    w = Wire(IkeV2Endpoint(BRANCH, [branch], random=seeded(5)), ep, now=now)
    w.a.initiate("to-hq", now)
    w.pump()
    assert w.a.established("to-hq") and of_type(w.events_b, ChildSaUp)
    assert ep.counters["cookie_sent"] == 4991  # the real peer was asked too, and came back
    # the spoofed SAs time out; nothing of the flood is left
    w.advance(Timing().half_open_timeout + 1, step=1.0)
    assert ep.half_open == 0 and len(ep.sas(w.now)) == 1


def answer_of(d: Datagram) -> list[Any]:
    h = Header.decode(d.data)
    return decode_payloads(h.next_payload, d.data[HEADER_SIZE:], HEADER_SIZE)


def test_a_spoofer_cannot_spend_a_real_address_budget() -> None:
    """Requests spoofed from V make at most ``cookie_threshold`` SAs, which do not count
    toward V's per-source budget: honest clients at V still get their three."""
    ep = v2_responder(cookie_threshold=2, half_open_per_source=3)
    victim, now = "203.0.113.5", 1000.0
    for i in range(200):
        ep.receive(init_request(i + 1), 500, (victim, 1000 + i), now)
        ep.datagrams_to_send()
    assert ep.half_open == 2 and ep.counters["cookie_sent"] == 198
    for i in range(3):
        assert accepted(proven_request(ep, 10_000 + i, (victim, 2000 + i), now))
    assert ep.half_open == 5
    # a fourth proven one from V is over V's budget: dropped without an answer
    assert proven_request(ep, 10_003, (victim, 2003), now) is None
    assert ep.counters["half_open_source_limit"] == 1
    # another address is not affected
    assert accepted(proven_request(ep, 20_000, ("203.0.113.6", 500), now))
    # V's budget comes back as its half-open SAs time out (and cookies are not needed)
    later = now + Timing().half_open_timeout + 1
    ep.handle_timer(later)
    assert ep.half_open == 0
    ep.receive(init_request(10_004), 500, (victim, 2004), later)
    assert accepted(answer(ep))


def test_global_cap_refuses_even_valid_cookies_without_state() -> None:
    ep = v2_responder(cookie_threshold=0, half_open_max=5)
    now = 1000.0
    for i, address in enumerate(spoofed(5, "192.0.2.128/25")):
        assert accepted(proven_request(ep, i + 1, (address, 500), now))
    assert ep.half_open == 5
    # full: a new request is dropped before anything else (no cookie, no answer, no state)
    late = init_request(99)
    ep.receive(late, 500, ("192.0.2.200", 500), now)
    assert answer(ep) is None and ep.half_open == 5
    assert ep.counters["half_open_limit"] == 1
    # once the half-open SAs time out, the initiator's retransmission gets in
    later = now + Timing().half_open_timeout + 1
    ep.handle_timer(later)
    assert ep.half_open == 0
    assert accepted(proven_request(ep, 99, ("192.0.2.200", 500), later))


def test_half_open_timeout_is_configurable() -> None:
    hq, _ = open_configs()
    ep = IkeV2Endpoint(HQ, [hq], random=seeded(1), timing=Timing(half_open_timeout=5.0))
    ep.receive(init_request(1), 500, ("100.64.0.1", 500), 1000.0)
    assert ep.half_open == 1 and ep.get_timer() == 1005.0
    ep.handle_timer(1005.0)
    assert ep.half_open == 0 and not ep.sas(1005.0)


def test_limits_change_at_run_time() -> None:
    ep = v2_responder()
    ep.set_limits(ResponderLimits(cookie_threshold=0, half_open_max=7, half_open_per_source=3))
    assert (ep.cookie_threshold, ep.half_open_max, ep.half_open_per_source) == (0, 7, 3)
    ep.receive(init_request(1), 500, ("100.64.0.1", 500), 1000.0)
    assert cookie_of(answer(ep)) is not None


# -- many honest clients behind one NAT address ------------------------------------------------


@dataclass
class Cgn:
    """Clients behind one carrier-grade NAT address (each its own ports) and a responder on
    the open side; the NAT maps client i's port 500/4500 to 20000 + 2i (+1)."""

    responder: Any
    clients: list[Any]
    now: float = 1000.0
    events: list[object] = field(default_factory=list)
    drop: Callable[[Datagram], bool] | None = None

    def pump(self, rounds: int = 400) -> None:
        for _ in range(rounds):
            moved = False
            for i, client in enumerate(self.clients):
                for d in client.datagrams_to_send():
                    moved = True
                    if self.drop is not None and self.drop(d):
                        continue
                    port = 20000 + 2 * i + (d.local_port == 4500)
                    self.responder.receive(d.data, d.remote[1], (CGN, port), self.now)
            for d in self.responder.datagrams_to_send():
                moved = True
                i, floated = divmod(d.remote[1] - 20000, 2)
                if d.remote[0] == CGN and 0 <= i < len(self.clients):
                    self.clients[i].receive(d.data, 4500 if floated else 500,
                                            (self.responder.local_address, d.local_port), self.now)
            for ep in (self.responder, *self.clients):
                while (ev := ep.next_event()) is not None:
                    if ep is self.responder:
                        self.events.append(ev)
            if not moved:
                return

    def advance(self, seconds: float, step: float = 0.5) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for ep in (self.responder, *self.clients):
                t = ep.get_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
            self.pump()


def cgn_clients(n: int, version: int) -> list[PeerConfig]:
    _, branch = open_configs(version)
    return [replace(branch, name=f"c{i}", local_address=f"10.99.0.{i + 1}",
                    local_id=Identity.parse(f"client{i}.example.net"),
                    child=replace(branch.child, local_ts=(
                        TsRange.of_network(ipaddress.IPv4Network(f"10.2.{i}.0/24")),)))
            for i in range(n)]


def test_twenty_ikev2_clients_behind_one_nat_address_all_connect() -> None:
    """20 initiators start at once from one address: the first ten make half-open SAs, the
    other ten are asked for a COOKIE (the threshold) and return it; the per-source limit
    (100) is far away, so none is refused."""
    configs = cgn_clients(20, 2)
    clients = [IkeV2Endpoint(c.local_address, [c], random=seeded(100 + i)) for i, c in enumerate(configs)]
    net = Cgn(v2_responder(), clients)
    for c in configs:
        net.clients[int(c.name[1:])].initiate(c.name, net.now, keep_up=False)
    net.pump()
    assert all(ep.established(c.name) for ep, c in zip(clients, configs, strict=True))
    assert len(of_type(net.events, IkeSaUp)) == 20 and len(of_type(net.events, ChildSaUp)) == 20
    assert net.responder.counters.get("cookie_sent") == 10
    assert "half_open_source_limit" not in net.responder.counters
    assert net.responder.half_open == 0


# ======================================================================================
# IKEv1 Main Mode
# ======================================================================================


def v1_responder(**limits: Any) -> IkeV1Endpoint:
    hq, _ = open_configs(1)
    ep = IkeV1Endpoint(HQ, [hq], random=seeded(1))
    ep.set_limits(replace(ResponderLimits(), **limits))
    return ep


def test_main_mode_flood_is_bounded_and_a_real_peer_still_connects() -> None:
    """1000 spoofed Main Mode first messages against room for 100: the oldest are evicted
    (no DH was done for them), the table never grows, and a real peer, whose message 3
    follows its message 1 within a round trip, connects."""
    ep = v1_responder(half_open_max=100)
    now = 1000.0
    for i, address in enumerate(spoofed(1000)):
        ep.receive(main_mode_1((i + 1).to_bytes(8, "big")), 500, (address, 500), now)
        [mm2] = ep.datagrams_to_send()
        assert V1Header.decode(mm2.data).exchange == V1Exchange.MAIN
        assert ep.half_open <= 100
    assert ep.half_open == 100 and len(ep.sas(now)) == 100
    assert ep.counters["half_open_evicted"] == 900
    _, branch = open_configs(1)
    w = Wire(IkeV1Endpoint(BRANCH, [branch], random=seeded(5)), ep, now=now)  # type: ignore[arg-type]
    w.a.initiate("to-hq", now)
    w.pump()
    assert w.a.established("to-hq") and of_type(w.events_b, ChildSaUp)
    assert ep.counters["half_open_evicted"] == 901  # room was made for it
    w.advance(Timing().half_open_timeout + 1, step=1.0)
    assert ep.half_open == 0 and len(ep.sas(w.now)) == 1


def test_main_mode_per_source_limit_slows_but_does_not_lock_out() -> None:
    """20 IKEv1 clients behind one address against a per-source limit of 5: message 3 of
    the sixth and later is dropped (counted) until earlier ones finish; their
    retransmissions get in, and all 20 connect."""
    configs = cgn_clients(20, 1)
    clients = [IkeV1Endpoint(c.local_address, [c], random=seeded(100 + i)) for i, c in enumerate(configs)]
    net = Cgn(v1_responder(half_open_per_source=5), clients)
    for i, c in enumerate(configs):
        clients[i].initiate(c.name, net.now, keep_up=False)
    net.pump()
    assert net.responder.counters["half_open_source_limit"] >= 15
    net.advance(40, step=0.5)
    assert all(ep.established(c.name) for ep, c in zip(clients, configs, strict=True))
    assert len(of_type(net.events, ChildSaUp)) == 20
    assert net.responder.half_open == 0


def test_twenty_ikev1_clients_behind_one_nat_address_all_connect_at_once() -> None:
    configs = cgn_clients(20, 1)
    clients = [IkeV1Endpoint(c.local_address, [c], random=seeded(100 + i)) for i, c in enumerate(configs)]
    net = Cgn(v1_responder(), clients)
    for i, c in enumerate(configs):
        clients[i].initiate(c.name, net.now, keep_up=False)
    net.pump()
    assert all(ep.established(c.name) for ep, c in zip(clients, configs, strict=True))
    refusals = {"half_open_source_limit", "half_open_limit", "half_open_evicted"}
    assert not refusals & set(net.responder.counters)


def test_main_mode_global_limit_on_proven_exchanges() -> None:
    """Message 3 beyond ``half_open_max`` proven Main Modes (between messages 3 and 5) is
    dropped and counted; the initiator retransmits it and gets in once room is made."""
    configs = cgn_clients(4, 1)
    clients = [IkeV1Endpoint(c.local_address, [c], random=seeded(100 + i)) for i, c in enumerate(configs)]
    net = Cgn(v1_responder(half_open_max=3), clients)
    stuck = True

    def mm5_lost(d: Datagram) -> bool:  # the first three stay between messages 3 and 5
        h = V1Header.decode(d.data) if len(d.data) >= 28 else None
        return stuck and h is not None and h.exchange == V1Exchange.MAIN and bool(h.flags & 1)

    net.drop = mm5_lost
    for i in range(3):
        clients[i].initiate(f"c{i}", net.now, keep_up=False)
    net.pump()
    assert net.responder.half_open == 3
    clients[3].initiate("c3", net.now, keep_up=False)
    net.pump()
    assert net.responder.counters["half_open_limit"] == 1
    assert not clients[3].established("c3")
    stuck = False
    net.advance(30, step=0.5)
    assert all(ep.established(c.name) for ep, c in zip(clients, configs, strict=True))
