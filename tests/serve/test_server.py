"""The reference server over real sockets: port 0, a real WebSocket client, real frames."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from drift.client.urls import ws_url
from drift.harness.waiting import until
from drift.serve.server import Server
from tests.conftest import MakeServer
from tests.support.wsclient import TIMEOUT, WsClient, pair

OFFER = {"type": "offer", "sdp": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}
ANSWER = {"type": "answer", "sdp": {"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n"}}
CANDIDATE = {
    "type": "ice-candidate",
    "candidate": {
        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    },
}


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def stats_of(server: Server) -> dict[str, Any]:
    status, body = await get_json(server.url + "/stats")
    assert status == 200
    assert isinstance(body, dict)
    return body


async def wait_for_stats(server: Server, **expected: int) -> dict[str, Any]:
    """Poll /stats until it shows ``expected``: the server cleans up after the socket closes."""
    last: dict[str, Any] = {}

    async def shows_expected() -> bool:
        last.update(await stats_of(server))
        return all(last[k] == v for k, v in expected.items())

    await until(shows_expected, TIMEOUT)
    return last


# ---------------------------------------------------------------- HTTP


async def test_healthz_and_the_page_are_served(server: Server) -> None:
    assert await get_json(server.url + "/healthz") == (200, {"status": "ok"})
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/") as resp:
            assert resp.status == 200
            page = await resp.text()
            assert "<video" in page
            assert '<script type="module" src="/static/' in page
        async with session.get(server.url + "/favicon.ico") as resp:
            assert resp.status == 200
            assert resp.content_type == "image/svg+xml"


async def test_stats_fields(server: Server) -> None:
    stats = await stats_of(server)
    assert set(stats) >= {
        "connections",
        "waiting",
        "rooms",
        "matches_total",
        "uptime_s",
        "rss_bytes",
    }
    assert stats["connections"] == 0
    assert stats["rss_bytes"] > 1_000_000


# ---------------------------------------------------------------- session


async def test_two_peers_match_with_roles_and_relay_both_ways(ws_url: str, server: Server) -> None:
    answerer, offerer = await pair(ws_url)
    assert answerer.welcome["protocol"] == 1
    assert answerer.welcome["iceServers"] == []
    assert answerer.peer_id != offerer.peer_id

    await offerer.send(OFFER)
    assert await answerer.expect("offer") == OFFER
    await answerer.send(ANSWER)
    assert await offerer.expect("answer") == ANSWER
    for sender, receiver in ((offerer, answerer), (answerer, offerer)):
        await sender.send(CANDIDATE)
        assert await receiver.expect("ice-candidate") == CANDIDATE
        await sender.send({"type": "ice-candidate", "candidate": None})
        assert await receiver.expect("ice-candidate") == {
            "type": "ice-candidate",
            "candidate": None,
        }
    stats = await stats_of(server)
    assert (stats["connections"], stats["waiting"], stats["rooms"]) == (2, 0, 1)
    assert stats["matches_total"] == 1
    for client in (answerer, offerer):
        await client.close()


async def test_relays_never_cross_rooms(ws_url: str) -> None:
    a1, b1 = await pair(ws_url)
    a2, b2 = await pair(ws_url)
    await b1.send(OFFER)
    await a1.expect("offer")
    for other in (a2, b2):
        await other.assert_silent()
    for client in (a1, b1, a2, b2):
        await client.close()


async def test_next_requeues_the_sender_and_notifies_the_partner(ws_url: str) -> None:
    answerer, offerer = await pair(ws_url)
    third = await WsClient.connect(ws_url)
    await offerer.send({"type": "next"})
    assert await answerer.expect("partner-left") == {"type": "partner-left", "reason": "next"}
    await offerer.expect("waiting")  # the old partner is in cooldown, idle anyway
    await third.send({"type": "join"})
    assert (await third.expect("matched"))["role"] == "offerer"
    assert (await offerer.expect("matched"))["role"] == "answerer"
    for client in (answerer, offerer, third):
        await client.close()


async def test_leave_returns_to_idle_and_the_partner_is_told(ws_url: str) -> None:
    answerer, offerer = await pair(ws_url)
    await answerer.send({"type": "leave"})
    assert await offerer.expect("partner-left") == {"type": "partner-left", "reason": "left"}
    await answerer.assert_silent()
    await answerer.send({"type": "join"})  # idle again, so join is valid
    await answerer.expect("waiting")
    for client in (answerer, offerer):
        await client.close()


async def test_disconnect_notifies_the_partner_and_stats_return_to_zero(
    ws_url: str, server: Server
) -> None:
    answerer, offerer = await pair(ws_url)
    waiting = await WsClient.connect(ws_url)
    await waiting.send({"type": "join"})
    await waiting.expect("waiting")
    await offerer.close()
    assert await answerer.expect("partner-left") == {
        "type": "partner-left",
        "reason": "disconnected",
    }
    await answerer.close()
    await waiting.close()
    stats = await wait_for_stats(server, connections=0)
    assert (stats["waiting"], stats["rooms"]) == (0, 0)


# ---------------------------------------------------------------- bad input


BAD_FRAMES = [
    pytest.param("this is not json", "invalid-json", id="non-json"),
    pytest.param("[1, 2, 3]", "invalid-json", id="array"),
    pytest.param("12.5", "invalid-json", id="number"),
    pytest.param('{"sdp": {}}', "invalid-message", id="missing-type"),
    pytest.param('{"type": ["join"]}', "invalid-message", id="type-not-string"),
    pytest.param('{"type": "offer"}', "invalid-message", id="missing-field"),
    pytest.param(
        '{"type": "offer", "sdp": {"type": "offer", "sdp": 1}}',
        "invalid-message",
        id="wrong-field-type",
    ),
    pytest.param('{"type": "teleport"}', "unknown-type", id="unknown-type"),
    pytest.param(json.dumps(OFFER), "invalid-state", id="offer-while-idle"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frames_get_an_error_and_the_session_goes_on(
    ws_url: str, frame: str, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answerer, offerer = await pair(ws_url)
    idle = await WsClient.connect(ws_url)
    await idle.send_raw(frame)
    await idle.expect_error(code)
    if code != "invalid-state":  # a matched peer may send an offer; every other bad frame:
        await offerer.send_raw(frame)
        await offerer.expect_error(code)
    # The connection still works and the partner's session is unaffected.
    await offerer.send(OFFER)
    assert await answerer.expect("offer") == OFFER
    await idle.send({"type": "join"})
    await idle.expect("waiting")
    assert_no_crash(caplog)
    for client in (answerer, offerer, idle):
        await client.close()


async def test_unknown_extra_fields_are_ignored(ws_url: str) -> None:
    answerer, offerer = await pair(ws_url)
    await offerer.send({**OFFER, "x-future": {"nested": True}})
    assert (await answerer.expect("offer"))["sdp"] == OFFER["sdp"]
    for client in (answerer, offerer):
        await client.close()


async def test_binary_frame_is_invalid_message(ws_url: str) -> None:
    client = await WsClient.connect(ws_url)
    await client.ws.send_bytes(b'{"type": "join"}')
    await client.expect_error("invalid-message")
    await client.send({"type": "join"})
    await client.expect("waiting")
    await client.close()


async def test_join_twice_is_invalid_state(ws_url: str) -> None:
    client = await WsClient.connect(ws_url)
    await client.send({"type": "join"})
    await client.expect("waiting")
    await client.send({"type": "join"})
    await client.expect_error("invalid-state")
    await client.send({"type": "leave"})
    await client.close()


@pytest.mark.parametrize(("size", "closed"), [(65_536, False), (65_537, True)])
async def test_frame_size_cap_is_65536_bytes_then_close_1009(
    ws_url: str, server: Server, size: int, closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answerer, offerer = await pair(ws_url)
    head = '{"type": "offer", "sdp": {"type": "offer", "sdp": "'
    tail = '"}}'
    frame = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(frame.encode()) == size
    await offerer.send_raw(frame)
    if closed:
        assert await offerer.expect_close() == 1009
        assert (await answerer.expect("partner-left"))["reason"] == "disconnected"
        await wait_for_stats(server, connections=1)
    else:
        assert len((await answerer.expect("offer"))["sdp"]["sdp"]) > 65_000
    assert_no_crash(caplog)
    for client in (answerer, offerer):
        await client.close()


def assert_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged as an unhandled exception by drift or aiohttp."""
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert crashes == [], [r.getMessage() for r in crashes]


async def test_many_peers_in_sequence_leave_nothing_behind(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_ip=0)
    url = ws_url(server.url)
    clients = [await WsClient.connect(url) for _ in range(20)]
    for client in clients:
        await client.send({"type": "join"})
    for i, client in enumerate(clients):
        first = await client.recv()
        assert first["type"] in ("waiting", "matched")
        if first["type"] == "waiting":
            assert (await client.expect("matched"))["role"] == "answerer", i
        else:
            assert first["role"] == "offerer"
    stats = await stats_of(server)
    assert (stats["rooms"], stats["waiting"], stats["matches_total"]) == (10, 0, 10)
    for client in clients:
        await client.close()
    await wait_for_stats(server, connections=0, rooms=0, waiting=0)


async def test_a_peer_that_stops_reading_is_cut_off_and_never_stalls_its_partner(
    make_server: MakeServer,
) -> None:
    server = await make_server(rate_limit=0)
    url = ws_url(server.url)
    stalled, sender = await pair(url)
    # `stalled` never reads again: its client stops draining the socket once
    # its own buffer is full, then the kernel's fill, then the server's.
    offer = json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": "x" * 60_000}})
    async with asyncio.timeout(TIMEOUT * 4):
        for _ in range(400):  # 24 MB, far more than all those buffers hold
            await sender.send_raw(offer)
        left = await sender.expect("partner-left")
    assert left["reason"] == "disconnected"
    # The sender was never blocked behind its partner: it is served at once.
    await sender.send({"type": "leave"})
    await sender.expect_error("invalid-state")
    await wait_for_stats(server, connections=1, rooms=0)
    await sender.close()
    await stalled.session.close()
