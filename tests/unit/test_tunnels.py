"""TunnelTable: traffic totals per connection survive rekeys, and cover every peer of a %any one;
the routes a tunnel needs beyond its connection's trap."""

from __future__ import annotations

import dataclasses
import ipaddress

from test_keylog import child_up, table

from gateway.dataplane.sa import Mode
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.ike.events import ChildSaDown
from gateway.ike.trafficselectors import TsRange


def count(sa, packets: int, octets: int) -> None:  # type: ignore[no-untyped-def]
    sa.counters.packets += packets
    sa.counters.bytes += octets


def test_totals_survive_a_rekey() -> None:
    t = table(None)
    first = child_up("aes128gcm16")
    tunnel, _ = t.up(first)
    old = tunnel.pairs[first.spi_in]
    count(old.inbound, 3, 300)
    count(old.outbound, 2, 200)
    second = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000011, spi_out=0xC0000012),
                                 rekey_of=first.spi_in)
    t.up(second)
    count(tunnel.pairs[second.spi_in].inbound, 1, 100)
    t.down(ChildSaDown(first.connection, first.ike_sa, first.spi_in, first.spi_out, "rekeyed"))
    totals = t.totals("dialin")
    assert (totals.packets_in, totals.bytes_in, totals.packets_out, totals.bytes_out) == (4, 400, 2, 200)


def test_totals_of_a_connection_sum_its_peers() -> None:
    t = table(None)
    a = dataclasses.replace(child_up("aes128gcm16"), tunnel="dialin@203.0.113.2:4500")
    b = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000021, spi_out=0xC0000022),
                            tunnel="dialin@203.0.113.2:61000")
    for ev in (a, b):
        tunnel, _ = t.up(ev)
        count(tunnel.pairs[ev.spi_in].inbound, 5, 500)
    other = dataclasses.replace(child_up("aes128gcm16", spi_in=0xC0000031, spi_out=0xC0000032),
                                connection="dialins", tunnel="dialins")
    tunnel, _ = t.up(other)
    count(tunnel.pairs[other.spi_in].inbound, 7, 700)
    names = [x.name for x in t.of_connection("dialin")]
    assert names == ["dialin@203.0.113.2:4500", "dialin@203.0.113.2:61000"]
    assert t.totals("dialin").packets_in == 10  # not the connection whose name merely starts alike
    assert t.totals("dialins").packets_in == 7


# -- which routes a tunnel needs of its own ------------------------------------------------------

LAN = ipaddress.IPv4Network("10.1.0.0/24")
PEERS = ipaddress.IPv4Network("10.64.0.0/16")


def tunnel_up(t, peer: str, inner: str, *, mode: str = "tunnel", spi: int = 0xC0000041):  # type: ignore[no-untyped-def]
    net = ipaddress.IPv4Network(inner)
    ev = dataclasses.replace(child_up("aes128gcm16", spi_in=spi, spi_out=spi + 1), mode=mode,
                             local_ts=(TsRange.of_network(LAN),), remote_ts=(TsRange.of_network(net),),
                             tunnel=f"dialin@{peer}:4500")
    return t.up(ev)


def trap(t, nets: list[ipaddress.IPv4Network], *, routed: bool = True):  # type: ignore[no-untyped-def]
    selectors = tuple(SelectorPair(TrafficSelector(LAN), TrafficSelector(n)) for n in nets)
    tunnel = t.install_trap("dialin", selectors, Mode.TUNNEL, priority=5000)
    if routed:  # as the daemon does for a tunnel-mode IKE connection's trap
        tunnel.routes = tuple(tunnel.remote_nets)
    return tunnel


def test_peers_inside_the_traps_routes_need_no_route_of_their_own() -> None:
    t = table(None)
    trapped = trap(t, [PEERS])
    inside, new = tunnel_up(t, "100.64.0.1", "10.64.0.1/32")
    assert new and t.own_routes(inside) == [] and t.routes_of(inside) == []
    whole, _ = tunnel_up(t, "100.64.0.2", "10.64.0.0/16", spi=0xC0000051)
    assert t.own_routes(whole) == []  # the trap's route is that one
    outside, _ = tunnel_up(t, "100.64.0.3", "10.65.0.0/24", spi=0xC0000061)
    assert t.own_routes(outside) == [ipaddress.IPv4Network("10.65.0.0/24")]
    wider, _ = tunnel_up(t, "100.64.0.4", "10.0.0.0/8", spi=0xC0000071)
    assert t.own_routes(wider) == [ipaddress.IPv4Network("10.0.0.0/8")]
    # the trap's own routes are its, not "own" ones a CHILD_SA would add
    assert t.own_routes(trapped) == [] and t.routes_of(trapped) == [PEERS]
    # a peer going keeps the trap's routes
    t.remove(inside.name)
    assert t.routes_of(trapped) == [PEERS]


def test_without_routed_trap_or_in_transport_mode_every_peer_net_is_routed() -> None:
    net = ipaddress.IPv4Network("10.64.0.1/32")
    t = table(None)  # no trap (a %any connection without remote subnets)
    peer, _ = tunnel_up(t, "100.64.0.1", str(net))
    assert t.own_routes(peer) == [net]
    t = table(None)
    trap(t, [PEERS], routed=False)  # a trap whose routes the daemon did not install (a policy's)
    peer, _ = tunnel_up(t, "100.64.0.1", str(net))
    assert t.own_routes(peer) == [net]
    t = table(None)
    trap(t, [PEERS])
    peer, _ = tunnel_up(t, "100.64.0.1", str(net), mode="transport")  # another routing table
    assert t.own_routes(peer) == [net]


def test_a_narrowed_child_of_a_trapped_connection_adds_no_route() -> None:
    t = table(None)
    trapped = trap(t, [PEERS])
    ev = dataclasses.replace(child_up("aes128gcm16"), mode="tunnel", local_ts=(TsRange.of_network(LAN),),
                             remote_ts=(TsRange.of_network(ipaddress.IPv4Network("10.64.3.0/24")),))
    tunnel, new = t.up(ev)
    assert tunnel is trapped and new  # a net the trap did not name...
    assert t.own_routes(tunnel) == [] and t.routes_of(tunnel) == [PEERS]  # ...inside its route
