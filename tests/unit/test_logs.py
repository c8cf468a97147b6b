"""Log lines: one readable line per event, or one JSON object per line."""

from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter, TextFormatter, event


def record_of(what: str, **fields: object) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger("test.logs")
    logger.handlers[:] = [Keep()]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    event(logger, what, logging.WARNING, **fields)
    return captured[0]


def test_text_line_has_event_and_fields() -> None:
    line = TextFormatter().format(record_of("sa.installed", connection="branch1", spi="0x1001",
                                            detail="two words"))
    assert line.endswith('WARNING sa.installed connection=branch1 spi=0x1001 detail="two words"')
    assert "\n" not in line


def test_json_line_is_one_object() -> None:
    line = JsonFormatter().format(record_of("dataplane.drops", replay=3, name="hq"))
    obj = json.loads(line)
    assert obj["event"] == "dataplane.drops"
    assert obj["level"] == "warning"
    assert obj["replay"] == 3 and obj["name"] == "hq"


def test_text_line_time_and_quoting() -> None:
    """The date and time are made once per second; values with a space, a quote or an
    equals sign, and empty ones, are JSON strings; others are as str() gives them."""
    fmt = TextFormatter()
    rec = record_of("x.y", a="", b='say "hi"', c="k=v", d=True, e=0.5, f=None, g="plain")
    for created, stamp in ((1795000000.25, "2026-11-18T11:06:40.250Z"),
                           (1795000000.75, "2026-11-18T11:06:40.750Z"),
                           (1795000001.0, "2026-11-18T11:06:41.000Z"),
                           (1795000000.5, "2026-11-18T11:06:40.500Z")):
        rec.created, rec.msecs = created, (created - int(created)) * 1000
        assert fmt.format(rec) == (f'{stamp} WARNING x.y a="" b="say \\"hi\\"" c="k=v" d=True e=0.5 '
                                   'f=None g=plain')
