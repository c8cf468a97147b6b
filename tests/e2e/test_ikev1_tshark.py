"""End to end: tshark 4.0 dissects a real IKEv1 conversation between strongSwan and us cleanly.

strongSwan 5.9.8 (charon, kernel-libipsec) in the branch gateway namespace and our gateway
in the hq gateway namespace; tcpdump captures UDP 500/4500 on our WAN interface while the
two go through Main Mode (strongSwan initiating, floating to 4500 since kernel-libipsec fakes
a NAT), Quick Mode, traffic, DPD R-U-THERE/ACK both ways, Quick Mode rekeys from either side,
a new Main Mode from us (Phase 1 rekey), a DELETE from strongSwan (its IPsec SA) and our
DELETEs (`gateway down`).  tshark must flag none of the ISAKMP packets, whoever sent them: no
``_ws.malformed``, no expert item of severity warning or above.

Then again with tshark's IKEv1 decryption table (``uat:ikev1_decryption_table``: the
initiator cookie and the Phase 1 encryption key, bare hex; tshark computes the IVs itself
from the KE payloads in the capture).  The keys come from strongSwan's log (``ike`` level 4
prints "encryption key Ka"), one per ISAKMP SA in the order the SAs start, so they are not
ours: if we derived or used a key differently, tshark would show garbage.  Every encrypted
message must decrypt into well-formed payloads: Main Mode 5/6 into ID and HASH, Quick Mode
into HASH, SA, nonce and the two IDs (the LAN subnets), Informational into HASH with a DPD
notify or a DELETE.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    NETNS,
    STRONGSWAN,
    Capture,
    lab_prefix,
    strongswan_interop,
    wait_for,
)

from appliance.lab.gateways import LabGateway
from appliance.lab.strongswan import LOG_LEVELS, PeerSettings, StrongswanPeer
from appliance.lab.topology import Topology

TSHARK = shutil.which("tshark")

pytestmark = [
    *NETNS, *STRONGSWAN,
    pytest.mark.skipif(TSHARK is None or shutil.which("tcpdump") is None,
                       reason="tshark (Wireshark) and tcpdump are needed"),
]

PREFIX = lab_prefix("ik1t")
SEVERITY_WARNING = 0x00600000  # PI_WARN in _ws.expert.severity (PI_ERROR is 0x00800000)
PROBLEMS = f"isakmp && (_ws.malformed || _ws.expert.severity >= {SEVERITY_WARNING})"
MAIN, QUICK, INFORMATIONAL = 2, 32, 5
HQ, BRANCH = "192.0.2.1", "198.51.100.1"

SETTINGS = PeerSettings(version=1, ike_proposals="aes256-sha256-modp2048", esp_proposals="aes128-sha1",
                        dpd_delay="2s", log_levels={**LOG_LEVELS, "ike": 4})


def our_config(topology: Topology) -> dict[str, Any]:
    hq, br = topology.hq, topology.branch
    return {
        "gateway": {"name": "hq", "public_interface": "wan0", "public_address": hq.gw_public,
                    "lan_interfaces": ["lan0"]},
        "logging": {"level": "debug"},
        "connections": {"branch": {
            "remote": br.gw_public, "local_subnets": [hq.lan_subnet], "remote_subnets": [br.lan_subnet],
            "auth": {"method": "psk", "psk": SETTINGS.psk},
            "ike": {"version": 1},
            "dpd": {"interval": "2s", "timeout": "20s", "action": "clear"},
        }},
    }


def one_way(topology: Topology, namespace: str, silent: str) -> None:
    """Pings for about 4 s to an address nobody answers: tunnel traffic in one direction only."""
    sent, received = topology.ping(namespace, silent, count=20, interval=0.2)
    assert received == 0 and sent == 20


def tshark(pcap: Path, workdir: Path, *args: str, keys: dict[str, str] | None = None) -> str:
    """tshark on ``pcap`` in a fresh configuration directory, with ``keys`` (initiator cookie ->
    encryption key, hex) as its IKEv1 decryption table."""
    assert TSHARK is not None
    conf = workdir / "wireshark"
    conf.mkdir(exist_ok=True)
    cmd = [TSHARK, "-n", "-r", str(pcap)]
    for cookie, key in (keys or {}).items():
        cmd += ["-o", f"uat:ikev1_decryption_table:{cookie},{key}"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(workdir)})
    assert proc.returncode == 0, f"tshark failed ({proc.returncode}): {proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if "Running as user" not in ln and ln.strip()]
    assert not errors, f"tshark complained: {errors}"
    return proc.stdout


FIELDS = ["frame.number", "ip.src", "isakmp.ispi", "isakmp.exchangetype", "isakmp.flag_e",
          "isakmp.messageid", "isakmp.typepayload", "isakmp.notify.msgtype", "isakmp.delete.protoid",
          "isakmp.id.data.ipv4_addr", "isakmp.id.data.ipv4_subnet"]


def isakmp_messages(pcap: Path, workdir: Path,
                    keys: dict[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Every ISAKMP message in the capture: FIELDS -> values (all occurrences)."""
    args = ["-Y", "isakmp", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        args += ["-e", f]
    out = []
    for line in tshark(pcap, workdir, *args, keys=keys).splitlines():
        values = line.split("\t")
        out.append({f: [x for x in v.split("|") if x] for f, v in zip(FIELDS, values, strict=True)})
    return out


def problems(pcap: Path, workdir: Path, keys: dict[str, str] | None = None) -> str:
    return tshark(pcap, workdir, "-2", "-Y", PROBLEMS, "-T", "fields", "-e", "frame.number", "-e", "ip.src",
                  "-e", "_ws.col.Info", "-e", "_ws.expert.message", "-E", "occurrence=a",
                  "-E", "aggregator=; ", keys=keys).strip()


_KA = re.compile(r"\[IKE\] encryption key Ka => (\d+) bytes @ \S+\n((?:.*\[IKE\]\s+\d+: .*\n)+)")


def strongswan_keys(log: str) -> list[str]:
    """The Phase 1 encryption keys strongSwan derived (ike log level 4), in order, as hex."""
    keys = []
    for m in _KA.finditer(log):
        size, dump = int(m.group(1)), m.group(2)
        octets = []
        for line in dump.splitlines():
            hexpart = re.sub(r"^.*\[IKE\]\s+\d+: ", "", line)[:47]  # 16 octets "XX XX ..." (47 chars)
            octets += hexpart.split()
        keys.append("".join(octets[:size]).lower())
        assert len(keys[-1]) == 2 * size, m.group(0)
    return keys


@contextmanager
def captured(tmp_path: Path, settings: PeerSettings,
             config: dict[str, Any] | Callable[[Topology], dict[str, Any]]
             ) -> Iterator[tuple[Topology, StrongswanPeer, LabGateway]]:
    """The lab, strongSwan on the branch gateway, our gateway on hq, and tcpdump on our WAN
    interface (UDP 500/4500) into tmp_path/ikev1.pcap while the body runs."""
    config_of = config if callable(config) else (lambda _: config)
    with strongswan_interop(PREFIX, tmp_path, settings, config_of, log_lines=60) as (topology, peer, gw), \
            Capture(topology, topology.hq.gw_ns, "wan0", tmp_path / "ikev1.pcap",
                    bpf="udp port 500 or udp port 4500"):
        yield topology, peer, gw


def wait_up(gw: LabGateway) -> None:
    up = wait_for(lambda: [s for s in gw.request("sas")["ike_sas"] if s["children"]], bool, timeout=10)
    assert up, gw.log_tail(30)


def ping_ok(topology: Topology) -> None:
    """Three pings answered; a second try after a rekey (strongSwan installs its new SAs
    asynchronously, which a loaded machine can stretch past the first ping's wait)."""
    for _ in range(3):
        sent, received = topology.ping(topology.hq.lan_ns, topology.branch.lan_host, count=3)
        if sent == received:
            return
        time.sleep(0.5)
    raise AssertionError(f"ping through the tunnel: {received}/{sent}")


def key_table(msgs: list[dict[str, list[str]]], log: str) -> dict[str, str]:
    """Initiator cookie -> encryption key: the ISAKMP SAs in the order their Main Modes start,
    paired with the keys in the order strongSwan derived them."""
    cookies: list[str] = []
    for m in msgs:
        cookie = m["isakmp.ispi"][0]
        if str(MAIN) in m["isakmp.exchangetype"] and cookie not in cookies:
            cookies.append(cookie)
    keys = strongswan_keys(log)
    assert len(cookies) == len(keys), (cookies, keys)
    return dict(zip(cookies, keys, strict=True))


def test_ikev1_conversation_dissects_cleanly(tmp_path: Path) -> None:
    pcap = tmp_path / "ikev1.pcap"
    with captured(tmp_path, SETTINGS, our_config) as (topology, peer, gw):
        peer.initiate()
        wait_up(gw)
        ping_ok(topology)
        # DPD both ways: each side probes (every 2 s) only when nothing comes in, so traffic
        # one way at a time: toward a silent address behind the other gateway.
        one_way(topology, topology.hq.lan_ns, "10.2.0.99")  # ESP only into strongSwan
        peer.wait_log(r"parsed INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD\) \]", timeout=1)
        peer.wait_log(r"generating INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD_ACK\) \]", timeout=1)
        one_way(topology, topology.branch.lan_ns, "10.1.0.99")  # ESP only into us
        peer.wait_log(r"generating INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD\) \]", timeout=1)
        peer.wait_log(r"parsed INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD_ACK\) \]", timeout=1)
        gw.request("rekey", name="branch")  # our Quick Mode
        peer.rekey_child()  # strongSwan's
        gw.request("rekey", name="branch", ike=True)  # our Main Mode: a second ISAKMP SA
        assert wait_for(lambda: "ikev1.rekeyed" in gw.log_text(), bool, timeout=10), gw.log_tail(20)
        ping_ok(topology)
        peer.terminate_child()  # strongSwan's DELETEs (ESP)
        peer.initiate()  # a Quick Mode under the new ISAKMP SA
        time.sleep(0.3)
        gw.request("down", name="branch")  # our DELETEs (ESP, then ISAKMP)
        peer.wait_no_sas(timeout=10)
    log = peer.log_text()

    # 1. Without keys: the clear parts (Main Mode 1-4, headers, fragments, NAT-T) are clean.
    found = problems(pcap, tmp_path)
    assert not found, f"tshark flags ISAKMP packets:\n{found}"
    msgs = isakmp_messages(pcap, tmp_path)
    for kind in (MAIN, QUICK, INFORMATIONAL):
        senders = {m["ip.src"][0] for m in msgs if str(kind) in m["isakmp.exchangetype"]}
        assert senders == {HQ, BRANCH}, f"exchange {kind} only from {senders}"

    # 2. With strongSwan's keys: every encrypted message decrypts into well-formed payloads.
    # (Without keys tshark shows no payload inside an encrypted message.)
    assert all(not m["isakmp.typepayload"] for m in msgs if m["isakmp.flag_e"] == ["1"])
    table = key_table(msgs, log)
    assert len(table) == 2, table
    found = problems(pcap, tmp_path, keys=table)
    assert not found, f"tshark flags decrypted ISAKMP packets:\n{found}"
    decrypted = isakmp_messages(pcap, tmp_path, keys=table)
    encrypted = [m for m in decrypted if m["isakmp.flag_e"] == ["1"]]
    assert encrypted, "no encrypted ISAKMP message in the capture"
    seen: dict[tuple[int, str], int] = {}
    for m in encrypted:
        kind, src = int(m["isakmp.exchangetype"][0]), m["ip.src"][0]
        where = f"frame {m['frame.number'][0]} ({kind} from {src}): {m}"
        assert m["isakmp.typepayload"], f"not decrypted: {where}"
        payloads = [int(p) for p in m["isakmp.typepayload"]]
        if kind == MAIN:
            assert 5 in payloads and 8 in payloads, f"message 5/6 without ID and HASH: {where}"
        elif kind == QUICK:
            assert payloads[0] == 8, f"Quick Mode must start with HASH: {where}"
            if 1 in payloads:  # messages 1 and 2: SA, nonce, IDci/IDcr
                assert 10 in payloads and payloads.count(5) == 2, where
                assert set(m["isakmp.id.data.ipv4_addr"]) == {"10.1.0.0", "10.2.0.0"}, where
                assert m["isakmp.id.data.ipv4_subnet"] == ["255.255.255.0"] * 2, where
        elif kind == INFORMATIONAL:
            assert payloads[0] == 8 and (11 in payloads or 12 in payloads), f"no notify/delete: {where}"
        seen[(kind, src)] = seen.get((kind, src), 0) + 1
    for kind in (MAIN, QUICK, INFORMATIONAL):
        for src in (HQ, BRANCH):
            assert seen.get((kind, src)), f"no decrypted exchange {kind} from {src}: {seen}"
    notifies = {t for m in encrypted for t in m["isakmp.notify.msgtype"]}
    assert {"36136", "36137"} <= notifies, f"DPD R-U-THERE/ACK not seen decrypted: {notifies}"
    deleted = {(m["ip.src"][0], p) for m in encrypted for p in m["isakmp.delete.protoid"]}
    assert {(HQ, "1"), (HQ, "3"), (BRANCH, "3")} <= deleted, f"DELETEs (sender, protocol): {deleted}"

    # 3. The decryption is really keyed: with wrong keys the same messages are malformed.
    wrong = {cookie: "00" * (len(key) // 2) for cookie, key in table.items()}
    flagged = {line.split("\t")[0] for line in problems(pcap, tmp_path, keys=wrong).splitlines()}
    numbers = {m["frame.number"][0] for m in encrypted}
    assert len(flagged & numbers) >= len(numbers) * 3 // 4, \
        f"wrong keys: only {sorted(flagged)} of {sorted(numbers)} malformed"


def test_ikev1_fragments_and_certificates_dissect_cleanly(tmp_path: Path) -> None:
    """RSA certificate chains make Main Mode 5/6 bigger than a fragment: both sides send IKE
    fragments (the FRAGMENTATION vendor ID's format, payload 132); tshark reassembles and
    dissects them, ours and strongSwan's, without complaint; decrypted, message 5/6 carry ID,
    two CERTs (leaf and issuing CA) and SIG."""
    from appliance import pki

    d = tmp_path / "pki"
    d.mkdir()
    root = pki.make_ca(d, "Lab Root CA", kind="rsa")
    inter = pki.make_ca(d, "Lab Issuing CA", kind="rsa", issuer=root)
    hq = pki.issue(d, inter, "hq-gw", kind="rsa", san_dns=["hq.gateway.lab"])
    br = pki.issue(d, inter, "br-gw", kind="rsa", san_dns=["branch.gateway.lab"])
    chain = d / "hq-chain.pem"
    chain.write_bytes(hq.cert_path.read_bytes() + inter.cert_path.read_bytes())
    settings = PeerSettings(version=1, auth="pubkey", cert=br.cert_path, key=br.key_path,
                            cacerts=[root.cert_path, inter.cert_path], local_id="branch.gateway.lab",
                            remote_id="hq.gateway.lab", ike_proposals="aes256-sha256-modp2048",
                            esp_proposals="aes128-sha1", log_levels={**LOG_LEVELS, "ike": 4})

    def config(t: Topology) -> dict[str, Any]:
        cfg = our_config(t)
        cfg["connections"]["branch"].update(
            auth={"method": "cert", "cert": str(chain), "key": str(hq.key_path), "ca": [str(root.cert_path)],
                  "id": "hq.gateway.lab", "remote_id": "branch.gateway.lab"},
            ike={"version": 1})
        return cfg

    pcap = tmp_path / "ikev1.pcap"
    with captured(tmp_path, settings, config) as (topology, peer, gw):
        gw.request("up", name="branch")  # we initiate (once the capture runs)
        wait_up(gw)
        ping_ok(topology)
        gw.request("down", name="branch")
        peer.wait_no_sas(timeout=10)
    log = peer.log_text()
    assert "reassembled fragmented IKE message" in log and "splitting IKE message" in log, log[-3000:]

    found = problems(pcap, tmp_path)
    assert not found, f"tshark flags ISAKMP packets:\n{found}"
    msgs = isakmp_messages(pcap, tmp_path)
    fragments = {m["ip.src"][0] for m in msgs if "132" in m["isakmp.typepayload"]}
    assert fragments == {HQ, BRANCH}, f"IKE fragments only from {fragments}"

    table = key_table(msgs, log)
    found = problems(pcap, tmp_path, keys=table)
    assert not found, f"tshark flags decrypted ISAKMP packets:\n{found}"
    signed = tshark(pcap, tmp_path, "-2", "-Y", "isakmp.exchangetype == 2 && isakmp.sig", "-T", "fields",
                    "-e", "ip.src", "-e", "isakmp.typepayload", "-E", "occurrence=a", keys=table)
    rows = [line.split("\t") for line in signed.splitlines()]
    assert {r[0] for r in rows} == {HQ, BRANCH}, signed
    for src, payloads in rows:
        types = [int(x) for x in payloads.split(",")]
        assert 5 in types and types.count(6) >= 2 and 9 in types, f"from {src}: {types}"
