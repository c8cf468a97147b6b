"""An independent dissector (tshark) reads our L2TP: every message type with every AVP, and a
whole LAC-LNS conversation, must dissect without a malformed or expert warning, with the
message types, ids and sequence numbers we meant."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap
from test_l2tp_codec import EXAMPLES
from test_l2tp_wire import LAC_ADDR, LNS_ADDR, pair, up

from gateway.l2tp import SessionUp, TunnelUp
from gateway.l2tp.avp import CallErrors, make
from gateway.l2tp.constants import AvpType, MessageType
from gateway.l2tp.message import ControlMessage, DataMessage, control, decode, encode_control

pytestmark = pytest.mark.peer
TSHARK = shutil.which("tshark")
FIELDS = ["frame.number", "l2tp.avp.message_type", "l2tp.tunnel", "l2tp.session", "l2tp.Ns", "l2tp.Nr",
          "_ws.malformed", "_ws.expert", "ppp"]


def _pcap(path: Path, datagrams: list[tuple[bytes, tuple[str, int], tuple[str, int]]]) -> None:
    packets = []
    for i, (data, (src, sport), (dst, dport)) in enumerate(datagrams):
        packet = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst)
                  / UDP(sport=sport, dport=dport) / Raw(data))
        packet.time = 1_700_000_000 + i * 0.01
        packets.append(packet)
    wrpcap(str(path), packets)


def _dissect(path: Path) -> list[dict[str, str]]:
    assert TSHARK is not None
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|",
                           "-E", "occurrence=a", *(x for f in FIELDS for x in ("-e", f))],
                          capture_output=True, text=True, timeout=120, check=True)
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def _assert_clean_and_matching(rows: list[dict[str, str]], datagrams: list[bytes]) -> None:
    assert len(rows) == len(datagrams)
    for row, data in zip(rows, datagrams, strict=True):
        assert row["_ws.malformed"] == "" and row["_ws.expert"] == "", row
        msg = decode(data, secret=b"tshark-secret")
        assert row["l2tp.tunnel"] == str(msg.tunnel_id) and row["l2tp.session"] == str(msg.session_id), row
        if isinstance(msg, ControlMessage):
            assert row["l2tp.avp.message_type"] == ("" if msg.is_zlb else str(msg.type)), row
            assert (row["l2tp.Ns"], row["l2tp.Nr"]) == (str(msg.ns), str(msg.nr)), row
        else:
            assert row["ppp"] != "", row  # tshark found the PPP frame inside
            if msg.ns is not None:
                assert row["l2tp.Ns"] == str(msg.ns), row


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


@needs_tshark
def test_every_message_type_and_avp_dissects_cleanly(tmp_path: Path) -> None:
    everything = [make(t, v) for t, v in EXAMPLES.items() if t is not AvpType.RANDOM_VECTOR]
    datagrams = [control(kind, everything, tunnel_id=0x1234, session_id=0x0042, ns=7, nr=9).encode()
                 for kind in MessageType]
    datagrams.append(encode_control(0x1234, 0, 10, 9, b""))  # ZLB
    hidden = control(MessageType.ICRQ, [make(AvpType.ASSIGNED_SESSION_ID, 3),
                                        make(AvpType.CALL_SERIAL_NUMBER, 1),
                                        make(AvpType.CALLING_NUMBER, "10.8.0.20", hidden=True)], tunnel_id=9)
    datagrams.append(hidden.encode(secret=b"tshark-secret", random=lambda n: b"\x5a" * n))
    frame = bytes.fromhex("ff03 c021 0101 000a 0506 1a2b 3c4d")
    datagrams += [DataMessage(9, 3, frame).encode(),
                  DataMessage(9, 3, frame, ns=0, nr=0).encode(),
                  DataMessage(9, 3, frame, length_field=True, ns=65535, nr=0).encode(),
                  DataMessage(9, 3, frame, offset_size=0).encode()]
    path = tmp_path / "messages.pcap"
    _pcap(path, [(d, LAC_ADDR, LNS_ADDR) for d in datagrams])
    _assert_clean_and_matching(_dissect(path), datagrams)


@needs_tshark
def test_a_whole_conversation_dissects_cleanly(tmp_path: Path) -> None:
    secret = b"tshark-secret"
    wire = pair(lac={"default_secret": secret, "accept_outgoing_calls": True, "data_sequencing": True,
                     "hide_avps": frozenset({AvpType.CALLING_NUMBER})},
                lns={"default_secret": secret, "data_length_field": True})
    tid, (key,) = up(wire, calls=1)
    lns_tunnel = wire["lns"].of(TunnelUp)[0].tunnel
    lns_key = wire["lns"].of(SessionUp)[0].session
    wire["lns"].endpoint.place_call(lns_tunnel, wire.now, outgoing=True, called_number="5551234")
    wire["lac"].endpoint.send_frame(key, bytes.fromhex("ff03 c021 0101 0004"))
    wire["lns"].endpoint.send_frame(lns_key, bytes.fromhex("ff03 c021 0201 0004"))
    wire["lns"].endpoint.set_link_info(lns_key, wire.now, send_accm=0, receive_accm=0)
    wire["lac"].endpoint.report_call_errors(key, wire.now, CallErrors(crc=1))
    wire.run_for(70)  # a HELLO and its ZLB
    wire["lac"].endpoint.close_session(key, wire.now, message="bye")
    wire.run_for(1)
    wire["lac"].endpoint.close_tunnel(tid, wire.now)
    wire.run_for(1)
    names = {decode(d, secret=secret).name for _, _, d in wire.log  # type: ignore[union-attr]
             if d[0] & 0x80}
    assert names >= {"SCCRQ", "SCCRP", "SCCCN", "ICRQ", "ICRP", "ICCN", "OCRQ", "OCRP", "OCCN", "SLI", "WEN",
                     "HELLO", "ZLB", "CDN", "STOPCCN"}
    datagrams = [(d, LNS_ADDR if to == "lac" else LAC_ADDR, LAC_ADDR if to == "lac" else LNS_ADDR)
                 for _, to, d in wire.log]
    path = tmp_path / "conversation.pcap"
    _pcap(path, datagrams)
    _assert_clean_and_matching(_dissect(path), [d for d, _, _ in datagrams])


@needs_tshark
def test_tshark_does_flag_a_broken_message(tmp_path: Path) -> None:
    """The check above can fail: an AVP running past its message is reported."""
    broken = encode_control(5, 0, 0, 0, bytes.fromhex("8008 0000 0000 0001 8030 0000 0007") + b"abc")
    path = tmp_path / "broken.pcap"
    _pcap(path, [(broken, LAC_ADDR, LNS_ADDR)])
    (row,) = _dissect(path)
    assert row["_ws.malformed"] != ""
