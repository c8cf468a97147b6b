"""The log's rate limit: a flood of packets must not become a flood of lines."""

from __future__ import annotations

import logging

from gateway.logs import LIMITED_EVENTS, LogLimiter, RateLimitFilter, Suppressed, TextFormatter, event


def test_per_source_then_per_event_then_total() -> None:
    lim = LogLimiter(interval=10.0, per_source=3, per_event=10, total=30)
    now = 100.0
    assert [lim.allow("ike.malformed", "198.51.100.7", now) for _ in range(5)] == [True] * 3 + [False] * 2
    # other sources: the event's budget (10) is shared
    allowed = sum(lim.allow("ike.malformed", f"100.64.0.{i}", now) for i in range(50))
    assert allowed == 7
    # another event has its own budget, until the total (30) is spent
    assert sum(lim.allow("ike.auth_failed", f"100.64.1.{i}", now) for i in range(50)) == 10
    assert sum(lim.allow("ikev1.main_mode", f"100.64.2.{i}", now) for i in range(50)) == 10
    assert sum(lim.allow("ike.closed", "-", now) for _ in range(5)) == 0  # total reached
    assert lim.take(now + 9.9) == []  # the interval is not over yet


def test_summary_once_the_interval_is_over() -> None:
    lim = LogLimiter(interval=10.0, per_source=2, per_event=5, total=30)
    for i in range(1000):
        lim.allow("ike.negotiation_failed", f"100.64.{i // 250}.{i % 250}", 0.0)
    for _ in range(7):
        lim.allow("ike.malformed", "192.0.2.9", 1.0)
    assert lim.take(10.0) == [Suppressed("ike.malformed", 5, 1),
                              Suppressed("ike.negotiation_failed", 995, 995)]
    assert lim.take(10.5) == []  # each summary once
    # a new interval: budgets are back
    assert lim.allow("ike.malformed", "192.0.2.9", 10.5)


def test_sources_in_summaries_are_bounded() -> None:
    lim = LogLimiter(per_source=1, per_event=1, total=1, max_sources=100)
    for i in range(5000):
        lim.allow("ike.malformed", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
    [s] = lim.take(60.0)
    assert s.lines == 4999 and s.sources == 100


def test_a_bounded_number_of_lines_whatever_the_flood() -> None:
    """A minute of 5000 packets/s from 5000 addresses, across several events: at most
    ``total`` lines plus one summary per event and interval."""
    lim = LogLimiter()
    lines = 0
    events = sorted(LIMITED_EVENTS)[:5]
    for tick in range(60 * 100):  # 10 ms steps
        now = tick / 100
        for k in range(50):
            i = tick * 50 + k
            lines += lim.allow(events[i % 5], f"100.64.{i // 256 % 20}.{i % 256}", now)
        lines += len(lim.take(now))
    lines += len(lim.take(1000.0))
    assert lines <= 6 * (lim.total + 5) + 5


def test_filter_limits_only_the_listed_events_and_reports() -> None:
    clock = [0.0]
    flt = RateLimitFilter(LogLimiter(per_source=2, per_event=4, total=10), clock=lambda: clock[0])
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger("test.loglimit")
    handler = Keep()
    handler.addFilter(flt)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    for i in range(100):
        event(logger, "ike.negotiation_failed", logging.WARNING, connection=None,
              peer=f"100.64.0.{i % 3}:{1000 + i}", stage="ike_init", reason="no_config")
        event(logger, "ike.up", connection="branch", peer="198.51.100.1:500")  # never limited
    # %-style lines (the dataplane's ike.send_failed) are keyed by their first argument
    for _ in range(10):
        logger.warning("ike.send_failed peer=%s:%d error=%s", "100.64.9.9", 500, "ENOBUFS")
    assert sum(r.msg == "ike.up" for r in captured) == 100
    assert sum(r.msg == "ike.negotiation_failed" for r in captured) == 4  # 2 + 2 of 3 sources
    assert sum(str(r.msg).startswith("ike.send_failed") for r in captured) == 2
    clock[0] = 10.0
    flt.report(logger)
    summaries = [TextFormatter().format(r) for r in captured if r.msg == "log.suppressed"]
    assert len(summaries) == 2
    expected = "event=ike.negotiation_failed lines=96 sources=3 seconds=10.0"
    assert any(expected in s for s in summaries), summaries
    assert any("event=ike.send_failed lines=8 sources=1" in s for s in summaries), summaries
