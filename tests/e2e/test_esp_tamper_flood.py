"""End to end: a flood of forged packets at HQ through its established IKEv2 tunnel.

One ESP packet the branch sent to HQ is captured on the internet router; from it the
internet namespace forges, paced by `appliance.lab.flood`: replays of it, copies with a
flipped bit and a sequence number far ahead (the ICV must fail), copies cut short (too
short for ESP, or not a whole number of cipher blocks), copies under SPIs HQ does not
know, and IKE INFORMATIONAL requests under the tunnel's real IKE SPIs with garbage in the
SK payload.  Meanwhile HQ's LAN pings the branch's through the tunnel.

Every forged ESP packet is dropped and counted by its reason (or, at most, dropped by
the kernel at a full socket, which is counted too), HQ logs a bounded number of lines,
and the tunnel (the same IKE SA and CHILD_SA) carries every ping.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    NETNS,
    PROTO_ESP,
    REPO,
    Capture,
    PingRun,
    assert_lab_gone,
    diagnostics,
    lab,
    lab_prefix,
    wait_for,
)

from appliance.lab.gateways import GatewayPair
from appliance.lab.topology import Topology

pytestmark = NETNS

PREFIX = lab_prefix("tmf")
PER_KIND = 3000  # forged ESP packets of each kind
IKE_FORGED = 1000
RATE = 2000  # packets per second
LOG_LINES_LIMIT = 15
IKE_SK = 46
IKE_INFORMATIONAL = 37


@pytest.fixture
def topo() -> Iterator[Topology]:
    with lab(PREFIX) as topology:
        yield topology
    assert_lab_gone(PREFIX)


def with_esp(ip_packet: bytes, esp: bytes) -> bytes:
    """The IPv4 header of ``ip_packet`` (total length and checksum fixed) around ``esp``."""
    ihl = (ip_packet[0] & 0x0F) * 4
    header = bytearray(ip_packet[:ihl])
    header[2:4] = struct.pack("!H", ihl + len(esp))
    header[10:12] = b"\0\0"
    total = sum(struct.unpack(f"!{ihl // 2}H", bytes(header)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header[10:12] = struct.pack("!H", ~total & 0xFFFF)
    return bytes(header) + esp


def forged_esp(original: bytes) -> dict[str, list[bytes]]:
    """PER_KIND forged packets of each kind, by the drop reason HQ must count."""
    ihl = (original[0] & 0x0F) * 4
    esp = original[ihl:]
    seq = int.from_bytes(esp[4:8], "big")
    out: dict[str, list[bytes]] = {"replay": [], "bad_icv": [], "too_short": [], "bad_length": [],
                                   "unknown_spi": []}
    for i in range(PER_KIND):
        out["replay"].append(original)
        tampered = bytearray(esp)
        tampered[4:8] = (seq + (1 << 20) + i).to_bytes(4, "big")  # unseen: the ICV decides
        tampered[8 + 16 + (i % 16)] ^= 0x01  # SPI, seq, IV (16, CBC), then a ciphertext bit
        out["bad_icv"].append(with_esp(original, bytes(tampered)))
        out["too_short"].append(with_esp(original, esp[:4 + i % 4]))  # not even SPI and seq
        out["bad_length"].append(with_esp(original, esp[:-1 - i % 15]))  # not whole cipher blocks
        wrong = bytearray(esp)
        wrong[0:4] = (0xDEAD0000 + i).to_bytes(4, "big")
        out["unknown_spi"].append(with_esp(original, bytes(wrong)))
    return out


def forged_ike(spi_i: bytes, spi_r: bytes, src: str, dst: str) -> list[bytes]:
    """INFORMATIONAL requests under the real IKE SPIs, message IDs 2..9, a random SK body."""
    from appliance.lab.flood import ipv4_udp

    out = []
    for i in range(IKE_FORGED):
        body = os.urandom(8 + 16 + 16)  # IV, one block, ICV (whatever the suite, it fails)
        sk = struct.pack("!BBH", 0, 0, 4 + len(body)) + body
        header = spi_i + spi_r + struct.pack("!BBBBII", IKE_SK, 0x20, IKE_INFORMATIONAL, 0x08, 2 + i % 8,
                                             28 + len(sk))
        out.append(ipv4_udp(src, dst, 500, 500, header + sk))
    return out


def raw_drops(topology: Topology, namespace: str, proto: int) -> int:
    """Packets the kernel dropped at raw sockets of protocol ``proto`` (full buffers)."""
    text = topology.ns(namespace, "cat", "/proc/net/raw").stdout
    suffix = f":{proto:04X}"
    return sum(int(line.split()[-1]) for line in text.splitlines()[1:] if line.split()[1].endswith(suffix))


def test_forged_esp_and_ike_are_dropped_counted_and_quiet(topo: Topology, tmp_path: Path) -> None:
    hq_pub, br_pub = topo.hq.gw_public, topo.branch.gw_public
    with GatewayPair(topo, tmp_path, keying="ike", algorithm="aes256-sha256") as pair:
        pair.wait_tunnel()
        with Capture(topo, topo.inet_ns, "to-hq", tmp_path / "esp.pcap", bpf="esp") as cap:
            sent, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=3)
            assert received == sent, diagnostics(pair)
        from_branch = [p for p in cap.packets() if p.proto == PROTO_ESP and p.src == br_pub]
        assert from_branch, "no ESP from the branch was captured"
        original = from_branch[-1].raw  # delivered already: a copy is a replay
        [ike_sa] = [sa for sa in pair.status("hq", "sas")["ike_sas"] if sa["name"] == "branch1"]
        spi_i, spi_r = (bytes.fromhex(part[:16]) for part in ike_sa["ike_sa"].split())
        children_before = [c["spi_in"] for c in ike_sa["children"]]

        kinds = forged_esp(original)
        ike = forged_ike(spi_i, spi_r, br_pub, hq_pub)
        batches = [*kinds.values(), ike]
        # round robin: every kind all along the flood
        packets = [batch[i] for i in range(max(map(len, batches))) for batch in batches if i < len(batch)]
        total_esp = sum(map(len, kinds.values()))

        hq = pair.gateways["hq"]
        before = pair.status("hq")
        raw_before = raw_drops(topo, topo.hq.gw_ns, PROTO_ESP)
        lines_before = len(hq.log_text().splitlines())
        seconds = len(packets) / RATE
        pings = PingRun(topo, topo.hq.lan_ns, topo.branch.lan_host, count=int((seconds + 2) / 0.02),
                        interval=0.02)
        try:
            proc = subprocess.run(
                ["ip", "netns", "exec", topo.inet_ns, sys.executable, "-m", "appliance.lab.flood", "packets",
                 "--rate", str(RATE), "--seconds", str(seconds + 5)],
                input="\n".join(p.hex() for p in packets) + "\n", capture_output=True, text=True,
                timeout=seconds + 60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
            assert proc.returncode == 0, proc.stderr
            sent_ping, received_ping = pings.result()
        finally:
            pings.stop()
        flood = proc.stdout.strip()

        def counted(st: dict) -> int:
            return sum(st["drops"].get(k, 0) - before["drops"].get(k, 0) for k in kinds)

        after = wait_for(lambda: pair.status("hq"), lambda st: counted(st) >= total_esp, timeout=5)
        delta = {k: after["drops"].get(k, 0) - before["drops"].get(k, 0) for k in kinds}
        kernel = raw_drops(topo, topo.hq.gw_ns, PROTO_ESP) - raw_before
        lines = hq.log_text().splitlines()[lines_before:]
        print(f"[tamper flood] {flood}: HQ counted {delta}, kernel dropped {kernel}; "
              f"pings lost {sent_ping - received_ping} of {sent_ping}; {len(lines)} log lines")

        # every forged ESP packet: dropped for its reason and counted (or dropped by the kernel)
        assert sum(delta.values()) + kernel == total_esp, (delta, kernel, total_esp)
        for reason, batch in kinds.items():
            assert len(batch) - kernel <= delta[reason] <= len(batch), (reason, delta, kernel)
        # ... none reached the LAN, and the tunnel carried every ping
        lost = sent_ping - received_ping
        assert lost == 0, f"lost {lost} of {sent_ping} pings\n{diagnostics(pair)}"
        # the same SAs: forgeries moved no replay window and tore nothing down
        [ike_after] = [sa for sa in pair.status("hq", "sas")["ike_sas"] if sa["name"] == "branch1"]
        assert ike_after["ike_sa"] == ike_sa["ike_sa"]
        assert [c["spi_in"] for c in ike_after["children"]] == children_before
        sent, received = topo.ping(topo.branch.lan_ns, topo.hq.lan_host, count=3)
        assert received == sent
        # and the log stayed short: drop summaries, a few IKE integrity failures, a summary
        text = "\n".join(lines)
        assert len(lines) < LOG_LINES_LIMIT, text
        failures = sum(" ike.integrity_failed " in line for line in lines)
        assert 1 <= failures <= 6, text  # 3 per 10 s from one source; the flood may span two
