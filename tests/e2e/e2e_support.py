"""Shared helpers for the end-to-end tests: real gateway processes in network namespaces.

Everything here drives the lab of `appliance.lab` (namespaces, veth links, two
`gateway run` processes) and observes it from the outside only: packet captures on the
"internet" link (tcpdump, read back with the small pcap reader below), packets injected
from the internet namespace through a raw socket, and the daemons' control sockets.

The tests need root and `ip netns`; without them they are skipped with the reason.
(`conftest.py` puts this directory on sys.path, so test modules import it by name.)
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.lab.gateways import GatewayPair, LabGateway
from appliance.lab.strongswan import CHARON, SWANCTL, PeerSettings, StrongswanPeer
from appliance.lab.topology import Topology

REPO = Path(__file__).resolve().parents[2]

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ESP = 50
PROTO_AH = 51

# The SPIs GatewayPair gives its manually keyed SAs.
SPI_HQ_TO_BRANCH = 0x1001
SPI_BRANCH_TO_HQ = 0x2001


def _netns_unavailable() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "end-to-end tests need Linux network namespaces"
    if os.geteuid() != 0:
        return "end-to-end tests need root (network namespaces, TUN, raw sockets, nftables)"
    if shutil.which("ip") is None:
        return "end-to-end tests need iproute2 (`ip netns`)"
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"`ip netns` is unavailable: {proc.stderr.strip()}"
    return None


NETNS_UNAVAILABLE = _netns_unavailable()

#: `pytestmark = NETNS` in every module of this directory.
NETNS = [
    pytest.mark.netns,
    pytest.mark.skipif(NETNS_UNAVAILABLE is not None, reason=NETNS_UNAVAILABLE or ""),
]


# -- lab life cycle --------------------------------------------------------------------------


def lab_prefix(base: str) -> str:
    """A namespace prefix for one test module in this process, e.g. "e2a12345-".

    The process id keeps two concurrent runs on one machine (two checkouts, a developer
    and CI, xdist workers) from tearing down each other's namespaces.
    """
    return f"{base}{os.getpid()}-"


@contextmanager
def lab(prefix: str) -> Iterator[Topology]:
    """A fresh topology with namespace prefix ``prefix``, always removed afterwards."""
    topology = Topology(prefix=prefix)
    try:
        topology.up()
        yield topology
    finally:
        topology.down()


def diagnostics(pair: GatewayPair, *names: str) -> str:
    """Status dicts and log tails of the gateways, for assertion messages."""
    parts = []
    for name in names or ("hq", "branch"):
        try:
            status = json.dumps(pair.status(name), indent=1, sort_keys=True)
        except Exception as exc:  # the daemon may be the thing that failed
            status = f"(no status: {exc})"
        parts.append(f"--- {name} status ---\n{status}\n--- {name} log ---\n{pair.log_tail(name)}")
    return "\n".join(parts)


T = TypeVar("T")


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0,
             interval: float = 0.05) -> T:
    """Call ``probe`` until ``done`` accepts its result or ``timeout`` passes; the last result."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = probe()
    return value


def connection(status: dict[str, Any]) -> dict[str, Any]:
    """The one connection of a lab gateway's status."""
    conns = status["connections"]
    assert len(conns) == 1, f"expected one connection, got {conns}"
    return conns[0]


def edge_counter(status: dict[str, Any], name: str) -> int:
    return int(status["edge"]["counters"].get(name, {}).get("packets", 0))


def ping_from(topology: Topology, namespace: str, dst: str, *, source: str | None = None,
              count: int = 3, interval: float = 0.2, wait: float = 1.0) -> tuple[int, int]:
    """Like Topology.ping, optionally with an explicit source address (-I)."""
    cmd = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait)]
    if source is not None:
        cmd += ["-I", source]
    proc = topology.ns(namespace, *cmd, dst, check=False, timeout=count * (interval + wait) + 10)
    for line in proc.stdout.splitlines():
        if "packets transmitted" in line:
            parts = line.split(",")
            return int(parts[0].split()[0]), int(parts[1].split()[0])
    raise AssertionError(f"ping gave no summary: {proc.stdout} {proc.stderr}")


# -- captures --------------------------------------------------------------------------------


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic libpcap file (what `tcpdump -w` writes)."""
    data = path.read_bytes()
    if len(data) < 24:
        raise AssertionError(f"{path}: not a pcap file ({len(data)} bytes)")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise AssertionError(f"{path}: unknown pcap magic {magic.hex()}")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    if linktype != 1:
        raise AssertionError(f"{path}: link type {linktype}, expected Ethernet (1)")
    record = struct.Struct(endian + "IIII")
    frames = []
    off = 24
    while off + record.size <= len(data):
        _sec, _frac, incl, _orig = record.unpack_from(data, off)
        off += record.size
        frames.append(data[off:off + incl])
        off += incl
    return frames


@dataclass(frozen=True)
class Ip:
    """An IPv4 packet seen on the wire (possibly truncated by the snap length)."""

    raw: bytes

    @property
    def ihl(self) -> int:
        return (self.raw[0] & 0x0F) * 4

    @property
    def proto(self) -> int:
        return self.raw[9]

    @property
    def src(self) -> str:
        return ".".join(map(str, self.raw[12:16]))

    @property
    def dst(self) -> str:
        return ".".join(map(str, self.raw[16:20]))

    @property
    def payload(self) -> bytes:
        return self.raw[self.ihl:]

    @property
    def sport(self) -> int:
        return int.from_bytes(self.payload[0:2], "big")

    @property
    def dport(self) -> int:
        return int.from_bytes(self.payload[2:4], "big")

    def __str__(self) -> str:
        return f"{self.src} > {self.dst} proto {self.proto} len {len(self.raw)}"


def ipv4_packets(frames: list[bytes]) -> list[Ip]:
    """The IPv4 packets among Ethernet ``frames`` (ARP, IPv6 and the rest are left out)."""
    return [Ip(f[14:]) for f in frames if len(f) >= 34 and f[12:14] == b"\x08\x00"]


def non_ipv4_summary(frames: list[bytes]) -> list[str]:
    return [f"ethertype 0x{f[12:14].hex()}" for f in frames if f[12:14] != b"\x08\x00"]


def addr(dotted: str) -> bytes:
    return bytes(int(x) for x in dotted.split("."))


class Capture:
    """tcpdump on one interface of one namespace, written to a pcap file.

        with Capture(topology, topology.inet_ns, "to-branch", tmp_path / "c.pcap") as cap:
            ...
        packets = ipv4_packets(cap.frames())
    """

    def __init__(self, topology: Topology, namespace: str, interface: str, path: Path, *,
                 snaplen: int = 0, bpf: str = "") -> None:
        self.topology = topology
        self.namespace = namespace
        self.interface = interface
        self.path = Path(path)
        self.snaplen = snaplen
        self.bpf = bpf
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""

    def start(self, timeout: float = 10.0) -> None:
        cmd = ["ip", "netns", "exec", self.namespace, "tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root",
               "-B", "16384", "-s", str(self.snaplen), "-i", self.interface, "-w", str(self.path)]
        if self.bpf:
            cmd.append(self.bpf)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"tcpdump on {self.namespace}/{self.interface} did not start: "
                                     f"{buf.decode(errors='replace')}{self.stderr}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                buf += chunk
        self.stderr = buf.decode(errors="replace")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            time.sleep(0.2)  # let the last packets of the test reach the capture
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
        self.stderr += err.decode(errors="replace")

    def frames(self) -> list[bytes]:
        assert self.proc is None, "stop the capture before reading it"
        return read_pcap(self.path)

    def packets(self) -> list[Ip]:
        return ipv4_packets(self.frames())

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- injection and probes from the internet namespace ----------------------------------------

_INJECT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin:
    line = line.strip()
    if line:
        p = bytes.fromhex(line)
        s.sendto(p, (socket.inet_ntoa(p[16:20]), 0))
"""


def inject(topology: Topology, namespace: str, *packets: bytes) -> None:
    """Send complete IPv4 packets (header included, source kept) from ``namespace``."""
    proc = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", _INJECT],
                          input="\n".join(p.hex() for p in packets) + "\n", text=True,
                          capture_output=True, timeout=20, check=False)
    assert proc.returncode == 0, f"injecting from {namespace} failed: {proc.stderr}"


_PROBE = """
import json, socket, sys, threading
dst, timeout = sys.argv[1], float(sys.argv[2])
probes = json.loads(sys.argv[3])
results = {}

def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        return "connected"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc}"
    finally:
        s.close()

def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        s.send(b"probe")
        s.recv(2048)
        return "answered"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"  # ICMP port unreachable came back
    except OSError as exc:
        return f"error: {exc}"
    finally:
        s.close()

def run(proto, port):
    results[f"{proto}/{port}"] = (tcp if proto == "tcp" else udp)(port)

threads = [threading.Thread(target=run, args=(p, n)) for p, n in probes]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
"""


def probe_ports(topology: Topology, namespace: str, dst: str, probes: list[tuple[str, int]],
                timeout: float = 1.5) -> dict[str, str]:
    """Try TCP connects / UDP exchanges from ``namespace`` in parallel.

    Each result is "connected"/"answered", "refused" (RST or ICMP unreachable: the host
    answered) or "timeout" (silently dropped).
    """
    proc = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", _PROBE, dst, str(timeout),
         json.dumps(probes)],
        capture_output=True, text=True, timeout=timeout + 20, check=False)
    assert proc.returncode == 0, f"probe from {namespace} failed: {proc.stderr}"
    return dict(json.loads(proc.stdout))


_TCP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(15)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(10)
data = b""
while not data.endswith(b"\\n"):
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
c.sendall(b"reply:" + data)
c.close()
"""

_TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(sys.argv[3].encode() + b"\\n")
data = b""
while True:
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"""


def tcp_exchange(topology: Topology, server_ns: str, server_addr: str, client_ns: str,
                 message: str, port: int = 5555) -> str:
    """One short TCP request/response between two namespaces; returns the reply."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", _TCP_SERVER, server_addr, str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.strip() == "listening", f"TCP server did not start: {line} {server.stderr}"
        proc = topology.ns(client_ns, sys.executable, "-c", _TCP_CLIENT, server_addr, str(port),
                           message, check=False, timeout=20)
        assert proc.returncode == 0, f"TCP client failed: {proc.stderr}"
        server.wait(timeout=10)
        return proc.stdout.strip()
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=5)


# -- gateway CLI --------------------------------------------------------------------------------


def gateway_cli(*args: str) -> str:
    """Run `python -m gateway ARGS` (as an operator would) and return its stdout."""
    proc = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=30, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)
    assert proc.returncode == 0, f"gateway {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


# -- strongSwan peers ---------------------------------------------------------------------------


def _strongswan_unavailable() -> str | None:
    """Why a strongSwan peer cannot run here, or None when it can."""
    if not Path(CHARON).exists():
        return f"strongSwan's charon is not installed ({CHARON}; package charon-systemd)"
    if shutil.which(SWANCTL) is None:
        return "swanctl is not installed (package strongswan-swanctl)"
    plugin = Path(CHARON).parent / "plugins" / "libstrongswan-kernel-libipsec.so"
    if not plugin.exists():
        return f"strongSwan's kernel-libipsec plugin is missing ({plugin}; libcharon-extra-plugins)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is needed to give each charon a private /run"
    return None


STRONGSWAN_UNAVAILABLE = _strongswan_unavailable()

#: Add to `pytestmark` of modules that run a strongSwan peer.
STRONGSWAN = [
    pytest.mark.peer,
    pytest.mark.skipif(STRONGSWAN_UNAVAILABLE is not None, reason=STRONGSWAN_UNAVAILABLE or ""),
]


def strongswan_peer(topology: Topology, side: str, workdir: Path,
                    settings: PeerSettings | None = None) -> StrongswanPeer:
    """A (not yet started) strongSwan peer on the ``side`` ("hq" or "branch") gateway,
    facing the other site's gateway and LAN; its files go to ``workdir / side``."""
    site, other = ((topology.hq, topology.branch) if side == "hq"
                   else (topology.branch, topology.hq))
    return StrongswanPeer(topology, site, other.gw_public, other.lan_subnet, Path(workdir) / side,
                          settings)


@contextmanager
def running_peers(*peers: StrongswanPeer) -> Iterator[tuple[StrongswanPeer, ...]]:
    """Start the peers; afterwards stop them all and check that no charon is left."""
    started: list[StrongswanPeer] = []
    try:
        for peer in peers:
            peer.start()
            started.append(peer)
        yield peers
    finally:
        pids = [p.pid for p in started if p.pid is not None]
        errors = []
        for peer in started:
            try:
                peer.stop()
            except Exception as exc:
                errors.append(str(exc))
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert not errors and not alive, f"charon teardown: {errors} still alive: {alive}"


def assert_lab_gone(prefix: str) -> None:
    """No namespace whose name starts with ``prefix`` is left."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False).stdout
    left = [line.split()[0] for line in listed.splitlines() if line.startswith(prefix)]
    assert not left, f"namespaces left behind: {left}"


class PingRun:
    """``count`` pings at ``interval`` in the background (to do something meanwhile).

        run = PingRun(topology, topology.hq.lan_ns, topology.branch.lan_host, count=150)
        ...                                         # rekey while it runs
        sent, received = run.result()
    """

    def __init__(self, topology: Topology, namespace: str, dst: str, *, count: int = 100,
                 interval: float = 0.02, wait: float = 1.0) -> None:
        self.count = count
        self.interval = interval
        self.timeout = count * interval + wait + 10
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, "ping", "-n", "-q", "-c", str(count),
             "-i", str(interval), "-W", str(wait), dst],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> tuple[int, int]:
        """Wait for the pings to finish; (sent, received)."""
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        for line in out.splitlines():
            if "packets transmitted" in line:
                parts = line.split(",")
                return int(parts[0].split()[0]), int(parts[1].split()[0])
        raise AssertionError(f"ping gave no summary: {out} {err}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextmanager
def strongswan_interop(prefix: str, tmp_path: Path, settings: PeerSettings,
                       config_of: Callable[[Topology], dict[str, Any]], *, nat: bool = False,
                       log_lines: int = 80) -> Iterator[tuple[Topology, StrongswanPeer, LabGateway]]:
    """A lab with strongSwan on the branch gateway and our gateway on hq (optionally a NAT in
    front of the branch); on failure both logs are printed; nothing is left behind."""
    with lab(prefix) as topology:
        if nat:
            topology.enable_nat()
        peer = strongswan_peer(topology, "branch", tmp_path, settings)
        with running_peers(peer):
            gw = LabGateway.start(topology.hq, tmp_path, "hq", config_of(topology))
            try:
                yield topology, peer, gw
            except BaseException:
                print(gw.log_tail(log_lines))
                print(peer.log_tail(log_lines))
                raise
            finally:
                gw.stop()
    assert_lab_gone(prefix)
