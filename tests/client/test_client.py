"""drift.client.signaling.SignalingClient against the reference server (and a lying fake one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from drift.client.signaling import ClientState, ConnectionClosed, ProtocolViolation, SignalingClient
from drift.client.urls import ws_url
from drift.core import protocol as p
from drift.core.lobby import Fault
from drift.serve.server import Server
from tests.support.wsclient import TIMEOUT

MakeServer = Callable[..., Awaitable[Server]]


def ws_of(server: Server) -> str:
    return ws_url(server.url)


@pytest.fixture
async def clients() -> AsyncIterator[list[SignalingClient]]:
    opened: list[SignalingClient] = []
    yield opened
    for client in opened:
        await client.close()


async def connect(url: str, opened: list[SignalingClient]) -> SignalingClient:
    client = await SignalingClient.connect(url, timeout=TIMEOUT)
    opened.append(client)
    return client


async def test_welcome_then_waiting_then_matched_roles(
    ws_url: str, clients: list[SignalingClient]
) -> None:
    first = await connect(ws_url, clients)
    assert first.peer_id and first.state is ClientState.IDLE
    assert first.ice_servers == []
    assert first.marks["connected"] <= first.marks["welcome"]
    await first.join()
    assert isinstance(await first.recv(TIMEOUT), p.Waiting)
    assert first.state is ClientState.WAITING

    second = await connect(ws_url, clients)
    await second.join()
    got = await second.recv(TIMEOUT)
    assert isinstance(got, p.Matched) and got.role == "offerer"
    assert second.match is not None and not second.match.waited
    assert second.match.expected_role == "offerer" and second.match.role_ok

    got = await first.recv(TIMEOUT)
    assert isinstance(got, p.Matched) and got.role == "answerer"
    assert first.match is not None and first.match.waited and first.match.role_ok
    assert first.room_id == second.room_id
    assert first.marks["join"] <= first.marks["waiting"] <= first.marks["matched"]


async def test_relays_reach_the_partner_unchanged(
    ws_url: str, clients: list[SignalingClient]
) -> None:
    a, b = await connect(ws_url, clients), await connect(ws_url, clients)
    await a.join()
    await a.recv(TIMEOUT)
    await b.join()
    await b.recv(TIMEOUT)
    await a.recv(TIMEOUT)
    await b.send_offer("v=0\r\nfake-offer\r\n")
    got = await a.recv(TIMEOUT)
    assert isinstance(got, p.Offer) and got.sdp.sdp == "v=0\r\nfake-offer\r\n"
    cand = p.CandidateInit("candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid="0")
    await a.send_candidate(cand)
    await a.send_candidate(None)
    first = await b.recv(TIMEOUT)
    assert isinstance(first, p.IceCandidate) and first.candidate == cand
    end = await b.recv(TIMEOUT)
    assert isinstance(end, p.IceCandidate) and end.candidate is None


async def test_relay_while_idle_is_refused_locally(
    ws_url: str, clients: list[SignalingClient]
) -> None:
    a = await connect(ws_url, clients)
    with pytest.raises(RuntimeError, match="while idle"):
        await a.send_offer("x")


async def test_next_ends_the_room_and_partner_sees_partner_left(
    make_server: MakeServer, clients: list[SignalingClient]
) -> None:
    server = await make_server(rematch_cooldown=30.0)
    url = ws_of(server)
    a, b, c = [await connect(url, clients) for _ in range(3)]
    await a.join()
    await a.recv(TIMEOUT)
    await b.join()
    await b.recv(TIMEOUT)
    await a.recv(TIMEOUT)
    await c.join()
    assert isinstance(await c.recv(TIMEOUT), p.Waiting)
    await b.next()  # b leaves a and is paired with c, who waited
    got = await b.recv(TIMEOUT)
    assert isinstance(got, p.Matched) and got.role == "offerer"
    assert b.match is not None and b.match.role_ok
    left = await a.recv(TIMEOUT)
    assert isinstance(left, p.PartnerLeft) and left.reason == "next"
    assert a.state is ClientState.IDLE
    got = await c.recv(TIMEOUT)
    assert isinstance(got, p.Matched) and got.role == "answerer"


async def test_crossing_next_and_leave_are_absorbed(
    ws_url: str, clients: list[SignalingClient]
) -> None:
    a, b = await connect(ws_url, clients), await connect(ws_url, clients)
    await a.join()
    await a.recv(TIMEOUT)
    await b.join()
    await b.recv(TIMEOUT)
    await a.recv(TIMEOUT)
    # both end the room at once: whichever the server handles second is refused,
    # and that refusal must not surface as an error
    await asyncio.gather(a.leave(), b.next())
    got = await b.recv(TIMEOUT)
    if isinstance(got, p.PartnerLeft):
        assert b.state is ClientState.IDLE
        await b.join()
        got = await b.recv(TIMEOUT)
    assert isinstance(got, p.Waiting), got
    assert b.counters.errors in ([], ["invalid-state"])


async def test_swapped_roles_are_recorded(
    make_server: MakeServer, clients: list[SignalingClient]
) -> None:
    server = await make_server(faults=frozenset({Fault.SWAP_ROLES}))
    url = ws_of(server)
    a, b = await connect(url, clients), await connect(url, clients)
    await a.join()
    await a.recv(TIMEOUT)
    await b.join()
    await b.recv(TIMEOUT)
    await a.recv(TIMEOUT)
    assert a.match is not None and b.match is not None
    assert a.match.role == "offerer" and not a.match.role_ok
    assert b.match.role == "answerer" and not b.match.role_ok


async def test_queue_timeout_makes_the_client_idle(
    make_server: MakeServer, clients: list[SignalingClient]
) -> None:
    server = await make_server(queue_timeout=0.2)
    a = await connect(ws_of(server), clients)
    await a.join()
    await a.recv(TIMEOUT)
    err = await a.recv(TIMEOUT)
    assert isinstance(err, p.Error) and err.code == "queue-timeout"
    assert a.state is ClientState.IDLE
    await a.join()  # allowed again
    assert isinstance(await a.recv(TIMEOUT), p.Waiting)


# ------------------------------------------------------------------ a lying server


async def fake_server(frames: list[str | bytes]) -> tuple[web.AppRunner, str]:
    """A server that sends ``frames`` after the upgrade, whatever the client says."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for frame in frames:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"ws://127.0.0.1:{port}/ws"


WELCOME = '{"type":"welcome","protocol":1,"peerId":"p1","iceServers":[]}'


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (['{"type":"waiting"}'], "first frame must be welcome"),
        (['{"type":"welcome","protocol":2,"peerId":"p","iceServers":[]}'], "protocol is 2"),
        (["not json"], "undecodable"),
        ([b"\x00"], "BINARY"),
        (['{"type":"welcome","peerId":5,"iceServers":[]}'], "undecodable"),
    ],
)
async def test_bad_welcome_is_a_violation(frames: list[str | bytes], match: str) -> None:
    runner, url = await fake_server(frames)
    try:
        with pytest.raises(ProtocolViolation, match=match):
            await SignalingClient.connect(url, timeout=TIMEOUT)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("after_join", "match"),
    [
        ('{"type":"matched","role":"host","roomId":"r"}', "undecodable"),
        ('{"type":"offer","sdp":{"type":"offer","sdp":"x"}}', "unexpected 'offer' while idle"),
        ('{"type":"partner-left","reason":"left"}', "unexpected 'partnerleft'"),
        (WELCOME, "a second welcome"),
    ],
)
async def test_out_of_contract_frames_are_violations(after_join: str, match: str) -> None:
    runner, url = await fake_server([WELCOME, after_join])
    client = await SignalingClient.connect(url, timeout=TIMEOUT)
    try:
        with pytest.raises(ProtocolViolation, match=match):
            await client.recv(TIMEOUT)
    finally:
        await client.close()
        await runner.cleanup()


async def test_unasked_waiting_is_a_violation() -> None:
    runner, url = await fake_server([WELCOME, '{"type":"waiting"}'])
    client = await SignalingClient.connect(url, timeout=TIMEOUT)
    try:
        with pytest.raises(ProtocolViolation, match="unexpected 'waiting' while idle"):
            await client.recv(TIMEOUT)
    finally:
        await client.close()
        await runner.cleanup()


async def test_close_is_reported_with_its_code(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_ip=1)
    url = ws_of(server)
    first = await SignalingClient.connect(url, timeout=TIMEOUT)
    try:
        with pytest.raises(ConnectionClosed) as info:
            await SignalingClient.connect(url, timeout=TIMEOUT)
        assert info.value.code == p.CloseCode.TRY_AGAIN_LATER
    finally:
        await first.close()
