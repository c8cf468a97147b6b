"""IKE activity counted from the cores' events, for `gateway status` and the metrics.

The cores report what happened as events (gateway.ike.events); this module is the one
place that turns them into numbers an operator watches: handshakes completed and how long
they took, failures by reason, rekeys, dead peers.  It is fed by the daemon and read at
scrape time, so nothing on the packet path touches a metric.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.ike.events import AuthFailed, ChildSaUp, IkeSaDown, IkeSaUp, NegotiationFailed, PeerDead

#: Upper bounds (seconds) of the handshake-duration histogram: a PSK exchange on a LAN
#: takes milliseconds, a certificate chain over a lossy path seconds.
HANDSHAKE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


#: The connection label of failures no configured connection matched.
UNKNOWN = "-"


@dataclass
class Histogram:
    """Cumulative-ready bucket counts, a sum and a count (Prometheus histogram semantics)."""

    bounds: tuple[float, ...] = HANDSHAKE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(HANDSHAKE_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations <= it) including "+Inf", as exposition wants."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class IkeStats:
    """Counters keyed by connection and IKE version (1 or 2; 0 when no connection matched)."""

    established: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # reason "auth_failed:bad_psk"
    rekeys: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # kind "ike" | "child"
    children: Counter[tuple[str, int]] = field(default_factory=Counter)
    dead_peers: Counter[tuple[str, int]] = field(default_factory=Counter)
    handshakes: dict[int, Histogram] = field(default_factory=dict)
    other: Counter[str] = field(default_factory=Counter)  # totals by event, and the daemon's own

    def observe(self, ev: object, version: int) -> None:
        """Count one event of a connection negotiated with IKE ``version``.  An IKEv1 Phase 1
        rekey is a whole new Main Mode: it counts as a handshake and as a rekey."""
        if isinstance(ev, IkeSaUp):
            self.other["ike_up"] += 1
            if ev.auth == "rekey":
                self.rekeys[ev.connection, version, "ike"] += 1
            else:
                self.established[ev.connection, version] += 1
                self.handshakes.setdefault(version, Histogram()).observe(ev.seconds)
        elif isinstance(ev, IkeSaDown):
            if "rekeyed" in ev.reason and version == 1:  # IKEv1 says so when a new Main Mode took over
                self.rekeys[ev.connection, version, "ike"] += 1
        elif isinstance(ev, ChildSaUp):
            self.other["child_up"] += 1
            self.children[ev.connection, version] += 1
            if ev.rekey_of:
                self.rekeys[ev.connection, version, "child"] += 1
        elif isinstance(ev, AuthFailed):  # no connection when no config matched the peer
            self.failures[ev.connection or UNKNOWN, version, f"auth_failed:{ev.reason}"] += 1
        elif isinstance(ev, NegotiationFailed):
            self.failures[ev.connection or UNKNOWN, version, f"negotiation_failed:{ev.reason}"] += 1
        elif isinstance(ev, PeerDead):
            self.other["peer_dead"] += 1
            self.dead_peers[ev.connection, version] += 1

    def status(self) -> dict[str, dict[str, int]]:
        """The totals `gateway status` shows: events, and failures by reason."""
        failures: Counter[str] = Counter()
        for (_, _, reason), count in self.failures.items():
            failures[reason] += count
        return {"events": dict(sorted(self.other.items())),
                "failures": dict(sorted(failures.items()))}

    def snapshot(self) -> dict[str, Any]:
        """Everything, with tuple keys spelled out, for the metrics collector."""
        return {
            "established": [{"connection": c, "version": v, "count": n}
                            for (c, v), n in self.established.items()],
            "failures": [{"connection": c, "version": v, "reason": r, "count": n}
                         for (c, v, r), n in self.failures.items()],
            "rekeys": [{"connection": c, "version": v, "kind": k, "count": n}
                       for (c, v, k), n in self.rekeys.items()],
            "dead_peers": [{"connection": c, "version": v, "count": n}
                           for (c, v), n in self.dead_peers.items()],
            "handshakes": {v: {"buckets": h.cumulative(), "sum": h.total}
                           for v, h in self.handshakes.items()},
        }
