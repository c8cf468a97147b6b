"""The IPsec policy in two real gateways: HQ's policy requires security between the LANs
through its IKEv2 connection and blocks ICMP with one branch host (the branch's policy
requires security between the LANs too).

Neither gateway starts IKE on its own: HQ's first ping hits the policy's trap, which holds
it and asks for the connection (demand); the branch's policy accepts the CHILD_SA, and
every ping gets through once the SA is up.
ICMP with 10.2.0.11 is dropped both ways (HQ's outbound SPD, and its inbound check of what
comes out of the SA), counted as policy_discard; the internet link carries only IKE and
ESP; `gateway policy explain` against the running config names the rule and its counters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_support import (
    NETNS,
    PROTO_ESP,
    PROTO_UDP,
    Capture,
    assert_lab_gone,
    diagnostics,
    gateway_cli,
    lab,
    lab_prefix,
    ping_from,
    tcp_exchange,
    wait_for,
)

from appliance.lab.gateways import GatewayPair
from appliance.lab.topology import Site

pytestmark = NETNS

PREFIX = lab_prefix("pol")
BLOCKED = "10.2.0.11"

POLICY = {
    "name": "hq",
    "filter_lists": {
        "lans": [{"source": "10.1.0.0/24", "destination": "10.2.0.0/24"}],
        "ping-11": [{"source": "10.1.0.0/24", "destination": BLOCKED, "protocol": "icmp"}],
    },
    "rules": [
        {"name": "lans", "filter_list": "lans", "filter_action": "require-security", "connection": "branch1"},
        {"name": "no-ping-11", "filter_list": "ping-11", "filter_action": "block"},
    ],
}


#: the branch requires security with HQ's LAN too: its policy routes HQ's LAN into its
#: dataplane from the start, so its first replies already find the SA
BRANCH_POLICY = {
    "name": "branch",
    "filter_lists": {"lans": [{"source": "10.2.0.0/24", "destination": "10.1.0.0/24"}]},
    "rules": [{"name": "lans", "filter_list": "lans", "filter_action": "require-security",
               "connection": "hq"}],
}


class OnDemandPair(GatewayPair):
    """Neither side keeps the connection up: the policies bring it up when traffic needs it."""

    def _config(self, name: str, site: Site, peer: Site, out: Any, inb: Any) -> dict[str, Any]:
        config = super()._config(name, site, peer, out, inb)
        for conn in config["connections"].values():
            conn["ike"] = {"start": "none"}
        if name == "branch":
            config["policy"] = BRANCH_POLICY
        return config


def policy_explain(pair: GatewayPair, *args: str) -> str:
    return gateway_cli("policy", "explain", *args, "-c", str(pair.config_path("hq")))


def test_policy_requires_esp_between_the_lans_and_blocks_icmp_with_one_host(tmp_path: Path) -> None:
    with lab(PREFIX) as topo:
        topo.ns(topo.branch.lan_ns, "ip", "addr", "add", f"{BLOCKED}/24", "dev", "eth0")
        with OnDemandPair(topo, tmp_path, keying="ike", algorithm="aes256gcm16",
                          hq_extra={"policy": POLICY}) as pair, \
                Capture(topo, topo.inet_ns, "to-hq", tmp_path / "wire.pcap") as cap:
            hq_log = pair.log_path("hq").read_text()
            assert "policy.installed policy=hq entries=2 traps=branch1 routes=10.2.0.0/24" in hq_log, hq_log
            assert pair.status("hq", "sas")["ike_sas"] == []  # nothing until traffic needs it

            # the first echo requests wait in the trap while IKE runs; none is lost
            sent, received = ping_from(topo, topo.hq.lan_ns, topo.branch.lan_host, count=3, interval=0.5,
                                       wait=4)
            assert (sent, received) == (3, 3), diagnostics(pair)
            hq = pair.status("hq")
            assert "hold_full" not in hq["drops"] and "no_sa" not in hq["drops"], hq["drops"]
            assert "ike.acquire connection=branch1" in pair.log_path("hq").read_text()
            [ike] = pair.status("hq", "sas")["ike_sas"]
            assert ike["initiator"] and [c["local_ts"] for c in ike["children"]] == [["10.1.0.0/24"]]

            # ICMP with the blocked host: dropped on the way out of HQ ...
            assert ping_from(topo, topo.hq.lan_ns, BLOCKED, count=3, wait=1)[1] == 0
            drops = wait_for(lambda: pair.status("hq")["drops"], lambda d: d.get("policy_discard", 0) >= 3)
            assert drops["policy_discard"] == 3, drops
            # ... and when it comes out of the SA (the branch sends it protected)
            assert ping_from(topo, topo.branch.lan_ns, topo.hq.lan_host, source=BLOCKED, count=2,
                             wait=1)[1] == 0
            drops = wait_for(lambda: pair.status("hq")["drops"], lambda d: d.get("policy_discard", 0) >= 5)
            assert drops["policy_discard"] == 5, drops
            # the rest of the branch LAN, and other traffic with the blocked host, still pass
            assert ping_from(topo, topo.branch.lan_ns, topo.hq.lan_host, count=2)[1] == 2
            reply = tcp_exchange(topo, topo.branch.lan_ns, BLOCKED, topo.hq.lan_ns, "hello from hq")
            assert "hello from hq" in reply, reply
            shown = {e["rule"]: e for e in pair.status("hq", "policy")["entries"]}
            assert shown["no-ping-11"]["hits"] == 3 and shown["no-ping-11"]["hits_in"] == 2
            assert shown["lans"]["hits"] >= 5 and shown["lans"]["connection"] == "branch1"

            explained = policy_explain(pair, topo.hq.lan_host, BLOCKED, "icmp")
            assert "rule:     'no-ping-11' (filter list 'ping-11', filter 10.1.0.0/24 -> 10.2.0.11 icmp, " \
                   "mirrored), entry 1 of 2" in explained, explained
            assert "action:   block: dropped, counted policy_discard" in explained
            assert "hits:     3 outbound, 2 out of SAs" in explained
            explained = policy_explain(pair, topo.hq.lan_host, topo.branch.lan_host, "tcp", "22")
            assert "action:   negotiate (require): ESP aes128gcm16 or ESP aes256gcm16 or ESP " \
                   "aes256-sha256, tunnel to 198.51.100.1 via connection 'branch1', held until the SA " \
                   "is up" in explained
            assert "(SA up)" in explained, explained

        # on the internet link: IKE and ESP between the gateways, never a LAN address
        packets = cap.packets()
        assert packets, "nothing captured"
        public = {topo.hq.gw_public, topo.branch.gw_public}
        assert {(p.src, p.dst) for p in packets} <= {(a, b) for a in public for b in public}, \
            [str(p) for p in packets if p.src not in public or p.dst not in public]
        assert {p.proto for p in packets} <= {PROTO_ESP, PROTO_UDP}
        assert {p.dport for p in packets if p.proto == PROTO_UDP} <= {500, 4500}
        assert sum(p.proto == PROTO_ESP for p in packets) >= 10
    assert_lab_gone(PREFIX)
