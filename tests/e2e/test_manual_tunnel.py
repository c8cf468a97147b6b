"""End to end: two real gateways with manually keyed SAs, observed from the "internet".

Every test runs `gateway run` twice (HQ and branch) in the lab namespaces and looks at
the result only from outside: what crosses the internet link (tcpdump on the inet
router), what the LAN hosts can reach, what the control socket and the CLI report, and
how the branch gateway reacts to packets forged on the internet side.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    NETNS,
    PROTO_AH,
    PROTO_ESP,
    PROTO_ICMP,
    PROTO_IPIP,
    PROTO_UDP,
    SPI_BRANCH_TO_HQ,
    SPI_HQ_TO_BRANCH,
    Capture,
    Ip,
    addr,
    connection,
    diagnostics,
    edge_counter,
    gateway_cli,
    inject,
    lab,
    lab_prefix,
    ping_from,
    probe_ports,
    wait_for,
)

from appliance.lab.gateways import GatewayPair
from appliance.lab.iperf import iperf3_tcp
from appliance.lab.topology import Topology

pytestmark = NETNS

PREFIX = lab_prefix("e2a")
HQ_PUBLIC = "192.0.2.1"
BRANCH_PUBLIC = "198.51.100.1"
HQ_HOST = "10.1.0.10"
BRANCH_HOST = "10.2.0.10"
# Both orders of the inner address pair, as they would sit in a cleartext IPv4 header.
INNER_PAIRS = (addr(HQ_HOST) + addr(BRANCH_HOST), addr(BRANCH_HOST) + addr(HQ_HOST))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with lab(PREFIX) as topology:
        yield topology


# -- helpers ------------------------------------------------------------------------------------


def between_gateways(p: Ip) -> bool:
    return {p.src, p.dst} == {HQ_PUBLIC, BRANCH_PUBLIC}


def esp_spi(payload: bytes) -> int:
    return int.from_bytes(payload[0:4], "big")


def esp_seq(payload: bytes) -> int:
    return int.from_bytes(payload[4:8], "big")


def assert_wire(packets: list[Ip], allowed: Callable[[Ip], bool], what: str) -> None:
    """Every IPv4 packet on the link is between the gateways and ``allowed``."""
    bad = [str(p) for p in packets if not (between_gateways(p) and allowed(p))]
    assert not bad, (f"{len(bad)} of {len(packets)} IPv4 packets on the internet link are not {what}; "
                     f"first ones: {bad[:10]}")


def assert_no_cleartext_inner(frames: list[bytes]) -> None:
    """No frame carries the inner address pair the way a cleartext IPv4 header would."""
    leaks = [i for i, f in enumerate(frames) if any(pair in f for pair in INNER_PAIRS)]
    assert not leaks, f"frames {leaks[:10]} carry the inner addresses {HQ_HOST}/{BRANCH_HOST} in clear"


def assert_increasing(packets: list[Ip], spi_of: Callable[[bytes], int],
                      seq_of: Callable[[bytes], int]) -> None:
    """Sequence numbers of each SPI only go up on the wire (no reuse, no wrap)."""
    last: dict[int, int] = {}
    for p in packets:
        spi, seq = spi_of(p.payload), seq_of(p.payload)
        assert seq > last.get(spi, 0), f"SPI 0x{spi:08x}: sequence number {seq} after {last.get(spi)}"
        last[spi] = seq


def nft(namespace: str, ruleset: str) -> None:
    proc = subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=ruleset,
                          capture_output=True, text=True, timeout=20, check=False)
    assert proc.returncode == 0, f"nft in {namespace} failed: {proc.stderr}"


# -- tests --------------------------------------------------------------------------------------


def test_lans_isolated_without_tunnel(topo: Topology) -> None:
    """Without our gateways the sites cannot reach each other: a later successful ping
    can only have crossed the tunnel."""
    for site in (topo.hq, topo.branch):  # a previous gateway's edge table stays (fails closed)
        topo.ns(site.gw_ns, "nft", "delete", "table", "inet", "gateway_edge", check=False)
    sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2, wait=0.5)
    assert (sent, received) == (2, 0), f"LANs reach each other without a tunnel: {received}/{sent}"
    route = topo.ns(topo.inet_ns, "ip", "route", "get", BRANCH_HOST, check=False)
    assert route.returncode != 0, f"the internet router has a route to the branch LAN: {route.stdout}"
    # The hosts and links themselves work: with a plain route through the internet, they do.
    topo.enable_plain_routing()
    try:
        sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2, wait=1.0)
        assert received == sent, f"lab is broken even with plain routing: {received}/{sent}"
    finally:
        topo.disable_plain_routing()
    sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=1, wait=0.5)
    assert received == 0, "plain routing was not removed"


def test_esp_tunnel_raw(topo: Topology, tmp_path: Path) -> None:
    """ESP tunnel (aes128gcm16): ping and TCP pass; the internet sees only ESP between the
    two public addresses; counters, `gateway status` and `gateway sas` reflect it."""
    with GatewayPair(topo, tmp_path, algorithm="aes128gcm16") as pair:
        with Capture(topo, topo.inet_ns, "to-branch", tmp_path / "wire.pcap", snaplen=128) as cap:
            sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=5)
            assert (sent, received) == (5, 5), f"ping {received}/{sent}\n{diagnostics(pair)}"
            rates = iperf3_tcp(topo, topo.branch.lan_ns, BRANCH_HOST, topo.hq.lan_ns, seconds=3, runs=1)
            assert rates[0] > 0.01, f"iperf3 through the tunnel: {rates[0]:.4f} Gbit/s\n{diagnostics(pair)}"

        frames = cap.frames()
        packets = cap.packets()
        esp = [p for p in packets if p.proto == PROTO_ESP]
        assert_wire(packets, lambda p: p.proto == PROTO_ESP, "ESP")
        assert_no_cleartext_inner(frames)
        spis = {esp_spi(p.payload) for p in esp}
        assert spis == {SPI_HQ_TO_BRANCH, SPI_BRANCH_TO_HQ}, f"SPIs on the wire: {sorted(map(hex, spis))}"
        assert len(esp) > 1000, f"only {len(esp)} ESP packets for ping + 3 s of iperf3"
        assert_increasing(esp, esp_spi, esp_seq)
        up = [p for p in esp if p.src == HQ_PUBLIC]
        assert all(esp_spi(p.payload) == SPI_HQ_TO_BRANCH for p in up), "hq sent with the wrong SPI"

        hq, br = pair.status("hq"), pair.status("branch")
        for name, st in (("hq", hq), ("branch", br)):
            c = connection(st)
            assert c["packets_out"] > 0 and c["packets_in"] > 0, f"{name}: {c}\n{diagnostics(pair)}"
            assert c["bytes_out"] > 0 and c["bytes_in"] > 0, f"{name}: {c}"
            assert c["drops_in"] == 0, f"{name} dropped inbound packets: {c}\n{diagnostics(pair)}"
            assert st["edge"]["nftables"] is True, f"{name}: edge filter not applied: {st['edge']}"
            assert not st["drops"].get("bad_icv") and not st["drops"].get("replay"), st["drops"]
        # Each side received about what the other sent (the lab loses nothing; a late TCP
        # segment may slip in between the two status reads).
        for sender, receiver in ((hq, br), (br, hq)):
            sent, got = connection(sender)["packets_out"], connection(receiver)["packets_in"]
            assert got >= 5 and abs(sent - got) <= 5, f"sent {sent}, received {got}\n{diagnostics(pair)}"

        sas = {(sa["direction"], sa["spi"]): sa for sa in pair.status("branch", "sas")["sas"]}
        assert set(sas) == {("out", "0x00002001"), ("in", "0x00001001")}, sas
        assert sas[("in", "0x00001001")]["packets"] >= connection(br)["packets_in"]
        assert sas[("in", "0x00001001")]["esn"] is True
        assert sas[("in", "0x00001001")]["replay_window"] == 1024

        # The operator's view: the CLI against the control sockets.
        out = gateway_cli("status", "-s", str(pair.socket("hq")))
        assert re.search(r"branch1: up \(manual, tunnel, aes128gcm16\) peer 198\.51\.100\.1 +"
                         r"10\.1\.0\.0/24 <=> 10\.2\.0\.0/24", out), out
        m = re.search(r"out: (\d+) packets.*in: (\d+) packets", out)
        assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, out
        assert "edge filter: nftables" in out, out
        out = gateway_cli("sas", "-s", str(pair.socket("branch")))
        lines = out.splitlines()
        assert any(re.search(r"^hq +out +esp +0x00002001 +tunnel +aes128gcm16 ", ln) for ln in lines), out
        assert any(re.search(r"^hq +in +esp +0x00001001 +tunnel +aes128gcm16 ", ln) for ln in lines), out


def test_esp_udp_encapsulation(topo: Topology, tmp_path: Path) -> None:
    """UDP-encapsulated ESP (RFC 3948): the internet sees only UDP 4500 <-> 4500."""
    with GatewayPair(topo, tmp_path, encapsulation="udp") as pair:
        with Capture(topo, topo.inet_ns, "to-branch", tmp_path / "wire.pcap") as cap:
            sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=5)
        assert (sent, received) == (5, 5), f"ping {received}/{sent}\n{diagnostics(pair)}"
        packets = cap.packets()
        assert_wire(packets, lambda p: p.proto == PROTO_UDP and p.sport == 4500 and p.dport == 4500,
                    "UDP 4500 <-> 4500")
        assert_no_cleartext_inner(cap.frames())
        assert len(packets) >= 10, f"only {len(packets)} packets captured"

        def udp_esp(p: Ip) -> bytes:
            return p.payload[8:]

        spis = {esp_spi(udp_esp(p)) for p in packets}
        assert spis == {SPI_HQ_TO_BRANCH, SPI_BRANCH_TO_HQ}, f"SPIs in UDP: {sorted(map(hex, spis))}"
        assert_increasing(packets, lambda pl: esp_spi(pl[8:]), lambda pl: esp_seq(pl[8:]))
        for name in ("hq", "branch"):
            c = connection(pair.status(name))
            assert c["packets_in"] >= 5 and c["packets_out"] >= 5, f"{name}: {c}"
        sas = pair.status("hq", "sas")["sas"]
        assert all(sa["encap"] == "udp/4500->4500" for sa in sas), sas


def test_replay_tamper_unknown_spi(topo: Topology, tmp_path: Path) -> None:
    """Packets forged on the internet are dropped for the right reason and never reach the
    LAN; forgeries do not move the replay window.

    One ESP packet of hq is held back at the internet router (nft drop in its forward
    chain) while being captured, so the branch has never seen its sequence number:
    tampered copies of it must fail the ICV (not the replay check), and the untouched
    original must still be accepted afterwards -- and only once.
    """
    inet, hold = topo.inet_ns, "e2e_hold"
    with GatewayPair(topo, tmp_path, algorithm="aes128gcm16") as pair:
        with Capture(topo, inet, "to-hq", tmp_path / "hq-side.pcap") as cap:
            sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2)
            assert (sent, received) == (2, 2), f"ping {received}/{sent}\n{diagnostics(pair)}"
            nft(inet, f"table ip {hold} {{\n chain hold_esp {{\n"
                      f"  type filter hook forward priority -10; policy accept;\n"
                      f"  ip daddr {BRANCH_PUBLIC} ip protocol esp counter drop\n }}\n}}\n")
            try:
                sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=1, wait=0.5)
                assert received == 0, "the held packet got through"
            finally:
                topo.ns(inet, "nft", "delete", "table", "ip", hold, check=False)
        from_hq = [p for p in cap.packets()
                   if p.proto == PROTO_ESP and p.src == HQ_PUBLIC and p.dst == BRANCH_PUBLIC]
        seqs = [esp_seq(p.payload) for p in from_hq]
        assert seqs == [1, 2, 3], f"ESP sequence numbers from hq: {seqs}"
        assert all(esp_spi(p.payload) == SPI_HQ_TO_BRANCH for p in from_hq)
        delivered, held = from_hq[0].raw, from_hq[2].raw
        ihl = from_hq[0].ihl

        def branch() -> dict[str, Any]:
            return pair.status("branch")

        def send_and_wait(packet: bytes, reason: str) -> tuple[dict[str, Any], dict[str, Any]]:
            before = branch()
            inject(topo, inet, packet)
            after = wait_for(branch, lambda st: st["drops"].get(reason, 0) > before["drops"].get(reason, 0))
            assert after["drops"].get(reason, 0) == before["drops"].get(reason, 0) + 1, (
                f"expected one more {reason} drop: {before['drops']} -> {after['drops']}\n"
                f"{diagnostics(pair, 'branch')}")
            assert connection(after)["packets_in"] == connection(before)["packets_in"], (
                f"a {reason} packet was counted as received\n{diagnostics(pair, 'branch')}")
            return before, after

        # 1. Replay of a packet the branch already accepted.
        before, after = send_and_wait(delivered, "replay")
        assert connection(after)["drops_in"] == connection(before)["drops_in"] + 1

        # 2. One ciphertext bit flipped in the never-seen packet: the ICV (GCM tag) fails.
        tampered = bytearray(held)
        tampered[ihl + 8 + 8 + 5] ^= 0x01  # SPI(4) seq(4) IV(8), then the ciphertext
        send_and_wait(bytes(tampered), "bad_icv")

        # 3. Sequence number moved far ahead (beyond the 1024 window): the sequence number
        #    is authenticated, so the ICV fails; had the window advanced, step 5 would fail.
        jumped = bytearray(held)
        jumped[ihl + 4:ihl + 8] = (esp_seq(held[ihl:]) + (1 << 20)).to_bytes(4, "big")
        send_and_wait(bytes(jumped), "bad_icv")

        # 4. An SPI the branch does not know.
        unknown = bytearray(held)
        unknown[ihl:ihl + 4] = (0xDEAD0001).to_bytes(4, "big")
        send_and_wait(bytes(unknown), "unknown_spi")

        # 5. The genuine held packet is still accepted: forgeries moved nothing.
        before, hq_before = branch(), pair.status("hq")
        inject(topo, inet, held)
        after = wait_for(branch, lambda st: connection(st)["packets_in"] > connection(before)["packets_in"])
        assert connection(after)["packets_in"] == connection(before)["packets_in"] + 1, (
            f"the genuine held packet was not accepted after the forgeries\n{diagnostics(pair)}")
        assert after["drops"] == before["drops"], f"{before['drops']} -> {after['drops']}"
        # ... and was delivered: br-lan's echo reply came back to hq through the tunnel.
        hq_after = wait_for(lambda: pair.status("hq"),
                            lambda st: connection(st)["packets_in"] > connection(hq_before)["packets_in"])
        assert connection(hq_after)["packets_in"] == connection(hq_before)["packets_in"] + 1, (
            diagnostics(pair))

        # 6. ... but only once.
        send_and_wait(held, "replay")

        # The tunnel still works.
        sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=2)
        assert (sent, received) == (2, 2), f"ping after the attacks {received}/{sent}\n{diagnostics(pair)}"


def test_edge_filter(topo: Topology, tmp_path: Path) -> None:
    """From the internet only ESP/AH/IKE/NAT-T reach the gateway; everything else is dropped
    silently (no RST, no ICMP) and counted, cleartext L2TP separately; ESP keeps working."""
    br = topo.branch
    with GatewayPair(topo, tmp_path) as pair:
        before = pair.status("branch")
        probes = [("tcp", 22), ("tcp", 8080), ("udp", 1701), ("udp", 53)]
        results = probe_ports(topo, topo.inet_ns, BRANCH_PUBLIC, probes)
        assert results == {"tcp/22": "timeout", "tcp/8080": "timeout", "udp/1701": "timeout",
                           "udp/53": "timeout"}, f"edge probes: {results}"

        # Cleartext traffic routed at the branch LAN is not forwarded either.
        topo.ns(topo.inet_ns, "ip", "route", "replace", br.lan_subnet, "via", br.gw_public)
        try:
            sent, received = topo.ping(topo.inet_ns, BRANCH_HOST, count=1, wait=0.5)
        finally:
            topo.ns(topo.inet_ns, "ip", "route", "del", br.lan_subnet, check=False)
        assert received == 0, "the branch gateway forwarded cleartext from the internet into its LAN"

        after = pair.status("branch")
        deltas = {k: edge_counter(after, k) - edge_counter(before, k)
                  for k in ("edge_dropped", "clear_l2tp_dropped", "forward_dropped")}
        assert deltas["edge_dropped"] >= 3, f"edge counters: {deltas}\n{after['edge']}"  # 22, 8080, 53
        assert deltas["clear_l2tp_dropped"] >= 1, f"edge counters: {deltas}\n{after['edge']}"
        assert deltas["forward_dropped"] >= 1, f"edge counters: {deltas}\n{after['edge']}"

        out = gateway_cli("status", "-s", str(pair.socket("branch")))
        m = re.search(r"edge filter: nftables, (\d+) dropped", out)
        assert m and int(m.group(1)) >= 5, out

        sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=3)
        assert (sent, received) == (3, 3), f"ESP stopped working: {received}/{sent}\n{diagnostics(pair)}"

        # Control: without the nftables table the same probes are answered (RST / ICMP
        # port unreachable), so the timeouts above were the filter's doing.
        topo.ns(br.gw_ns, "nft", "delete", "table", "inet", "gateway_edge")
        results = probe_ports(topo, topo.inet_ns, BRANCH_PUBLIC, [("tcp", 22), ("udp", 1701)])
        assert results == {"tcp/22": "refused", "udp/1701": "refused"}, f"without the filter: {results}"


# (name, GatewayPair options, expected outer protocol)
MODES = [
    ("ah-tunnel", {"protocol": "ah", "algorithm": "sha256", "mode": "tunnel"}, PROTO_AH),
    ("ah-transport", {"protocol": "ah", "algorithm": "sha256", "mode": "transport"}, PROTO_AH),
    ("esp-transport", {"protocol": "esp", "algorithm": "aes128gcm16", "mode": "transport"}, PROTO_ESP),
    ("esp-transport-udp", {"algorithm": "aes128-sha256", "mode": "transport", "encapsulation": "udp"},
     PROTO_UDP),
]


@pytest.mark.parametrize(("name", "options", "outer"), MODES, ids=[m[0] for m in MODES])
def test_modes(topo: Topology, tmp_path: Path, name: str, options: dict[str, str], outer: int) -> None:
    """AH (tunnel, transport) and ESP transport: traffic passes and the wire shows only the
    protecting protocol.  Transport mode protects the gateways' own traffic (ping between
    the public addresses) with an explicit source; test_transport_default_source covers the
    default source."""
    tunnel = options["mode"] == "tunnel"
    with GatewayPair(topo, tmp_path, **options) as pair:
        with Capture(topo, topo.inet_ns, "to-branch", tmp_path / "wire.pcap") as cap:
            if tunnel:
                sent, received = topo.ping(topo.hq.lan_ns, BRANCH_HOST, count=5)
            else:
                sent, received = ping_from(topo, topo.hq.gw_ns, BRANCH_PUBLIC, source=HQ_PUBLIC, count=5)
        assert (sent, received) == (5, 5), f"{name}: ping {received}/{sent}\n{diagnostics(pair)}"
        packets = cap.packets()
        if outer == PROTO_UDP:
            assert_wire(packets, lambda p: p.proto == PROTO_UDP and p.sport == p.dport == 4500,
                        "UDP-encapsulated ESP")
        else:
            assert_wire(packets, lambda p: p.proto == outer, f"IP protocol {outer}")
        assert len(packets) >= 10, f"only {len(packets)} packets captured"
        if outer == PROTO_AH:
            # AH authenticates but does not encrypt: the protected packet is visible after it.
            for p in packets:
                ah = p.payload
                next_header, ah_len = ah[0], (ah[1] + 2) * 4
                assert esp_spi(ah[4:8]) == (SPI_HQ_TO_BRANCH if p.src == HQ_PUBLIC else SPI_BRANCH_TO_HQ)
                assert ah_len == 12 + 16, f"AH length {ah_len} for HMAC-SHA-256-128"
                if tunnel:
                    inner = Ip(ah[ah_len:])
                    assert next_header == PROTO_IPIP and {inner.src, inner.dst} == {HQ_HOST, BRANCH_HOST}, (
                        f"AH tunnel carries {inner}")
                else:
                    assert next_header == PROTO_ICMP, f"AH transport next header {next_header}"
        else:
            assert_no_cleartext_inner(cap.frames())
        for site in ("hq", "branch"):
            c = connection(pair.status(site))
            assert c["mode"] == options["mode"], c
            assert c["packets_in"] >= 5 and c["packets_out"] >= 5 and c["drops_in"] == 0, (
                f"{site}: {c}\n{diagnostics(pair)}")


def test_transport_default_source(topo: Topology, tmp_path: Path) -> None:
    """`ping 198.51.100.1` on hq-gw, without choosing the source, is protected too."""
    with GatewayPair(topo, tmp_path, mode="transport") as pair:
        sent, received = ping_from(topo, topo.hq.gw_ns, BRANCH_PUBLIC, count=2)
        assert (sent, received) == (2, 2), f"ping {received}/{sent}\n{diagnostics(pair, 'hq')}"
