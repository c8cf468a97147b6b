"""The benchmarks' network: one responder namespace and one namespace of many initiators.

    {prefix}resp  wan0 198.18.0.1/24 (lan0: 10.1.0.1/24, the LAN it protects)
        |  veth
    {prefix}init  ld0 198.18.0.2/24; 100.64.0.0/16 is local (``ip route add local ... dev
                  lo``), so every one of its 65,534 addresses can send and receive without
                  adding 65,534 addresses one by one

The responder reaches the initiators through one next hop (a route to 100.64.0.0/16 via
198.18.0.2), so its neighbour table holds one entry however many peers there are
(Linux's default gc_thresh3 of 1024 would overflow with one per peer).  Addresses come
from the benchmarking range (RFC 2544: 198.18.0.0/15) and the shared address space
(RFC 6598), so nothing collides with the lab's other networks.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.lab.topology import LabError, Site, remove_namespaces, run

REPO = Path(__file__).resolve().parents[2]

RESPONDER = "198.18.0.1"
INITIATORS_HOP = "198.18.0.2"
SOURCES = "100.64.0.0/16"
RESPONDER_LAN = "10.1.0.0/24"
INNER = "10.64.0.0/10"


@dataclass
class LoadNetwork:
    """Creates and removes the two namespaces (``up`` removes a stale pair first)."""

    prefix: str = "gwload-"
    sources: str = SOURCES
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resp_ns = f"{self.prefix}resp"
        self.init_ns = f"{self.prefix}init"
        self.namespaces = [self.resp_ns, self.init_ns]
        #: the responder as a lab site (what StrongswanPeer and the gateway configs take)
        self.responder = Site("resp", self.resp_ns, self.resp_ns, RESPONDER_LAN, "10.1.0.10",
                              "10.1.0.1", RESPONDER, "198.18.0.0/24", INITIATORS_HOP)

    def ns(self, namespace: str, *cmd: str, check: bool = True) -> None:
        run(["ip", "netns", "exec", namespace, *cmd], check=check)

    def up(self) -> None:
        self.down()
        for name in self.namespaces:
            run(["ip", "netns", "add", name])
            self.ns(name, "ip", "link", "set", "lo", "up")
        run(["ip", "-n", self.resp_ns, "link", "add", "wan0", "type", "veth", "peer", "name", "ld0",
             "netns", self.init_ns])
        self.ns(self.resp_ns, "ip", "addr", "add", f"{RESPONDER}/24", "dev", "wan0")
        self.ns(self.init_ns, "ip", "addr", "add", f"{INITIATORS_HOP}/24", "dev", "ld0")
        for ns, dev in ((self.resp_ns, "wan0"), (self.init_ns, "ld0")):
            self.ns(ns, "ip", "link", "set", dev, "up")
        # (a veth pair, not a dummy: this kernel may have no dummy driver)
        self.ns(self.resp_ns, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
        self.ns(self.resp_ns, "ip", "link", "set", "lan1", "up")
        self.ns(self.resp_ns, "ip", "addr", "add", "10.1.0.1/24", "dev", "lan0")
        self.ns(self.resp_ns, "ip", "link", "set", "lan0", "up")
        self.ns(self.resp_ns, "ip", "route", "add", self.sources, "via", INITIATORS_HOP)
        self.ns(self.init_ns, "ip", "route", "add", "local", self.sources, "dev", "lo")

    def down(self) -> None:
        """Remove both namespaces; processes still in them are killed first."""
        remove_namespaces(self.namespaces)


# -- the processes measured ----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads and its reaped children
    (/proc/PID/stat fields 14-17): what a responder spent, however busy the machine was."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS of /proc/PID/status) in MiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise LabError(f"no VmRSS for process {pid}")


def load_average() -> float:
    """The 1-minute load average (how busy the machine was around a measurement)."""
    return os.getloadavg()[0]


class LoadProcess:
    """``python -m appliance.lab.ikeload ARGS`` in the initiators' namespace.

    Its progress lines go to ``say``; ``go_at`` is when it started initiating and
    ``report_at`` when its JSON report arrived (both ``time.monotonic()``).  With
    ``--hold`` it keeps its SAs until ``release()`` closes its stdin.
    """

    def __init__(self, net: LoadNetwork, args: list[str], log: Path,
                 say: Callable[[str], None]) -> None:
        self.say = say
        self.log = log
        self.ready = False
        self.go_at: float | None = None
        self.report_at: float | None = None
        self.report: dict[str, Any] | None = None
        self._err = open(log, "wb")  # noqa: SIM115 - the child's stderr, closed in release()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", net.init_ns, sys.executable, "-m", "appliance.lab.ikeload", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def poll(self, timeout: float) -> None:
        """Read what it printed within ``timeout`` seconds (progress, ``go:``, the report)."""
        assert self.proc.stdout is not None
        if not self._sel.select(timeout):
            return
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        now = time.monotonic()
        if not chunk:
            if self.proc.poll() is None:
                self.proc.wait(timeout=5)
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.report = json.loads(line)
                self.report_at = now
            elif line:
                if " go: " in line and self.go_at is None:
                    self.go_at = now
                if line.endswith("] ready"):
                    self.ready = True
                    continue
                self.say("  " + line)

    @property
    def exited(self) -> bool:
        return self.proc.poll() is not None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for a ``--wait-start`` generator to be ready; ``start()`` lets it go."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.exited or time.monotonic() > deadline:
                raise LabError(f"the load generator did not get ready: {self.tail()}")
            self.poll(0.2)

    def start(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def wait_go(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.go_at is None:
            if self.exited or time.monotonic() > deadline:
                raise LabError(f"the load generator did not start: {self.tail()}")
            self.poll(0.2)

    def wait_report(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.report is None:
            if self.exited:
                self.poll(0.1)
                if self.report is None:
                    raise LabError(f"the load generator exited with {self.proc.returncode} "
                                   f"and no report: {self.tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"no report from the load generator within {timeout:.0f} s")
            self.poll(0.2)
        return self.report

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def release(self) -> None:
        """Close its stdin (a ``--hold`` generator lets go of its SAs and exits); kill it if
        it lingers."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        finally:
            self._sel.close()
            self._err.close()


class Profiler:
    """py-spy sampling a process without stopping it (raw collapsed stacks in ``out``),
    summarised as the functions with the most samples."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise LabError(f"no {spy}: install py-spy into the venv (pip install py-spy)")
        # GWBENCH_PY_SPY_GIL=1: only the thread holding the GIL (Python work, without the
        # time threads spend waiting for it or in system calls)
        gil = ["--gil"] if os.environ.get("GWBENCH_PY_SPY_GIL") else []
        self.proc = subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw",
                                      "--rate", "200", "--nonblocking", *gil, "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the summary (``summarise_profile``)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return summarise_profile(self.out)

    @staticmethod
    def show(profile: dict[str, Any], say: Callable[[str], None], top: int = 12) -> None:
        for kind in ("self", "total"):
            say(f"  profile ({profile['samples']} samples), {kind} time:")
            for frame, share in profile[kind][:top]:
                say(f"    {share:5.1f}%  {frame}")


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks (all threads): the share of samples in each function
    itself ("self"), and under each of our own functions (gateway/, "total")."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = []
        for f in stack.split(";"):  # "function (path/file.py:line)"
            function, _, where = f.partition(" (")
            frames.append(f"{function} ({where.rsplit(':', 1)[0].rstrip(')')})")
        own[frames[-1]] += n
        for frame in set(frames):
            if "gateway/" in frame and "gateway/cli.py" not in frame and "__main__" not in frame:
                total[frame] += n
    return {"samples": samples,
            "self": [(f, round(100 * n / samples, 1)) for f, n in own.most_common(top)] if samples else [],
            "total": [(f, round(100 * n / samples, 1)) for f, n in total.most_common(top)] if samples else []}
