"""The benchmarks' load generator against an in-process responder, so the harness of
``bench/handshakes`` and ``bench/scale`` cannot rot unnoticed (no sockets, no root)."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.lab.ikeload import PROPOSALS, LoadGenerator, LoadPlan, run_in_memory
from gateway.config.model import Secret
from gateway.ike.events import ChildSaUp, IkeSaUp
from gateway.ike.identity import ANY, Identity
from gateway.ike.proposals import parse_child_proposal, parse_ike_proposal
from gateway.ike.settings import ChildConfig, PeerConfig
from gateway.ike.trafficselectors import TsRange
from gateway.ike.v1.endpoint import IkeV1Endpoint
from gateway.ike.v2.endpoint import IkeV2Endpoint

RESPONDER = "198.18.0.1"
PSK = "load-test-psk-0123456789"


def responder(version: int) -> IkeV1Endpoint | IkeV2Endpoint:
    """One ``remote: %any`` PSK connection, as bench/handshakes configures the gateway."""
    ike, esp = PROPOSALS[version]
    child = ChildConfig("net", (TsRange.of_network(ipaddress.IPv4Network("10.1.0.0/24")),),
                        (TsRange.of_network(ipaddress.IPv4Network("10.64.0.0/10")),),
                        (parse_child_proposal(esp),))
    cfg = PeerConfig("any", RESPONDER, None, (parse_ike_proposal(ike),), child,
                     Identity.from_address(RESPONDER), ANY, psk=Secret(PSK.encode()),
                     dpd_interval=None, version=version)
    if version == 2:
        return IkeV2Endpoint(RESPONDER, [cfg], cookie_threshold=1000)
    return IkeV1Endpoint(RESPONDER, [cfg])


@pytest.mark.parametrize(("version", "count"), [(2, 20), (1, 8)])
def test_generator_establishes_every_handshake(version: int, count: int) -> None:
    events: list[object] = []
    gen = LoadGenerator(LoadPlan(responder=RESPONDER, psk=PSK, version=version, count=count, window=5))
    report = run_in_memory(gen, responder(version), RESPONDER, on_event=events.append)
    assert report.established == count and report.failed == 0, report
    assert report.lost_after_up == 0
    ups = [e for e in events if isinstance(e, ChildSaUp)]
    assert len(ups) == count
    # every initiator is its own peer: its own address, identity and inner /32
    assert len({e.remote for e in ups}) == count
    assert len({e.remote_ts for e in ups}) == count
    assert len([e for e in events if isinstance(e, IkeSaUp)]) == count
    # IKEv2: IKE_SA_INIT + IKE_AUTH; IKEv1: Main Mode (3) + Quick Mode (2) from the initiator
    assert report.datagrams_sent == count * (2 if version == 2 else 5)


def test_wrong_psk_counts_failures() -> None:
    gen = LoadGenerator(LoadPlan(responder=RESPONDER, psk="not-the-key", count=4, window=2))
    report = run_in_memory(gen, responder(2), RESPONDER)
    assert report.established == 0 and report.failed == 4
    assert all(reason.startswith("auth") for reason in report.failures), report.failures


@pytest.mark.parametrize("version", [2, 1])
def test_each_peer_of_an_any_connection_gets_its_own_tunnel(version: int) -> None:
    """One dataplane tunnel (policy, outbound SA, routes) per peer of a ``remote: %any``
    connection, in both IKE versions: a peer coming up must not take over the policy of the
    peers before it."""
    from gateway.dataplane.edge import EdgePolicy
    from gateway.dataplane.engine import Dataplane
    from gateway.ike.events import ChildSaDown
    from gateway.tunnels import TunnelTable

    engine = Dataplane(EdgePolicy("wan0", ipaddress.IPv4Address(RESPONDER), ()))
    tunnels = TunnelTable(engine, 64)
    ups: list[ChildSaUp] = []

    def on_event(ev: object) -> None:
        if isinstance(ev, ChildSaUp):
            ups.append(ev)
            tunnels.up(ev, activate=ev.activate)
        elif isinstance(ev, ChildSaDown):
            tunnels.down(ev)

    gen = LoadGenerator(LoadPlan(responder=RESPONDER, psk=PSK, version=version, count=3, window=3))
    assert run_in_memory(gen, responder(version), RESPONDER, on_event=on_event).established == 3
    assert len({ev.tunnel for ev in ups}) == 3 and all(ev.tunnel.startswith("any@") for ev in ups)
    assert len(tunnels.tunnels) == 3
    for ev in ups:
        tunnel = tunnels.tunnels[ev.tunnel]
        assert tunnel.policy.esp_out is tunnel.pairs[ev.spi_in].outbound
        assert [str(n) for n in tunnel.remote_nets] == [str(ev.remote_ts[0].start) + "/32"]
