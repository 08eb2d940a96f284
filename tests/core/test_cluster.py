"""Several nodes sharing one queue on a real redis-server: the same protocol across nodes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import aiohttp
import pytest

from drift.client.urls import ws_url
from drift.harness.redis import RedisServer
from drift.harness.serve import AsyncServeProcess
from drift.harness.waiting import until
from drift.serve.server import Server
from tests.conftest import MakeServer, StartServe
from tests.support.wsclient import TIMEOUT, WsClient

OFFER = {"type": "offer", "sdp": {"type": "offer", "sdp": "v=0 offer"}}
ANSWER = {"type": "answer", "sdp": {"type": "answer", "sdp": "v=0 answer"}}


def ws(server: Server | str) -> str:
    url = server if isinstance(server, str) else server.url
    return ws_url(url)


@pytest.fixture
async def nodes(make_server: MakeServer, redis_url: str) -> tuple[Server, Server]:
    a = await make_server(redis_url=redis_url, node_id="A", node_ttl=1.0, rematch_cooldown=0.5)
    b = await make_server(redis_url=redis_url, node_id="B", node_ttl=1.0, rematch_cooldown=0.5)
    return a, b


async def joined(url: str) -> WsClient:
    client = await WsClient.connect(url)
    await client.send({"type": "join"})
    return client


async def stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as resp:
        body = await resp.json()
        assert isinstance(body, dict)
        return body


async def test_peers_on_two_nodes_match_with_roles_and_relay_both_ways(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    waited = await joined(ws(a))
    await waited.expect("waiting")
    newcomer = await joined(ws(b))
    to_new = await newcomer.expect("matched")
    to_waited = await waited.expect("matched")
    assert (to_waited["role"], to_new["role"]) == ("answerer", "offerer")
    assert to_waited["roomId"] == to_new["roomId"]
    await newcomer.send(OFFER)
    assert await waited.expect("offer") == OFFER
    await waited.send(ANSWER)
    assert await newcomer.expect("answer") == ANSWER
    await waited.send({"type": "ice-candidate", "candidate": None})
    assert (await newcomer.expect("ice-candidate"))["candidate"] is None
    assert a.stats()["matches_total"] + b.stats()["matches_total"] == 1
    for client in (waited, newcomer):
        await client.close()


async def test_queue_is_fifo_across_nodes(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    first, second = await joined(ws(a)), None
    await first.expect("waiting")
    second = await joined(ws(b))
    await second.expect("matched")
    await first.expect("matched")
    # first and second part; in cooldown with each other, both wait, first in line.
    await first.send({"type": "next"})
    await second.expect("partner-left")
    await first.expect("waiting")
    await second.send({"type": "join"})
    await second.expect("waiting")
    third = await joined(ws(b))
    assert (await third.expect("matched"))["role"] == "offerer"
    assert (await first.expect("matched"))["role"] == "answerer"  # the oldest waiting peer
    # When the cooldown is over nobody is left for second; it keeps waiting.
    await second.assert_silent(0.8)
    for client in (first, second, third):
        await client.close()


async def test_cooldown_end_pairs_the_two_waiting_peers_older_answers(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    x = await joined(ws(a))
    await x.expect("waiting")
    y = await joined(ws(b))
    await y.expect("matched")
    await x.expect("matched")
    await y.send({"type": "next"})  # y waits first now
    await x.expect("partner-left")
    await y.expect("waiting")
    await x.send({"type": "join"})
    await x.expect("waiting")
    # No sleep: the frames arrive when the 0.5 s cooldown is over.
    assert (await y.expect("matched"))["role"] == "answerer"
    assert (await x.expect("matched"))["role"] == "offerer"
    for client in (x, y):
        await client.close()


@pytest.mark.parametrize("how", ["leave", "next", "disconnect"])
async def test_room_end_crosses_nodes_with_the_reason(
    nodes: tuple[Server, Server], how: str
) -> None:
    a, b = nodes
    waited = await joined(ws(a))
    await waited.expect("waiting")
    newcomer = await joined(ws(b))
    await newcomer.expect("matched")
    await waited.expect("matched")
    if how == "disconnect":
        await newcomer.close()
    else:
        await newcomer.send({"type": how})
    reason = {"leave": "left", "next": "next", "disconnect": "disconnected"}[how]
    assert await waited.expect("partner-left") == {"type": "partner-left", "reason": reason}
    # The room is gone on both nodes: relays are refused, not delivered.
    await waited.send(OFFER)
    await waited.expect_error("invalid-state")
    await waited.close()
    if how != "disconnect":
        await newcomer.close()
    await until(lambda: _zero(a, b))


async def _zero(*servers: Server) -> bool:
    return all(s.stats()["connections"] == 0 and not s.lobby.rooms for s in servers)


async def test_relays_never_cross_rooms_between_nodes(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    clients = []
    for url in (ws(a), ws(b), ws(a), ws(b)):
        clients.append(await joined(url))
        await clients[-1].recv()
    w1, n1, w2, n2 = clients
    await w1.expect("matched")
    await w2.expect("matched")
    await n1.send(OFFER)
    assert await w1.expect("offer") == OFFER
    await w2.assert_silent()
    await n2.assert_silent()
    for client in clients:
        await client.close()


# ---------------------------------------------------------------- node death, Redis loss


async def spawn_node(
    drift_serve: StartServe, redis_url: str, *args: str
) -> tuple[AsyncServeProcess, str]:
    proc = await drift_serve("--redis", redis_url, "--node-ttl", "1", *args)
    return proc, proc.url


async def test_kill_9_of_a_node_notifies_partners_and_empties_its_queue_entries(
    make_server: MakeServer, redis_url: str, drift_serve: StartServe
) -> None:
    a = await make_server(redis_url=redis_url, node_id="A", node_ttl=1.0)
    proc, b_url = await spawn_node(drift_serve, redis_url, "--node-id", "B")
    survivor = await joined(ws(a))
    await survivor.expect("waiting")
    doomed = await joined(ws(b_url))
    await doomed.expect("matched")
    await survivor.expect("matched")
    orphan = await joined(ws(b_url))  # waits in the shared queue, on node B
    await orphan.expect("waiting")
    await until(lambda: _cluster(a, queue=1, nodes=2))

    started = asyncio.get_running_loop().time()
    proc.signal(signal.SIGKILL)
    await proc.wait(TIMEOUT)
    left = await survivor.expect("partner-left", within=10.0)
    assert left["reason"] == "disconnected"
    assert asyncio.get_running_loop().time() - started <= 10.0
    await until(lambda: _cluster(a, queue=0, nodes=1))
    newcomer = await joined(ws(a))  # is not paired with the dead node's waiting peer
    await newcomer.expect("waiting")
    for client in (survivor, newcomer):
        await client.close()
    for client in (doomed, orphan):
        await client.session.close()


async def _cluster(server: Server, **expected: int) -> bool:
    cluster = server.stats().get("cluster")
    return isinstance(cluster, dict) and all(cluster.get(k) == v for k, v in expected.items())


async def test_redis_loss_keeps_connections_refuses_joins_and_recovers(
    make_server: MakeServer, redis_url: str, redis_proc: RedisServer
) -> None:
    a = await make_server(redis_url=redis_url, node_id="A", node_ttl=1.0)
    waited = await joined(ws(a))
    await waited.expect("waiting")
    newcomer = await joined(ws(a))
    await newcomer.expect("matched")
    await waited.expect("matched")
    patient = await joined(ws(a))
    await patient.expect("waiting")

    redis_proc.stop()
    # Existing connections stay, and a room whose peers share a node keeps relaying.
    await newcomer.send(OFFER)
    assert await waited.expect("offer") == OFFER
    late = await WsClient.connect(ws(a))
    await late.send({"type": "join"})
    error = await late.expect_error("unavailable")
    assert "unavailable" in error["message"]

    redis_proc.start()  # a fresh, empty Redis
    # It recovers by itself: a join is accepted again, and the peer that was
    # waiting before the loss is back in the shared queue, so they are paired.
    async with asyncio.timeout(TIMEOUT * 3):
        while True:
            await late.send({"type": "join"})
            reply = await late.recv()
            if reply["type"] != "error":
                break
            assert reply["code"] == "unavailable"
            await asyncio.sleep(0.1)
    assert reply["type"] == "matched"
    assert reply["role"] == "offerer"
    assert (await patient.expect("matched"))["role"] == "answerer"
    for client in (waited, newcomer, patient, late):
        await client.close()


async def test_workers_share_one_port_and_one_queue(
    redis_url: str, drift_serve: StartServe
) -> None:
    proc, url = await spawn_node(drift_serve, redis_url, "--workers", "2")
    clients = [await joined(ws(url)) for _ in range(12)]
    roles = []
    for client in clients:
        first = await client.recv()
        if first["type"] == "waiting":
            first = await client.expect("matched")
        roles.append(first["role"])
    assert sorted(roles) == ["answerer"] * 6 + ["offerer"] * 6

    async def two_nodes() -> bool:
        cluster = (await stats(url)).get("cluster", {})
        return bool(cluster.get("nodes") == 2 and cluster.get("matches_total") == 6)

    await until(two_nodes)
    for client in clients:
        await client.close()
    proc.signal(signal.SIGTERM)
    assert await proc.wait(TIMEOUT * 3) == 0


async def test_simulate_verifies_every_pair_across_two_nodes(
    make_server: MakeServer, redis_url: str, tmp_path: Any
) -> None:
    """The checker itself, half the peers on each node: real WebRTC pairs across nodes."""
    # Every synthetic peer comes from 127.0.0.1: the per-address cap is off.
    a, b = [
        await make_server(redis_url=redis_url, node_id=node, max_connections_per_ip=0)
        for node in "AB"
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "drift",
        "simulate",
        "--peers",
        "52",
        "--media-fraction",
        "0",
        "--url",
        ws(a),
        "--url",
        ws(b),
        "--timeout",
        "60",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "DRIFT_REPORTS_DIR": str(tmp_path)},
    )
    assert await asyncio.wait_for(proc.wait(), 120) == 0
    (summary_path,) = tmp_path.glob("*-simulate/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["verified_pairs"] == 26
    assert summary["outcomes"]["failed"] == 0
    # Pairs really crossed nodes: both nodes created rooms.
    assert a.lobby.counters.matches > 0
    assert b.lobby.counters.matches > 0
