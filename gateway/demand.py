"""Demand-dial: when a connection is dialed, hung up, and dialed again.

A demand-dial interface (dial-on-demand, as pppd's ``demand`` and Windows RRAS demand-dial
interfaces have it) keeps its routes and a trap policy in place while down; the first
packet for its remote subnets arrives here as a trigger (the dataplane's Acquire, RFC 4301
5.1.1) and the packets wait in the dataplane's hold queue.  This state machine decides what
the shell does about it, with time as a parameter:

* ``idle`` (on hook): a trigger dials;
* ``dialing``: up → ``up``; a failure or ``dial_timeout`` → ``backoff``;
* ``up``: no data packet either way for ``idle_timeout`` → hang up (``idle``);
  the tunnel going down otherwise → ``idle`` (the next packet dials again);
* ``backoff``: no dialing before the wait is over (``redial_min``, doubling after each
  failure up to ``redial_max``, back to the start once a dial succeeded); a trigger in the
  meantime dials when the wait ends.

A persistent interface dials at start and whenever it is down, and never hangs up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["idle", "dialing", "up", "backoff"]
Action = Literal["dial", "hangup", "failed"]


@dataclass(frozen=True)
class DemandSettings:
    idle_timeout: float | None = 300.0
    persistent: bool = False
    dial_timeout: float = 30.0
    redial_min: float = 5.0
    redial_max: float = 120.0


@dataclass
class DemandStats:
    dials: int = 0
    connects: int = 0
    failures: int = 0
    idle_disconnects: int = 0
    drops: int = 0  # went down for another reason (the peer, DPD, an operator)


class DemandDialer:
    """One demand-dial interface. The shell feeds it triggers, the tunnel's fate and its
    packet count, and does what `poll` returns."""

    def __init__(self, name: str, settings: DemandSettings) -> None:
        self.name = name
        self.settings = settings
        self.state: State = "idle"
        self.stats = DemandStats()
        self.wanted = settings.persistent  # traffic waits (or the interface is persistent)
        self.since = 0.0  # when the current state began
        self.retry_at = 0.0
        self.backoff = 0.0
        self.last_activity = 0.0
        self._packets = -1
        self.last_failure = ""

    # -- input -------------------------------------------------------------------------------
    def trigger(self, now: float) -> None:
        """A packet waits for the tunnel (an Acquire from a trap policy)."""
        self.wanted = True

    def connected(self, now: float) -> None:
        if self.state != "up":
            self.stats.connects += 1
        self.state, self.since = "up", now
        self.backoff = 0.0
        self.wanted = self.settings.persistent
        self.last_activity = now

    def disconnected(self, now: float, reason: str = "") -> None:
        """The tunnel went down (not by `poll`'s hang-up): a dial in progress failed, an up
        tunnel was dropped; the next packet (or persistence) dials again."""
        if self.state == "dialing":
            self._failed(now, reason or "the tunnel did not come up")
        elif self.state == "up":
            self.stats.drops += 1
            self.state, self.since = "idle", now
            self.wanted = self.settings.persistent

    def failed(self, now: float, reason: str) -> None:
        """The dial failed (IKE, or L2TP/PPP above it): wait before the next."""
        if self.state in ("dialing", "up"):
            self._failed(now, reason)

    def traffic(self, packets: int, now: float) -> None:
        """The tunnel's data packet count (both ways, ever increasing): a change is activity."""
        if packets != self._packets:
            self._packets = packets
            self.last_activity = now

    # -- what to do --------------------------------------------------------------------------
    def poll(self, now: float) -> Action | None:
        s = self.settings
        if self.state == "idle" and self.wanted:
            return self._dial(now)
        if self.state == "backoff" and now >= self.retry_at:
            self.state, self.since = "idle", now
            if self.wanted:
                return self._dial(now)
        if self.state == "dialing" and now >= self.since + s.dial_timeout:
            self._failed(now, f"not up after {s.dial_timeout:g} s")
            return "failed"
        if (self.state == "up" and not s.persistent and s.idle_timeout is not None
                and now >= self.last_activity + s.idle_timeout):
            self.stats.idle_disconnects += 1
            self.state, self.since = "idle", now
            self.wanted = False
            return "hangup"
        return None

    def next_deadline(self) -> float | None:
        s = self.settings
        if self.state == "idle" and self.wanted:
            return self.since
        if self.state == "backoff":
            return self.retry_at
        if self.state == "dialing":
            return self.since + s.dial_timeout
        if self.state == "up" and not s.persistent and s.idle_timeout is not None:
            return self.last_activity + s.idle_timeout
        return None

    def _dial(self, now: float) -> Action:
        self.state, self.since = "dialing", now
        self.stats.dials += 1
        return "dial"

    def _failed(self, now: float, reason: str) -> None:
        s = self.settings
        self.stats.failures += 1
        self.last_failure = reason
        self.backoff = min(s.redial_max, max(s.redial_min, self.backoff * 2))
        self.state, self.since = "backoff", now
        self.retry_at = now + self.backoff
        self.wanted = s.persistent

    def describe(self, now: float) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state, "for": round(now - self.since, 1),
                                  **vars(self.stats)}
        if self.state == "backoff":
            out["retry_in"] = round(max(0.0, self.retry_at - now), 1)
        if self.state == "up" and self.settings.idle_timeout is not None and not self.settings.persistent:
            out["idle"] = round(now - self.last_activity, 1)
        return out
