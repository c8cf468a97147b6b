"""SoftEther VPN Server 5.01 as the lab's L2TP/IPsec server (LNS): the harness that the
L2TP/PPP interop tests use (`appliance.lab.softether.SoftetherServer`).

Lab: the standard topology; SoftEther on the branch gateway namespace (198.51.100.1), the
client (scapy probes, or our gateway as the LAC) on the hq gateway (192.0.2.1), across
the internet router.  One fresh server per test (about 2 s), SIGKILLed afterwards; every
test checks that no namespace and no vpnserver survives it.

Facts these tests pin down about this build:
- It stays offline: with the config the harness writes it binds TCP 5555 and UDP
  500/4500 on its lab address only (no IPv6), and sends nothing but answers.
- With ``--foreground`` all its logs go to stdout; the log directories stay empty.
- Phase 1: it answers a Main Mode offer with the first acceptable transform, but always
  numbers it #1; an offer without an acceptable transform (ECP only) gets
  NO-PROPOSAL-CHOSEN in an Informational with a *new* initiator cookie in the header (ours
  only in the notify SPI).  It fakes NAT-D (we float to 4500 and see ourselves behind NAT).
- Our IKEv1 initiator gets Phase 1 and a UDP-encapsulated ESP transport SA from it
  (AES-256 with HMAC-SHA1: it refuses SHA2 in Phase 2), and an L2TP SCCRQ sent through
  that SA is answered with an SCCRP.
- The tap bridge gives a LAN host behind the hub that answers pings and serves TCP;
  SecureNAT's 10.250.0.1 answers pings but drops TCP (NAT is off).
"""

from __future__ import annotations

import ipaddress
import re
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    NETNS,
    PROTO_ESP,
    PROTO_UDP,
    Capture,
    assert_lab_gone,
    gateway_cli,
    lab,
    lab_prefix,
    tcp_exchange,
    wait_for,
)
from softether_support import (
    AES256_SHA1_MODP2048,
    AES256_SHA256_ECP256,
    SOFTETHER,
    l2tp_hello,
    l2tp_message_type,
    main_mode_offer,
    softether_lab,
    udp_exchange,
)

from appliance.lab.gateways import LabGateway
from appliance.lab.iperf import iperf3_once
from appliance.lab.softether import SECURENAT, SoftetherServer, SoftetherSettings, _sockets
from appliance.lab.topology import LabError, Topology, run

pytestmark = [*NETNS, *SOFTETHER]

PREFIX = lab_prefix("e2se")
CLIENT = "192.0.2.1"
SERVER = "198.51.100.1"
LAB_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                              "10.0.0.0/8")]
PSK = "harness-l2tp-psk-51f0"
TCP_LISTEN = 0x0A


def in_lab(address: str) -> bool:
    return any(ipaddress.ip_address(address) in net for net in LAB_NETS)


def transform_attrs(transform: Any) -> dict[str, Any]:
    return dict(transform.transforms)


def vendor_ids(message: Any) -> list[bytes]:
    from scapy.layers.isakmp import ISAKMP_payload_VendorID

    found, layer = [], message
    while layer:
        if isinstance(layer, ISAKMP_payload_VendorID):
            found.append(bytes(layer.VendorID))
        layer = layer.payload
    return found


RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")


# -- the server itself ------------------------------------------------------------------------------

def test_server_starts_offline_on_its_address_only(tmp_path: Path) -> None:
    """Start with a capture on its namespace's links: after configuration and 2 s idle it
    has sent nothing (no DNS, NetBIOS, DDNS, keep-alive); it listens on 198.51.100.1 only."""
    prefix = f"{PREFIX}up-"
    settings = SoftetherSettings(psk=PSK, users=[("branch1", "secret"), ("branch2", "other-secret")])
    with lab(prefix) as topo:
        server = SoftetherServer.on_site(topo, topo.branch, tmp_path / "lns", settings)
        with Capture(topo, topo.branch.gw_ns, "wan0", tmp_path / "wan.pcap") as wan, \
                Capture(topo, topo.branch.gw_ns, "lo", tmp_path / "lo.pcap") as lo:
            with server:
                print(f"\nSoftEther ready in {server.timings['ready']:.2f} s: " +
                      ", ".join(f"{k} {v:.2f}" for k, v in server.timings.items()))
                assert server.timings["ready"] < 10
                time.sleep(2)  # DDNS, keep-alive and NAT-T would have started by now
                pid = server.pid
                assert pid is not None
                tcp = _sockets(pid, "tcp")
                udp = _sockets(pid, "udp")
                listening = {(a, p) for a, p, state in tcp if state == TCP_LISTEN}
                print(f"TCP listening {sorted(listening)}; UDP bound {sorted((a, p) for a, p, _ in udp)}")
                assert listening == {(SERVER, 5555)}
                assert {a for a, _, _ in udp} == {SERVER}
                assert {500, 4500} <= {p for _, p, _ in udp}
                assert not _sockets(pid, "tcp6") and not _sockets(pid, "udp6")
                arp_filter = topo.ns(topo.branch.gw_ns, "sysctl", "-n", "net.ipv4.conf.all.arp_filter")
                assert arp_filter.stdout.strip() == "0"  # NoLinuxArpFilter: it leaves the namespace alone
                config = server.config_path.read_text(encoding="utf-8-sig")
                output = server.output()
                log_files = server.log_files()
            assert pid is not None and not Path(f"/proc/{pid}").exists()
        wan_packets, lo_packets = wan.packets(), lo.packets()
    assert_lab_gone(prefix)

    sent = [p for p in wan_packets if p.src == SERVER]
    assert not sent, f"SoftEther sent on its public link: {[str(p) for p in sent]}"
    strays = [str(p) for p in lo_packets
              if not (p.proto == 6 and 5555 in (p.sport, p.dport) and p.src == p.dst == SERVER)]
    assert not strays, f"besides vpncmd on TCP 5555: {strays}"
    assert all(in_lab(p.src) and in_lab(p.dst) for p in wan_packets + lo_packets)

    # What it saved at Flush still has every Internet-facing feature off, and our settings.
    for line in ("bool Disabled true", "bool UseKeepConnect false", "bool DisableNatTraversal true",
                 "bool DisableJsonRpcWebApi true", "bool UseWebUI false",
                 "bool EnableVpnOverDns false", "bool EnableVpnOverIcmp false",
                 "bool DisableIPv6Listener true", "string PortsUDP $", f"string ListenIP {SERVER}",
                 "bool L2TP_IPsec true", f"string IPsec_Secret {PSK}", "string L2TP_DefaultHub DEFAULT"):
        assert re.search(rf"^\s*{re.escape(line)}$", config, re.MULTILINE), f"{line!r} not saved"
    assert re.findall(r"^\s*declare (Listener\d+)$", config, re.MULTILINE) == ["Listener0"]
    assert re.search(r"declare Listener0\s*\{[^}]*uint Port 5555", config)
    # With DDNS disabled it creates no VPN Azure client at all (Server.c), so saves no
    # EnableVpnAzure; it refills KeepConnectHost with keepalive.softether.org but never uses it.
    assert "EnableVpnAzure" not in config
    for user in ("branch1", "branch2"):
        assert re.search(rf"^\s*declare {user}$", config, re.MULTILINE), f"user {user} not saved"

    assert "The configuration file has been loaded." in output
    assert "SecureNAT has started." in output
    for absent in ("DDNS", "Azure", "TCP Listener (port 443)", "TCP Listener (port 992)"):
        assert absent not in output, f"{absent!r} in its output"
    # --foreground: every log goes to stdout; the log directories exist but stay empty
    assert log_files == {}
    assert {p.name for p in server.log_dir.iterdir()} >= {"server_log", "security_log", "packet_log"}


def test_main_mode_offers_are_answered(tmp_path: Path) -> None:
    """Main Mode message 1 from the client namespace: AES-CBC-256/SHA1/MODP-2048 alone, and
    after an ECP-256 transform (which it cannot do): it answers with the MODP-2048 one."""
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_SA

    with softether_lab(f"{PREFIX}mm-", tmp_path, SoftetherSettings(psk=PSK)) as (topo, server):
        for offer in ([AES256_SHA1_MODP2048], [AES256_SHA256_ECP256, AES256_SHA1_MODP2048]):
            mark = len(server.output())
            message, cookie = main_mode_offer(offer)
            replies = udp_exchange(topo.hq.gw_ns, CLIENT, 500, SERVER, 500, message)
            assert len(replies) == 1, replies
            address, port, data = replies[0]
            assert (address, port) == (SERVER, 500)
            reply = ISAKMP(data)
            assert reply.exch_type == 2 and reply.init_cookie == cookie and reply.resp_cookie != bytes(8)
            sa = reply[ISAKMP_payload_SA]
            proposal = sa.prop
            assert proposal.trans_nb == 1
            transform = proposal.trans
            chosen = transform_attrs(transform)
            print(f"\noffered {len(offer)} transform(s): chose #{transform.transform_count} {chosen}")
            assert chosen == dict(AES256_SHA1_MODP2048)
            assert transform.transform_count == 1  # even when it was our #2 (PEERS.md)
            vids = vendor_ids(reply)
            assert RFC3947 in vids and DPD in vids
            # (it prints cookies and SPIs in hex without leading zeros)
            line = server.wait_log(rf"A new IKE SA \(Main Mode\) is created\. Initiator Cookie: "
                                   rf"0x{int.from_bytes(cookie, 'big'):X}, .*", start=mark).group(0)
            print(f"  {line}")
            assert ("DH Group: MODP 2048 (Group 14), Hash Algorithm: SHA-1, Cipher Algorithm: AES-CBC, "
                    "Cipher Key Size: 256 bits") in line
        assert server.ipsec_lines(), server.log_tail()


def test_wrong_proposal_gets_no_proposal_chosen(tmp_path: Path) -> None:
    """Only ECP-256 offered: an Informational with NO-PROPOSAL-CHOSEN, whose header carries
    a fresh initiator cookie and a zero responder cookie; ours is in the notify SPI."""
    from scapy.layers.isakmp import ISAKMP, ISAKMP_payload_Notify

    with softether_lab(f"{PREFIX}np-", tmp_path, SoftetherSettings(psk=PSK)) as (topo, server):
        message, cookie = main_mode_offer([AES256_SHA256_ECP256])
        replies = udp_exchange(topo.hq.gw_ns, CLIENT, 500, SERVER, 500, message)
        assert len(replies) == 1, replies
        reply = ISAKMP(replies[0][2])
        print(f"\nanswer: exchange {reply.exch_type}, cookies {reply.init_cookie.hex()}/"
              f"{reply.resp_cookie.hex()}, message id {reply.id:#x}")
        assert reply.exch_type == 5  # Informational
        notify = reply[ISAKMP_payload_Notify]
        assert notify.notify_msg_type == 14  # NO-PROPOSAL-CHOSEN
        assert notify.proto == 1 and bytes(notify.SPI) == cookie + bytes(8)
        assert reply.init_cookie != cookie and reply.resp_cookie == bytes(8)  # its quirk
        assert reply.flags == 0  # unencrypted
        server.wait_log(r"There are no acceptable transform proposals from the client for establishing "
                        r"an IKE SA\.")


# -- our gateway (IKEv1 initiator, transport mode) against it ------------------------------------------

def lac_config(topo: Topology, psk: str, *, l2tp: bool = False) -> dict[str, Any]:
    """Our gateway on hq dialing SoftEther: IKEv1 Main Mode PSK, ESP transport mode, the
    default proposals (SoftEther picks from the SHA-1 and MODP fallbacks).  With ``l2tp``
    the connection is an L2TP LAC, whose Quick Mode names UDP 1701 on both sides."""
    conn: dict[str, Any] = {"remote": topo.branch.gw_public, "mode": "transport",
                            "auth": {"method": "psk", "psk": psk},
                            "ike": {"version": 1, "start": "start"}}
    if l2tp:
        conn["l2tp"] = {"role": "lac", "user": "branch1", "password": "secret"}
    return {
        "gateway": {"name": "hq", "public_interface": "wan0", "public_address": topo.hq.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": "debug"},
        "connections": {"lns": conn},
    }


def established(gw: LabGateway) -> list[dict[str, Any]]:
    return [s for s in gw.request("sas")["ike_sas"] if s["state"] == "established" and s["children"]]


@pytest.mark.parametrize("selectors", ["hosts", "l2tp"])
def test_our_ikev1_initiator_gets_a_transport_sa(tmp_path: Path, selectors: str) -> None:
    """Phase 1 and Quick Mode from our gateway: whole-host selectors, or UDP 1701 ones (an
    ``l2tp: {role: lac}`` connection).  With whole-host selectors an L2TP SCCRQ from the
    gateway's namespace then crosses the SA and its SCCRP comes back (with ``l2tp`` the
    gateway's own LAC owns UDP 1701, so the probe is left to the L2TP tests)."""
    l2tp = selectors == "l2tp"
    with softether_lab(f"{PREFIX}gw{selectors[0]}-", tmp_path, SoftetherSettings(psk=PSK)) as (topo, server):
        with Capture(topo, topo.inet_ns, "to-branch", tmp_path / "inet.pcap") as cap:
            gw = LabGateway.start(topo.hq, tmp_path, "hq", lac_config(topo, PSK, l2tp=l2tp))
            try:
                sas = wait_for(lambda: established(gw), bool, timeout=15)
                assert sas, f"no ISAKMP SA with an IPsec SA:\n{gw.log_tail(40)}\n{server.log_tail()}"
                sa = sas[0]
                cli = gateway_cli("sas", "-s", str(gw.socket))
                print(f"\n{cli}")
                assert sa["version"] == 1 and sa["initiator"] and sa["auth"] == "psk"
                assert (sa["local"], sa["remote"]) == (f"{CLIENT}:4500", f"{SERVER}:4500")
                assert sa["encap"] and sa["nat_local"] and not sa["nat_remote"]  # its fake NAT-D
                assert sa["algorithm"] == "aes256-sha256-modp3072"  # our first non-ECP Phase 1 offer
                assert "RFC 3947" in sa["vendor_ids"] and "DPD" in sa["vendor_ids"]
                child = sa["children"][0]
                assert (child["state"], child["mode"]) == ("installed", "transport")
                assert child["algorithm"] == "aes256-sha1"  # it refuses HMAC-SHA2 in Phase 2
                ports = "[17/1701]" if l2tp else ""
                assert (child["local_ts"], child["remote_ts"]) == ([f"{CLIENT}/32{ports}"],
                                                                   [f"{SERVER}/32{ports}"])
                esp = {s["direction"]: s for s in gw.request("sas")["sas"]}
                assert {s["encap"] for s in esp.values()} == {"udp/4500->4500"}
                assert {s["mode"] for s in esp.values()} == {"transport"}
                assert "aes256-sha1" in cli and "transport" in cli

                # SoftEther agrees, SPI for SPI.
                server.wait_log(r"This IPsec SA is established between the server and the client\.")
                log = server.output()
                assert "This IKE SA is established between the server and the client." in log
                spi_out, spi_in = int(child["spi_out"], 16), int(child["spi_in"], 16)
                assert re.search(rf"\(Direction: Client -> Server\) is created\. SPI: 0x{spi_out:X},", log)
                assert re.search(rf"\(Direction: Server -> Client\) is created\. SPI: 0x{spi_in:X},", log)

                if not l2tp:
                    # Data crosses the SA both ways: an L2TP SCCRQ gets its SCCRP (then StopCCN).
                    hello = l2tp_hello(topo.hq.gw_ns, CLIENT, SERVER)
                    sccrp = hello["sccrp"]
                    print(f"L2TP: {hello}")
                    assert hello["from"] == [SERVER, 1701]
                    assert l2tp_message_type(sccrp) == 2 and sccrp["tunnel"] == 4242  # SCCRP to our tunnel
                    server.wait_log(r"The L2TP Server Module is started\.")
                    esp = {s["direction"]: s for s in gw.request("sas")["sas"]}
                    assert esp["out"]["packets"] >= 2 and esp["in"]["packets"] >= 1, esp
            except BaseException:
                print(gw.log_tail(60))
                raise
            finally:
                gw.stop()
            server.wait_log(r"This IKE SA is deleted\.")  # our DELETE on shutdown
        packets = cap.packets()
    summary = classify(packets)
    print(f"on the wire: {summary}")
    assert summary["ike500"] >= 4 and summary["ike4500"] >= 5  # Main Mode floats after message 4
    assert summary["l2tp_clear"] == 0 and summary["esp_raw"] == 0
    assert summary["spis"] <= {spi_in, spi_out}
    if not l2tp:
        assert summary["esp_in_udp"] >= 3 and summary["spis"] == {spi_in, spi_out}
    print("SoftEther:\n" + "\n".join(server.ipsec_lines()))


#: Masquerade what hq sends toward the branch (the lab's own NAT goes the other way, to
#: 192.0.2.254, an address SoftEther 5.01 cannot serve: see the next test).
NAT_TOWARD_BRANCH = """table ip softether_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "to-hq" oifname "to-branch" masquerade random
  }
}
"""


def test_our_ikev1_initiator_behind_a_nat(tmp_path: Path) -> None:
    """A masquerading NAT between our gateway and SoftEther: it sees us as 198.51.100.254
    with rewritten ports, the SA is UDP-encapsulated, and an L2TP SCCRQ gets its SCCRP."""
    with softether_lab(f"{PREFIX}nat-", tmp_path, SoftetherSettings(psk=PSK)) as (topo, server):
        proc = subprocess.run(["ip", "netns", "exec", topo.inet_ns, "nft", "-f", "-"],
                              input=NAT_TOWARD_BRANCH, capture_output=True, text=True, timeout=30,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        gw = LabGateway.start(topo.hq, tmp_path, "hq", lac_config(topo, PSK))
        try:
            sas = wait_for(lambda: established(gw), bool, timeout=15)
            assert sas, f"no ISAKMP SA with an IPsec SA:\n{gw.log_tail(40)}\n{server.log_tail()}"
            sa = sas[0]
            assert sa["nat_local"] and sa["encap"] and sa["remote"] == f"{SERVER}:4500"
            assert sa["children"][0]["mode"] == "transport"
            line = server.wait_log(r"IPsec Client 1 \((198\.51\.100\.254):(\d+) -> 198\.51\.100\.1:4500\): "
                                   r"The port number information of this client is updated\.")
            print(f"\nSoftEther sees us at {line.group(1)}:{line.group(2)}")
            assert line.group(2) != "4500"  # masquerade random rewrote the port
            hello = l2tp_hello(topo.hq.gw_ns, CLIENT, SERVER)
            assert l2tp_message_type(hello["sccrp"]) == 2 and hello["from"] == [SERVER, 1701]
        except BaseException:
            print(gw.log_tail(60))
            raise
        finally:
            gw.stop()


def test_a_peer_at_192_0_2_254_is_taken_for_ipv6(tmp_path: Path) -> None:
    """SoftEther on hq: a Main Mode offer from 192.0.2.254 (the lab router, also the lab
    NAT's address) is logged as coming from "::" and never answered; the same offer from
    another address of that link is.  (This build marks IPv6 addresses with 192.0.2.254.)"""
    prefix = f"{PREFIX}v6-"
    with lab(prefix) as topo:
        topo.ns(topo.inet_ns, "ip", "addr", "add", "192.0.2.77/24", "dev", "to-hq")
        with pytest.raises(LabError, match="IPv6 marker"):
            SoftetherServer(topo.inet_ns, "192.0.2.254", tmp_path / "no")
        with SoftetherServer.on_site(topo, topo.hq, tmp_path / "lns", SoftetherSettings(psk=PSK)) as server:
            results = {}
            hq = topo.hq.gw_public
            for source in ("192.0.2.77", "192.0.2.254"):
                mark = len(server.output())
                message, _ = main_mode_offer([AES256_SHA1_MODP2048])
                results[source] = udp_exchange(topo.inet_ns, source, 500, hq, 500, message, timeout=2)
                client = server.wait_log(rf"IPsec Client \d+ \((\S+) -> {re.escape(hq)}:500\): A new IPsec",
                                         start=mark).group(1)
                print(f"\nfrom {source}: {len(results[source])} answer(s); logged as client {client}")
                assert client == ("192.0.2.77:500" if source == "192.0.2.77" else ":::500")
            assert len(results["192.0.2.77"]) == 1 and results["192.0.2.254"] == []
    assert_lab_gone(prefix)


def classify(packets: list[Any]) -> dict[str, Any]:
    """Count IKE on 500 and 4500 (non-ESP marker), ESP in UDP, raw ESP, clear L2TP."""
    out: dict[str, Any] = {"ike500": 0, "ike4500": 0, "esp_in_udp": 0, "esp_raw": 0, "l2tp_clear": 0,
                           "spis": set()}
    for p in packets:
        if p.proto == PROTO_ESP:
            out["esp_raw"] += 1
        elif p.proto == PROTO_UDP:
            body = p.payload[8:]
            if 1701 in (p.sport, p.dport):
                out["l2tp_clear"] += 1
            elif 500 in (p.sport, p.dport):
                out["ike500"] += 1
            elif 4500 in (p.sport, p.dport):
                if body[:4] == bytes(4):
                    out["ike4500"] += 1
                elif len(body) > 1:
                    out["esp_in_udp"] += 1
                    out["spis"].add(struct.unpack("!I", body[:4])[0])
    return out


# -- the tap bridge: a LAN host behind the LNS -------------------------------------------------------

def test_tap_bridge_gives_a_lan_host(tmp_path: Path) -> None:
    """The tap moves to the branch LAN namespace as 10.250.0.2/24: it pings SecureNAT through
    the hub.  A second tap (hq LAN namespace, 10.250.0.3) stands in for a PPP client: ping,
    a TCP exchange and iperf3 to the LAN host cross the hub.  TCP to 10.250.0.1 is dropped."""
    settings = SoftetherSettings(psk=PSK, bridge=True, packet_log=True)
    with softether_lab(f"{PREFIX}br-", tmp_path, settings) as (topo, server):
        lan = topo.branch.lan_ns
        assert server.lan_namespace == lan and server.lan_host == "10.250.0.2"
        addrs = topo.ns(lan, "ip", "-br", "addr", "show", "dev", server.tap_device).stdout
        assert "10.250.0.2/24" in addrs, addrs
        gw_links = topo.ns(topo.branch.gw_ns, "ip", "-br", "link").stdout
        assert server.tap_device not in gw_links, gw_links
        assert topo.ping(lan, SECURENAT, count=3, interval=0.1) == (3, 3), server.log_tail()
        # packet_log: the hub logs each frame (to stdout, as CSV)
        echo = server.wait_log(r"ICMPv4,Echo Reply,10\.250\.0\.1,-,10\.250\.0\.2,").group(0)
        assert any("ICMPv4,Echo Request,10.250.0.2,-,10.250.0.1," in ln for ln in server.packet_lines()), echo
        secure_nat_tcp = _tcp_connect(topo, lan, SECURENAT, 80)
        print(f"\nTCP from the LAN host to SecureNAT {SECURENAT}:80: {secure_nat_tcp}")
        assert secure_nat_tcp == "timeout"

        probe = topo.hq.lan_ns
        server.vpncmd("BridgeCreate DEFAULT /DEVICE:probe /TAP:yes")
        wait_for(lambda: "tap_probe" in topo.ns(topo.branch.gw_ns, "ip", "-br", "link").stdout,
                 bool, timeout=5)
        topo.ns(topo.branch.gw_ns, "ip", "link", "set", "tap_probe", "netns", probe)
        topo.ns(probe, "ip", "addr", "add", "10.250.0.3/24", "dev", "tap_probe")
        topo.ns(probe, "ip", "link", "set", "tap_probe", "up")
        sent, received = (0, 0)
        for _ in range(5):  # the hub learns the new port's MAC with the first frames
            sent, received = topo.ping(probe, server.lan_host, count=3, interval=0.1)
            if received == sent:
                break
        assert received == sent == 3, server.log_tail()
        reply = tcp_exchange(topo, lan, server.lan_host, probe, "hello through the hub", port=8080)
        assert reply == "reply:hello through the hub"
        rate = iperf3_once(topo, lan, server.lan_host, probe, seconds=2)
        print(f"iperf3 TCP tap -> hub -> tap: {rate:.3f} Gbit/s")
        assert rate > 0.001
        assert "Local Bridge connection to physical Ethernet interface \"lns\" was started" in server.output()
        bridges = server.table("BridgeList")
        assert [(b["Network Adapter or Tap Device Name"], b["Status"]) for b in bridges] == [
            ("lns", "Operating"), ("probe", "Operating")]
        sessions = server.table("SessionList", hub="DEFAULT")
        assert sorted(s["Location"] for s in sessions) == ["Local Session"] * 2 + ["SecureNAT Session"]
    # the taps went with the server
    assert not Path(f"/sys/class/net/{server.tap_device}").exists()


def _tcp_connect(topo: Topology, namespace: str, address: str, port: int, timeout: float = 2.0) -> str:
    code = ("import socket, sys\ns = socket.socket(); s.settimeout(float(sys.argv[3]))\n"
            "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
            "except TimeoutError: print('timeout')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except OSError as e: print('error', e)\n")
    return topo.ns(namespace, sys.executable, "-c", code, address, str(port), str(timeout),
                   timeout=timeout + 20).stdout.strip()


# -- life cycle -----------------------------------------------------------------------------------------

def netns_pids(namespace: str) -> list[str]:
    return run(["ip", "netns", "pids", namespace]).stdout.split()


def test_stop_leaves_nothing_and_a_fresh_server_starts(tmp_path: Path) -> None:
    prefix = f"{PREFIX}lc-"
    with lab(prefix) as topo:
        timings = []
        for _ in range(2):
            server = SoftetherServer.on_site(topo, topo.branch, tmp_path / "lns",
                                             SoftetherSettings(psk=PSK, bridge=True))
            started = time.monotonic()
            server.start()
            ready = time.monotonic() - started
            pid = server.pid
            assert pid is not None and server.running
            host_mnt = Path("/proc/self/ns/mnt").resolve()
            assert Path(f"/proc/{pid}/ns/mnt").resolve() != host_mnt  # its own mount namespace
            assert Path(f"/proc/{pid}/root/var/lib/softether/vpn_server.config").exists()
            assert not Path("/var/lib/softether/vpn_server.config").exists()  # private
            stopped = time.monotonic()
            server.stop()
            stop_s = time.monotonic() - stopped
            timings.append((ready, stop_s))
            assert not server.running and not Path(f"/proc/{pid}").exists()
            assert netns_pids(topo.branch.gw_ns) == []
            assert topo.ns(topo.branch.lan_ns, "ip", "link", "show", server.tap_device,
                           check=False).returncode != 0
            assert str(server.root) not in Path("/proc/self/mountinfo").read_text()
            server.stop()  # idempotent
        print("\nstart/stop: " + "; ".join(f"ready {r:.2f} s, stopped {s:.3f} s" for r, s in timings))

        # A failing vpncmd script: a clear error with its output, and nothing left running.
        bad = SoftetherServer.on_site(topo, topo.branch, tmp_path / "bad",
                                      SoftetherSettings(extra_commands=["NoSuchCommand"]))
        with pytest.raises(LabError, match="vpncmd configuring SoftEther") as info:
            bad.start()
        print(f"failing script: {str(info.value).splitlines()[0][:200]}")
        assert not bad.running
        assert netns_pids(topo.branch.gw_ns) == []
        with pytest.raises(LabError, match="letters, digits"):
            SoftetherServer.on_site(topo, topo.branch, tmp_path / "bad2",
                                    SoftetherSettings(users=[("bad user", "x")])).start()
    assert_lab_gone(prefix)


def test_restart_in_place(tmp_path: Path) -> None:
    """stop() then start() (or restart()): the same server again with fresh state, as after
    a crash; its output goes on in the same file; the tap comes back as the LAN host."""
    settings = SoftetherSettings(psk=PSK, bridge=True, users=[("branch1", "secret")])
    with softether_lab(f"{PREFIX}rs-", tmp_path, settings) as (topo, server):
        first = server.pid
        server.vpncmd("UserCreate extra /GROUP:none /REALNAME:none /NOTE:none", hub="DEFAULT")
        server.stop()
        assert first is not None and not Path(f"/proc/{first}").exists()
        tap = topo.ns(topo.branch.lan_ns, "ip", "link", "show", server.tap_device, check=False)
        assert tap.returncode != 0  # the tap went with it
        began = time.monotonic()
        server.restart()  # stop() of a stopped server is a no-op
        took = time.monotonic() - began
        second = server.pid
        assert second is not None and second != first and server.pids == [first, second]
        assert len(server.output_marks) == 2 and 0 == server.output_marks[0] < server.output_marks[1]
        text = server.output()
        assert text.count("IPsec Module: The IPsec ver 2.0") == 2, text[-2000:]
        assert "IPsec Module" in text[server.output_marks[1]:]
        users = [u["User Name"] for u in server.table("UserList", hub="DEFAULT")]
        assert users == ["branch1"], users  # fresh state: the user made at run time is gone
        assert server.ike_bound()
        assert topo.ping(topo.branch.lan_ns, SECURENAT, count=3, interval=0.1) == (3, 3), server.log_tail()
        assert server.l2tp_sessions() == []  # SecureNAT and the bridge only
        with pytest.raises(LabError, match="session name"):
            server.disconnect("SID-X; rm")
        print(f"\nrestart in place: {took:.2f} s ({server.timings})")


def test_log_and_vpncmd_helpers(tmp_path: Path) -> None:
    settings = SoftetherSettings(psk=PSK, users=[("branch1", "secret"), ("road2", "warrior")])
    with softether_lab(f"{PREFIX}lg-", tmp_path, settings) as (topo, server):
        mark = len(server.output())
        message, _ = main_mode_offer([AES256_SHA256_ECP256])
        udp_exchange(topo.hq.gw_ns, CLIENT, 500, SERVER, 500, message)
        line = server.wait_log(r"There are no acceptable transform proposals", start=mark)
        assert line.start() >= mark
        lines = server.ipsec_lines(mark)
        assert lines and all("IPsec" in ln for ln in lines), lines
        assert "There are no acceptable" in server.log_tail(5)
        with pytest.raises(LabError, match="not in the SoftEther log"):
            server.wait_log("no such line", timeout=0.2)
        result = server.vpncmd("IPsecGet")
        assert PSK in result.text_of("IPsecGet")
        assert result.table("IPsecGet") == [{
            "L2TP over IPsec Server Function Enabled": "Yes", "Raw L2TP Server Function Enabled": "No",
            "EtherIP / L2TPv3 over IPsec Server Function Enabled": "No", "IPsec Pre-Shared Key String": PSK,
            "Name of Default Virtual Hub": "DEFAULT"}]
        users = server.table("UserList", hub="DEFAULT")
        assert [(u["User Name"], u["Auth Method"]) for u in users] == [
            ("branch1", "Password Authentication"), ("road2", "Password Authentication")]
        sessions = server.table("SessionList", hub="DEFAULT")
        assert [s["Session Name"] for s in sessions] == ["SID-SECURENAT-1"]
        assert server.table("DhcpTable", hub="DEFAULT") == []  # no PPP client yet
        assert "vpncmd (exit 0)" in server.vpncmd_log.read_text()
        # vpncmd's exit status is that of the *last* command: the harness checks every
        # command's "completed successfully" instead
        unknown = server.vpncmd("NoSuchCommand", "IPsecGet", check=False)
        assert unknown.returncode == 0 and not unknown.ok
        assert server.vpncmd("NoSuchCommand", check=False).returncode == 117
        duplicate = server.vpncmd("UserCreate road2 /GROUP:none /REALNAME:none /NOTE:none", hub="DEFAULT",
                                  check=False)
        assert duplicate.returncode == 66 and "already exists" in duplicate.failures()[0]
        with pytest.raises(LabError, match="Assigned Group Name"):  # a prompt at the end of the script
            server.vpncmd("UserCreate nogroup", hub="DEFAULT", timeout=5)
