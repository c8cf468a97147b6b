"""IKEv2 interop: our gateway against strongSwan 5.9.8 (charon + kernel-libipsec), real traffic.

Our gateway runs in the hq gateway namespace, one charon in the branch gateway namespace;
LAN hosts behind both ping each other through the tunnel.  Each test builds its own lab
and leaves no namespace or process behind.
"""

from __future__ import annotations

import re
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    NETNS,
    STRONGSWAN,
    PingRun,
    lab_prefix,
    strongswan_interop,
    wait_for,
)

from appliance.lab.gateways import LabGateway
from appliance.lab.strongswan import PSK, PeerSettings, StrongswanPeer
from appliance.lab.topology import Topology

pytestmark = [*NETNS, *STRONGSWAN]

PREFIX = lab_prefix("ik2")


def our_config(topology: Topology, *, start: bool = False, psk: str = PSK,
               ike: list[str] | None = None, esp: list[str] | None = None,
               extra: dict[str, Any] | None = None, remote: str | None = None,
               conn_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    hq, br = topology.hq, topology.branch
    conn: dict[str, Any] = {
        "remote": remote or br.gw_public, "local_subnets": [hq.lan_subnet], "remote_subnets": [br.lan_subnet],
        "auth": {"method": "psk", "psk": psk},
        "proposals": {"ike": ike or ["aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"],
                      "esp": esp or ["aes256gcm16", "aes256-sha256"]},
        "ike": {"start": "start" if start else "none"},
    }
    conn.update(conn_extra or {})
    cfg: dict[str, Any] = {
        "gateway": {"name": "hq", "public_interface": "wan0", "public_address": hq.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": "debug"},
        "connections": {"branch": conn},
    }
    cfg.update(extra or {})
    return cfg


def interop(tmp_path: Path, settings: PeerSettings, config_of: Any, *,
            nat: bool = False) -> AbstractContextManager[tuple[Topology, StrongswanPeer, LabGateway]]:
    return strongswan_interop(PREFIX, tmp_path, settings, config_of, nat=nat)


def ping_ok(topology: Topology, count: int = 3) -> None:
    for _ in range(3):
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=count)
        if received == sent:
            return
        time.sleep(0.5)
    raise AssertionError(f"ping through the tunnel: {received}/{sent}")


def ike_sas(gw: LabGateway) -> list[dict[str, Any]]:
    return list(gw.request("sas")["ike_sas"])


def established(gw: LabGateway) -> list[dict[str, Any]]:
    return [s for s in ike_sas(gw) if s["state"] == "established" and s["children"]]


def wait_established(gw: LabGateway, timeout: float = 15.0) -> dict[str, Any]:
    sas = wait_for(lambda: established(gw), bool, timeout=timeout)
    assert sas, f"no established IKE SA with a CHILD_SA:\n{gw.log_tail(40)}"
    return sas[0]


# -- 1. PSK, both directions ----------------------------------------------------------------
def test_strongswan_initiates_psk(tmp_path: Path) -> None:
    with interop(tmp_path, PeerSettings(), our_config) as (topology, peer, gw):
        started = time.monotonic()
        peer.initiate()
        sa = wait_established(gw)
        elapsed = time.monotonic() - started
        print(f"tunnel established in {elapsed * 1000:.0f} ms (strongSwan initiator)")
        assert not sa["initiator"] and sa["auth"] == "psk"
        assert sa["nat_remote"], "kernel-libipsec fakes a NAT: we must see it"
        assert sa["children"][0]["local_ts"] == ["10.1.0.0/24"]
        ping_ok(topology)
        child = peer.child_sa()
        assert child is not None and child.get("encap") == "yes"


def test_we_initiate_psk(tmp_path: Path) -> None:
    with interop(tmp_path, PeerSettings(), lambda t: our_config(t, start=True)) as (topology, peer, gw):
        sa = wait_established(gw)
        assert sa["initiator"]
        assert peer.wait_child_installed(timeout=10)
        ping_ok(topology)
        assert re.search(r"ike\.up .*role=initiator", gw.log_text())


# -- 2. algorithm suites ----------------------------------------------------------------------
SUITES = [
    ("aes256gcm16-prfsha256-ecp256", "aes256gcm16", "AES_GCM_16", "256", "ECP_256"),
    ("aes256-sha256-modp2048", "aes256-sha256", "AES_CBC", "256", "MODP_2048"),
]


@pytest.mark.parametrize(("ike", "esp", "encr", "keysize", "group"), SUITES)
@pytest.mark.parametrize("initiator", ["strongswan", "us"])
def test_suites(tmp_path: Path, ike: str, esp: str, encr: str, keysize: str, group: str,
                initiator: str) -> None:
    settings = PeerSettings(ike_proposals=ike, esp_proposals=esp)
    config = lambda t: our_config(t, start=initiator == "us", ike=[ike], esp=[esp])  # noqa: E731
    with interop(tmp_path, settings, config) as (topology, peer, gw):
        if initiator == "strongswan":
            peer.initiate()
        wait_established(gw)
        peer.wait_child_installed(timeout=10)
        ike_sa = peer.ike_sa()
        child = peer.child_sa()
        assert ike_sa is not None and child is not None
        assert ike_sa.get("encr-alg") == encr and ike_sa.get("encr-keysize") == keysize
        assert ike_sa.get("dh-group") == group
        assert child.get("encr-alg") == encr
        ping_ok(topology)


# -- 3. NAT in the path ----------------------------------------------------------------------
def test_nat_in_the_path(tmp_path: Path) -> None:
    """strongSwan behind a masquerading router initiates to us (remote %any)."""
    settings = PeerSettings()
    config = lambda t: our_config(  # noqa: E731
        t, remote="%any", conn_extra={"auth": {"method": "psk", "psk": PSK,
                                               "remote_id": t.branch.gw_public}})
    with interop(tmp_path, settings, config, nat=True) as (topology, peer, gw):
        peer.initiate()
        sa = wait_established(gw)
        assert sa["remote"].startswith(topology.nat_address + ":")
        assert sa["remote"] != f"{topology.nat_address}:4500" or sa["nat_remote"]
        assert sa["nat_remote"] and sa["encap"]
        ping_ok(topology)


# -- 4. rekeying under a continuous ping ------------------------------------------------
def test_rekeys_lose_no_ping(tmp_path: Path) -> None:
    with interop(tmp_path, PeerSettings(), our_config) as (topology, peer, gw):
        peer.initiate()
        first = wait_established(gw)
        ping_ok(topology)
        run = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=250, interval=0.02)
        try:
            time.sleep(0.5)
            peer.rekey_child()
            time.sleep(0.6)
            gw.request("rekey", name="branch")
            time.sleep(0.6)
            peer.rekey_ike()
            time.sleep(0.6)
            gw.request("rekey", name="branch", ike=True)
            time.sleep(0.6)
        finally:
            sent, received = run.result()
        now = wait_established(gw)
        assert now["ike_sa"] != first["ike_sa"], "the IKE SA was not rekeyed"
        assert now["children"][0]["spi_in"] != first["children"][0]["spi_in"]
        log = gw.log_text()
        assert len(re.findall(r"child\.up ", log)) >= 3, log[-3000:]
        assert sent == received, f"lost {sent - received} of {sent} pings during rekeys"
        assert len(established(gw)) == 1
        assert len(gw.request("sas")["sas"]) == 2, "old SAs left in the dataplane"


# -- 5. dead peer ------------------------------------------------------------------------------
def test_dead_peer_detected(tmp_path: Path) -> None:
    config = lambda t: our_config(t, conn_extra={"dpd": {"interval": "3s", "timeout": "6s",  # noqa: E731
                                                          "action": "clear"}})
    with interop(tmp_path, PeerSettings(), config) as (topology, peer, gw):
        peer.initiate()
        wait_established(gw)
        ping_ok(topology)
        peer.kill()
        killed = time.monotonic()
        gone = wait_for(lambda: ike_sas(gw), lambda sas: not sas, timeout=20)
        elapsed = time.monotonic() - killed
        assert not gone, f"SAs still there {elapsed:.1f} s after the peer died"
        print(f"dead peer noticed after {elapsed:.1f} s (interval 3 s, timeout 6 s)")
        assert elapsed <= 3 + 6 + 2
        assert "ike.peer_dead" in gw.log_text()
        assert gw.request("sas")["sas"] == []


# -- 6. refusals ------------------------------------------------------------------------------
def test_wrong_psk_refused(tmp_path: Path) -> None:
    settings = PeerSettings(psk="this-is-not-the-right-psk-0123456789")
    with interop(tmp_path, settings, our_config) as (_, peer, gw):
        with pytest.raises(Exception):  # noqa: B017 - LabError from swanctl
            peer.initiate(timeout=8)
        line = wait_for(lambda: re.search(r"ike\.auth_failed .*", gw.log_text()), bool, timeout=5)
        assert line is not None
        assert "reason=bad_psk" in line.group(0) and "198.51.100.1" in line.group(0)
        assert gw.request("status")["ike"]["failures"].get("auth_failed:bad_psk") == 1
        assert ike_sas(gw) == []


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_up_sas_down(tmp_path: Path) -> None:
    from e2e_support import gateway_cli

    with interop(tmp_path, PeerSettings(), our_config) as (topology, peer, gw):
        sock = str(gw.socket)
        assert "initiating branch" in gateway_cli("up", "branch", "-s", sock)
        wait_established(gw)
        ping_ok(topology)
        text = gateway_cli("sas", "-s", sock)
        assert re.search(r"branch: IKE SA \S+_i \S+_r established \(initiator\)", text), text
        assert "aes256gcm16-prfsha256-ecp256" in text or "aes256-sha256-prfsha256-modp2048" in text, text
        assert "10.1.0.0/24 === 10.2.0.0/24" in text, text
        assert "closing branch: 1 IKE SA(s)" in gateway_cli("down", "branch", "-s", sock)
        assert wait_for(lambda: ike_sas(gw), lambda sas: not sas, timeout=10) == []
        peer.wait_no_sas(timeout=10)


# -- certificates -------------------------------------------------------------------------------
def _pki(directory: Path, kind: str, topology_prefix: str = "") -> dict[str, Any]:
    from appliance import pki

    directory.mkdir(parents=True, exist_ok=True)
    root = pki.make_ca(directory, "Lab Root CA", kind=kind)  # type: ignore[arg-type]
    inter = pki.make_ca(directory, "Lab Issuing CA", kind=kind, issuer=root)  # type: ignore[arg-type]
    hq = pki.issue(directory, inter, "hq-gw", kind=kind, san_ip=["192.0.2.1"],  # type: ignore[arg-type]
                   san_dns=["hq.gateway.lab"])
    br = pki.issue(directory, inter, "br-gw", kind=kind, san_ip=["198.51.100.1"],  # type: ignore[arg-type]
                   san_dns=["branch.gateway.lab"])
    # Our gateway sends its chain (leaf + issuing CA) and trusts only the root.
    chain = directory / "hq-chain.pem"
    chain.write_bytes(hq.cert_path.read_bytes() + inter.cert_path.read_bytes())
    return {"root": root, "inter": inter, "hq": hq, "br": br, "chain": chain}


def cert_config(files: dict[str, Any], *, start: bool = False, remote_id: str | None = "branch.gateway.lab",
                rsa_pss: bool = False) -> Any:
    auth: dict[str, Any] = {"method": "cert", "cert": str(files["chain"]), "key": str(files["hq"].key_path),
                            "ca": [str(files["root"].cert_path)], "id": "hq.gateway.lab"}
    if remote_id is not None:
        auth["remote_id"] = remote_id
    return lambda t: our_config(t, start=start, conn_extra={"auth": auth, "ike": {
        "start": "start" if start else "none", "rsa_pss": rsa_pss}})


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ecdsa256", "ecdsa384"])
@pytest.mark.parametrize("initiator", ["strongswan", "us"])
def test_certificates(tmp_path: Path, kind: str, initiator: str) -> None:
    pss = kind == "rsa-pss"
    kind = "rsa" if pss else kind
    files = _pki(tmp_path / "pki", kind)
    # strongSwan trusts the root; it has the issuing CA too (its own chain) as a CA cert.
    settings = PeerSettings(auth="pubkey", cert=files["br"].cert_path, key=files["br"].key_path,
                            cacerts=[files["root"].cert_path, files["inter"].cert_path],
                            local_id="branch.gateway.lab", remote_id="hq.gateway.lab")
    with interop(tmp_path, settings, cert_config(files, start=initiator == "us", rsa_pss=pss)) as (
            topology, peer, gw):
        if initiator == "strongswan":
            peer.initiate()
        sa = wait_established(gw)
        assert sa["auth"].startswith("pubkey"), sa
        if pss:  # strongSwan verified our RSASSA-PSS signature (RFC 7427)
            pattern = r"authentication of 'hq.gateway.lab' with RSA_EMSA_PSS_SHA2_\d+(_SALT_\d+)? successful"
            assert re.search(pattern, peer.log_text()), peer.log_text()[-2000:]
        if kind == "ecdsa384":
            assert re.search(r"authentication of 'hq.gateway.lab' with ECDSA_WITH_SHA384_DER successful",
                             peer.log_text()), peer.log_text()[-2000:]
        assert sa["remote_id"] == "branch.gateway.lab"
        ping_ok(topology)
        log = peer.log_text()
        assert "authentication of 'hq.gateway.lab' with" in log and "successful" in log
        # Certificate chains make IKE_AUTH bigger than 1280 octets: it travels as RFC 7383
        # fragments, which the other side reassembles.
        if initiator == "us":
            assert "reassembled fragmented IKE message" in log, "strongSwan got no fragments from us"
        else:
            assert "splitting IKE message" in log, "strongSwan did not fragment its IKE_AUTH"
        if kind == "rsa":  # both directions are big with RSA-2048 chains
            assert "splitting IKE message" in log and "reassembled fragmented IKE message" in log


def test_untrusted_certificate_refused(tmp_path: Path) -> None:
    files = _pki(tmp_path / "pki", "ecdsa256")
    rogue = _pki(tmp_path / "rogue", "ecdsa256")  # same names, another root
    settings = PeerSettings(auth="pubkey", cert=rogue["br"].cert_path, key=rogue["br"].key_path,
                            cacerts=[files["root"].cert_path, files["inter"].cert_path],
                            local_id="branch.gateway.lab", remote_id="hq.gateway.lab")
    with interop(tmp_path, settings, cert_config(files)) as (_, peer, gw):
        with pytest.raises(Exception):  # noqa: B017 - LabError from swanctl
            peer.initiate(timeout=8)
        line = wait_for(lambda: re.search(r"ike\.auth_failed .*", gw.log_text()), bool, timeout=5)
        assert line is not None and "reason=cert_untrusted" in line.group(0), line
        assert "br-gw" in line.group(0)  # which certificate
        assert ike_sas(gw) == []


def test_rekey_by_packets(tmp_path: Path) -> None:
    config = lambda t: our_config(t, conn_extra={"lifetimes": {"child_packets": 60}})  # noqa: E731
    with interop(tmp_path, PeerSettings(), config) as (topology, peer, gw):
        peer.initiate()
        wait_established(gw)
        sent, received = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=200,
                                 interval=0.02).result()
        log = gw.log_text()
        limits = re.findall(r"ike\.child_volume_limit ", log)
        assert len(limits) >= 2, log[-3000:]
        assert sent == received, f"lost {sent - received} of {sent} pings across volume rekeys"
        assert len(wait_established(gw)["children"]) == 1


# -- remote access: configuration payload -------------------------------------------------------
def test_remote_access_client_gets_virtual_ip(tmp_path: Path) -> None:
    """strongSwan as a road warrior (vips = 0.0.0.0) gets an address and DNS from our pool."""
    settings = PeerSettings(local_id="roadwarrior@gateway.lab", local_ts="dynamic",
                            extra_conn="vips = 0.0.0.0")

    def config(t: Topology) -> dict[str, Any]:
        cfg = our_config(t, remote="%any", conn_extra={
            "remote_subnets": [], "pool": "rw",
            "auth": {"method": "psk", "psk": PSK, "remote_id": "roadwarrior@gateway.lab"}})
        cfg["pools"] = {"rw": {"subnet": "10.99.0.0/24", "dns": ["10.1.0.53"]}}
        return cfg

    with interop(tmp_path, settings, config) as (topology, peer, gw):
        peer.initiate()
        sa = wait_established(gw)
        assert sa["children"][0]["remote_ts"] == ["10.99.0.1/32"], sa
        assert "ike.virtual_ip" in gw.log_text()
        log = peer.log_text()
        assert "installing new virtual IP 10.99.0.1" in log, log[-2000:]
        assert re.search(r"parsed IKE_AUTH response 1 \[ IDr AUTH CPRP\(ADDR DNS\)", log), log[-2000:]
        sent, received = topology.ping(topology.branch.gw_ns, topology.hq.lan_host, count=3)
        assert received == sent, f"ping from the virtual IP: {received}/{sent}\n{gw.log_tail(20)}"


@pytest.mark.parametrize("kind", ["rsa", "ecdsa256"])
def test_road_warrior_with_gateway_pki_bundle(tmp_path: Path, kind: str) -> None:
    """The operator's path end to end: `gateway pki` makes a CA, the gateway's certificate
    (--gateway) and a client's (--client) and exports the client's PKCS#12 bundle; strongSwan,
    as the road warrior, loads that bundle (its own PKCS#12 parser, the password from its
    secrets), and both sides authenticate with the profiles' certificates."""
    from e2e_support import gateway_cli

    pki, password = tmp_path / "pki", "correct-horse-battery-staple"
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    gateway_cli("pki", "ca", str(pki), "Road Root CA", "--kind", kind)
    gateway_cli("pki", "ca", str(pki), "Road Issuing CA", "--issuer", "Road Root CA", "--kind", kind)
    gateway_cli("pki", "issue", str(pki), "--ca", "Road Issuing CA", "vpn.gateway.lab", "--gateway",
                "--dns", "vpn.gateway.lab", "--ip", "192.0.2.1", "--kind", kind)
    gateway_cli("pki", "issue", str(pki), "--ca", "Road Issuing CA", "alice", "--client",
                "--email", "alice@gateway.lab", "--kind", kind)
    out = gateway_cli("pki", "bundle", str(pki), "--ca", "Road Issuing CA", "alice",
                      str(tmp_path / "alice.p12"), "--password-file", str(password_file))
    assert password not in out
    chain = tmp_path / "vpn-chain.pem"
    chain.write_bytes((pki / "vpn.gateway.lab.crt").read_bytes() + (pki / "Road Issuing CA.crt").read_bytes())

    settings = PeerSettings(auth="pubkey", pkcs12=tmp_path / "alice.p12", pkcs12_secret=password,
                            cacerts=[pki / "Road Root CA.crt", pki / "Road Issuing CA.crt"],
                            local_id="alice@gateway.lab", remote_id="vpn.gateway.lab", local_ts="dynamic",
                            extra_conn="vips = 0.0.0.0")

    def config(t: Topology) -> dict[str, Any]:
        cfg = our_config(t, remote="%any", conn_extra={
            "remote_subnets": [], "pool": "rw",
            "auth": {"method": "cert", "cert": str(chain), "key": str(pki / "vpn.gateway.lab.key"),
                     "ca": [str(pki / "Road Root CA.crt")], "id": "vpn.gateway.lab",
                     "remote_id": "alice@gateway.lab"}})
        cfg["pools"] = {"rw": {"subnet": "10.99.0.0/24"}}
        return cfg

    with interop(tmp_path, settings, config) as (topology, peer, gw):
        peer.initiate()
        sa = wait_established(gw)
        assert sa["auth"].startswith("pubkey") and sa["remote_id"] == "alice@gateway.lab", sa
        log = peer.log_text()
        certs = peer.swanctl("--list-certs").stdout  # from the bundle: alice with her key, the CAs
        assert 'subject:  "CN=alice, O=Gateway Lab"' in certs and "has private key" in certs, certs
        assert re.search(r"authentication of 'vpn.gateway.lab' with \S+ successful", log), log[-3000:]
        assert "installing new virtual IP 10.99.0.1" in log, log[-2000:]
        sent, received = topology.ping(topology.branch.gw_ns, topology.hq.lan_host, count=3)
        assert received == sent, f"ping from the virtual IP: {received}/{sent}\n{gw.log_tail(20)}"


# -- many IKE SAs at once: cookies, and one refusal that touches nothing else ---------------------
def _five_connections(t: Topology, bad_psk_for: str | None = None) -> dict[str, Any]:
    cfg = our_config(t, start=True)
    base = cfg["connections"].pop("branch")
    for i in range(5):
        conn = {**base, "remote_subnets": [f"10.2.0.{32 * i}/27"], "ike": {"start": "start",
                                                                          "initial_contact": False}}
        cfg["connections"][f"net{i}"] = conn
    if bad_psk_for is not None:
        cfg["connections"][bad_psk_for]["auth"] = {"method": "psk", "psk": "wrong-psk-for-this-one-only-0"}
    return cfg


def _addresses_in_each_slice(topology: Topology) -> None:
    """strongSwan (kernel-libipsec) installs a CHILD_SA only if it has a local address
    inside its traffic selector: give the branch gateway one in each /27."""
    for i in range(1, 5):
        topology.ns(topology.branch.gw_ns, "ip", "addr", "add", f"10.2.0.{32 * i + 1}/32", "dev", "lan0")


def test_many_half_open_sas_use_cookies(tmp_path: Path) -> None:
    """Five IKE SAs opened at once: strongSwan asks for COOKIEs beyond 3 half-open; all come up."""
    settings = PeerSettings(remote_ts="10.1.0.0/24", local_ts="10.2.0.0/24")

    def config(t: Topology) -> dict[str, Any]:
        _addresses_in_each_slice(t)
        return _five_connections(t)

    with interop(tmp_path, settings, config) as (topology, peer, gw):
        up = wait_for(lambda: established(gw), lambda sas: len(sas) == 5, timeout=30)
        assert len(up) == 5, f"{len(up)} of 5 up:\n{gw.log_tail(40)}"
        assert "ike.cookie_requested" in gw.log_text(), "strongSwan sent no COOKIE (threshold changed?)"
        assert "IKE_SA_INIT response 0 [ N(COOKIE) ]" in peer.log_text()
        ping_ok(topology)


def test_refusal_leaves_other_tunnels_alone(tmp_path: Path) -> None:
    settings = PeerSettings(remote_ts="10.1.0.0/24", local_ts="10.2.0.0/24")

    def config(t: Topology) -> dict[str, Any]:
        _addresses_in_each_slice(t)
        return _five_connections(t, bad_psk_for="net4")

    with interop(tmp_path, settings, config) as (topology, peer, gw):
        up = wait_for(lambda: established(gw), lambda sas: len(sas) == 4, timeout=30)
        assert sorted(s["name"] for s in up) == ["net0", "net1", "net2", "net3"]
        assert wait_for(lambda: re.search(r"ike\.auth_failed connection=net4 .*reason=peer_refused",
                                          gw.log_text()), bool, timeout=10)
        assert "N(AUTH_FAILED)" in peer.log_text()
        ping_ok(topology)  # neighbours resolved: what follows measures the tunnels, not ARP
        run = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=50, interval=0.02)
        sent, received = run.result()
        assert sent == received
        assert gw.request("status")["ike"]["failures"].get("auth_failed:peer_refused", 0) >= 1
        assert len(established(gw)) == 4


def test_reauthentication_loses_no_ping(tmp_path: Path) -> None:
    """We reauthenticate every 3 s (2.8.3, make-before-break) while pinging."""
    config = lambda t: our_config(t, start=True, conn_extra={"lifetimes": {"reauth": "3s"}})  # noqa: E731
    with interop(tmp_path, PeerSettings(), config) as (topology, peer, gw):
        first = wait_established(gw)
        ping_ok(topology)
        sent, received = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=300,
                                 interval=0.02).result()
        log = gw.log_text()
        assert len(re.findall(r"ike\.reauthenticated ", log)) >= 2, log[-3000:]
        assert wait_established(gw)["ike_sa"] != first["ike_sa"]
        assert sent == received, f"lost {sent - received} of {sent} pings across reauthentications"
        # Between reauthentications (each takes milliseconds) strongSwan holds one IKE SA.
        assert wait_for(lambda: len(peer.list_sas()), lambda n: n == 1, timeout=5) == 1, \
            "strongSwan kept old IKE SAs"


def test_dpd_hold_retraps_on_traffic(tmp_path: Path) -> None:
    """DPD action hold: the dead peer's SAs go, the policy stays, and traffic brings the
    tunnel back once the peer returns (the trap demand-dial builds on)."""
    config = lambda t: our_config(t, conn_extra={"dpd": {"interval": "2s", "timeout": "4s",  # noqa: E731
                                                          "action": "hold"}})
    with interop(tmp_path, PeerSettings(), config) as (topology, peer, gw):
        peer.initiate()
        wait_established(gw)
        peer.kill()
        assert wait_for(lambda: ike_sas(gw), lambda sas: not sas, timeout=15) == []
        assert "action=hold" in gw.log_text()
        # Held: traffic to the branch is dropped (no SA), never sent in clear.
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=2)
        assert received == 0
        peer.start()
        run = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=40, interval=0.2)
        sent, received = run.result()
        assert "ike.acquire" in gw.log_text()
        assert established(gw), gw.log_tail(30)
        # The attempt the held traffic started while the peer was down is answered at its
        # next retransmission (4 s, then 7.2 s later): the pings before that are lost.
        assert received >= 10, f"{received}/{sent} after the peer came back"
        ping_ok(topology)
