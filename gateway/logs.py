"""Logging: one readable line per event on stderr, or one JSON object per line.

Events are logged as ``event(log, "sa.installed", connection="branch1", spi="0x1001")``;
the text form is ``2026-11-22T10:00:00.123Z INFO sa.installed connection=branch1 ...``.

Lines a stranger can cause with one unauthenticated packet (`LIMITED_EVENTS`) go through
a rate limiter (`LogLimiter`, applied by `RateLimitFilter` on the handler): per interval a
few per event and source, a few more per event, then one ``log.suppressed`` summary per
event, so a flood of packets never becomes a flood of lines.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Events one unauthenticated packet (or a half-open SA it left behind) can log: they are
#: rate-limited.  Lines of authenticated peers (ike.up, child.up, ...) never are.
LIMITED_EVENTS = frozenset({
    # IKEv2: requests refused before any state, messages that fail their checks
    "ike.negotiation_failed", "ike.auth_failed", "ike.invalid_ke", "ike.init_answered",
    "ike.closed", "ike.malformed", "ike.unprotected", "ike.integrity_failed",
    "ike.cookie_requested", "ike.invalid_ke_retry", "ike.internal_error", "ike.send_failed",
    # IKEv1: Main Mode started or refused, messages that fail their checks, NAT seen in it
    "ikev1.main_mode", "ikev1.malformed", "ikev1.aggressive_mode_refused", "ikev1.bad_hash",
    "ikev1.peer_error", "ikev1.unsupported_exchange", "ikev1.nat_detected", "ikev1.float",
})


def event(logger: logging.Logger, what: str, level: int = logging.INFO, /, **fields: Any) -> None:
    logger.log(level, what, extra={"event_fields": fields})


#: a character that makes a value quoted (JSON string syntax)
_NEEDS_QUOTES = re.compile('[ "=]').search


def _format_value(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if not text or _NEEDS_QUOTES(text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``2026-11-22T10:00:00.123Z INFO what key=value ...``.  A few lines per handshake
    pass here (bench/handshakes): the date and time of the current second are made once."""

    _second: int | None = None
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # (format runs under the handler's lock)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        parts = [f"{self._stamp}.{int(record.msecs):03d}Z", record.levelname, record.getMessage()]
        fields = getattr(record, "event_fields", None)
        if fields:
            parts.extend(f"{k}={_format_value(v)}" for k, v in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "event_fields", None)
        if fields:
            obj.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                        for k, v in fields.items()})
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, sort_keys=False)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # Libraries (pyroute2 logs every netlink message at DEBUG, some through the root
    # logger) speak only when something is wrong.
    handler.addFilter(lambda r: r.name.startswith("gateway") or r.levelno >= logging.WARNING)
    handler.addFilter(LIMIT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Suppressed:
    """Lines of one event left out during one interval, and from how many sources."""

    what: str
    lines: int
    sources: int


@dataclass
class LogLimiter:
    """Per ``interval`` seconds: at most ``per_source`` lines of one event from one source,
    ``per_event`` of one event and ``total`` of all limited events; what is left out is
    counted and handed back by `take` once the interval is over (one summary per event).

    Sans-IO: the caller passes the time.  At most ``total`` lines plus one summary per
    event pass per interval, whatever the number of packets or source addresses.
    """

    interval: float = 10.0
    per_source: int = 3
    per_event: int = 10
    total: int = 30
    #: distinct sources remembered per event for the summary (bounds memory in a flood)
    max_sources: int = 1000
    _start: float | None = None
    _by_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    _by_event: Counter[str] = field(default_factory=Counter)
    _passed: int = 0
    _suppressed: Counter[str] = field(default_factory=Counter)
    _sources: dict[str, set[str]] = field(default_factory=dict)
    _done: list[Suppressed] = field(default_factory=list)

    def allow(self, what: str, source: str, now: float) -> bool:
        """Whether a line of event ``what`` caused by ``source`` may be logged now."""
        self._roll(now)
        key = (what, source)
        if (self._by_source[key] >= self.per_source or self._by_event[what] >= self.per_event
                or self._passed >= self.total):
            self._suppressed[what] += 1
            sources = self._sources.setdefault(what, set())
            if len(sources) < self.max_sources:
                sources.add(source)
            return False
        self._by_source[key] += 1
        self._by_event[what] += 1
        self._passed += 1
        return True

    def take(self, now: float) -> list[Suppressed]:
        """Summaries of the intervals that are over (each handed out once)."""
        self._roll(now)
        done, self._done = self._done, []
        return done

    def _roll(self, now: float) -> None:
        start = self._start
        if start is not None and start <= now < start + self.interval:
            return
        self._done += [Suppressed(what, n, len(self._sources.get(what, ())))
                       for what, n in sorted(self._suppressed.items())]
        self._start = now
        self._by_source.clear()
        self._by_event.clear()
        self._passed = 0
        self._suppressed.clear()
        self._sources.clear()


class RateLimitFilter(logging.Filter):
    """Applies a `LogLimiter` to the records of ``events`` (by event name and the address
    in their ``peer`` field); `report` logs the summaries of what it left out."""

    def __init__(self, limiter: LogLimiter | None = None, events: frozenset[str] = LIMITED_EVENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.limiter = limiter or LogLimiter()
        self.events = events
        self.clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        what = msg.split(" ", 1)[0]
        if what not in self.events:
            return True
        fields = getattr(record, "event_fields", None) or {}
        peer = fields.get("peer")
        if peer is None and " peer=" in msg and isinstance(record.args, tuple) and record.args:
            peer = record.args[0]  # a %-style line: "ike.send_failed peer=%s:%d ..."
        source = str(peer).rsplit(":", 1)[0] if peer else "-"
        return self.limiter.allow(what, source, self.clock())

    def report(self, logger: logging.Logger) -> None:
        for s in self.limiter.take(self.clock()):
            event(logger, "log.suppressed", logging.WARNING, event=s.what, lines=s.lines,
                  sources=s.sources if s.sources < self.limiter.max_sources else f"{s.sources}+",
                  seconds=self.limiter.interval)


#: the filter `setup` puts on the handler; `report_suppressed` logs its summaries
LIMIT = RateLimitFilter()


def report_suppressed(logger: logging.Logger) -> None:
    """Log a summary of the rate-limited lines left out in intervals that are over."""
    LIMIT.report(logger)
