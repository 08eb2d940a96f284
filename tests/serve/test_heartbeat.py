"""The heartbeat wheel: one task pings silent connections and drops those that stay silent.

The wheel's rule is driven tick by tick on fake connections (no clock); two
server tests prove the wiring with real sockets: a client that never answers
a ping is dropped, one that answers stays however many intervals pass.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import aiohttp

from drift.client import urls
from drift.harness.waiting import until
from drift.serve.heartbeat import PING_FRAME, PONG_TICKS, TICKS, HeartbeatWheel
from tests.conftest import MakeServer
from tests.support.wsclient import TIMEOUT

HEARTBEAT = 0.4  # short, and the pong wait (0.2 s) leaves room for a busy machine


@dataclass
class FakeTransport:
    written: list[bytes] = field(default_factory=list)
    closing: bool = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


@dataclass
class FakeConn:
    transport: FakeTransport = field(default_factory=FakeTransport)
    idle: int = 0
    closing: bool = False
    sent: int = 0


def wheel(conns: list[FakeConn], expired: list[FakeConn]) -> HeartbeatWheel[FakeConn]:
    return HeartbeatWheel(HEARTBEAT, lambda: conns, expired.append)


def test_a_silent_connection_is_pinged_after_a_heartbeat_then_expired_after_the_pong_wait() -> None:
    conn, expired = FakeConn(), list[FakeConn]()
    w = wheel([conn], expired)
    assert w.step == HEARTBEAT / TICKS
    for _ in range(TICKS - 1):
        w.tick()
    assert conn.transport.written == [] and not expired
    w.tick()  # silent for a whole heartbeat
    assert conn.transport.written == [PING_FRAME] and conn.sent == len(PING_FRAME)
    for _ in range(PONG_TICKS - 1):
        w.tick()
    assert not expired
    w.tick()  # and silent through the pong wait
    assert expired == [conn]
    assert conn.transport.written == [PING_FRAME]  # one ping, not one per tick


def test_any_byte_from_the_client_resets_the_silence() -> None:
    conn, expired = FakeConn(), list[FakeConn]()
    w = wheel([conn], expired)
    for _ in range(TICKS):
        w.tick()
    assert conn.transport.written == [PING_FRAME]
    conn.idle = 0  # the pong (what the frame gate does for any chunk)
    for _ in range(TICKS - 1):
        w.tick()
    assert not expired and conn.transport.written == [PING_FRAME]
    w.tick()
    assert conn.transport.written == [PING_FRAME, PING_FRAME] and not expired


def test_connections_being_closed_are_neither_pinged_nor_expired() -> None:
    closing, gone = FakeConn(closing=True), FakeConn(transport=FakeTransport(closing=True))
    expired: list[FakeConn] = []
    w = wheel([closing, gone], expired)
    for _ in range(TICKS + PONG_TICKS):
        w.tick()
    assert closing.transport.written == [] and gone.transport.written == []
    assert expired == [gone]  # a socket already going away still gets its timeout


async def test_a_client_that_never_answers_pings_is_dropped(make_server: MakeServer) -> None:
    server = await make_server(heartbeat=HEARTBEAT)
    async with aiohttp.ClientSession() as session:
        # autoping off: the client sees the pings and answers none of them.
        silent = await session.ws_connect(urls.ws_url(server.url), autoping=False)
        assert json.loads((await silent.receive(timeout=TIMEOUT)).data)["type"] == "welcome"
        assert (await silent.receive(timeout=TIMEOUT)).type is aiohttp.WSMsgType.PING
        pinged = time.monotonic()
        # No close frame (the peer is not answering): the socket just goes.
        msg = await silent.receive(timeout=TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), msg
        # Never before the pong wait (half a heartbeat) has passed.
        assert time.monotonic() - pinged >= HEARTBEAT / 2 - HEARTBEAT / TICKS
    await until(lambda: server.lobby.connections == 0)
    assert server.lobby.counters.closes == {1006: 1}


async def test_a_client_that_answers_pings_stays_connected(make_server: MakeServer) -> None:
    server = await make_server(heartbeat=HEARTBEAT)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(urls.ws_url(server.url), autoping=False)
        assert json.loads((await ws.receive(timeout=TIMEOUT)).data)["type"] == "welcome"
        # Sends nothing but pongs through several heartbeat intervals.
        for _ in range(5):
            msg = await ws.receive(timeout=TIMEOUT)
            assert msg.type is aiohttp.WSMsgType.PING, msg
            await ws.pong(msg.data)
        assert server.lobby.connections == 1 and server.lobby.counters.closes == {}
        await ws.send_str('{"type":"join"}')
        while (msg := await ws.receive(timeout=TIMEOUT)).type is aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
        assert json.loads(msg.data)["type"] == "waiting"
        await ws.close()
    await until(lambda: server.lobby.connections == 0)
