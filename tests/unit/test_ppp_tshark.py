"""An independent dissector (tshark) reads our PPP: whole conversations of our client and
server (PAP, CHAP-MD5, MS-CHAPv2, right and wrong passwords, IPCP, IPv4, keepalives,
Protocol- and Code-Rejects, Terminate, compressed frames, a Windows-style option set with
its Reject and Nak) written twice, as linktype PPP and inside L2TP data messages over UDP
1701.  tshark must flag nothing as malformed nor raise an expert item, and must read the
protocol, code and identifier we meant, and the names, messages and addresses in them."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap
from test_ppp_harness import Wire, client_config, client_session, connect, server_config, server_session
from test_ppp_lcp import AUTH_MSCHAPV2, CCP, IPV6CP, LCP, MAGIC, WINDOWS_OPTIONS, packet

from gateway.ppp import LcpConfig
from gateway.ppp.frame import (
    PROTO_CHAP,
    PROTO_IPCP,
    PROTO_IPV4,
    PROTO_LCP,
    PROTO_PAP,
    decode_control,
    decode_frame,
)

pytestmark = pytest.mark.peer
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
FIELDS = ["frame.number", "ppp.protocol", "ppp.code", "ppp.identifier", "chap.code", "chap.name",
          "chap.message", "pap.code", "pap.peer_id", "pap.message", "ipcp.opt.ip_address",
          "ipcp.opt.pri_dns_address", "lcp.opt.auth_protocol", "lcp.rej_proto", "ip.src", "l2tp.session",
          "_ws.malformed", "_ws.expert"]


def ping(src: str, dst: str, kind: int = 8) -> bytes:
    return bytes(IP(src=src, dst=dst, id=1) / ICMP(type=kind, id=7, seq=1) / b"ppp over l2tp")


def conversations() -> list[bytes]:
    """Every frame of several conversations, both directions, in order."""
    frames: list[bytes] = []
    for method in ("pap", "chap-md5", "mschapv2"):
        wire = connect(method, "alice")
        assert wire.up()
        wire.b.send_ip(ping("10.8.0.10", "10.8.0.1"))
        wire.a.send_ip(ping("10.8.0.1", "10.8.0.10", kind=0))
        wire.pump()
        wire.a.close(wire.now, "administratively closed")
        wire.run(wire.now + 10.0, stop=lambda w=wire: w.a.finished and w.b.finished)  # type: ignore[misc]
        frames += [f for _, _, f in wire.log]
        refused = connect(method, "alice", password="wrong")
        refused.run(60.0, stop=lambda w=refused: w.a.finished and w.b.finished)  # type: ignore[misc]
        frames += [f for _, _, f in refused.log]
    # keepalives and compressed frames
    lcp = LcpConfig(echo_interval=5.0, echo_adaptive=False, request_pfc=True, request_acfc=True)
    wire = Wire(server_session(server_config(lcp=lcp)), client_session(client_config(lcp=lcp)))
    wire.start()
    wire.run(12.0)
    wire.b.send_ip(ping("10.8.0.10", "10.8.0.1"))
    wire.pump()
    frames += [f for _, _, f in wire.log]
    assert any(f[:1] == b"\x21" for f in frames)  # PFC and ACFC at work
    # a Windows-style peer against our server: its Callback rejected, our CHAP-MD5 Nak'd
    server = server_session(server_config(methods=("chap-md5", "mschapv2")))
    server.start(0.0)
    [ours] = server.frames_to_send()
    our_id = decode_control(decode_frame(ours).payload).identifier
    script = [packet(LCP, 1, 1, WINDOWS_OPTIONS), packet(LCP, 3, our_id, AUTH_MSCHAPV2)]
    frames.append(ours)
    for frame in script:
        server.receive(frame, 0.1)
        frames += [frame, *server.frames_to_send()]
    # Protocol-Reject and Code-Reject from an open link
    wire = connect()
    for frame in (packet(IPV6CP, 1, 5, bytes.fromhex("010a0011223344556677")),
                  packet(CCP, 1, 6, bytes.fromhex("120600000040")),
                  packet(LCP, 9, 7, MAGIC + b"echo"),
                  packet(LCP, 42, 8, b"unknown code")):
        wire.a.receive(frame, wire.now)
        frames += [frame, *wire.a.frames_to_send()]
    return frames


def pcap_ppp(path: Path, frames: list[bytes]) -> None:
    """A classic pcap file of linktype 9 (DLT_PPP: "FF 03" optional, RFC 1662)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 9)]
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def pcap_l2tp(path: Path, frames: list[bytes]) -> None:
    packets = []
    for i, frame in enumerate(frames):
        data_header = b"\x00\x02" + (0x1234).to_bytes(2, "big") + (0x0042).to_bytes(2, "big")  # L2TPv2 data
        p = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="192.0.2.1", dst="192.0.2.2")
             / UDP(sport=1701, dport=1701) / Raw(data_header + frame))
        p.time = 1_700_000_000 + i * 0.01
        packets.append(p)
    wrpcap(str(path), packets)


def dissect(path: Path, tmp_path: Path) -> list[dict[str, str]]:
    assert TSHARK is not None
    conf = tmp_path / "wireshark"
    conf.mkdir(exist_ok=True)
    fields = [x for f in FIELDS for x in ("-e", f)]
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|",
                           "-E", "occurrence=a", "-E", "aggregator=,", *fields],
                          capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(conf), "HOME": str(tmp_path)})
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def check(rows: list[dict[str, str]], frames: list[bytes]) -> None:
    assert len(rows) == len(frames)
    for row, frame in zip(rows, frames, strict=True):
        assert row["_ws.malformed"] == "" and row["_ws.expert"] == "", row
        decoded = decode_frame(frame)
        if decoded.protocol == PROTO_IPV4:
            assert row["ip.src"].split(",")[-1] in ("10.8.0.10", "10.8.0.1"), row
            continue
        assert int(row["ppp.protocol"].split(",")[-1], 0) == decoded.protocol, row
        packet_ = decode_control(decoded.payload)
        if decoded.protocol in (PROTO_LCP, PROTO_IPCP):
            assert row["ppp.code"].split(",")[0] == str(packet_.code), row
            assert row["ppp.identifier"].split(",")[0] == str(packet_.identifier), row
        elif decoded.protocol == PROTO_CHAP:
            assert row["chap.code"] == str(packet_.code), row
            if packet_.code == 2:
                assert row["chap.name"] == "alice", row
            if packet_.code == 4 and packet_.data.startswith(b"E="):
                assert row["chap.message"].startswith("E=691 R=0 C="), row
        elif decoded.protocol == PROTO_PAP:
            assert row["pap.code"] == str(packet_.code), row
            if packet_.code == 1:
                assert row["pap.peer_id"] == "alice", row


@needs_tshark
def test_tshark_reads_our_ppp_cleanly(tmp_path: Path) -> None:
    frames = conversations()
    ppp, l2tp = tmp_path / "ppp.pcap", tmp_path / "l2tp.pcap"
    pcap_ppp(ppp, frames)
    pcap_l2tp(l2tp, frames)
    for path in (ppp, l2tp):
        rows = dissect(path, tmp_path)
        check(rows, frames)
    rows = dissect(l2tp, tmp_path)
    assert all(r["l2tp.session"] == str(0x42) for r in rows)
    seen = " ".join(r["ipcp.opt.ip_address"] + r["ipcp.opt.pri_dns_address"] for r in rows)
    assert "10.8.0.10" in seen and "10.8.0.1" in seen and "10.8.0.53" in seen
    assert {"0xc023", "0xc223"} <= {p for r in rows for p in r["lcp.opt.auth_protocol"].split(",") if p}
    assert {"0x8057", "0x80fd"} <= {p for r in rows for p in r["lcp.rej_proto"].split(",") if p}
