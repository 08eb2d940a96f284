"""Structured logging: one JSON object per line, or a readable console line.

Callers log an *event name* as the message and put correlation ids and figures
in ``extra={"fields": {...}}``. Nothing here knows about SDP or secrets: the
server never hands them to a logger in the first place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import Any, Final, TextIO

import msgspec

# msgspec encodes a log line several times faster than json.dumps; under a
# join storm the log is a sixth of the server's work (docs/performance.md).
_encode: Final = msgspec.json.Encoder(enc_hook=str).encode

LOGGER_NAME = "drift"
#: Seconds a line may wait for the write that carries it (see BatchingStreamHandler).
FLUSH_DELAY: Final = 0.02
#: Pending lines that are written at once, whatever the delay (bounds the buffer).
FLUSH_LINES: Final = 1000


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The timestamp's date and time to the second, formatted once a second
        # rather than once a line (a server logs a few lines per connection).
        self._second = -1
        self._stamp = ""

    def _ts(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record),
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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of :data:`FLUSH_DELAY` seconds in one write.

    A server logs a few lines per connection, and one ``write`` (a system call)
    per line cost about as much as making the line; so did one per event-loop
    iteration, which under load holds only a few lines. Inside a running loop a
    line is written at most :data:`FLUSH_DELAY` seconds after it was logged (or
    at once past :data:`FLUSH_LINES` pending lines); outside one (another
    thread, before or after the loop) at once, after any pending. Process exit
    writes what is left (``logging.shutdown``); whoever leaves by ``os._exit``
    calls :func:`flush_logs` first.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        #: the loop that will write the pending lines (None: none will)
        self._flusher: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        pending = self._pending
        pending.append(line)
        if len(pending) >= FLUSH_LINES:
            self.flush()
            return
        flusher = self._flusher
        if flusher is not None and flusher.is_running():
            return  # that loop's timer writes it (asking for the loop costs a getpid)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flusher = loop
        loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            self._flusher = None
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending.clear()
                # Like logging's own handlers: a closed or broken stream loses
                # the lines, it never takes the server down.
                with contextlib.suppress(OSError, ValueError):
                    self.stream.write(text)
            with contextlib.suppress(OSError, ValueError):
                super().flush()


def flush_logs() -> None:
    """Write every pending line now (before ``os._exit``, or a line other output must follow)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route drift's and aiohttp's loggers to one handler in the chosen format."""
    handler = BatchingStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Neither format prints a record's source line, thread or process, yet
    # logging looks them up for every record (the caller by walking the stack):
    # the switches the logging HOWTO's "Optimization" section names turn that off.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp's access log would print every /healthz probe at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    return logging.getLogger(name)
