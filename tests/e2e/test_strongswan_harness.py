"""strongSwan against strongSwan: the peer harness that our IKEv2 is interop-tested with.

Two `StrongswanPeer`s (hq and branch gateways, kernel-libipsec) prove the harness before
it faces our implementation: a PSK tunnel with chosen algorithms, RSA and ECDSA P-256
certificates (issued by `appliance.pki`), a NAT on the path (the lab's `enable_nat`),
rekeying while traffic flows, and terminating CHILD_SAs and IKE_SAs.  Every test builds
its own lab (pid-based prefix) and checks that no namespace or charon survives it.

Facts these tests pin down about strongSwan 5.9.8 with kernel-libipsec:
- kernel-libipsec needs UDP encapsulation, so charon fakes its NAT_DETECTION_SOURCE_IP:
  the *other* side always reports ``nat-remote``, NAT or not.  A real NAT shows as
  ``nat-local`` on the side behind it and as a translated remote address/port.
- After a CHILD_SA rekey the old inbound SA lingers, listed as DELETED, for 5 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_support import (
    NETNS,
    STRONGSWAN,
    PingRun,
    assert_lab_gone,
    lab,
    lab_prefix,
    running_peers,
    strongswan_peer,
)

from appliance.lab.strongswan import PeerSettings, StrongswanPeer
from appliance.lab.topology import Topology

if TYPE_CHECKING:
    from appliance.pki import Issued

pytestmark = [*NETNS, *STRONGSWAN]

PREFIX = lab_prefix("e2s")
HQ_PUBLIC = "192.0.2.1"
BRANCH_PUBLIC = "198.51.100.1"
NAT_ADDRESS = "192.0.2.254"
HQ_HOST = "10.1.0.10"
BRANCH_HOST = "10.2.0.10"


@contextmanager
def swan_lab(tag: str, tmp_path: Path, hq: PeerSettings, branch: PeerSettings, *,
             nat: bool = False) -> Iterator[tuple[Topology, StrongswanPeer, StrongswanPeer]]:
    """A fresh lab (``PREFIX + tag``) with a charon on each gateway, all removed afterwards."""
    prefix = f"{PREFIX}{tag}-"
    with lab(prefix) as topology:
        if nat:
            topology.enable_nat()
        with running_peers(strongswan_peer(topology, "hq", tmp_path, hq),
                           strongswan_peer(topology, "branch", tmp_path, branch)) as (h, b):
            yield topology, h, b
    assert_lab_gone(prefix)


def ping_ok(topology: Topology, src_ns: str, dst: str, tries: int = 3) -> tuple[int, int]:
    """Ping until all of a round of 3 come back (the first may race the SA install)."""
    result = (0, 0)
    for _ in range(tries):
        result = topology.ping(src_ns, dst, count=3, interval=0.1)
        if result[0] == result[1]:
            break
    return result


def logs(*peers: StrongswanPeer) -> str:
    return "\n".join(f"[{p.site.name}]\n{p.log_tail(40)}" for p in peers)


def only(items: list[dict]) -> dict:
    assert len(items) == 1, items
    return items[0]


def test_psk_tunnel_with_chosen_algorithms(tmp_path: Path) -> None:
    ike, esp = "aes256-sha384-ecp256", "aes256gcm16"
    settings = PeerSettings(auth="psk", psk="harness-psk-7f3a", ike_proposals=ike, esp_proposals=esp)
    with swan_lab("psk", tmp_path, settings, settings) as (topo, hq, branch):
        start = time.monotonic()
        hq.initiate()
        elapsed = time.monotonic() - start
        print(f"\nPSK IKE_SA + CHILD_SA established in {elapsed * 1000:.0f} ms")
        assert ping_ok(topo, topo.hq.lan_ns, BRANCH_HOST) == (3, 3), logs(hq, branch)
        assert ping_ok(topo, topo.branch.lan_ns, HQ_HOST) == (3, 3), logs(hq, branch)

        h, b = only(hq.list_sas()), only(branch.list_sas())
        for sa, local, remote in ((h, HQ_PUBLIC, BRANCH_PUBLIC), (b, BRANCH_PUBLIC, HQ_PUBLIC)):
            assert sa["state"] == "ESTABLISHED"
            assert sa["version"] == "2"
            assert (sa["local-host"], sa["remote-host"]) == (local, remote)
            assert (sa["local-id"], sa["remote-id"]) == (local, remote)  # PSK default ids
            assert sa["local-port"] == sa["remote-port"] == "4500"  # floated: libipsec's fake NAT-D
            assert (sa["encr-alg"], sa["encr-keysize"]) == ("AES_CBC", "256")
            assert (sa["integ-alg"], sa["prf-alg"]) == ("HMAC_SHA2_384_192", "PRF_HMAC_SHA2_384")
            assert sa["dh-group"] == "ECP_256"
            assert "nat-local" not in sa  # no real NAT on this path
            assert sa.get("nat-remote") == "yes"  # ... but the peer fakes one (kernel-libipsec)
        assert h.get("initiator") == "yes" and "initiator" not in b
        assert (h["initiator-spi"], h["responder-spi"]) == (b["initiator-spi"], b["responder-spi"])

        hc, bc = only(h["child-sas"]), only(b["child-sas"])
        for child, local_ts, remote_ts in ((hc, "10.1.0.0/24", "10.2.0.0/24"),
                                           (bc, "10.2.0.0/24", "10.1.0.0/24")):
            assert child["name"] == "net"
            assert (child["state"], child["mode"], child["protocol"]) == ("INSTALLED", "TUNNEL", "ESP")
            assert child["encap"] == "yes"
            assert (child["encr-alg"], child["encr-keysize"]) == ("AES_GCM_16", "256")
            assert "integ-alg" not in child  # AEAD
            assert (child["local-ts"], child["remote-ts"]) == ([local_ts], [remote_ts])
            assert int(child["packets-in"]) >= 3 and int(child["packets-out"]) >= 3
        assert (hc["spi-in"], hc["spi-out"]) == (bc["spi-out"], bc["spi-in"])
        assert hq.child_installed() and branch.child_installed()


def _issue_pair(tmp_path: Path, kind: str) -> tuple[Issued, Issued, Issued]:
    """A CA and certificates for hq and branch carrying their public addresses as IP SANs."""
    from appliance import pki  # imported here: only these tests need it

    ca = pki.make_ca(tmp_path / "pki", f"harness-{kind}-ca", kind=kind)
    hq = pki.issue(tmp_path / "pki", ca, "hq-gw", kind=kind, san_ip=[HQ_PUBLIC],
                   san_dns=["hq.lab.example"])
    branch = pki.issue(tmp_path / "pki", ca, "br-gw", kind=kind, san_ip=[BRANCH_PUBLIC],
                       san_dns=["branch.lab.example"])
    return ca, hq, branch


@pytest.mark.parametrize(("kind", "scheme", "key"), [
    ("rsa", "RSA_EMSA_PKCS1_SHA2_256", "2048 bit RSA"),     # RFC 7427, PKCS#1 v1.5 (not PSS)
    ("ecdsa256", "ECDSA_WITH_SHA256_DER", "256 bit ECDSA"),
])
def test_certificate_tunnel(tmp_path: Path, kind: str, scheme: str, key: str) -> None:
    ca, hq_cert, br_cert = _issue_pair(tmp_path, kind)

    def settings(issued: Issued, remote_id: str) -> PeerSettings:
        return PeerSettings(auth="pubkey", cert=issued.cert_path, key=issued.key_path,
                            cacerts=[ca.cert_path], remote_id=remote_id)

    with swan_lab(f"c{kind[:2]}", tmp_path, settings(hq_cert, BRANCH_PUBLIC),
                  settings(br_cert, HQ_PUBLIC)) as (topo, hq, branch):
        start = time.monotonic()
        branch.initiate()
        elapsed = time.monotonic() - start
        print(f"\n{kind} certificates: established in {elapsed * 1000:.0f} ms")
        assert ping_ok(topo, topo.branch.lan_ns, HQ_HOST) == (3, 3), logs(hq, branch)
        h, b = only(hq.list_sas()), only(branch.list_sas())
        # local ids default to the public address, which the certificates carry as IP SANs
        assert (h["local-id"], h["remote-id"]) == (HQ_PUBLIC, BRANCH_PUBLIC)
        assert (b["local-id"], b["remote-id"]) == (BRANCH_PUBLIC, HQ_PUBLIC)
        assert only(h["child-sas"])["state"] == "INSTALLED"
        for peer, other, other_cn in ((hq, BRANCH_PUBLIC, "br-gw"), (branch, HQ_PUBLIC, "hq-gw")):
            line = peer.wait_log(rf"authentication of '{other}' with (\S+) successful", timeout=1)
            print(f"  [{peer.site.name}] {line.group(0)}")
            assert line.group(1) == scheme
            text = peer.log_text()
            assert f'certificate "CN={other_cn}, O=Gateway Lab" key: {key}' in text
            assert f'using trusted ca certificate "CN=harness-{kind}-ca, O=Gateway Lab"' in text


def test_nat_on_the_path(tmp_path: Path) -> None:
    # hq cannot name the address the branch will come from: accept any, check the id.
    hq_settings = PeerSettings(remote_addrs="%any", remote_id=BRANCH_PUBLIC)
    with swan_lab("nat", tmp_path, hq_settings, PeerSettings(), nat=True) as (topo, hq, branch):
        branch.initiate()
        assert ping_ok(topo, topo.branch.lan_ns, HQ_HOST) == (3, 3), logs(hq, branch)
        assert ping_ok(topo, topo.hq.lan_ns, BRANCH_HOST) == (3, 3), logs(hq, branch)
        h, b = only(hq.list_sas()), only(branch.list_sas())
        print(f"\nNAT: hq sees the branch at {h['remote-host']}:{h['remote-port']}; "
              f"hq flags {sorted(k for k in h if k.startswith('nat-'))}, "
              f"branch flags {sorted(k for k in b if k.startswith('nat-'))}")
        assert h["remote-host"] == NAT_ADDRESS == topo.nat_address
        assert h["remote-port"] not in ("500", "4500")  # masquerade random rewrote the port
        assert h["remote-id"] == BRANCH_PUBLIC
        assert h.get("nat-remote") == "yes" and "nat-local" not in h
        assert b.get("nat-local") == "yes"  # the real NAT: only the side behind it sees this
        assert (b["remote-host"], b["remote-port"]) == (HQ_PUBLIC, "4500")
        assert only(h["child-sas"])["encap"] == "yes"

        topo.disable_nat()
        assert topo.ns(topo.inet_ns, "nft", "list", "tables").stdout.strip() == ""


def test_rekey_and_terminate_while_pinging(tmp_path: Path) -> None:
    with swan_lab("rk", tmp_path, PeerSettings(), PeerSettings()) as (topo, hq, branch):
        hq.initiate()
        assert ping_ok(topo, topo.hq.lan_ns, BRANCH_HOST) == (3, 3), logs(hq, branch)
        first_child = hq.child_sa()
        first_ike = hq.ike_sa()
        assert first_child is not None and first_ike is not None

        # Reauthentication first (5.9.8 postpones a reauth while a rekeyed CHILD_SA lingers):
        # a new IKE_SA and CHILD_SA, break-before-make by default.  50 pings, 20 ms apart.
        # 5.9.8 sends the new IKE_SA_INIT before registering the new IKE_SA, so a fast answer
        # is sometimes dropped ("IKE_SA checkout not successful", at log level mgr 2) and the
        # reauth waits for the 4 s retransmission.
        run = PingRun(topo, topo.hq.lan_ns, BRANCH_HOST, count=50, interval=0.02)
        mark = len(hq.log_text())
        try:
            time.sleep(0.4)
            reauth_ike = hq.rekey_ike(reauth=True)
        finally:
            sent, received = run.result()
        reauth_lost = sent - received
        reauth_raced = "retransmit 1 of request with message ID 0" in hq.log_text()[mark:]
        old_child = hq.child_sa()

        # Then rekey the CHILD_SA from each side and the IKE_SA: 100 pings, 20 ms apart.
        run = PingRun(topo, topo.hq.lan_ns, BRANCH_HOST, count=100, interval=0.02)
        try:
            time.sleep(0.4)
            new_child = hq.rekey_child()
            time.sleep(0.4)
            newer_child = branch.rekey_child()
            time.sleep(0.4)
            new_ike = branch.rekey_ike()
        finally:
            sent, received = run.result()
        rekey_lost = sent - received
        print(f"\npings lost (20 ms apart): reauth IKE_SA {reauth_lost}/50"
              f"{' (IKE_SA_INIT retransmitted)' if reauth_raced else ''}; "
              f"rekey CHILD_SA twice and IKE_SA once {rekey_lost}/{sent}")
        assert reauth_ike is not None and old_child is not None
        assert new_child is not None and newer_child is not None and new_ike is not None
        assert len({first_child["spi-in"], old_child["spi-in"], new_child["spi-in"],
                    newer_child["spi-out"]}) == 4
        assert len({first_ike["initiator-spi"], reauth_ike["initiator-spi"],
                    new_ike["initiator-spi"]}) == 3
        assert sent == 100 and rekey_lost <= 1, logs(hq, branch)
        assert reauth_lost <= 5 or reauth_raced, logs(hq, branch)  # break-before-make
        # the lingering old inbound SAs (DELETED for 5 s) are not counted as installed
        assert only([c for sa in hq.list_sas() for c in sa["child-sas"]
                     if c["state"] == "INSTALLED"])["spi-out"] == newer_child["spi-in"]

        # Terminate the CHILD_SA: the IKE_SA stays, traffic stops; a new CHILD_SA restores it.
        branch.terminate_child()
        assert not hq.child_installed() and not branch.child_installed()
        assert hq.ike_sa() is not None and branch.ike_sa() is not None
        assert topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2, interval=0.1, wait=0.5)[1] == 0
        hq.initiate()
        assert only(hq.list_sas())["initiator-spi"] == new_ike["initiator-spi"]  # same IKE_SA
        assert ping_ok(topo, topo.hq.lan_ns, BRANCH_HOST) == (3, 3), logs(hq, branch)

        # Terminate the IKE_SA: both sides forget everything.
        hq.terminate_ike()
        branch.wait_no_sas(timeout=5)
        hq.wait_no_sas(timeout=5)
        assert topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2, interval=0.1, wait=0.5)[1] == 0


def test_dead_peer_is_detected(tmp_path: Path) -> None:
    # IKEv2 liveness: an empty INFORMATIONAL after dpd_delay of silence, retransmitted
    # (here 2 times from 0.5 s) before the IKE_SA is given up; dpd_action clears the child.
    hq_settings = PeerSettings(dpd_delay="1s", dpd_action="clear",
                               extra_charon="retransmit_tries = 2\nretransmit_timeout = 0.5\n"
                                            "retransmit_base = 1.4")
    with swan_lab("dpd", tmp_path, hq_settings, PeerSettings()) as (topo, hq, branch):
        hq.initiate()
        assert ping_ok(topo, topo.hq.lan_ns, BRANCH_HOST) == (3, 3), logs(hq, branch)
        branch.kill()  # no DELETE: the branch just vanishes
        assert not branch.running
        start = time.monotonic()
        hq.wait_no_sas(timeout=15)
        elapsed = time.monotonic() - start
        text = hq.log_text()
        print(f"\ndead peer: hq gave up {elapsed:.1f} s after the kill")
        assert "sending DPD request" in text
        assert "giving up after 2 retransmits" in text, hq.log_tail(40)
        assert not hq.child_installed()
