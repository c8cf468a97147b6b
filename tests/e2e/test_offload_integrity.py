"""End to end: bulk TCP through the userspace dataplane with its offloads (TSO bursts cut
into segments, UDP GSO/GRO, segments joined back into GSO writes) arrives intact.

A sender in one LAN streams random data to a receiver in the other, both ways at once;
each side hashes what it sent and what it got.  The gateways' status must show that the
offload paths carried the traffic (bursts cut, segments joined, GSO sends, GRO reads),
with no drop and nothing in clear on the internet link.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import NETNS, PROTO_UDP, Capture, diagnostics, ipv4_packets, lab, lab_prefix, read_pcap

from appliance.lab.gateways import GatewayPair
from appliance.lab.topology import Topology

pytestmark = NETNS

PREFIX = lab_prefix("e2o")
BYTES = 24 * 1024 * 1024

_RECEIVER = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
conn, _ = srv.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 20):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""

_SENDER = """
import hashlib, os, socket, sys
data = os.urandom(int(sys.argv[3]))
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as s:
    s.sendall(data)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with lab(PREFIX) as topology:
        yield topology


def _stream(topo: Topology, src_ns: str, dst_ns: str, dst: str, port: int) -> tuple[str, str]:
    receiver = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c", _RECEIVER,
                                 dst, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "listening"
        sender = topo.ns(src_ns, sys.executable, "-c", _SENDER, dst, str(port), str(BYTES),
                         timeout=120)
        received, _ = receiver.communicate(timeout=60)
        return sender.stdout.strip(), received.strip()
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate(timeout=5)


@pytest.mark.parametrize("algorithm", ["aes128gcm16", "aes128-sha256"])
def test_bulk_tcp_arrives_intact_through_the_offloads(topo: Topology, tmp_path: Path,
                                                       algorithm: str) -> None:
    pcap = tmp_path / "wire.pcap"
    with GatewayPair(topo, tmp_path, algorithm=algorithm, encapsulation="udp") as pair:
        with Capture(topo, topo.inet_ns, "to-branch", pcap, snaplen=96):
            sent, got = _stream(topo, topo.hq.lan_ns, topo.branch.lan_ns, topo.branch.lan_host, 6001)
            assert sent == got, f"hq -> branch: sent {sent}, received {got}\n{diagnostics(pair)}"
            sent, got = _stream(topo, topo.branch.lan_ns, topo.hq.lan_ns, topo.hq.lan_host, 6002)
            assert sent == got, f"branch -> hq: sent {sent}, received {got}\n{diagnostics(pair)}"
        status = {name: pair.status(name) for name in ("hq", "branch")}
    for name, st in status.items():
        io = st["io"]
        assert io["offload"] == {"tun": "tso4", "udp_gso": True, "udp_gro": True}, io
        # both directions carried bulk data, so each side cut bursts and joined segments
        assert io["tun_bursts"] > 0 and io["tun_burst_segments"] > 2 * io["tun_bursts"], (name, io)
        assert io["tun_joined_writes"] > 0, (name, io)
        assert io["udp_gso_sends"] > 0 and io["udp_gso_datagrams"] > io["udp_gso_sends"], (name, io)
        assert io["udp_gro_reads"] > 0 and io["udp_gro_datagrams"] > io["udp_gro_reads"], (name, io)
        assert io["tun_write_errors"] == 0, (name, io)
        assert not st["drops"], (name, st["drops"])
    wire = ipv4_packets(read_pcap(pcap))
    assert wire and all(p.proto == PROTO_UDP for p in wire), "only ESP-in-UDP crosses the internet"
    assert max(int.from_bytes(p.raw[2:4], "big") for p in wire) <= 1500, "single datagrams, not GSO"
