"""With many SAs, per-message and per-second work must not scan every SA (bench/handshakes
found each message, each IPsec SA install and each liveness check doing so); these check
that the shortcuts still give the answers the scans gave."""

from __future__ import annotations

import ipaddress

import pytest
from test_ikeload import PSK, RESPONDER, responder

from appliance.lab.ikeload import LoadGenerator, LoadPlan, run_in_memory
from gateway.dataplane.selectors import SelectorPair, TrafficSelector
from gateway.dataplane.spd import Policy, SecurityPolicyDatabase
from gateway.ike.events import ChildSaUp


@pytest.mark.parametrize("version", [2, 1])
def test_ike_sa_of_child_and_collect_after_a_close(version: int) -> None:
    ups: list[ChildSaUp] = []
    ep = responder(version)
    gen = LoadGenerator(LoadPlan(responder=RESPONDER, psk=PSK, version=version, count=6, window=3))
    report = run_in_memory(gen, ep, RESPONDER,
                           on_event=lambda ev: ups.append(ev) if isinstance(ev, ChildSaUp) else None)
    assert report.established == 6
    for ev in ups:
        assert ep.ike_sa_of_child(ev.spi_in).ident == ev.ike_sa
    assert ep.ike_sa_of_child(0x12345678) is None
    gone = ep.ike_sa_of_child(ups[2].spi_in)
    count = len(ep._sas)
    gone.close("test", 2000.0)
    ep.handle_timer(2000.0)  # any entry point collects
    assert len(ep._sas) == count - 1 and gone not in ep._sas.values()
    assert ep.ike_sa_of_child(ups[2].spi_in) is None
    for ev in ups[:2] + ups[3:]:
        assert ep.ike_sa_of_child(ev.spi_in).ident == ev.ike_sa


def _policy(name: str, priority: int, port: int = 0) -> Policy:
    net = ipaddress.IPv4Network("10.0.0.0/8")
    remote = TrafficSelector(net, port, port) if port else TrafficSelector(net)
    return Policy(name, (SelectorPair(TrafficSelector(net), remote),), priority=priority)


def test_spd_keeps_priority_then_insertion_order() -> None:
    spd = SecurityPolicyDatabase()
    for name, priority in (("a", 1000), ("b", 10), ("c", 1000), ("d", 999), ("e", 10)):
        spd.add(_policy(name, priority))
    assert [p.name for p in spd] == ["b", "e", "d", "a", "c"]
    assert not spd.uses_ports
    spd.add(_policy("ports", 5, port=80))
    assert spd.uses_ports
    spd.remove("ports")
    assert not spd.uses_ports


@pytest.mark.parametrize("version", [2, 1])
def test_timers_look_only_at_the_sas_that_changed(version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """get_timer and handle_timer come per message: they read a heap of deadlines, not
    every SA's (the check against the pass over every SA is on in all unit tests)."""
    ep = responder(version)
    gen = LoadGenerator(LoadPlan(responder=RESPONDER, psk=PSK, version=version, count=40, window=10))
    assert run_in_memory(gen, ep, RESPONDER).established == 40
    sa_class = type(next(iter(ep._sas.values())))
    calls = []
    original = sa_class.next_deadline
    monkeypatch.setattr(sa_class, "next_deadline", lambda sa: calls.append(sa) or original(sa))
    monkeypatch.setattr(type(ep), "check_timers", False)
    first = ep.get_timer()
    assert first is not None and not calls
    ep.handle_timer(first - 1)
    assert len(calls) <= 1
    # an SA whose deadline may have changed (touched): only it is looked at again
    [sa] = [s for s in ep._sas.values() if s.remote[0] == gen.plan.source(3)]
    ep.touch(sa)
    ep.get_timer()
    assert calls[-1] is sa and len(calls) <= 2
