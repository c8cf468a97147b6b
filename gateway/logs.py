"""Logging: one readable line per event on stderr, or one JSON object per line.

Events are logged as ``event(log, "sa.installed", connection="branch1", spi="0x1001")``;
the text form is ``2026-11-22T10:00:00.123Z INFO sa.installed connection=branch1 ...``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


def event(logger: logging.Logger, what: str, level: int = logging.INFO, /, **fields: Any) -> None:
    logger.log(level, what, extra={"event_fields": fields})


def _format_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{ts}.{int(record.msecs):03d}Z", record.levelname, record.getMessage()]
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
