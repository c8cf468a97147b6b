"""Connections added, removed and replaced at run time (a config reload), over the loopback
harness: an established SA of another connection never notices."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from ike_loopback import BRANCH, BRANCH_LAN, HQ, HQ_LAN, Net, of_type, psk_pair, run_until, seeded

from gateway.ike.endpoints import IkeEndpoints
from gateway.ike.events import ChildSaDown, ChildSaUp, IkeSaDown, IkeSaUp
from gateway.ike.identity import Identity
from gateway.ike.settings import PeerConfig
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2.endpoint import IkeV2Endpoint

THIRD = "203.0.113.7"
THIRD_LAN = TsRange.of_network(ipaddress.IPv4Network("10.3.0.0/24"))


def hq_to_third() -> tuple[PeerConfig, PeerConfig]:
    """A second connection of HQ, to a third site (and the third site's side of it)."""
    hq, other = psk_pair(psk_hq="third-site-key")
    to_third = replace(hq, name="to-third", remote_address=THIRD, remote_id=Identity.parse(THIRD),
                       child=replace(hq.child, local_ts=(HQ_LAN,), remote_ts=(THIRD_LAN,)))
    third = replace(other, name="to-hq", local_address=THIRD, local_id=Identity.parse(THIRD),
                    child=replace(other.child, local_ts=(THIRD_LAN,), remote_ts=(HQ_LAN,)))
    return to_third, third


def established() -> tuple[Net, IkeV2Endpoint, IkeV2Endpoint, IkeV2Endpoint]:
    """HQ and the branch with their IKE SA and CHILD_SA up (the branch initiated and keeps
    it up); a third site that HQ has no connection for yet."""
    to_branch, to_hq = psk_pair()
    hq = IkeV2Endpoint(HQ, [to_branch], random=seeded(1))
    branch = IkeV2Endpoint(BRANCH, [to_hq], random=seeded(2))
    third = IkeV2Endpoint(THIRD, [hq_to_third()[1]], random=seeded(3))
    net = Net.of(hq, branch, third)
    branch.initiate("to-hq", net.now)
    net.pump()
    assert hq.established("to-branch") and branch.established("to-hq")
    return net, hq, branch, third


def spis(ep: IkeV2Endpoint, now: float) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(sa["name"], sa["ike_sa"], [(c["spi_in"], c["spi_out"]) for c in sa["children"]])
            for sa in ep.sas(now)]


def test_an_added_connection_comes_up_and_the_established_sa_keeps_its_spis() -> None:
    net, hq, branch, third = established()
    before_hq, before_branch = spis(hq, net.now), spis(branch, net.now)
    seen_hq, seen_branch = len(net.events[HQ]), len(net.events[BRANCH])
    hq.add_config(hq_to_third()[0])
    hq.initiate("to-third", net.now)
    assert run_until(net, lambda: hq.established("to-third") and third.established("to-hq"), 10.0)
    net.advance(60.0)
    assert [s for s in spis(hq, net.now) if s[0] == "to-branch"] == before_hq
    assert spis(branch, net.now) == before_branch
    # nothing happened to the first connection: no SA went down, none came up again
    assert net.events[BRANCH][seen_branch:] == []
    later = net.events[HQ][seen_hq:]
    assert {e.connection for e in later if isinstance(e, (ChildSaUp, IkeSaUp))} == {"to-third"}
    assert not of_type(later, ChildSaDown) and not of_type(later, IkeSaDown)


def test_a_connection_that_exists_cannot_be_added_twice() -> None:
    _, hq, _, _ = established()
    with pytest.raises(ValueError, match="to-branch exists already"):
        hq.add_config(psk_pair()[0])


def test_a_removed_connection_deletes_its_sas_tells_the_peer_and_matches_no_more() -> None:
    net, hq, _, third = established()
    hq.add_config(hq_to_third()[0])
    hq.initiate("to-third", net.now)
    assert run_until(net, lambda: hq.established("to-third"), 10.0)
    kept = [s for s in spis(hq, net.now) if s[0] == "to-branch"]
    seen_hq, seen_third = len(net.events[HQ]), len(net.events[THIRD])
    assert hq.remove_config("to-third", net.now) == 1
    assert "to-third" not in hq.configs and "to-third" not in hq.keep_up
    net.pump()
    [down] = of_type(net.events[THIRD][seen_third:], IkeSaDown)  # the peer was told (DELETE)
    assert down.connection == "to-hq"
    gone = of_type(net.events[HQ][seen_hq:], ChildSaDown)
    assert [g.connection for g in gone] == ["to-third"] and "removed from the config" in gone[0].reason
    assert [s for s in spis(hq, net.now) if s[0] == "to-third"] == []
    # the third site keeps trying: HQ knows no connection for it any more, and never calls it
    initiated = sum(1 for src, _, _ in net.log if src == HQ)
    third.initiate("to-hq", net.now)
    net.advance(30.0)
    assert not hq.established("to-third") and hq.counters["no_config"] >= 1
    requests = [d for src, dst, d in net.log[initiated:] if src == HQ and dst == THIRD
                and d.data[18] == 34 and not d.data[19] & 0x20]  # IKE_SA_INIT, not a response
    assert requests == []
    assert [s for s in spis(hq, net.now) if s[0] == "to-branch"] == kept


def test_a_replaced_connection_comes_back_with_new_sas() -> None:
    net, hq, branch, _ = established()
    [(_, old_ike, old_children)] = spis(hq, net.now)
    new = replace(hq.configs["to-branch"], child=replace(hq.configs["to-branch"].child, lifetime=1800))
    assert hq.remove_config("to-branch", net.now, "changed in the config") == 1
    hq.add_config(new)
    net.pump()
    # the branch was told, and keeps its connection up: it comes back with the new settings
    assert run_until(net, lambda: hq.established("to-branch") and branch.established("to-hq"), 30.0)
    [(_, new_ike, new_children)] = spis(hq, net.now)
    assert new_ike != old_ike and new_children != old_children
    [sa] = [s for s in hq._sas.values() if s.name == "to-branch"]
    assert sa.config is new


def test_ike_endpoints_put_a_connection_in_the_core_of_its_version() -> None:
    v1_config = replace(psk_pair()[0], name="legacy", version=1,
                        child=replace(psk_pair()[0].child, remote_ts=(BRANCH_LAN,)))
    ike = IkeEndpoints(IkeV2Endpoint(HQ, []), IkeV1Endpoint(HQ, []))
    ike.add(psk_pair()[0])
    ike.add(v1_config)
    assert list(ike.v2.configs) == ["to-branch"] and list(ike.v1.configs) == ["legacy"]
    # a new IKE version moves the connection to the other core
    assert ike.replace(replace(v1_config, version=2), 0.0) == 0
    assert list(ike.v2.configs) == ["to-branch", "legacy"] and ike.v1.configs == {}
    assert ike.remove("to-branch", 0.0) == 0
    assert list(ike.configs) == ["legacy"]
