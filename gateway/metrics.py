"""Prometheus metrics, read from the dataplane's own counters at scrape time.

A collector (rather than counters updated per packet) keeps the hot path free of
metric calls.  Labels carry connection names, SPIs and reasons: never keys or secrets.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector, CollectorRegistry


class GatewayCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        packets = CounterMetricFamily("gateway_sa_packets", "Packets through an SA",
                                      labels=["connection", "direction", "protocol", "spi"])
        octets = CounterMetricFamily("gateway_sa_bytes", "Inner bytes through an SA",
                                     labels=["connection", "direction", "protocol", "spi"])
        sa_drops = CounterMetricFamily("gateway_sa_drops", "Packets an SA dropped",
                                       labels=["connection", "direction", "protocol", "spi"])
        for sa in snap["sas"]:
            labels = [sa["name"], sa["direction"], sa["protocol"], sa["spi"]]
            packets.add_metric(labels, sa["packets"])
            octets.add_metric(labels, sa["bytes"])
            sa_drops.add_metric(labels, sa["drops"])
        drops = CounterMetricFamily("gateway_dataplane_drops", "Packets dropped by the dataplane",
                                    labels=["reason"])
        for reason, count in sorted(snap["drops"].items()):
            drops.add_metric([reason], count)
        edge = CounterMetricFamily("gateway_edge_drops", "Packets dropped by the nftables edge filter",
                                   labels=["counter"])
        for name, value in sorted(snap.get("edge_counters", {}).items()):
            edge.add_metric([name], value["packets"])
        sas = GaugeMetricFamily("gateway_sas", "Installed SAs", labels=["direction"])
        for direction in ("in", "out"):
            sas.add_metric([direction], sum(1 for sa in snap["sas"] if sa["direction"] == direction))
        yield from (packets, octets, sa_drops, drops, edge, sas)
        if "tunnels" in snap:
            yield from _tunnel_metrics(snap)
        if "ike" in snap:
            yield from _ike_metrics(snap)
        dialup = snap.get("dialup")
        if dialup is not None:
            yield from _dialup_metrics(dialup)
        if "demand" in snap:  # the families even without interfaces: dashboards find them
            yield from _demand_metrics(snap["demand"])


def _tunnel_metrics(snap: dict[str, Any]) -> Iterator[Any]:
    """Per connection: up or not (and whether it is meant to be), traffic over its whole life."""
    up = GaugeMetricFamily("gateway_connection_up", "1 when the connection has an established SA pair",
                           labels=["connection", "expected"])
    packets = CounterMetricFamily("gateway_tunnel_packets", "Packets through a connection's SAs, all rekeys",
                                  labels=["connection", "direction"])
    octets = CounterMetricFamily("gateway_tunnel_bytes", "Inner bytes through a connection's SAs, all rekeys",
                                 labels=["connection", "direction"])
    for t in snap["tunnels"]:
        up.add_metric([t["connection"], "yes" if t["expected"] else "no"], 1 if t["up"] else 0)
        for direction in ("in", "out"):
            packets.add_metric([t["connection"], direction], t[f"packets_{direction}"])
            octets.add_metric([t["connection"], direction], t[f"bytes_{direction}"])
    pools = GaugeMetricFamily("gateway_pool_addresses", "Addresses of a pool: total and leased",
                              labels=["pool", "state"])
    for p in snap.get("pools", []):
        pools.add_metric([p["pool"], "used"], p["used"])
        pools.add_metric([p["pool"], "total"], p["total"])
    yield from (up, packets, octets, pools)


def _ike_metrics(snap: dict[str, Any]) -> Iterator[Any]:
    """IKE: SAs by state and version, handshakes, failures by reason, rekeys, dead peers."""
    ike = snap["ike"]
    sas = GaugeMetricFamily("gateway_ike_sas", "IKE SAs (IKEv1: ISAKMP SAs) by state",
                            labels=["version", "state"])
    for row in snap["ike_sa_states"]:
        sas.add_metric([str(row["version"]), row["state"]], row["count"])
    children = GaugeMetricFamily("gateway_child_sas", "CHILD SAs (IKEv1: IPsec SA pairs) by state",
                                 labels=["version", "state"])
    for row in snap["child_sa_states"]:
        children.add_metric([str(row["version"]), row["state"]], row["count"])
    negotiations = CounterMetricFamily("gateway_ike_negotiations",
                                       "IKE SAs established (handshakes completed)",
                                       labels=["connection", "version"])
    for row in ike["established"]:
        negotiations.add_metric([row["connection"], str(row["version"])], row["count"])
    failures = CounterMetricFamily("gateway_ike_failures", "IKE negotiations that failed, by reason",
                                   labels=["connection", "version", "reason"])
    for row in ike["failures"]:
        failures.add_metric([row["connection"], str(row["version"]), row["reason"]], row["count"])
    rekeys = CounterMetricFamily("gateway_rekeys", "Rekeys of IKE and CHILD SAs",
                                 labels=["connection", "version", "kind"])
    for row in ike["rekeys"]:
        rekeys.add_metric([row["connection"], str(row["version"]), row["kind"]], row["count"])
    dead = CounterMetricFamily("gateway_dpd_timeouts", "Peers declared dead by DPD or retransmission timeout",
                               labels=["connection", "version"])
    for row in ike["dead_peers"]:
        dead.add_metric([row["connection"], str(row["version"])], row["count"])
    handshake = HistogramMetricFamily("gateway_ike_handshake_seconds",
                                      "Time from the first message to established", labels=["version"])
    for version, h in sorted(ike["handshakes"].items()):
        handshake.add_metric([str(version)], h["buckets"], h["sum"])
    dropped = CounterMetricFamily("gateway_ike_dropped",
                                  "IKE messages dropped, or answered without keeping state, by reason "
                                  "(ikev1_: IKEv1; cookie_sent: a COOKIE demanded; half_open_*: the "
                                  "responder's limits)", labels=["reason"])
    for reason, count in sorted(snap.get("ike_dropped", {}).items()):
        dropped.add_metric([reason], count)
    yield from (sas, children, negotiations, failures, rekeys, dead, handshake, dropped)


def _dialup_metrics(dialup: dict[str, Any]) -> Iterator[Any]:
    """L2TP/PPP: tunnels and sessions now, authentication failures by method, refusals, drops."""
    yield GaugeMetricFamily("gateway_l2tp_tunnels", "L2TP control connections", value=dialup["l2tp_tunnels"])
    sessions = GaugeMetricFamily("gateway_ppp_sessions", "L2TP/PPP sessions", labels=["state"])
    sessions.add_metric(["up"], dialup["sessions_up"])
    sessions.add_metric(["negotiating"], dialup["sessions"] - dialup["sessions_up"])
    failures = CounterMetricFamily("gateway_ppp_auth_failures", "PPP authentications refused",
                                   labels=["method"])
    for method, count in dialup["auth_failures"].items():
        failures.add_metric([method], count)
    refused = CounterMetricFamily("gateway_dialup_refusals", "L2TP tunnels and calls refused",
                                  labels=["reason"])
    for reason, count in dialup["refused"].items():
        refused.add_metric([reason], count)
    drops = CounterMetricFamily("gateway_dialup_drops", "L2TP and PPP packets dropped", labels=["reason"])
    for reason, count in dialup["drops"].items():
        drops.add_metric([reason], count)
    yield from (sessions, failures, refused, drops)


DEMAND_STATES = ("idle", "dialing", "up", "backoff")


def _demand_metrics(rows: list[dict[str, Any]]) -> Iterator[Any]:
    """Demand-dial interfaces: state, dials, connects, failures, idle hang-ups, held packets."""
    state = GaugeMetricFamily("gateway_demand_dial_state", "1 for a demand-dial interface's current state",
                              labels=["connection", "state"])
    held = GaugeMetricFamily("gateway_demand_dial_held_packets", "Packets waiting for the tunnel to come up",
                             labels=["connection"])
    counters = {key: CounterMetricFamily(f"gateway_demand_dial_{key}", text, labels=["connection"])
                for key, text in (("dials", "Dials started (by traffic or persistence)"),
                                  ("connects", "Dials that brought the tunnel up"),
                                  ("failures", "Dials that failed"),
                                  ("idle_disconnects", "Hang-ups after the idle timeout"),
                                  ("drops", "Tunnels that went down for another reason while up"))}
    for row in rows:
        name = row["connection"]
        for st in DEMAND_STATES:
            state.add_metric([name, st], 1 if row["state"] == st else 0)
        held.add_metric([name], row["held"])
        for key, family in counters.items():
            family.add_metric([name], row[key])
    yield from (state, held, *counters.values())


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""


class MetricsServer:
    """The /metrics endpoint, bound at once (the port may need privileges) and served by a
    thread started later (`start`): a thread keeps the capabilities of the thread that
    made it, so the daemon starts it after dropping them (`gateway.net.privileges`)."""

    def __init__(self, address: tuple[str, int], snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(snapshot))
        info = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, host = info[0][0], info[0][4][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        self.httpd = make_server(host, address[1], make_wsgi_app(self.registry), Server, handler_class=_Quiet)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()


def serve(address: tuple[str, int], snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """Bind and serve at once."""
    server = MetricsServer(address, snapshot)
    server.start()
    return server.registry
