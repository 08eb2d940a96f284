"""The server's log output: JSON lines, and the writes that carry them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from drift.serve.logs import (
    FLUSH_LINES,
    BatchingStreamHandler,
    JsonFormatter,
    flush_logs,
    setup_logging,
)


class CountingStream(io.StringIO):
    """A stream that remembers how many writes carried its text, and says when one came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written: asyncio.Event | None = None

    def write(self, text: str) -> int:
        self.writes += 1
        if self.written is not None:
            self.written.set()
        return super().write(text)


def record(event: str, created: float) -> logging.LogRecord:
    rec = logging.LogRecord("drift.test", logging.INFO, "", 0, event, None, None)
    rec.created = created
    rec.msecs = int((created - int(created)) * 1000) + 0.0
    return rec


def test_json_timestamps_follow_each_records_time_across_seconds() -> None:
    formatter = JsonFormatter()
    # The same second twice (the cached part reused), then the next second,
    # then an earlier one: each line must carry its own record's time.
    # (Fractions a float holds exactly, so the milliseconds are exact too.)
    times = [1_700_000_000.125, 1_700_000_000.875, 1_700_000_001.0625, 1_699_999_999.5]
    stamps = [json.loads(formatter.format(record("e", t)))["ts"] for t in times]
    assert stamps == [
        "2023-11-14T22:13:20.125Z",
        "2023-11-14T22:13:20.875Z",
        "2023-11-14T22:13:21.062Z",
        "2023-11-14T22:13:19.500Z",
    ]


def handler_on(stream: CountingStream) -> logging.Logger:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("drift.test.batching")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


async def test_lines_logged_in_a_loop_go_out_together_in_order_soon_after() -> None:
    stream = CountingStream()
    stream.written = asyncio.Event()
    logger = handler_on(stream)
    for n in range(3):
        logger.info("event_%d", n)
    assert stream.getvalue() == ""  # not yet: the handler's timer writes them
    await asyncio.wait_for(stream.written.wait(), 5)
    assert stream.writes == 1
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["event_0", "event_1", "event_2"]
    stream.written.clear()
    logger.info("later")
    await asyncio.wait_for(stream.written.wait(), 5)
    assert stream.writes == 2
    assert json.loads(stream.getvalue().splitlines()[-1])["event"] == "later"


async def test_pending_lines_are_written_at_once_past_the_line_cap() -> None:
    stream = CountingStream()
    logger = handler_on(stream)
    for n in range(FLUSH_LINES):
        logger.info("event_%d", n)
    lines = stream.getvalue().splitlines()
    assert stream.writes == 1
    assert [json.loads(line)["event"] for line in (lines[0], lines[-1])] == [
        "event_0",
        f"event_{FLUSH_LINES - 1}",
    ]


def test_a_line_left_by_a_stopped_loop_goes_out_before_the_next_one() -> None:
    stream = CountingStream()
    logger = handler_on(stream)

    async def main() -> None:
        logger.info("in_loop")

    asyncio.run(main())  # returns before the handler's timer fires
    logger.info("after_loop")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["in_loop", "after_loop"]


def test_a_line_logged_outside_a_loop_is_written_at_once() -> None:
    stream = CountingStream()
    logger = handler_on(stream)
    logger.info("no_loop")
    assert json.loads(stream.getvalue())["event"] == "no_loop"


def test_a_line_logged_from_another_thread_is_written_at_once() -> None:
    stream = CountingStream()
    logger = handler_on(stream)

    async def main() -> None:
        # A thread without a loop of its own, while this loop runs.
        await asyncio.to_thread(logger.info, "from_thread")
        assert json.loads(stream.getvalue())["event"] == "from_thread"

    asyncio.run(main())


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging changes the process's logging: put it back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile, logging.logThreads)
    saved_flags = (logging.logProcesses, logging.logMultiprocessing)
    yield
    root.handlers[:], level, logging._srcfile, logging.logThreads = saved
    root.setLevel(level)
    logging.logProcesses, logging.logMultiprocessing = saved_flags


async def test_flush_logs_writes_pending_lines_now(root_logging: None) -> None:
    stream = CountingStream()
    setup_logging("info", "json", stream)
    logging.getLogger("drift.test.flush").warning("before_exit", extra={"fields": {"n": 1}})
    assert stream.getvalue() == ""
    flush_logs()  # what the server does before os._exit
    line = json.loads(stream.getvalue())
    assert (line["event"], line["level"], line["n"]) == ("before_exit", "warning", 1)
