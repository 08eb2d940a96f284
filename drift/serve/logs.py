"""Structured logging: one JSON object per line, or a readable console line.

Callers log an *event name* as the message and put correlation ids and figures
in ``extra={"fields": {...}}``. Nothing here knows about SDP or secrets: the
server never hands them to a logger in the first place.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final, TextIO

import msgspec

# msgspec encodes a log line several times faster than json.dumps; under a
# join storm the log is a sixth of the server's work (docs/performance.md).
_encode: Final = msgspec.json.Encoder(enc_hook=str).encode

LOGGER_NAME = "drift"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                # A field may never overwrite ts/level/event/logger.
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()} {tail}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def json_event(event: str, level: int = logging.INFO, **fields: Any) -> str:
    """One line as :class:`JsonFormatter` writes it, for what the server prints outside a
    logger (its ready line, a fatal error): with ``--log-format json`` every line is JSON."""
    record = logging.LogRecord(LOGGER_NAME, level, "", 0, event, None, None)
    record.fields = fields
    return JsonFormatter().format(record)


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route drift's and aiohttp's loggers to one handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would print every /healthz probe at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    return logging.getLogger(name)
