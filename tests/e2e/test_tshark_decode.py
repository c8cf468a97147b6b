"""End to end: an independent decoder (tshark) reads what our gateways put on the wire.

The gateways run with manually keyed SAs; the capture on the internet link is handed to
tshark with the same keys (its ESP SA table, `uat:esp_sa`).  tshark must decrypt every
ESP packet, find every ICV good, show the inner 10.1.0.10 <-> 10.2.0.10 ICMP and TCP,
and flag nothing as malformed.  With wrong keys it must find nothing: the decode is
really keyed.  tshark has no AH keys, so for AH it only dissects (SPI, sequence, inner
packet) and the test checks the ICVs itself, straight from RFC 4302.

Extended sequence numbers: tshark 4.0's ESP SA table has no ESN setting (it
authenticates SPI|seq with 32 bits only; with ESN on, it still decrypts but reports
every ICV as bad), so the ESP cases use 32-bit sequence numbers (esn=False).  The AH
case keeps ESN on: there the test computes the ICV itself, high bits included.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from e2e_support import (
    NETNS,
    PROTO_AH,
    PROTO_ESP,
    PROTO_UDP,
    Capture,
    connection,
    diagnostics,
    ipv4_packets,
    lab,
    lab_prefix,
    read_pcap,
    tcp_exchange,
)

from appliance.lab.gateways import GatewayPair, SaKeys
from appliance.lab.topology import Topology
from gateway.crypto.algorithms import parse_esp_suite
from gateway.keylog import EspSaKeys

pytestmark = [*NETNS, pytest.mark.peer]

PREFIX = lab_prefix("e2t")
HQ_PUBLIC = "192.0.2.1"
BRANCH_PUBLIC = "198.51.100.1"
HQ_HOST = "10.1.0.10"
BRANCH_HOST = "10.2.0.10"
PINGS = 3
MESSAGE = "hello through the tunnel"
TCP_PORT = 5555

SEVERITY_ERROR = 0x00800000  # PI_ERROR in _ws.expert.severity
PROBLEMS = f"_ws.malformed || _ws.expert.severity >= {SEVERITY_ERROR} || esp.icv_bad == 1"
FIELDS = ["frame.number", "ip.src", "ip.dst", "esp.spi", "esp.sequence", "esp.icv_good",
          "esp.icv_bad", "ah.spi", "ah.sequence", "icmp.type", "tcp.srcport", "tcp.dstport",
          "tcp.payload"]


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with lab(PREFIX) as topology:
        yield topology


def uat_record(keys: SaKeys, *, wrong: bool = False) -> str:
    """One row of tshark's ESP SA table, as the gateway's key log writes it (gateway.keylog)
    but from the lab's own copy of the keys (all zero with ``wrong``)."""
    enc_key = bytes(len(keys.encryption_key)) if wrong else keys.encryption_key
    int_key = bytes(len(keys.integrity_key)) if wrong else keys.integrity_key
    return EspSaKeys.from_suite(keys.src, keys.dst, keys.spi, parse_esp_suite(keys.algorithm),
                                enc_key, int_key).uat_record()


def tshark(pcap: Path, tmp_path: Path, *args: str, sas: Sequence[str] = ()) -> str:
    """tshark on ``pcap`` with ESP decryption and ICV checks on and ``sas`` as its SA table.

    Its configuration directory is a fresh empty one: no personal preferences or SA
    tables can leak into the result.
    """
    conf = tmp_path / "wireshark"
    conf.mkdir(exist_ok=True)
    cmd = ["tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE"]
    for record in sas:
        cmd += ["-o", f"uat:esp_sa:{record}"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(tmp_path)})
    assert proc.returncode == 0, f"tshark failed ({proc.returncode}): {proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if "Running as user" not in ln and ln.strip()]
    assert not errors, f"tshark complained: {errors}"
    return proc.stdout


def fields(pcap: Path, tmp_path: Path, display_filter: str,
           sas: Sequence[str] = ()) -> list[dict[str, str]]:
    out = tshark(pcap, tmp_path, "-Y", display_filter, "-T", "fields", "-E", "separator=|",
                 "-E", "occurrence=a", "-E", "aggregator=,", *[a for f in FIELDS for a in ("-e", f)],
                 sas=sas)
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line]


def capture_traffic(topo: Topology, pair: GatewayPair, pcap: Path) -> None:
    """Ping and one short TCP exchange hq-lan -> br-lan, captured on the internet link."""
    with Capture(topo, topo.inet_ns, "to-branch", pcap):
        sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=PINGS)
        assert (sent, received) == (PINGS, PINGS), f"ping {received}/{sent}\n{diagnostics(pair)}"
        reply = tcp_exchange(topo, topo.branch.lan_ns, BRANCH_HOST, topo.hq.lan_ns, MESSAGE, TCP_PORT)
        assert reply == f"reply:{MESSAGE}", f"TCP exchange got {reply!r}\n{diagnostics(pair)}"


def expected_direction(spi: int) -> tuple[str, str, str, str]:
    """(outer src, outer dst, inner src, inner dst) of a packet of this SPI."""
    if spi == 0x1001:
        return HQ_PUBLIC, BRANCH_PUBLIC, HQ_HOST, BRANCH_HOST
    assert spi == 0x2001, f"unexpected SPI 0x{spi:08x}"
    return BRANCH_PUBLIC, HQ_PUBLIC, BRANCH_HOST, HQ_HOST


ESP_CASES = [
    ("aes128gcm16", "none"),
    ("aes128-sha256", "none"),
    ("aes128gcm16", "udp"),
]


@pytest.mark.parametrize(("algorithm", "encapsulation"), ESP_CASES,
                         ids=[f"{a}-{e}" for a, e in ESP_CASES])
def test_tshark_decrypts_esp(topo: Topology, tmp_path: Path, algorithm: str, encapsulation: str) -> None:
    pcap = tmp_path / "wire.pcap"
    with GatewayPair(topo, tmp_path, algorithm=algorithm, encapsulation=encapsulation,
                     esn=False) as pair:
        capture_traffic(topo, pair, pcap)
        keys = pair.keys
        st = {name: connection(pair.status(name)) for name in ("hq", "branch")}
    sas = [uat_record(keys[d]) for d in ("hq->branch", "branch->hq")]
    wire_esp = [p for p in ipv4_packets(read_pcap(pcap))
                if p.proto == (PROTO_UDP if encapsulation == "udp" else PROTO_ESP)]

    rows = fields(pcap, tmp_path, "esp", sas)
    assert len(rows) == len(wire_esp) > 0, (
        f"tshark saw {len(rows)} ESP packets, the capture has {len(wire_esp)}")
    for r in rows:
        spi = int(r["esp.spi"], 16)
        outer_src, outer_dst, inner_src, inner_dst = expected_direction(spi)
        assert r["ip.src"] == f"{outer_src},{inner_src}" and r["ip.dst"] == f"{outer_dst},{inner_dst}", (
            f"frame {r['frame.number']}: tshark decoded {r['ip.src']} -> {r['ip.dst']} for SPI {spi:#x}")
        assert r["esp.icv_good"] == "1" and r["esp.icv_bad"] == "0", (
            f"frame {r['frame.number']}: ICV not confirmed by tshark: {r}")
    # Sequence numbers as tshark reads them: 1, 2, 3, ... per SPI, no gap, no repeat (a
    # late TCP segment may leave after the capture stopped, hence <= packets_out).
    for spi, sent in ((0x1001, st["hq"]["packets_out"]), (0x2001, st["branch"]["packets_out"])):
        seqs = [int(r["esp.sequence"]) for r in rows if int(r["esp.spi"], 16) == spi]
        assert seqs == list(range(1, len(seqs) + 1)) and PINGS < len(seqs) <= sent, (
            f"SPI {spi:#x}: sequence numbers {seqs}, the gateway sent {sent}")

    requests = [r for r in rows if r["icmp.type"] == "8"]
    replies = [r for r in rows if r["icmp.type"] == "0"]
    assert len(requests) == PINGS and all(r["ip.src"].endswith(HQ_HOST) for r in requests), requests
    assert len(replies) == PINGS and all(r["ip.src"].endswith(BRANCH_HOST) for r in replies), replies

    tcp_rows = [r for r in rows if r["tcp.srcport"]]
    assert {r["tcp.dstport"] for r in tcp_rows if r["ip.src"].endswith(HQ_HOST)} == {str(TCP_PORT)}
    assert {r["tcp.srcport"] for r in tcp_rows if r["ip.src"].endswith(BRANCH_HOST)} == {str(TCP_PORT)}
    payloads = {bytes.fromhex(r["tcp.payload"].replace(":", "")) for r in tcp_rows if r["tcp.payload"]}
    assert MESSAGE.encode() + b"\n" in payloads, f"TCP payloads tshark decrypted: {payloads}"
    assert f"reply:{MESSAGE}\n".encode() in payloads, f"TCP payloads tshark decrypted: {payloads}"

    problems = tshark(pcap, tmp_path, "-Y", PROBLEMS, sas=sas)
    assert not problems.strip(), f"tshark flags malformed packets / errors / bad ICVs:\n{problems}"

    # Negative control: with wrong keys no ICV passes and no inner address appears.
    # (tshark dissects the garbage "plaintext" by its random trailer bytes: it may give up
    # on a packet before showing an ICV verdict, or show a bogus nested header; only the
    # outer ESP header's verdict and the inner addresses are meaningful.)
    wrong = [uat_record(keys[d], wrong=True) for d in ("hq->branch", "branch->hq")]
    rows = fields(pcap, tmp_path, "esp", wrong)
    assert len(rows) == len(wire_esp), f"wrong keys: {len(rows)} ESP rows"
    assert any(r["esp.icv_bad"].split(",")[0] == "1" for r in rows), f"wrong keys: {rows[:3]}"
    for r in rows:
        assert r["esp.icv_good"].split(",")[0] != "1", f"wrong keys, yet the ICV passed: {r}"
        addresses = r["ip.src"].split(",") + r["ip.dst"].split(",")
        assert HQ_HOST not in addresses and BRANCH_HOST not in addresses, f"decoded with wrong keys: {r}"


def ah_icv_matches(packet: bytes, key: bytes, seq_high: int | None) -> bool:
    """RFC 4302 3.3.3: HMAC-SHA-256-128 over the IPv4 header with mutable fields zeroed, the
    AH header with a zero ICV, the payload and (ESN) the high 32 sequence bits."""
    ihl = (packet[0] & 0x0F) * 4
    assert ihl == 20, "the lab's packets carry no IP options"
    header = bytearray(packet[:ihl])
    header[1] = 0  # TOS
    header[6:8] = b"\0\0"  # flags, fragment offset
    header[8] = 0  # TTL
    header[10:12] = b"\0\0"  # checksum
    ah_len = (packet[ihl + 1] + 2) * 4
    icv = packet[ihl + 12:ihl + ah_len]
    data = bytes(header) + packet[ihl:ihl + 12] + bytes(ah_len - 12) + packet[ihl + ah_len:]
    if seq_high is not None:
        data += seq_high.to_bytes(4, "big")
    return hmac.compare_digest(hmac.new(key, data, hashlib.sha256).digest()[:16], icv[:16])


def test_tshark_dissects_ah(topo: Topology, tmp_path: Path) -> None:
    pcap = tmp_path / "wire.pcap"
    with GatewayPair(topo, tmp_path, protocol="ah", algorithm="sha256") as pair:
        capture_traffic(topo, pair, pcap)
        keys = pair.keys

    rows = fields(pcap, tmp_path, "ah")
    wire_ah = [p for p in ipv4_packets(read_pcap(pcap)) if p.proto == PROTO_AH]
    assert len(rows) == len(wire_ah) > 0, f"tshark saw {len(rows)} AH packets, the capture has {len(wire_ah)}"
    for r in rows:
        spi = int(r["ah.spi"], 16)
        outer_src, outer_dst, inner_src, inner_dst = expected_direction(spi)
        assert r["ip.src"] == f"{outer_src},{inner_src}" and r["ip.dst"] == f"{outer_dst},{inner_dst}", (
            f"frame {r['frame.number']}: {r['ip.src']} -> {r['ip.dst']} for AH SPI {spi:#x}")
    assert sum(r["icmp.type"] == "8" for r in rows) == PINGS, rows
    assert sum(r["icmp.type"] == "0" for r in rows) == PINGS, rows
    assert any(r["tcp.dstport"] == str(TCP_PORT) for r in rows), rows
    problems = tshark(pcap, tmp_path, "-Y", PROBLEMS)
    assert not problems.strip(), f"tshark flags malformed AH packets:\n{problems}"

    # tshark cannot check AH ICVs; check them here, independently of the gateway's code.
    for p in wire_ah:
        sa = keys["hq->branch"] if p.src == HQ_PUBLIC else keys["branch->hq"]
        assert ah_icv_matches(p.raw, sa.integrity_key, seq_high=0), f"bad AH ICV in {p}"
        # ESN is on: the implicit high-order sequence bits are covered (RFC 4302 2.5.1).
        assert not ah_icv_matches(p.raw, sa.integrity_key, seq_high=None), f"ICV without ESN bits: {p}"
