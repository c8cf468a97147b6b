"""The appliance as systemd runs it: the units verify, and the boot step prepares a host.

`systemd-analyze verify` checks the units as installed for this checkout (appliance.units
rewrites /opt/gateway to it): unknown keys, commands that are not executable, bad
dependencies all print and fail.  The boot step (appliance.boot, what gateway-boot.service
runs) is applied inside a fresh network namespace (net.* sysctls and nftables are per
namespace) and read back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import NETNS, lab_prefix

from appliance.lab.gateways import REPO
from appliance.units import install

pytestmark = NETNS

NAMESPACE = f"{lab_prefix('boot')}host"
CONFIG = """\
gateway: {name: edge1, public_interface: wan0, public_address: 192.0.2.1, lan_interfaces: [lan0]}
edge:
  management: [{source: 10.1.0.0/24, protocol: tcp, port: 22}]
connections:
  branch1:
    remote: 198.51.100.1
    local_subnets: [10.1.0.0/24]
    remote_subnets: [10.2.0.0/24]
    auth: {method: psk, psk: boot-test-psk-0000000000}
"""


NO_ANALYZE = shutil.which("systemd-analyze") is None
NEEDS_ANALYZE = pytest.mark.skipif(NO_ANALYZE, reason="systemd-analyze (package systemd) is needed")


@NEEDS_ANALYZE
def test_units_verify(tmp_path: Path) -> None:
    units = install(tmp_path, prefix=str(REPO))
    assert {u.name for u in units} == {"gateway.service", "gateway-boot.service"}
    proc = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    text = (tmp_path / "gateway.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text  # SIGHUP: the daemon re-reads its config
    for hardening in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict",
                      "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SETPCAP"):
        assert hardening in text


@NEEDS_ANALYZE
def test_a_broken_unit_does_not_verify(tmp_path: Path) -> None:
    """The check above can fail: an unknown key and a missing command are reported."""
    (unit,) = [u for u in install(tmp_path, prefix="/nonexistent") if u.name == "gateway.service"]
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nBogusKey=1"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "BogusKey" in out and "not executable" in out, out


def ns(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", NAMESPACE, *cmd], capture_output=True, text=True,
                          timeout=60, check=False)


def test_boot_sets_sysctls_and_the_edge_filter(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    config.chmod(0o600)
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    try:
        assert ns("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
        proc = ns(sys.executable, "-m", "appliance.boot", str(config))
        assert proc.returncode == 0, proc.stderr
        assert "edge filter applied on wan0 (192.0.2.1)" in proc.stdout, proc.stdout
        for name, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.accept_redirects", "0"),
                            ("net.ipv4.conf.all.send_redirects", "0"), ("net.ipv4.conf.all.rp_filter", "2"),
                            ("net.ipv4.tcp_syncookies", "1")):
            assert ns("sysctl", "-n", name).stdout.strip() == value, name
        ruleset = ns("nft", "list", "table", "inet", "gateway_edge").stdout
        assert 'iifname != "wan0" accept' in ruleset, ruleset
        assert "ip daddr 192.0.2.1 udp dport { 500, 4500 } accept" in ruleset, ruleset
        assert "ip daddr 192.0.2.1 ip saddr 10.1.0.0/24 tcp dport 22 accept" in ruleset, ruleset
        assert "net.core.rmem_max left as it is" in proc.stdout, proc.stdout  # not per namespace
        again = ns(sys.executable, "-m", "appliance.boot", str(config))
        assert again.returncode == 0 and "sysctls already set" in again.stdout, again.stdout
    finally:
        subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, check=False)


def test_boot_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("gateway: {name: x}\n")
    proc = subprocess.run([sys.executable, "-m", "appliance.boot", str(config), "--dry-run"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert proc.returncode == 2 and "public_interface" in proc.stderr, proc.stderr
