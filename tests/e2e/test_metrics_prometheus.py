"""A real Prometheus server (Debian's) scrapes our gateway in the lab; its query API agrees.

HQ runs an IKEv2 tunnel to the branch and serves a dial-in user (L2TP/IPsec from behind a
home NAT).  Prometheus 2.42, started by the test inside the HQ gateway namespace with our
alert rules loaded, scrapes `metrics.listen` every second.  Its query API must return
the tunnel's packet counters equal to what `gateway status` says, the connection up, the
IKE SAs by version, the PPP session and the pool usage.  Every metric the Grafana
dashboard and the alert rules use must exist in the scrape, every dashboard expression must
be valid PromQL (Prometheus evaluates it), and `promtool check rules` passes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, assert_lab_gone, lab, lab_prefix, wait_for

from appliance.lab.dialup import HomeNetwork, lac_config, lns_sections
from appliance.lab.gateways import REPO, GatewayPair, LabGateway
from appliance.lab.topology import Topology
from gateway.ppp.auth import nt_hash

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = [
    *NETNS,
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                       reason="Prometheus (Debian package prometheus) is needed"),
]

PREFIX = lab_prefix("prom")
MONITORING = REPO / "configs" / "monitoring"
ALERTS, DASHBOARD = MONITORING / "gateway-alerts.yml", MONITORING / "gateway-dashboard.json"
PSK, PASSWORD = "metrics-dialin-psk", "alice-metrics-pw"
API = "http://127.0.0.1:9090/api/v1"


def query_api(namespace: str, path: str, **params: str) -> Any:
    """GET the Prometheus API from inside ``namespace``; the ``data`` of a success."""
    url = f"{API}/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    proc = subprocess.run(["ip", "netns", "exec", namespace, "curl", "-sf", "--max-time", "5", url],
                          capture_output=True, text=True, timeout=20, check=False)
    if proc.returncode != 0:
        return None
    body = json.loads(proc.stdout)
    assert body["status"] == "success", body
    return body["data"]


def instant(namespace: str, expr: str) -> dict[str, float]:
    """An instant query: {labels as "k=v,...": value}."""
    data = query_api(namespace, "query", query=expr) or {"result": []}
    hidden = ("instance", "job", "__name__")
    return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k not in hidden):
            float(r["value"][1]) for r in data["result"]}


@contextmanager
def prometheus(topology: Topology, workdir: Path) -> Iterator[str]:
    namespace = topology.hq.gw_ns
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: gateway\n"
        "    static_configs: [{targets: ['127.0.0.1:9436']}]\n")
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    command = [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
               "--web.listen-address=127.0.0.1:9090"]
    proc = subprocess.Popen(["ip", "netns", "exec", namespace, *command], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        ready = wait_for(lambda: query_api(namespace, "status/buildinfo"), lambda d: d is not None,
                         timeout=30)
        assert ready is not None, (workdir / "prometheus.log").read_text()[-3000:]
        yield namespace
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_promtool_checks_the_alert_rules() -> None:
    proc = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and "SUCCESS: 5 rules found" in proc.stdout, proc.stdout + proc.stderr


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "instance"}


def test_prometheus_scrapes_the_gateway(tmp_path: Path) -> None:
    with lab(PREFIX) as topo:
        home = HomeNetwork(topo, clients_wanted=1)
        home.up()
        users = {"alice": {"nt_hash": nt_hash(PASSWORD).hex()}}
        with GatewayPair(topo, tmp_path, keying="ike", algorithm="aes128gcm16",
                         hq_extra=lns_sections(psk=PSK, users=users)) as pair, \
                prometheus(topo, tmp_path) as ns:
            pair.wait_tunnel()
            client = home.clients[0]
            with LabGateway.start(client, tmp_path, "alice", lac_config(
                    client, remote=topo.hq.gw_public, psk=PSK, user="alice", password=PASSWORD,
                    remote_subnets=[topo.hq.lan_subnet])) as alice:
                assert wait_for(alice.log_text, lambda t: " ppp.up " in t, timeout=20), alice.log_tail(30)
                sent, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=7)
                assert received == sent == 7
                status = {c["name"]: c for c in pair.status("hq")["connections"]}["branch1"]
                assert status["packets_in"] >= 7 and status["packets_out"] >= 7, status

                def scraped() -> dict[str, float]:
                    return instant(ns, 'gateway_tunnel_packets_total{connection="branch1"}')

                expected = {"connection=branch1,direction=in": float(status["packets_in"]),
                            "connection=branch1,direction=out": float(status["packets_out"])}
                got = wait_for(scraped, lambda v: v == expected, timeout=20)
                assert got == expected, (got, expected)
                assert instant(ns, "gateway_connection_up") == {
                    "connection=branch1,expected=no": 1.0, "connection=dialin,expected=no": 1.0}
                assert instant(ns, "gateway_ike_sas") == {"state=established,version=1": 1.0,
                                                          "state=established,version=2": 1.0}
                assert instant(ns, "gateway_ike_negotiations_total") == {
                    "connection=branch1,version=2": 1.0, "connection=dialin,version=1": 1.0}
                assert instant(ns, "gateway_ppp_sessions") == {"state=negotiating": 0.0, "state=up": 1.0}
                assert instant(ns, "gateway_pool_addresses") == {"pool=dialin,state=total": 254.0,
                                                                 "pool=dialin,state=used": 2.0}
                count = instant(ns, 'gateway_ike_handshake_seconds_count{version="2"}')
                assert count == {"version=2": 1.0}, count
                families = set(query_api(ns, "metadata"))  # from the scrape's TYPE lines, samples or not
                assert len(families) >= 20, families
                for expr in dashboard_exprs() + alert_exprs():
                    for name in re.findall(r"\bgateway_[a-z0-9_]+", expr):
                        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                        assert family in families, f"{name} (in {expr}) is not exported"
                for expr in dashboard_exprs():
                    valid = query_api(ns, "query", query=expr.replace("$instance", ".*"))
                    assert valid is not None, f"Prometheus refused {expr}"
                rules = query_api(ns, "rules")
                assert sum(len(g["rules"]) for g in rules["groups"]) == 5
                text = json.dumps(query_api(ns, "series", **{"match[]": '{job="gateway"}'}))
                for secret in (PSK, PASSWORD, pair.psk, nt_hash(PASSWORD).hex()):
                    assert secret not in text
    assert_lab_gone(PREFIX)
