"""Graceful shutdown of a real ``drift serve`` process by a real signal.

First SIGTERM: /healthz and /ws answer 503, every WebSocket is closed with
1001, the process exits 0 within --shutdown-timeout (even when a peer does not
read, so its close cannot be flushed). A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import aiohttp
import pytest

from drift.harness.serve import AsyncServeProcess
from drift.harness.waiting import until
from tests.conftest import StartServe
from tests.support.wsclient import TIMEOUT, WsClient, pair

pytestmark = pytest.mark.slow

#: An offer just under the frame cap, so a few hundred fill every buffer on the way.
BIG_OFFER = json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": "v=0\r\n" + "x" * 60_000}})


async def test_sigterm_closes_every_websocket_with_1001_and_exits_0(
    drift_serve: StartServe,
) -> None:
    proc = await drift_serve("--shutdown-timeout", "5")
    answerer, offerer = await pair(proc.ws_url)
    idle = await WsClient.connect(proc.ws_url)
    waiting = await WsClient.connect(proc.ws_url)
    await waiting.send({"type": "join"})
    await waiting.expect("waiting")
    clients = [answerer, offerer, idle, waiting]

    sent_at = time.monotonic()
    proc.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(c.expect_close() for c in clients))
    status = await proc.wait(timeout=5 + TIMEOUT)
    took = time.monotonic() - sent_at
    for c in clients:
        await c.close()

    assert codes == [1001] * 4
    assert status == 0, proc.output()
    assert took < 5, f"exit took {took:.2f} s, over --shutdown-timeout"
    events = [json.loads(line)["event"] for line in proc.stderr if line.startswith("{")]
    assert events.index("server_signal") < events.index("server_draining")
    assert events[-1] == "server_stopped"


#: A server that waits on a peer that does not read, as drift serve once did.
WEDGEABLE = (
    "--max-pending-bytes", "0", "--send-timeout", "0",
    "--unsafe", "await-writes", "--unsafe", "read-after-close",
)  # fmt: skip


async def wedge(url: str) -> tuple[WsClient, WsClient, asyncio.Task[None]]:
    """A pair whose answerer never reads while the offerer relays megabytes to it.

    The server's writes to the answerer stall, so its close frame cannot be
    flushed and the drain cannot finish by itself: the state a real stuck
    peer (a frozen tab behind a dead NAT) leaves the server in.
    Returns once one of the offerer's sends has been blocked for a second,
    which only happens when the server has stopped reading it.
    """
    reader, writer = await pair(url)
    progress = asyncio.Event()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while True:
            await writer.ws.send_str(BIG_OFFER)
            sent += 1
            progress.set()

    task = asyncio.create_task(flood())
    async with asyncio.timeout(TIMEOUT * 6):
        while True:
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), 1.0)
            except TimeoutError:
                assert not task.done(), task
                if sent > 50:
                    return reader, writer, task


def logged_events(proc: AsyncServeProcess) -> list[str]:
    return [json.loads(line)["event"] for line in proc.stderr if line.startswith("{")]


async def close_wedge(reader: WsClient, writer: WsClient, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await task
    for client in (reader, writer):
        client.ws._response.close()  # no polite close: the server is gone
        await client.session.close()


async def test_draining_answers_503_and_a_second_signal_forces_exit(
    drift_serve: StartServe,
) -> None:
    # A drift serve never waits on a stuck peer; the unsafe switches bring the
    # old waiting back, the only way left to wedge a drain on purpose.
    proc = await drift_serve("--shutdown-timeout", "60", "--rate-limit", "0", *WEDGEABLE)
    status, _ = await proc.get("/healthz")
    assert status == 200
    reader, writer, task = await wedge(proc.ws_url)

    proc.signal(signal.SIGTERM)

    async def draining() -> bool:
        return (await proc.get("/healthz"))[0] == 503

    await until(draining)
    # New WebSockets are refused while draining (a plain HTTP 503, not an upgrade).
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(proc.ws_url)
        async with session.get(proc.url + "/healthz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "draining"
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert refused.value.status == 503
    assert refused.value.headers is not None
    assert "script-src 'self'" in refused.value.headers["Content-Security-Policy"]
    assert proc.proc.returncode is None, "the wedged drain should still be running"

    sent_at = time.monotonic()
    proc.signal(signal.SIGTERM)
    status = await proc.wait(timeout=TIMEOUT)
    took = time.monotonic() - sent_at
    await close_wedge(reader, writer, task)

    assert status == 128 + signal.SIGTERM, proc.output()
    assert took < TIMEOUT
    assert "server_forced_exit" in logged_events(proc)


async def test_a_peer_that_does_not_read_cannot_hold_shutdown_past_the_timeout(
    drift_serve: StartServe,
) -> None:
    proc = await drift_serve("--shutdown-timeout", "1.5", "--rate-limit", "0", *WEDGEABLE)
    reader, writer, task = await wedge(proc.ws_url)
    bystander = await WsClient.connect(proc.ws_url)

    sent_at = time.monotonic()
    proc.signal(signal.SIGINT)
    assert await bystander.expect_close() == 1001
    status = await proc.wait(timeout=1.5 + TIMEOUT)
    took = time.monotonic() - sent_at
    await bystander.close()
    await close_wedge(reader, writer, task)

    assert status == 0, proc.output()
    # The deadline, plus the teardown of what was aborted at it.
    # (aiohttp alone would wait 10 s for the close reply, or forever on a full socket.)
    assert took < 1.5 + TIMEOUT, f"exit took {took:.2f} s"
    assert "server_shutdown_timeout" in logged_events(proc)
