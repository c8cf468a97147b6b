"""End to end: tshark decrypts and dissects the L2TP and PPP between our LAC and our LNS.

Two dial-in clients behind the lab's home NAT (appliance.lab.dialup) run our gateway as a
LAC; HQ runs it as the LNS with ``logging.save_keys``.  tcpdump records HQ's wan0 while
Alice (MS-CHAPv2) and Bob (PAP) dial at once, both ping the HQ LAN host, the operator
kicks Alice (LCP Terminate, CDN), both LACs shut down (StopCCN), and Carol (CHAP-MD5)
dials and stays until the LNS shuts down (its StopCCN).  Everything from the clients is
IKEv1 and UDP-encapsulated ESP transport mode on 4500 (the NAT).

tshark gets nothing but the ESP SA table the LNS saved (``esp_sa``, Wireshark's UAT
format, strongSwan's save-keys idea): it must decrypt every ESP packet with a good ICV and
find inside it L2TP, and over the capture every kind we expect: the control messages
SCCRQ, SCCRP, SCCCN, ICRQ, ICRP, ICCN, CDN, StopCCN and ZLB acknowledgements; LCP
Configure-Request/Ack; CHAP Challenge/Response/Success (MD5 and MS-CHAPv2) and PAP
Authenticate-Request/Ack; IPCP; the pings inside PPP.  No frame with L2TP or PPP in it may
be malformed or carry an expert item of severity warning or above.  With the keys zeroed
the same capture shows no L2TP at all: the decode is really keyed by the saved file.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, Capture, assert_lab_gone, lab, lab_prefix, wait_for

from appliance.lab.dialup import POOL, HomeNetwork, lac_config, lns_config
from appliance.lab.gateways import LabGateway
from appliance.lab.topology import Site, Topology, run
from gateway.keylog import ESP_SA_FILE
from gateway.ppp.auth import nt_hash, salted_hash

TSHARK = shutil.which("tshark")

pytestmark = [
    *NETNS,
    pytest.mark.peer,
    pytest.mark.skipif(TSHARK is None or shutil.which("tcpdump") is None,
                       reason="tshark (Wireshark) and tcpdump are needed"),
]

PREFIX = lab_prefix("l2ts")
PSK = "tshark-dialin-key-7c2e"
PASSWORDS = {"alice": "alice-Passw0rd", "bob": "bob-pap-secret", "carol": "carol-chap-secret"}
HQ_LAN_HOST = "10.1.0.10"
PINGS = 3
HOME_PUBLIC = "203.0.113.2"  # HomeNetwork's NAT address: all clients come from it

SEVERITY_WARNING = 0x00600000  # PI_WARN in _ws.expert.severity (PI_ERROR is 0x00800000)
PPP_LAYERS = "l2tp || ppp || lcp || chap || pap || ipcp"
# An ICMP port unreachable (a LAC or the LNS that has just stopped) quotes our datagram, which
# tshark decrypts again and flags as a repeated ESP sequence number: not a fault of ours.
ICMP_ERROR = "eth:ethertype:ip:icmp:"
PROBLEMS = (f"({PPP_LAYERS}) && (_ws.malformed || _ws.expert.severity >= {SEVERITY_WARNING})"
            " && !(icmp.type == 3)")

# L2TP message types (RFC 2661 3.2) and PPP codes (RFC 1661 5, RFC 1994 4, RFC 1334 2.2).
SCCRQ, SCCRP, SCCCN, STOPCCN, ICRQ, ICRP, ICCN, CDN = 1, 2, 3, 4, 10, 11, 12, 14
CONF_REQ, CONF_ACK = 1, 2
CHALLENGE, RESPONSE, SUCCESS = 1, 2, 3
AUTH_REQ, AUTH_ACK = 1, 2
CHAP_MD5, MS_CHAP_V2 = 5, 0x81

FIELDS = ["frame.number", "frame.protocols", "ip.src", "ip.dst", "esp.spi", "esp.icv_good", "esp.icv_bad",
          "l2tp.type", "l2tp.avp.message_type", "ppp.protocol", "ppp.code", "lcp.opt.algorithm",
          "chap.code", "pap.code", "icmp.type"]


def users() -> dict[str, dict[str, Any]]:
    return {
        "alice": {"nt_hash": nt_hash(PASSWORDS["alice"]).hex()},
        "bob": {"password_hash": salted_hash(PASSWORDS["bob"])},
        "carol": {"password": PASSWORDS["carol"]},  # CHAP-MD5 needs it in clear
    }


# -- the lab -----------------------------------------------------------------------------------


def dial(topology: Topology, client: Site, workdir: Path, user: str, method: str) -> LabGateway:
    config = lac_config(client, remote=topology.hq.gw_public, psk=PSK, user=user, password=PASSWORDS[user],
                        method=method, remote_subnets=[topology.hq.lan_subnet],
                        redial_min="30s", redial_max="60s")  # a kicked LAC stays down during the test
    return LabGateway.start(client, workdir, f"{client.name}-{user}", config, timeout=30)


def ppp_up(gw: LabGateway, timeout: float = 40.0) -> dict[str, str]:
    """The fields of the LAC's ``ppp.up`` log line, once it is there."""
    found = wait_for(lambda: re.search(r"ppp\.up (.*)", gw.log_text()), bool, timeout=timeout, interval=0.2)
    assert found is not None, f"no ppp.up:\n{gw.log_tail(40)}"
    return dict(field.split("=", 1) for field in found.group(1).split() if "=" in field)


def ping_hq(client: Site, count: int = PINGS) -> None:
    proc = run(["ip", "netns", "exec", client.gw_ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "3",
                HQ_LAN_HOST], check=False)
    assert proc.returncode == 0, f"ping from {client.name}: {proc.stdout} {proc.stderr}"


def hq_users(hq: LabGateway) -> list[str]:
    return sorted(s["user"] for s in hq.request("sessions")["sessions"])


def dial_in_session(topology: Topology, workdir: Path, keys: Path, pcap: Path) -> tuple[str, set[str]]:
    """Run the scenario of the module docstring with wan0 captured: the LNS's log and the
    PPP addresses the clients got."""
    home = HomeNetwork(topology)
    home.up()
    one, two = home.clients
    config = lns_config(topology.hq, psk=PSK, users=users())
    config["logging"]["save_keys"] = str(keys)
    addresses = set()
    with Capture(topology, topology.hq.gw_ns, "wan0", pcap):
        hq = LabGateway.start(topology.hq, workdir, "hq", config, timeout=30)
        try:
            with dial(topology, one, workdir, "alice", "mschapv2") as alice, \
                    dial(topology, two, workdir, "bob", "pap") as bob:
                for gw, method in ((alice, "mschapv2"), (bob, "pap")):
                    up = ppp_up(gw)
                    assert up["method"] == method, up
                    addresses.add(up["address"])
                ping_hq(one)
                ping_hq(two)
                hq.request("kick", user="alice")  # LCP Terminate-Request, then CDN from the LNS
                assert wait_for(lambda: hq_users(hq), lambda u: u == ["bob"], timeout=15) == ["bob"], \
                    hq.log_tail(30)
                for gw in (alice, bob):  # their StopCCN, which the LNS acknowledges (ZLB)
                    gw.stop()
            assert wait_for(lambda: hq_users(hq), lambda u: not u, timeout=15) == [], hq.log_tail(30)
            with dial(topology, one, workdir, "carol", "chap-md5") as carol:
                up = ppp_up(carol)
                assert up["method"] == "chap-md5", up
                addresses.add(up["address"])
                ping_hq(one)
                hq.stop()  # the LNS's StopCCN to Carol's LAC, which acknowledges it
                assert wait_for(carol.log_text, lambda t: "l2tp.tunnel_down" in t, timeout=15), \
                    carol.log_tail(30)
        except BaseException:
            print(hq.log_tail(80))
            raise
        finally:
            hq.stop()
    return hq.log_text(), addresses


# -- tshark --------------------------------------------------------------------------------------


def tshark(pcap: Path, workdir: Path, sas: Sequence[str], *args: str) -> str:
    """tshark with ESP decryption and ICV checks, ``sas`` as its ESP SA table, in a fresh
    configuration directory (nothing personal leaks in)."""
    assert TSHARK is not None
    conf = workdir / "wireshark"
    conf.mkdir(exist_ok=True)
    cmd = [TSHARK, "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE"]
    for record in sas:
        cmd += ["-o", f"uat:esp_sa:{record}"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(workdir)})
    assert proc.returncode == 0, f"tshark failed ({proc.returncode}): {proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if "Running as user" not in ln and ln.strip()]
    assert not errors, f"tshark complained: {errors}"
    return proc.stdout


def frames(pcap: Path, workdir: Path, sas: Sequence[str]) -> list[dict[str, list[str]]]:
    """Every frame: FIELDS -> all their values."""
    out = tshark(pcap, workdir, sas, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
                 "-E", "aggregator=,", *[a for f in FIELDS for a in ("-e", f)])
    return [{f: [v for v in value.split(",") if v] for f, value in zip(FIELDS, line.split("|"), strict=True)}
            for line in out.splitlines()]


def int_values(row: dict[str, list[str]], name: str) -> list[int]:
    return [int(v, 0) for v in row[name]]


def zeroed(record: str) -> str:
    """The record with every key octet zeroed (fields 6 and 8: encryption and authentication key)."""
    fields = next(csv.reader([record]))
    for i in (5, 7):
        if fields[i]:
            fields[i] = "0x" + "0" * (len(fields[i]) - 2)
    return ",".join(f'"{f}"' for f in fields)


def test_tshark_decrypts_and_dissects_our_l2tp_and_ppp(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    pcap = tmp_path / "wan0.pcap"
    with lab(PREFIX) as topology:
        hq_log, addresses = dial_in_session(topology, tmp_path, keys, pcap)
    assert_lab_gone(PREFIX)

    # The key file: private, one row per SA direction, and no key in the LNS's log.
    table = keys / ESP_SA_FILE
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    sas = table.read_text().splitlines()
    assert len(sas) >= 6 and len(sas) % 2 == 0, sas  # three clients: a pair each at least
    assert re.search(rf"WARNING keys\.saving dir={re.escape(str(keys))} ", hq_log), hq_log[:2000]
    for record in sas:
        for key in re.findall(r'"0x([0-9a-f]{16,})"', record):
            assert key not in hq_log, "a key in the LNS's log"

    rows = [r for r in frames(pcap, tmp_path, sas) if not r["frame.protocols"][0].startswith(ICMP_ERROR)]
    esp = [r for r in rows if r["esp.spi"]]
    assert esp, "no ESP in the capture"
    saved_spis = {int(r.split(",")[3].strip('"'), 16) for r in sas}
    assert {int(r["esp.spi"][0], 16) for r in esp} <= saved_spis

    # Every ESP packet decrypted, authenticated, and L2TP inside.
    for r in esp:
        where = f"frame {r['frame.number'][0]} ({r['frame.protocols'][0]})"
        assert r["esp.icv_good"] == ["1"] and r["esp.icv_bad"] == ["0"], f"{where}: ICV {r}"
        assert r["l2tp.type"], f"{where}: no L2TP inside the ESP"
    assert all(r["esp.spi"] for r in rows if r["l2tp.type"]), "L2TP outside ESP on the wire"

    def sent_by(row: dict[str, list[str]]) -> str:
        return "lac" if row["ip.src"][0] == HOME_PUBLIC else "lns"

    # L2TP control messages, from the side that sends each.
    control = [r for r in esp if int_values(r, "l2tp.type") == [1]]  # the T bit: control
    kinds = {(sent_by(r), t) for r in control for t in int_values(r, "l2tp.avp.message_type")}
    expected = {("lac", SCCRQ), ("lns", SCCRP), ("lac", SCCCN), ("lac", ICRQ), ("lns", ICRP), ("lac", ICCN),
                ("lns", CDN), ("lac", STOPCCN), ("lns", STOPCCN)}
    assert expected <= kinds, f"missing L2TP messages: {sorted(expected - kinds)}"
    zlbs = {sent_by(r) for r in control if not r["l2tp.avp.message_type"]}
    assert zlbs == {"lac", "lns"}, f"ZLB acknowledgements only from {zlbs}"

    # PPP inside the L2TP data messages.
    def codes(protocol: int, field: str) -> set[tuple[str, int]]:
        return {(sent_by(r), c) for r in esp if protocol in int_values(r, "ppp.protocol")
                for c in int_values(r, field)}

    lcp = codes(0xC021, "ppp.code")
    assert {(s, c) for s in ("lac", "lns") for c in (CONF_REQ, CONF_ACK)} <= lcp, f"LCP: {sorted(lcp)}"
    algorithms = {a for r in esp for a in int_values(r, "lcp.opt.algorithm")}
    assert {CHAP_MD5, MS_CHAP_V2} <= algorithms, f"CHAP algorithms offered: {algorithms}"
    chap = codes(0xC223, "chap.code")
    assert {("lns", CHALLENGE), ("lac", RESPONSE), ("lns", SUCCESS)} <= chap, f"CHAP: {sorted(chap)}"
    pap = codes(0xC023, "pap.code")
    assert {("lac", AUTH_REQ), ("lns", AUTH_ACK)} <= pap, f"PAP: {sorted(pap)}"
    ipcp = codes(0x8021, "ppp.code")
    assert {(s, c) for s in ("lac", "lns") for c in (CONF_REQ, CONF_ACK)} <= ipcp, f"IPCP: {sorted(ipcp)}"
    pings = [(sent_by(r), int_values(r, "icmp.type")[0], r["ip.src"][-1], r["ip.dst"][-1])
             for r in esp if r["icmp.type"]]
    requests = [src for who, t, src, dst in pings if who == "lac" and t == 8 and dst == HQ_LAN_HOST]
    replies = [dst for who, t, src, dst in pings if who == "lns" and t == 0 and src == HQ_LAN_HOST]
    assert len(requests) == len(replies) == 3 * PINGS, pings  # three clients' pings, all answered
    assert set(requests) == set(replies) == addresses, (pings, addresses)
    assert all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network(POOL) for a in addresses), addresses

    # Nothing tshark finds wrong in any frame that carries L2TP or PPP.
    found = tshark(pcap, tmp_path, sas, "-Y", PROBLEMS, "-T", "fields", "-e", "frame.number",
                   "-e", "ip.src", "-e", "_ws.col.Info", "-e", "_ws.expert.message",
                   "-E", "occurrence=a", "-E", "aggregator=; ")
    assert not found.strip(), f"tshark flags our L2TP/PPP:\n{found}"

    # Negative control: the same capture with the keys zeroed shows no L2TP, no good ICV.
    blank = [zeroed(r) for r in sas]
    assert all(z != r for z, r in zip(blank, sas, strict=True))
    blind = [r for r in frames(pcap, tmp_path, blank) if not r["frame.protocols"][0].startswith(ICMP_ERROR)]
    assert len([r for r in blind if r["esp.spi"]]) == len(esp)
    assert not [r for r in blind if r["l2tp.type"] or r["esp.icv_good"] == ["1"]], "decoded with zero keys"
