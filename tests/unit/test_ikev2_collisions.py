"""Simultaneous rekeys (RFC 7296 2.8.1, 2.8.2): both ends rekey the same SA at once.

The SA created with the lowest of the four nonces is redundant; whatever the nonces,
both ends must end with the same single CHILD_SA pair, sending on it, and one IKE SA.
The events drive the real `TunnelTable`, so "sending on it" is the dataplane's policy.
"""

from __future__ import annotations

import ipaddress

import pytest
from ike_loopback import endpoints, psk_pair

from gateway.dataplane import ip
from gateway.dataplane.edge import EdgePolicy
from gateway.dataplane.engine import Dataplane
from gateway.ike.events import ChildSaActivate, ChildSaDown, ChildSaUp, Note
from gateway.ike.v2.ikesa import State
from gateway.tunnels import TunnelTable


class Side:
    """One gateway's dataplane, fed by its endpoint's events."""

    def __init__(self, address: str) -> None:
        self.table = TunnelTable(Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(address))), 64)
        self.notes: list[str] = []

    def feed(self, events: list[object]) -> None:
        for ev in events:
            if isinstance(ev, ChildSaUp):
                self.table.up(ev, activate=ev.activate)
            elif isinstance(ev, ChildSaDown):
                self.table.down(ev)
            elif isinstance(ev, ChildSaActivate):
                self.table.activate(ev.connection, ev.spi_in)
            elif isinstance(ev, Note):
                self.notes.append(ev.what)
        events.clear()

    def only_pair(self) -> tuple[int, int]:
        (tunnel,) = self.table.tunnels.values()
        assert len(tunnel.pairs) == 1, f"pairs left: {[hex(s) for s in tunnel.pairs]}"
        (spi_in, pair), = tunnel.pairs.items()
        assert tunnel.policy.esp_out is pair.outbound, "not sending on the surviving SA"
        return spi_in, pair.outbound.spi


def _setup(seed: int):  # type: ignore[no-untyped-def]
    a_cfg, b_cfg = psk_pair()
    wire = endpoints(a_cfg, b_cfg, seed=seed)
    a, b = Side("192.0.2.1"), Side("198.51.100.1")
    wire.a.initiate("to-branch", wire.now)
    wire.pump()
    a.feed(wire.events_a)
    b.feed(wire.events_b)
    return wire, a, b


@pytest.mark.parametrize("seed", range(8))
def test_simultaneous_child_rekey_converges(seed: int) -> None:
    wire, a, b = _setup(seed)
    before = a.only_pair()
    wire.a.rekey("to-branch", wire.now)
    wire.b.rekey("to-hq", wire.now)
    wire.pump()
    a.feed(wire.events_a)
    b.feed(wire.events_b)
    assert "ike.child_rekey_collision" in a.notes and "ike.child_rekey_collision" in b.notes
    outcome = {n for n in a.notes + b.notes if n.startswith("ike.child_rekey_collision_")}
    assert outcome == {"ike.child_rekey_collision_won", "ike.child_rekey_collision_lost"}
    a_in, a_out = a.only_pair()
    b_in, b_out = b.only_pair()
    assert (a_in, a_out) == (b_out, b_in)
    assert a_in != before[0]
    # The survivors' keys agree: what A's dataplane encrypts, B's decrypts.
    inner = ip.build_header(bytes([10, 1, 0, 10]), bytes([10, 2, 0, 10]), 17, 8) + bytes(8)
    sent = a.table.engine.outbound(inner)
    assert sent is not None and int.from_bytes(sent[1][:4], "big") == b_in
    outer = ip.build_header(bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1]), 50, len(sent[1]))
    assert b.table.engine.inbound_ip(outer + sent[1]) == inner


def test_both_outcomes_occur_across_seeds() -> None:
    seen = set()
    for seed in range(8):
        wire, a, _ = _setup(seed)
        wire.a.rekey("to-branch", wire.now)
        wire.b.rekey("to-hq", wire.now)
        wire.pump()
        a.feed(wire.events_a)
        seen |= {n for n in a.notes if n.startswith("ike.child_rekey_collision_")}
    assert seen == {"ike.child_rekey_collision_won", "ike.child_rekey_collision_lost"}


@pytest.mark.parametrize("seed", range(6))
def test_simultaneous_ike_rekey_converges(seed: int) -> None:
    wire, a, b = _setup(seed)
    old = next(iter(wire.a._sas.values())).ident
    wire.a.rekey("to-branch", wire.now, ike=True)
    wire.b.rekey("to-hq", wire.now, ike=True)
    wire.pump()
    wire.advance(35)  # any linger timer runs out
    a.feed(wire.events_a)
    b.feed(wire.events_b)
    sas_a = [sa for sa in wire.a._sas.values() if sa.state is not State.CLOSED]
    sas_b = [sa for sa in wire.b._sas.values() if sa.state is not State.CLOSED]
    assert len(sas_a) == 1 and len(sas_b) == 1
    assert sas_a[0].ident == sas_b[0].ident != old
    assert len(sas_a[0].children) == 1 and len(sas_b[0].children) == 1
    a.only_pair()
    b.only_pair()
    # the surviving IKE SA still works: a CHILD_SA rekey over it succeeds
    wire.a.rekey("to-branch", wire.now)
    wire.pump()
    a.feed(wire.events_a)
    b.feed(wire.events_b)
    assert a.only_pair() == tuple(reversed(b.only_pair()))
