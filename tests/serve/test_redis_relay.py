"""Frames relayed between two nodes: complete and in order, through a Redis restart too.

Every frame that crosses nodes goes sender's node -> ``PUBLISH`` (the node's
ordered command stream, batched) -> pub/sub -> partner's node. Both ends speak
RESP themselves (drift.serve.resp), so these tests check what that hot path
promises: nothing reordered, duplicated or cut, a ``Paired`` never overtaken by
the relays of its room, queue results still matched to their joins while
frames stream past, and relaying back after Redis restarts empty.

Node A runs in this process (asyncio's loop), node B as ``drift serve`` (uvloop):
both event loops carry the hot path.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from drift.client.urls import ws_url
from drift.harness.redis import RedisServer
from drift.serve.server import Server
from tests.conftest import MakeServer, StartServe
from tests.support.wsclient import TIMEOUT, WsClient

FRAMES = 300


async def two_nodes(
    make_server: MakeServer, drift_serve: StartServe, redis_url: str
) -> tuple[Server, str]:
    # Frames go out as fast as the client writes them: no rate limit.
    a = await make_server(redis_url=redis_url, node_id="A", rate_limit=0)
    b = await drift_serve("--redis", redis_url, "--node-id", "B", "--rate-limit", "0")
    return a, b.url


async def cross_node_pair(a_url: str, b_url: str) -> tuple[WsClient, WsClient]:
    """A peer waiting on A, then one joining on B: the room spans both nodes."""
    waited = await WsClient.connect(ws_url(a_url))
    await waited.send({"type": "join"})
    await waited.expect("waiting")
    newcomer = await WsClient.connect(ws_url(b_url))
    await newcomer.send({"type": "join"})
    return waited, newcomer


def frame(seq: int, pad: int = 0) -> str:
    # Sizes up to ~20 KB: replies and messages then span several socket reads.
    sdp = f"v=0 seq={seq} pad={pad}\n" + "x" * pad
    return json.dumps({"type": "offer", "sdp": {"type": "offer", "sdp": sdp}})


def parse(msg: dict[str, Any]) -> int:
    """The frame's sequence number, after checking it arrived whole."""
    assert msg["type"] == "offer", msg
    head, _, body = msg["sdp"]["sdp"].partition("\n")
    fields = dict(part.split("=") for part in head.split()[1:])
    assert len(body) == int(fields["pad"]), head
    return int(fields["seq"])


async def receive_seqs(client: WsClient, count: int) -> list[int]:
    return [parse(await client.recv()) for _ in range(count)]


async def test_frames_between_nodes_arrive_complete_and_in_order_beside_joins(
    make_server: MakeServer, drift_serve: StartServe, redis_url: str
) -> None:
    a, b_url = await two_nodes(make_server, drift_serve, redis_url)
    waited, newcomer = await cross_node_pair(a.url, b_url)
    matched = await newcomer.expect("matched")
    # The first frame leaves B right behind B's Paired message for A: A must
    # know the room (Paired) before the relay arrives, or it drops the frame.
    sends = [newcomer.send_raw(frame(0))]
    assert (await waited.expect("matched"))["roomId"] == matched["roomId"]

    # Halfway through, a second room forms across the nodes: its joins and
    # their results share the command stream (and its batches) with the frames.
    late_a = await WsClient.connect(ws_url(a.url))
    late_b = await WsClient.connect(ws_url(b_url))

    async def stream(client: WsClient, first: int, late: WsClient) -> None:
        for seq in range(first, FRAMES):
            if seq == FRAMES // 2:
                await late.send({"type": "join"})
            await client.send_raw(frame(seq, seq * 97 % 20_000))

    received = asyncio.gather(receive_seqs(waited, FRAMES), receive_seqs(newcomer, FRAMES))
    await asyncio.gather(*sends, stream(newcomer, 1, late_b), stream(waited, 0, late_a))
    to_waited, to_newcomer = await asyncio.wait_for(received, TIMEOUT * 2)
    assert to_waited == list(range(FRAMES))
    assert to_newcomer == list(range(FRAMES))
    rooms = []
    for late in (late_a, late_b):
        first = await late.recv()
        if first["type"] == "waiting":
            first = await late.expect("matched")
        assert first["type"] == "matched", first
        rooms.append(first["roomId"])
    assert rooms[0] == rooms[1]
    for client in (waited, newcomer, late_a, late_b):
        await client.close()


async def test_a_cross_node_relay_goes_on_in_order_after_redis_restarts(
    make_server: MakeServer, drift_serve: StartServe, redis_url: str, redis_proc: RedisServer
) -> None:
    a, b_url = await two_nodes(make_server, drift_serve, redis_url)
    waited, newcomer = await cross_node_pair(a.url, b_url)
    await newcomer.expect("matched")
    await waited.expect("matched")
    for seq in range(50):
        await newcomer.send_raw(frame(seq, seq * 211))
    assert await receive_seqs(waited, 50) == list(range(50))

    redis_proc.stop()
    # Sent while Redis is gone: pub/sub delivers at most once, so these may be
    # lost, but never delivered twice or out of order.
    for seq in range(50, 60):
        await newcomer.send_raw(frame(seq))
    redis_proc.start()  # a fresh, empty Redis on the same port
    seen: list[int] = []
    seq = 60
    async with asyncio.timeout(TIMEOUT * 3):
        # Both nodes reconnect by themselves; the first frame through says so.
        while not seen or seen[-1] < 60:
            await newcomer.send_raw(frame(seq))
            seq += 1
            try:
                seen.append(parse(await waited.recv(within=0.2)))
            except TimeoutError:
                continue
    resumed = seq
    for more in range(resumed, resumed + 200):
        await newcomer.send_raw(frame(more, more * 89 % 20_000))
    while not seen or seen[-1] < resumed + 199:
        seen.append(parse(await waited.recv()))
    assert seen == sorted(set(seen)), "a frame was duplicated or overtaken"
    assert seen[-200:] == list(range(resumed, resumed + 200)), "a frame after recovery was lost"
    # The room itself lived through it: the other way works too.
    await waited.send_raw(frame(0))
    assert parse(await newcomer.recv()) == 0
    for client in (waited, newcomer):
        await client.close()
