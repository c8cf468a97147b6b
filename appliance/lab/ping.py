"""Round-trip times with ping between lab namespaces: every packet's RTT, not just the
summary, so that medians and percentiles can be computed (``bench/latency``).

    result = ping_rtts(topo, topo.hq.lan_ns, topo.branch.lan_host, count=200, interval=0.01)
    print(rtt_stats(result))   # {"min": 0.08, "median": 0.11, "p99": 0.4, "max": 0.6, "loss": 0.0, ...}

The parsers are pure functions of iputils ping's output (``ping -n``, not ``-q``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.lab.topology import LabError, Topology

#: "64 bytes from 10.2.0.10: icmp_seq=7 ttl=61 time=0.312 ms" (iputils prints "time<1 ms"
#: style values only with very coarse clocks; read them as the bound).
_REPLY = re.compile(r"bytes from \S+: icmp_seq=(\d+) .*?time[=<]\s*([0-9.]+) ?ms")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass(frozen=True)
class PingResult:
    """What one ping run saw: the RTT (ms) of every answered request, in order of arrival."""

    sent: int
    received: int
    rtts: tuple[float, ...]

    @property
    def loss(self) -> float:
        """The fraction of requests that went unanswered (0..1)."""
        return 1.0 - self.received / self.sent if self.sent else 1.0


def parse_ping(output: str) -> PingResult:
    """Parse ``ping -n`` output: one RTT per reply line (duplicates, marked ``(DUP!)``,
    left out) and the transmitted/received counts of the summary."""
    rtts = []
    for line in output.splitlines():
        if "(DUP!)" in line:
            continue
        match = _REPLY.search(line)
        if match:
            rtts.append(float(match.group(2)))
    summary = _SUMMARY.search(output)
    if summary is None:
        raise LabError(f"ping gave no summary: {output[-500:]!r}")
    sent, received = int(summary.group(1)), int(summary.group(2))
    return PingResult(sent, received, tuple(rtts))


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 < p <= 100) by the nearest-rank method: the smallest value
    at least ``p`` % of the values are less than or equal to, always one of the values.
    None when there are none."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} not in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def rtt_stats(result: PingResult, digits: int = 3) -> dict[str, float | int | None]:
    """min, median, p99 and max RTT (ms, rounded), loss (fraction), sent and received."""
    rtts = result.rtts

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "min": rounded(min(rtts) if rtts else None),
        "median": rounded(statistics.median(rtts) if rtts else None),
        "p99": rounded(percentile(rtts, 99)),
        "max": rounded(max(rtts) if rtts else None),
        "loss": round(result.loss, 4),
        "sent": result.sent,
        "received": result.received,
    }


def ping_rtts(topology: Topology, src_ns: str, dst: str, count: int = 100,
              interval: float = 0.01, size: int = 56, wait: float = 2.0) -> PingResult:
    """``count`` pings from namespace ``src_ns`` to ``dst``, ``interval`` s apart (below
    0.2 s needs root), each answer awaited up to ``wait`` s; every RTT.  A LabError when
    no answer came back at all."""
    proc = topology.ns(src_ns, "ping", "-n", "-c", str(count), "-i", str(interval),
                       "-s", str(size), "-W", str(wait), dst, check=False,
                       timeout=count * interval + wait + 30)
    result = parse_ping(proc.stdout)
    if not result.rtts:
        raise LabError(f"ping {src_ns} -> {dst}: no answer of {result.sent} "
                       f"(exit {proc.returncode}) {proc.stderr.strip()[-300:]}")
    return result
