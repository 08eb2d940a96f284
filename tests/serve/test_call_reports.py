"""``call-report`` frames (docs/protocol.md) reach /stats and /metrics, on both backends.

Reports get no reply when accepted, so each test sends a frame of an unknown
type afterwards: frames of one socket are handled in order, so its
``unknown-type`` error proves the report before it was handled.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drift.client import urls
from drift.core.call_report import CallStats
from drift.harness.waiting import until
from drift.serve.server import Server
from tests.conftest import MakeServer
from tests.support.wsclient import WsClient

CONNECTED = {
    "type": "call-report",
    "outcome": "connected",
    "connectMs": 700,
    "localCandidate": "relay",
    "remoteCandidate": "srflx",
    "relayProtocol": "tcp",
    "rttMs": 42.5,
    "lossPct": 0.0,
    "bitrateKbps": 900,
}
FAILED = {"type": "call-report", "outcome": "failed", "layer": "ice"}
EMPTY: dict[str, object] = CallStats().snapshot()


async def barrier(client: WsClient) -> None:
    """Every frame the client sent before this one has been handled by the server."""
    await client.send({"type": "x-barrier"})
    await client.expect_error("unknown-type")


async def stats(server: Server) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/stats") as resp:
        value = await resp.json()
    assert isinstance(value, dict)
    return value


async def samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.text()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("drift_call_", "drift_cluster_call_")):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def room_pair(url: str) -> tuple[WsClient, WsClient, str]:
    """Two peers in one room: (answerer, offerer, room id)."""
    answerer = await WsClient.connect(url)
    await answerer.send({"type": "join"})
    await answerer.expect("waiting")
    offerer = await WsClient.connect(url)
    await offerer.send({"type": "join"})
    room = (await offerer.expect("matched"))["roomId"]
    assert (await answerer.expect("matched"))["roomId"] == room
    return answerer, offerer, room


def ws(server: Server) -> str:
    return urls.ws_url(server.url)


@pytest.fixture
async def node(make_server: MakeServer, backend: dict[str, Any]) -> Server:
    # A short node TTL makes the heartbeat (TTL / 5) publish the cluster sums quickly.
    return await make_server(node_ttl=1.0, **backend)


async def test_welcome_announces_the_call_report_feature(node: Server) -> None:
    client = await WsClient.connect(ws(node))
    try:
        assert client.welcome["protocol"] == 1
        assert "call-report" in client.welcome["features"]
    finally:
        await client.close()


async def test_reports_of_both_sides_show_up_in_stats_and_metrics(node: Server) -> None:
    answerer, offerer, room = await room_pair(ws(node))
    try:
        await offerer.send({**CONNECTED, "roomId": room})
        await answerer.send({**FAILED, "roomId": room})
        await barrier(offerer)
        await barrier(answerer)
        calls = (await stats(node))["calls"]
        assert calls["connected"] == 1
        assert calls["failed"] == {"ice": 1, "dtls": 0, "datachannel": 0, "media": 0}
        assert calls["relayed"] == {"udp": 0, "tcp": 1, "tls": 0}
        assert calls["pairs"] == {"relay/srflx": 1}
        # 700 ms is in the (500, 1000] bucket; 42.5 ms RTT in (25, 50]
        assert calls["connect_ms"]["counts"][calls["connect_ms"]["le"].index(1000)] == 1
        assert calls["connect_ms"]["sum"] == 700
        assert calls["rtt_ms"]["counts"][calls["rtt_ms"]["le"].index(50)] == 1
        assert sum(calls["loss_pct"]["counts"]) == 1
        metrics = await samples(node)
        assert metrics[_key("drift_call_reports_total", layer="", outcome="connected")] == 1
        assert metrics[_key("drift_call_reports_total", layer="ice", outcome="failed")] == 1
        assert metrics[_key("drift_call_relayed_total", transport="tcp")] == 1
        assert metrics[_key("drift_call_candidate_pairs_total", local="relay", remote="srflx")] == 1
        assert metrics[_key("drift_call_connect_seconds_bucket", le="0.5")] == 0
        assert metrics[_key("drift_call_connect_seconds_bucket", le="1.0")] == 1
        assert metrics[_key("drift_call_connect_seconds_count")] == 1
        assert metrics[_key("drift_call_connect_seconds_sum")] == pytest.approx(0.7)
        assert metrics[_key("drift_call_rtt_seconds_bucket", le="0.05")] == 1
        assert metrics[_key("drift_call_bitrate_kbps_bucket", le="1200.0")] == 1
        if node.backend is not None:
            # the Redis backend publishes each node's figures and sums them cluster-wide
            async def summed() -> bool:
                cluster = (await stats(node))["cluster"]["calls"]
                return cluster["connected"] == 1 and cluster["failed"]["ice"] == 1

            await until(summed, timeout=10)
            metrics = await samples(node)
            assert (
                metrics[_key("drift_cluster_call_reports_total", layer="", outcome="connected")]
                == 1
            )
    finally:
        await offerer.close()
        await answerer.close()


async def test_a_report_for_the_room_just_left_is_accepted(node: Server) -> None:
    answerer, offerer, room = await room_pair(ws(node))
    try:
        await offerer.send({"type": "leave"})
        await answerer.expect("partner-left")
        await offerer.send({**FAILED, "layer": "dtls", "roomId": room})
        await answerer.send({**FAILED, "layer": "media", "roomId": room})
        await barrier(offerer)
        await barrier(answerer)
        failed = (await stats(node))["calls"]["failed"]
        assert failed == {"ice": 0, "dtls": 1, "datachannel": 0, "media": 1}
    finally:
        await offerer.close()
        await answerer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({**FAILED, "roomId": "not-this-room"}, "invalid-state"),
        ({**CONNECTED, "connectMs": -1}, "invalid-message"),
        ({**CONNECTED, "connectMs": 600_001}, "invalid-message"),
        ({**CONNECTED, "lossPct": 100.5}, "invalid-message"),
        ({**CONNECTED, "rttMs": "fast"}, "invalid-message"),
        ({**CONNECTED, "localCandidate": "10.0.0.1"}, "invalid-message"),
        ({**CONNECTED, "relayProtocol": "quic"}, "invalid-message"),
        ({**CONNECTED, "localCandidate": "host"}, "invalid-message"),  # relayProtocol w/o relay
        ({**CONNECTED, "layer": "ice"}, "invalid-message"),
        ({**FAILED, "layer": "sctp"}, "invalid-message"),
        ({**FAILED, "layer": None}, "invalid-message"),
        ({**FAILED, "connectMs": 10}, "invalid-message"),
        ({"type": "call-report", "outcome": "failed"}, "invalid-message"),  # no roomId, layer
        ({**FAILED, "roomId": "r" * 65}, "invalid-message"),  # oversized
        ({**FAILED, "roomId": ""}, "invalid-message"),
        ({**FAILED, "outcome": "maybe"}, "invalid-message"),
    ],
)
async def test_bad_reports_are_refused_and_change_no_metric(
    node: Server, frame: dict[str, Any], code: str
) -> None:
    answerer, offerer, room = await room_pair(ws(node))
    try:
        before = await samples(node)
        await offerer.send({"roomId": room, **frame})
        await offerer.expect_error(code)
        assert (await stats(node))["calls"] == EMPTY
        assert await samples(node) == before
        # the refusal used nothing up: the right report is still taken once
        await offerer.send({**FAILED, "roomId": room})
        await barrier(offerer)
        assert (await stats(node))["calls"]["failed"]["ice"] == 1
    finally:
        await offerer.close()
        await answerer.close()


async def test_a_second_report_and_one_before_any_room_are_out_of_state(node: Server) -> None:
    loner = await WsClient.connect(ws(node))
    answerer, offerer, room = await room_pair(ws(node))
    try:
        await loner.send({**FAILED, "roomId": "r1"})
        await loner.expect_error("invalid-state")
        await offerer.send({**FAILED, "roomId": room})
        await offerer.send({**CONNECTED, "roomId": room})
        err = await offerer.expect_error("invalid-state")
        assert "twice" in err["message"]
        calls = (await stats(node))["calls"]
        assert calls["connected"] == 0 and calls["failed"]["ice"] == 1
    finally:
        await loner.close()
        await offerer.close()
        await answerer.close()


async def test_a_report_on_an_older_room_is_refused_once_a_new_one_began(
    make_server: MakeServer,
) -> None:
    node = await make_server(rematch_cooldown=0.0)
    answerer, offerer, old = await room_pair(ws(node))
    try:
        await offerer.send({"type": "next"})
        await answerer.expect("partner-left")
        await answerer.send({"type": "join"})
        new = await answerer.expect("matched")
        await offerer.expect("waiting")
        await offerer.expect("matched")
        assert new["roomId"] != old
        await offerer.send({**FAILED, "roomId": old})
        await offerer.expect_error("invalid-state")
        await offerer.send({**FAILED, "roomId": new["roomId"]})
        await barrier(offerer)
        assert (await stats(node))["calls"]["failed"]["ice"] == 1
    finally:
        await offerer.close()
        await answerer.close()


async def test_reports_cost_the_rate_limit_like_any_frame(make_server: MakeServer) -> None:
    node = await make_server(rate_limit=1.0, rate_burst=2)
    answerer, offerer, room = await room_pair(ws(node))
    try:
        await offerer.send({**FAILED, "roomId": "nope"})  # join + this: the burst is spent
        await offerer.expect_error("invalid-state")
        await offerer.send({**FAILED, "roomId": room})
        await offerer.expect_error("rate-limited")
        assert (await stats(node))["calls"] == EMPTY
    finally:
        await offerer.close()
        await answerer.close()


async def test_the_drop_call_reports_fault_takes_reports_without_counting(
    make_server: MakeServer,
) -> None:
    from drift.core.lobby import Fault

    node = await make_server(faults=frozenset({Fault.DROP_CALL_REPORTS}))
    answerer, offerer, room = await room_pair(ws(node))
    try:
        await offerer.send({**CONNECTED, "roomId": room})
        await barrier(offerer)
        assert (await stats(node))["calls"] == EMPTY
    finally:
        await offerer.close()
        await answerer.close()


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


async def test_two_redis_nodes_sum_their_reports_cluster_wide(
    make_server: MakeServer, redis_url: str
) -> None:
    """A room across two nodes: each node counts its own side; both show the sum."""
    a = await make_server(node_ttl=1.0, redis_url=redis_url)
    b = await make_server(node_ttl=1.0, redis_url=redis_url)
    answerer = await WsClient.connect(ws(a))
    await answerer.send({"type": "join"})
    await answerer.expect("waiting")
    offerer = await WsClient.connect(ws(b))
    await offerer.send({"type": "join"})
    room = (await offerer.expect("matched"))["roomId"]
    assert (await answerer.expect("matched"))["roomId"] == room
    try:
        await offerer.send({**CONNECTED, "roomId": room})
        await answerer.send({**FAILED, "layer": "datachannel", "roomId": room})
        await barrier(offerer)
        await barrier(answerer)
        assert (await stats(b))["calls"]["connected"] == 1
        assert (await stats(a))["calls"]["failed"]["datachannel"] == 1

        async def summed() -> bool:
            for node in (a, b):
                cluster = (await stats(node))["cluster"]["calls"]
                if (cluster["connected"], cluster["failed"]["datachannel"]) != (1, 1):
                    return False
            return True

        await until(summed, timeout=10)
        metrics = await samples(a)
        assert metrics[_key("drift_cluster_call_relayed_total", transport="tcp")] == 1
        assert (
            metrics[_key("drift_cluster_call_reports_total", layer="datachannel", outcome="failed")]
            == 1
        )
    finally:
        await offerer.close()
        await answerer.close()
