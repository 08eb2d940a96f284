"""One abusive connection must not hurt anyone else: floods, stalls, resets, idle sockets.

Every test talks to a real server over real sockets, written frame by frame
where a well-behaved client library would refuse (unmasked frames, floods of
pings or fragments, a peer that never reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import pytest

from drift.client import urls
from drift.fuzz.rawws import CONTINUATION, PING, PONG, TEXT, RawWebSocket, encode_frame
from drift.harness.serve import DRIFT_SERVE, AsyncServeProcess
from drift.harness.waiting import until
from drift.serve.server import CLOSE_GRACE, Server
from tests.conftest import MakeServer
from tests.support.wsclient import TIMEOUT, WsClient, pair


def ws_url(server: Server) -> str:
    return urls.ws_url(server.url)


async def closed_with(ws: RawWebSocket, within: float = TIMEOUT) -> int | None:
    """Read (answering pings) until the server's close frame; its code (None: no close)."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.recv(within)
            if msg.kind in ("close", "eof"):
                return msg.code


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in ("drift", "aiohttp", "asyncio"):
        caplog.set_level(logging.WARNING, logger=name)
    return caplog


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]


# ---------------------------------------------------------------- every frame costs


@pytest.mark.parametrize(
    ("opening", "frame"),
    [
        (b"", encode_frame(PING, b"x")),
        (encode_frame(TEXT, b"{", fin=False), encode_frame(CONTINUATION, b"", fin=False)),
    ],
    ids=["ping-flood", "fragment-flood"],
)
async def test_a_flood_of_control_frames_or_fragments_is_closed_with_1008(
    make_server: MakeServer, opening: bytes, frame: bytes
) -> None:
    """aiohttp answers pings and joins fragments itself: the server must still bill them."""
    server = await make_server()
    ws = await RawWebSocket.connect(ws_url(server), TIMEOUT)
    assert (await ws.recv(TIMEOUT)).kind == "text"  # welcome
    # Five times the budget's burst and strikes together, in one write.
    ws.writer.write(opening + frame * 5 * 2 * server.config.rate_burst)
    assert await closed_with(ws) == 1008
    assert server.lobby.counters.closes.get(1008) == 1
    await ws.close()


async def test_unsolicited_pongs_and_pings_within_the_budget_are_fine(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    ws = await RawWebSocket.connect(ws_url(server), TIMEOUT)
    assert (await ws.recv(TIMEOUT)).kind == "text"
    ws.writer.write(encode_frame(PONG, b"") * 10 + encode_frame(PING, b"x") * 10)
    await ws.send(TEXT, b'{"type":"join"}')
    msg = await ws.recv(TIMEOUT)
    assert json.loads(msg.data) == {"type": "waiting"}
    assert server.lobby.counters.closes == {}
    await ws.close()


# ---------------------------------------------------------------- after the close decision


async def test_after_a_close_the_server_stops_reading_and_drops_the_connection(
    make_server: MakeServer,
) -> None:
    """A 1008 for rate abuse, then 64 KB frames non-stop: no more parsing, gone within the grace."""
    server = await make_server()
    ws = await RawWebSocket.connect(ws_url(server), TIMEOUT)
    ws.writer.write(encode_frame(TEXT, b'{"type":"leave"}') * 200)
    big = encode_frame(TEXT, b'{"type":"offer","x":"' + b"a" * 65_000 + b'"}') * 8
    closed_at: float | None = None
    gone_at: float | None = None

    async def read() -> None:
        nonlocal closed_at, gone_at
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head, length = await ws.reader.readexactly(2)
                size = length & 0x7F
                if size == 126:
                    (size,) = struct.unpack("!H", await ws.reader.readexactly(2))
                await ws.reader.readexactly(size)
                if head & 0x0F == 0x8:
                    closed_at = time.monotonic()
        gone_at = time.monotonic()

    reader = asyncio.create_task(read())
    deadline = time.monotonic() + 4 * CLOSE_GRACE + TIMEOUT
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        while gone_at is None and time.monotonic() < deadline:
            ws.writer.write(big)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.writer.drain(), 0.2)
    await asyncio.wait_for(reader, TIMEOUT)
    assert closed_at is not None, "no close frame"
    assert gone_at is not None
    # The grace, and some scheduling slack on a shared machine.
    assert gone_at - closed_at < 2 * CLOSE_GRACE
    assert server.lobby.connections == 0
    ws.writer.transport.abort()


# ---------------------------------------------------------------- a peer that never reads


async def stalled_peer(url: str, rcvbuf: int = 32768) -> RawWebSocket:
    """A peer queued in the lobby whose socket is never read again (tiny kernel buffers)."""
    host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
    sock = socket.socket()
    # Small kernel buffers (set before connecting): the server's queue to this
    # peer fills in user space after a few hundred KB.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    ws = await RawWebSocket.connect(url, TIMEOUT, sock=sock)
    assert (await ws.recv(TIMEOUT)).kind == "text"
    await ws.send(TEXT, b'{"type":"join"}')
    assert b"waiting" in (await ws.recv(TIMEOUT)).data
    cast(asyncio.Transport, ws.writer.transport).pause_reading()
    return ws


async def test_a_peer_that_never_reads_never_delays_its_partner_and_is_cut_off(
    make_server: MakeServer,
) -> None:
    """The 64-128 KiB case: the queue to the stalled peer passes the loop's high-water
    mark long before --max-pending-bytes; its partner's frames must be answered all along.
    The stalled peer keeps the heartbeat happy with unsolicited pongs."""
    server = await make_server(rate_limit=0, send_timeout=0, max_pending_bytes=128 * 1024)
    url = ws_url(server)
    stalled = await stalled_peer(url)
    victim = await WsClient.connect(url)
    await victim.send({"type": "join"})
    assert (await victim.expect("matched"))["role"] == "offerer"
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": "a" * 6_000}}
    cut_off, relays = False, 0
    async with asyncio.timeout(TIMEOUT * 2):  # a stuck handler never answers
        while relays < 200:
            relays += 1
            stalled.writer.write(encode_frame(PONG, b""))
            await victim.send(offer)
            await victim.send_raw("{}")  # answered by the server itself: invalid-message
            reply = await victim.recv(within=2.0)
            if reply["type"] == "partner-left":
                cut_off = True
                break
            assert reply["code"] == "invalid-message", reply
    assert cut_off, "the stalled peer was never cut off"
    assert relays * 6_000 > 128 * 1024
    await until(lambda: server.lobby.connections == 1)
    assert server.lobby.counters.closes.get(1006) == 1
    await victim.close()
    stalled.writer.transport.abort()


async def test_a_peer_whose_queue_does_not_drain_is_cut_off_after_send_timeout(
    make_server: MakeServer,
) -> None:
    """Below --max-pending-bytes, a queue that takes no byte for --send-timeout is the bound."""
    server = await make_server(rate_limit=0, send_timeout=0.5, max_pending_bytes=0)
    url = ws_url(server)
    stalled = await stalled_peer(url, rcvbuf=4096)
    victim = await WsClient.connect(url)
    await victim.send({"type": "join"})
    await victim.expect("matched")
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": "a" * 60_000}}
    for _ in range(8):  # ~480 KB: past the kernel's buffers with this peer's tiny segments
        await victim.send(offer)
    left = await victim.expect("partner-left")
    assert left["reason"] == "disconnected"
    await victim.close()
    stalled.writer.transport.abort()


async def test_shutdown_does_not_wait_on_a_peer_that_never_reads(make_server: MakeServer) -> None:
    server = await make_server(rate_limit=0, send_timeout=0, max_pending_bytes=0)
    url = ws_url(server)
    stalled = await stalled_peer(url, rcvbuf=4096)
    victim = await WsClient.connect(url)
    await victim.send({"type": "join"})
    await victim.expect("matched")
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": "a" * 60_000}}
    for _ in range(8):
        await victim.send(offer)
    await victim.send_raw("{}")
    await victim.expect("error")  # the victim's frames were processed, the queue is full
    started = time.monotonic()
    await server.shutdown()
    assert time.monotonic() - started < CLOSE_GRACE + 1.0
    await victim.close()
    stalled.writer.transport.abort()


# ---------------------------------------------------------------- resets are disconnects


async def test_a_peer_reset_is_an_ordinary_disconnect_never_1011(
    make_server: MakeServer, server_errors: pytest.LogCaptureFixture
) -> None:
    server = await make_server(rate_limit=0)
    url = ws_url(server)
    # 50 pings, then a TCP reset (SO_LINGER 0) before reading the pongs.
    ws = await RawWebSocket.connect(url, TIMEOUT)
    ws.writer.write(encode_frame(PING, b"x") * 50)
    await ws.writer.drain()
    sock = ws.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.writer.transport.abort()
    # A reset while its partner's relays to it are queued.
    answerer, offerer = await pair(url)
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": "a" * 60_000}}
    for _ in range(5):
        await offerer.send(offer)
    raw = answerer.ws.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    answerer.ws._response.close()  # closes the socket: a reset, with SO_LINGER 0
    left = await offerer.expect("partner-left")
    assert left["reason"] == "disconnected"
    await offerer.close()
    await answerer.session.close()
    await until(lambda: server.lobby.connections == 0)
    assert 1011 not in server.lobby.counters.closes
    assert errors_logged(server_errors) == []


# ---------------------------------------------------------------- sockets before the upgrade


def is_open(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False


async def open_sockets(port: int, count: int, payload: bytes = b"") -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        if payload:
            await loop.sock_sendall(sock, payload)
        socks.append(sock)
    return socks


@pytest.mark.parametrize("payload", [b"", b"GET /healthz HTTP/1.1\r\nX-Slow: a"])
async def test_sockets_that_never_finish_a_request_are_capped_and_given_a_deadline(
    make_server: MakeServer, payload: bytes
) -> None:
    server = await make_server(upgrade_timeout=1.0, max_connections_per_ip=5)
    socks = await open_sockets(server.port, 12, payload)
    try:
        # Over the per-address cap: dropped at once (an honest address still gets in).
        honest = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=honest) as http,
            http.get(server.url + "/healthz") as resp,
        ):
            assert resp.status == 200
        await until(lambda: sum(map(is_open, socks)) == 5, timeout=0.8)
        # The rest: at the upgrade deadline.
        await until(lambda: not any(map(is_open, socks)))
        assert server.gate is not None
        assert server.gate.dropped == {"cap": 7, "deadline": 5}
        assert server.gate.pending == 0
    finally:
        for sock in socks:
            sock.close()


async def test_an_idle_keep_alive_socket_is_closed_after_keepalive_timeout(
    make_server: MakeServer,
) -> None:
    server = await make_server(keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: drift\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    async with asyncio.timeout(TIMEOUT):
        while await reader.read(1 << 16):  # the body, then EOF when the server closes
            pass
    writer.close()


@pytest.fixture
async def child_servers() -> AsyncIterator[list[AsyncServeProcess]]:
    servers: list[AsyncServeProcess] = []
    yield servers
    for proc in servers:
        await proc.kill()


async def test_silent_sockets_cannot_exhaust_descriptors(
    child_servers: list[AsyncServeProcess],
) -> None:
    """With 256 descriptors, 400 silent sockets from one address: /healthz and a pair still work."""
    program = ("prlimit", "--nofile=256:256", *DRIFT_SERVE)
    proc = await AsyncServeProcess.start("--upgrade-timeout", "30", program=program)
    child_servers.append(proc)
    started = next(json.loads(line) for line in proc.stderr if "server_started" in line)
    assert started["fd_limit"] == 256
    port = int(proc.url.rsplit(":", 1)[1])
    socks = await open_sockets(port, 400)
    try:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(proc.url + "/healthz") as resp:
                assert resp.status == 200
            a = await http.ws_connect(proc.ws_url)
            b = await http.ws_connect(proc.ws_url)
            for ws in (a, b):
                await ws.receive(timeout=TIMEOUT)  # welcome
            await a.send_str('{"type":"join"}')
            await a.receive(timeout=TIMEOUT)  # waiting
            await b.send_str('{"type":"join"}')
            assert json.loads((await b.receive(timeout=TIMEOUT)).data)["type"] == "matched"
            await a.close()
            await b.close()
    finally:
        for sock in socks:
            sock.close()


def test_the_descriptor_limit_is_raised_to_the_hard_one() -> None:
    """Run a server in a child whose soft limit is below its hard one."""
    import subprocess

    code = (
        "import asyncio, resource\n"
        "from drift.serve.server import Server\n"
        "from drift.serve.config import ServerConfig\n"
        "async def main():\n"
        "    s = Server(ServerConfig(port=0))\n"
        "    await s.start()\n"
        "    print(s.fd_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "    await s.shutdown()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        ["prlimit", "--nofile=200:300", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=True,
    ).stdout.split()
    assert out == ["300", "300"]


# ---------------------------------------------------------------- framing violations: 1002


async def test_an_unmasked_client_frame_is_closed_with_1002_and_counted(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    ws = await RawWebSocket.connect(ws_url(server), TIMEOUT)
    assert (await ws.recv(TIMEOUT)).kind == "text"
    ws.writer.write(encode_frame(TEXT, b'{"type":"join"}', mask=False))
    assert await closed_with(ws) == 1002
    await ws.close()
    # aiohttp's own framing errors (here a reserved opcode) count the same.
    other = await RawWebSocket.connect(ws_url(server), TIMEOUT)
    assert (await other.recv(TIMEOUT)).kind == "text"
    other.writer.write(encode_frame(0x3, b"?"))
    assert await closed_with(other) == 1002
    await other.close()
    await until(lambda: server.lobby.counters.closes.get(1002) == 2)
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
        assert 'drift_closes_total{code="1002"} 2.0' in await resp.text()
