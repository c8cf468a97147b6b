"""The nftables edge ruleset rendered from the edge policy, checked by nft itself."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest

from appliance.edge import render
from gateway.dataplane.edge import EdgePolicy, ManagementRule


def policy() -> EdgePolicy:
    return EdgePolicy("wan0", ipaddress.IPv4Address("192.0.2.1"), (
        ManagementRule(ipaddress.IPv4Network("10.1.0.0/24"), "tcp", 22),
        ManagementRule(ipaddress.IPv4Network("203.0.113.0/24"), "icmp"),
    ))


def test_ruleset_allows_only_ipsec_and_management() -> None:
    text = render(policy(), "hq")
    assert 'iifname != "wan0" accept' in text
    assert "ip daddr 192.0.2.1 meta l4proto { esp, ah } accept" in text
    assert "ip daddr 192.0.2.1 udp dport { 500, 4500 } accept" in text
    assert "ip saddr 10.1.0.0/24 tcp dport 22 accept" in text
    assert "ip saddr 203.0.113.0/24 icmp type echo-request accept" in text
    # L2TP in clear is dropped before anything could accept it.
    assert text.index("udp dport 1701") < text.index("ct state established")
    assert text.rstrip().endswith("}")
    assert "counter name edge_dropped drop\n    }" in text


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_nft_accepts_the_ruleset() -> None:
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=render(policy(), "hq"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
