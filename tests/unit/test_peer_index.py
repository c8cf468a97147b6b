"""The endpoints find a peer's other SAs (INITIAL_CONTACT, RFC 7296 2.4 and RFC 2407
4.6.3.3; IKEv1's Phase 1 rekeys) in an index by the peer's identity, not by comparing the
identity with every SA's: these run rekeys, deletes, reconnections and peers with other
identities against a responder that checks, at each of those points, that the index gives
what the scan over every SA gave, and that the index holds exactly the open SAs with a
peer identity."""

from __future__ import annotations

import ipaddress
from typing import Any

from ike_loopback import Net, of_type, seeded

from gateway.config.model import Secret
from gateway.ike.events import IkeSaDown, IkeSaUp
from gateway.ike.identity import ANY, Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v1.isakmpsa import State as V1State
from gateway.ike.v2.endpoint import IkeV2Endpoint
from gateway.ike.v2.ikesa import State as V2State

RESPONDER = "198.18.0.1"
PSK = Secret(b"index-test-psk-0123456789")
LAN = TsRange.of_network(ipaddress.IPv4Network("10.1.0.0/24"))
A, B, C = "100.64.0.1", "100.64.0.2", "100.64.0.3"


def assert_index(ep: Any) -> None:
    """The index holds exactly the open SAs that have a peer identity, each under its key."""
    indexed = [(key, sa) for key, bucket in ep._by_peer.items() for sa in bucket]
    assert all(bucket for bucket in ep._by_peer.values())
    assert all(sa.peer_id.match_key == key for key, sa in indexed)
    live = {id(sa) for sa in ep._sas.values() if not sa.closed and sa.peer_id is not None}
    assert {id(sa) for _, sa in indexed} == live and len(indexed) == len(live)


def _scan_initial_contact(ep: Any, sa: Any, same_address: bool) -> list[Any]:
    """What the endpoints closed when they scanned every SA."""
    return [o for o in list(ep._sas.values())
            if o is not sa and o.config is sa.config and (not same_address or o.remote[0] == sa.remote[0])
            and o.peer_id is not None and sa.peer_id is not None and o.peer_id.matches(sa.peer_id)
            and not o.closed]


def _checked_initial_contact(ep: Any, sa: Any, same_address: bool, call: Any) -> int:
    """Run the endpoint's initial_contact; it must close what the scan would have closed,
    and nothing else.  Returns how many it closed."""
    assert_index(ep)
    expected = {id(o) for o in _scan_initial_contact(ep, sa, same_address)}
    before = [o for o in ep._sas.values() if not o.closed]
    call(sa)
    assert {id(o) for o in before if o.closed} == expected
    assert_index(ep)
    return len(expected)


class CheckedV2(IkeV2Endpoint):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replaced: list[int] = []  # how many SAs each INITIAL_CONTACT closed

    def initial_contact(self, ike_sa: Any) -> None:
        self.replaced.append(_checked_initial_contact(self, ike_sa, False, super().initial_contact))


class CheckedV1(IkeV1Endpoint):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replaced: list[int] = []
        self.adopted: list[int] = []
        self.successors: list[Any] = []

    def initial_contact(self, sa: Any) -> None:
        self.replaced.append(_checked_initial_contact(self, sa, True, super().initial_contact))

    def on_established(self, sa: Any, now: float) -> None:
        assert_index(self)
        expected = [o for o in list(self._sas.values()) if o is not sa and o.children
                    and o.state is V1State.ESTABLISHED and sa.successor_of(o)] if not sa.initiator else []
        children = [c for o in expected for c in o.children]
        super().on_established(sa, now)
        assert all(o.replaced and not o.children for o in expected)
        assert all(c in sa.children for c in children)
        self.adopted.append(len(expected))

    def successor(self, sa: Any) -> Any:
        found = [o for o in self._sas.values() if o is not sa and o.state is V1State.ESTABLISHED
                 and o.successor_of(sa) and (o.established_at or 0) >= (sa.established_at or 0)]
        expected = max(found, key=lambda o: o.established_at or 0) if found else None
        got = super().successor(sa)
        assert got is expected
        self.successors.append(got)
        return got


def responder_configs(version: int) -> list[PeerConfig]:
    """``fixed`` for the peer at C only (the same identities, another connection), then one
    for any peer and identity."""
    child = ChildConfig("net", (LAN,), (TsRange.of_network(ipaddress.IPv4Network("10.64.0.0/10")),),
                        (parse_child_proposal("aes128gcm16" if version == 2 else "aes128-sha256"),))
    ike = (parse_ike_proposal("aes128gcm16-prfsha256-ecp256" if version == 2 else "aes128-sha256-ecp256"),)
    me = Identity.from_address(RESPONDER)
    return [PeerConfig(name, RESPONDER, address, ike, child, me, ANY, psk=PSK, dpd_interval=None,
                       version=version) for name, address in (("fixed", C), ("any", None))]


def initiator(version: int, address: str, identity: str, inner: str, seed: int) -> Any:
    child = ChildConfig("net", (TsRange.of_network(ipaddress.IPv4Network(inner)),), (LAN,),
                        (parse_child_proposal("aes128gcm16" if version == 2 else "aes128-sha256"),))
    ike = (parse_ike_proposal("aes128gcm16-prfsha256-ecp256" if version == 2 else "aes128-sha256-ecp256"),)
    cfg = PeerConfig("to-gw", address, RESPONDER, ike, child, Identity.parse(identity),
                     Identity.from_address(RESPONDER), psk=PSK, dpd_interval=None, version=version)
    cls = IkeV2Endpoint if version == 2 else IkeV1Endpoint
    return cls(address, [cfg], random=seeded(seed))


def connect(net: Net, ep: Any) -> None:
    net.endpoints[ep.local_address] = ep
    net.events[ep.local_address] = []
    ep.initiate("to-gw", net.now)
    net.pump()
    assert ep.established("to-gw")


def open_sas(ep: Any) -> list[Any]:
    return [sa for sa in ep._sas.values() if not sa.closed]


def test_ikev2_initial_contact_finds_the_same_identity_through_rekeys_and_deletes() -> None:
    gw = CheckedV2(RESPONDER, responder_configs(2), random=seeded(1))
    net = Net({RESPONDER: gw})  # type: ignore[dict-item]
    connect(net, initiator(2, A, "peer-a.example", "10.64.0.1/32", 11))
    connect(net, initiator(2, B, "peer-b.example", "10.64.0.2/32", 12))
    assert gw.replaced == [0, 0]
    assert_index(gw)
    # both IKE SAs rekeyed: the successors carry the identities (and the index), the old go
    assert gw.rekey("any", net.now, ike=True) == 2
    net.pump()
    net.advance(40)
    assert_index(gw)
    [a_sa] = [sa for sa in open_sas(gw) if sa.remote[0] == A]
    [b_sa] = [sa for sa in open_sas(gw) if sa.remote[0] == B]
    assert a_sa.state is V2State.ESTABLISHED and len(open_sas(gw)) == 2
    # A's identity again, written otherwise (FQDNs compare without case and final dot), from
    # another address: the rekeyed SA of A goes, B's stays
    net.events[RESPONDER].clear()
    connect(net, initiator(2, "100.64.0.4", "PEER-A.example.", "10.64.0.4/32", 13))
    assert gw.replaced[-1] == 1 and a_sa.closed and not b_sa.closed
    assert [d.ike_sa for d in of_type(net.events[RESPONDER], IkeSaDown)] == [a_sa.ident]
    # B deletes its SA, then comes back: nothing of B's is left to replace
    assert net.endpoints[B].terminate("to-gw", net.now) == 1
    net.pump()
    assert b_sa.closed
    assert_index(gw)
    connect(net, initiator(2, B, "peer-b.example", "10.64.0.2/32", 14))
    assert gw.replaced[-1] == 0
    # A's identity at C belongs to another connection ("fixed"): A's SA stays
    connect(net, initiator(2, C, "peer-a.example", "10.64.0.3/32", 15))
    assert gw.replaced[-1] == 0
    assert sorted(sa.name for sa in open_sas(gw)) == ["any", "any", "fixed"]
    # and again at C: the "fixed" one is replaced, not A's
    connect(net, initiator(2, C, "peer-a.example", "10.64.0.3/32", 16))
    assert gw.replaced[-1] == 1
    assert sorted(sa.name for sa in open_sas(gw)) == ["any", "any", "fixed"]
    assert_index(gw)


def test_ikev1_initial_contact_and_phase1_rekeys_find_the_same_peer() -> None:
    gw = CheckedV1(RESPONDER, responder_configs(1), random=seeded(2))
    net = Net({RESPONDER: gw})  # type: ignore[dict-item]
    connect(net, initiator(1, A, "peer-a.example", "10.64.0.1/32", 21))
    connect(net, initiator(1, B, "peer-b.example", "10.64.0.2/32", 22))
    assert gw.replaced == [0, 0] and gw.adopted == [0, 0]
    # A rekeys Phase 1 (a new Main Mode): the new ISAKMP SA takes the old one's IPsec SAs
    a = net.endpoints[A]
    assert a.rekey("to-gw", net.now, ike=True) == 1
    net.pump()
    assert gw.adopted[-1] == 1
    net.advance(60)  # the old ISAKMP SA is deleted; its IPsec SAs stay with the new one
    assert_index(gw)
    [a_sa] = [sa for sa in open_sas(gw) if sa.remote[0] == A]
    assert gw.successors == [a_sa]  # (asked when A deleted the old one)
    assert a_sa.children and len(open_sas(gw)) == 2
    # A restarts (its state lost) with another spelling of its identity: A's SA goes (the
    # same address and connection), B's stays
    net.events[RESPONDER].clear()
    connect(net, initiator(1, A, "Peer-A.Example", "10.64.0.1/32", 23))
    assert gw.replaced[-1] == 1 and a_sa.closed
    assert [d.ike_sa for d in of_type(net.events[RESPONDER], IkeSaDown)] == [a_sa.ident]
    # another identity from A's address replaces nothing
    connect(net, initiator(1, A, "peer-z.example", "10.64.0.1/32", 24))
    assert gw.replaced[-1] == 0
    # B deletes its ISAKMP SA: no successor for it; then it comes back
    b_sa = next(sa for sa in open_sas(gw) if sa.remote[0] == B)
    assert net.endpoints[B].terminate("to-gw", net.now) == 1
    net.pump()
    assert b_sa.closed
    assert_index(gw)
    connect(net, initiator(1, B, "peer-b.example", "10.64.0.2/32", 25))
    assert gw.replaced[-1] == 0
    assert len(of_type(net.events[RESPONDER], IkeSaUp)) == 3
    assert_index(gw)


def test_a_peer_identity_set_again_moves_in_the_index() -> None:
    gw = IkeV2Endpoint(RESPONDER, responder_configs(2), random=seeded(3))
    net = Net({RESPONDER: gw})
    connect(net, initiator(2, A, "peer-a.example", "10.64.0.1/32", 31))
    [sa] = open_sas(gw)
    sa.peer_id = Identity.parse("peer-q.example")
    assert_index(gw)
    assert gw._same_peer(Identity.parse("peer-a.example"), None) == []
    assert gw._same_peer(Identity.parse("PEER-Q.example"), None) == [sa]
    assert gw._same_peer(ANY, None) == [sa]  # (never from the wire: every SA)
    sa.close("test", net.now)
    assert gw._by_peer == {}
