"""Reauthentication (RFC 7296 2.8.3): a fresh IKE SA from scratch, make-before-break."""

from __future__ import annotations

from dataclasses import replace

from ike_loopback import endpoints, of_type, psk_pair

from gateway.ike.events import ChildSaDown, ChildSaUp, IkeSaDown, IkeSaUp, Note
from gateway.ike.v2.message import Header


def test_reauth_builds_new_sas_before_deleting_the_old() -> None:
    a_cfg, b_cfg = psk_pair()
    wire = endpoints(replace(a_cfg, reauth_time=100), b_cfg)
    wire.a.initiate("to-branch", wire.now)
    wire.pump()
    [old_ike] = wire.a.sas(wire.now)
    [old_child] = of_type(wire.events_a, ChildSaUp)
    wire.events_a.clear()
    wire.events_b.clear()
    start = len(wire.log)
    wire.advance(101)
    # A fresh IKE_SA_INIT (new SPIs, no INITIAL_CONTACT), and only then the old SA's delete.
    exchanges = [Header.decode(d.data).describe() for t, d in wire.log[start:] if t == "a>b"]
    assert exchanges[0] == "IKE_SA_INIT request 0" and exchanges[-1] == "INFORMATIONAL request 2"
    order = [type(e).__name__ for e in wire.events_a if not isinstance(e, Note)]
    assert order == ["IkeSaUp", "ChildSaUp", "ChildSaDown"], order
    [new_child] = of_type(wire.events_a, ChildSaUp)
    [gone] = of_type(wire.events_a, ChildSaDown)
    assert gone.spi_in == old_child.spi_in and new_child.spi_in != old_child.spi_in
    assert new_child.rekey_of is None and new_child.activate
    [ike] = wire.a.sas(wire.now)
    assert ike["ike_sa"] != old_ike["ike_sa"] and len(ike["children"]) == 1
    [peer] = wire.b.sas(wire.now)
    assert peer["ike_sa"] == ike["ike_sa"]
    assert of_type(wire.events_b, IkeSaDown)[0].ike_sa == old_ike["ike_sa"]
    assert len(of_type(wire.events_b, IkeSaUp)) == 1
    # ... and the next reauthentication follows on the new SA.
    wire.advance(100)
    [again] = wire.a.sas(wire.now)
    assert again["ike_sa"] != ike["ike_sa"]
