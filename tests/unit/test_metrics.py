"""The Prometheus exposition of a snapshot: names, labels and values (no server needed)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from gateway.metrics import GatewayCollector

SNAPSHOT = {
    "sas": [{"name": "branch1", "direction": "in", "protocol": "esp", "spi": "0x00001001",
             "packets": 7, "bytes": 700, "drops": 1}],
    "drops": {"replay": 3},
    "dialup": {"l2tp_tunnels": 2, "sessions": 3, "sessions_up": 2,
               "auth_failures": {"mschapv2": 4}, "events": {"auth_ok:mschapv2": 2},
               "refused": {"max_sessions": 1}, "drops": {"ppp_spoofed_source": 5}},
}


def exposition(snapshot: dict) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(lambda: snapshot))
    return generate_latest(registry).decode()


def test_sa_and_drop_metrics() -> None:
    text = exposition(SNAPSHOT)
    labels = 'connection="branch1",direction="in",protocol="esp",spi="0x00001001"'
    assert f"gateway_sa_packets_total{{{labels}}} 7.0" in text
    assert 'gateway_dataplane_drops_total{reason="replay"} 3.0' in text
    assert 'gateway_sas{direction="in"} 1.0' in text


def test_dialup_metrics() -> None:
    text = exposition(SNAPSHOT)
    assert "gateway_l2tp_tunnels 2.0" in text
    assert 'gateway_ppp_sessions{state="up"} 2.0' in text
    assert 'gateway_ppp_sessions{state="negotiating"} 1.0' in text
    assert 'gateway_ppp_auth_failures_total{method="mschapv2"} 4.0' in text
    assert 'gateway_dialup_refusals_total{reason="max_sessions"} 1.0' in text
    assert 'gateway_dialup_drops_total{reason="ppp_spoofed_source"} 5.0' in text


def test_no_dialup_metrics_without_dialup() -> None:
    text = exposition({k: v for k, v in SNAPSHOT.items() if k != "dialup"})
    assert "gateway_ppp" not in text and "gateway_l2tp" not in text


def test_tunnel_ike_and_pool_metrics() -> None:
    from gateway.ike.events import AuthFailed, IkeSaUp
    from gateway.ikestats import IkeStats

    stats = IkeStats()
    stats.observe(IkeSaUp("branch1", "sa", "a", "b", True, "aes", "x", "y", False, False, "psk", 0.02), 2)
    stats.observe(AuthFailed("branch1", "b", "bad_psk", ""), 2)
    snap = {**SNAPSHOT, "ike": stats.snapshot(),
            "ike_sa_states": [{"version": 2, "state": "established", "count": 1}],
            "child_sa_states": [{"version": 2, "state": "installed", "count": 1}],
            "tunnels": [{"connection": "branch1", "up": True, "expected": True, "packets_in": 5,
                         "bytes_in": 500, "drops_in": 0, "packets_out": 4, "bytes_out": 400}],
            "pools": [{"pool": "dialin", "used": 3, "total": 254}],
            "ike_dropped": {"cookie_sent": 7, "ikev1_half_open_evicted": 2}}
    text = exposition(snap)
    for line in ('gateway_connection_up{connection="branch1",expected="yes"} 1.0',
                 'gateway_tunnel_packets_total{connection="branch1",direction="in"} 5.0',
                 'gateway_tunnel_bytes_total{connection="branch1",direction="out"} 400.0',
                 'gateway_pool_addresses{pool="dialin",state="used"} 3.0',
                 'gateway_ike_sas{state="established",version="2"} 1.0',
                 'gateway_child_sas{state="installed",version="2"} 1.0',
                 'gateway_ike_negotiations_total{connection="branch1",version="2"} 1.0',
                 'gateway_ike_failures_total{connection="branch1",reason="auth_failed:bad_psk",'
                 'version="2"} 1.0',
                 'gateway_ike_handshake_seconds_bucket{le="0.025",version="2"} 1.0',
                 'gateway_ike_handshake_seconds_count{version="2"} 1.0',
                 'gateway_ike_dropped_total{reason="cookie_sent"} 7.0',
                 'gateway_ike_dropped_total{reason="ikev1_half_open_evicted"} 2.0'):
        assert line in text, f"{line}\n{text}"
