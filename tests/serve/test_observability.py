"""Structured logs (JSON lines, correlation ids, no SDP/IPs) and Prometheus /metrics vs /stats."""

from __future__ import annotations

import json
import signal
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drift.client import urls
from drift.harness.serve import AsyncServeProcess
from drift.harness.waiting import until
from drift.serve.server import Server
from tests.conftest import MakeServer
from tests.support.wsclient import TIMEOUT, WsClient, pair

# Recognisable payloads: none of these may ever reach a log line.
SDP_MARKER = "o=- 4611731400430051336 2 IN IP4 198.51.100.23"
SDP_TEXT = f"v=0\r\n{SDP_MARKER}\r\ns=drift-log-probe\r\nt=0 0\r\n"
CANDIDATE_IP = "203.0.113.77"
CANDIDATE = f"candidate:842163049 1 udp 1677729535 {CANDIDATE_IP} 49203 typ srflx"
ANSWER_IP = "192.0.2.199"
ANSWER_SDP = f"v=0\r\no=- 1 2 IN IP4 {ANSWER_IP}\r\na=candidate:1 1 udp 1 {ANSWER_IP} 9 typ host"


def ws_url(server: Server) -> str:
    return urls.ws_url(server.url)


async def scripted_session(url: str) -> dict[str, Any]:
    """Two peers meet, exchange SDP and candidates, skip, leave; a third waits and goes."""
    answerer, offerer = await pair(url)
    await offerer.send({"type": "offer", "sdp": {"type": "offer", "sdp": SDP_TEXT}})
    assert (await answerer.expect("offer"))["sdp"]["sdp"] == SDP_TEXT
    await answerer.send({"type": "answer", "sdp": {"type": "answer", "sdp": ANSWER_SDP}})
    await offerer.expect("answer")
    for candidate in ({"candidate": CANDIDATE, "sdpMid": "0", "sdpMLineIndex": 0}, None):
        await offerer.send({"type": "ice-candidate", "candidate": candidate})
        await answerer.expect("ice-candidate")
    # Bad input that carries SDP text must not be echoed into the log either.
    await offerer.send_raw('{"type": "offer", "sdp": "' + SDP_MARKER + '"')
    await offerer.expect_error("invalid-json")
    await offerer.send({"type": "offer", "sdp": {"type": "answer", "sdp": SDP_TEXT}})
    await offerer.expect_error("invalid-message")
    await offerer.send({"type": "next"})
    await offerer.expect("waiting")
    await answerer.expect("partner-left")
    await answerer.send({"type": "join"})  # on cooldown with offerer: waits too
    await answerer.expect("waiting")
    await answerer.send({"type": "leave"})
    await offerer.close()
    await answerer.close()
    return {"answerer": answerer.peer_id, "offerer": offerer.peer_id}


@pytest.mark.slow
async def test_json_log_lines_carry_events_and_ids_but_never_sdp_or_candidate_ips() -> None:
    proc = await AsyncServeProcess.start("--log-format", "json", "--log-level", "debug")
    try:
        ids = await scripted_session(proc.ws_url)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=TIMEOUT) == 0
    finally:
        await proc.kill()

    log = "".join(proc.stderr)
    for secret_ish in (SDP_MARKER, "drift-log-probe", CANDIDATE_IP, ANSWER_IP, "candidate:"):
        assert secret_ish not in log, secret_ish
    lines = [json.loads(line) for line in proc.stderr if line.strip()]
    assert lines, "no log output"
    for line in lines:
        assert {"ts", "level", "event", "logger"} <= line.keys(), line
        assert line["ts"].endswith("Z") and line["level"] in ("debug", "info", "warning", "error")
    events = [line["event"] for line in lines]
    for name in (
        "server_started",
        "peer_connected",
        "peer_waiting",
        "peer_matched",
        "room_closed",
        "peer_disconnected",
        "server_draining",
        "server_stopped",
    ):
        assert name in events, name
    matched = [line for line in lines if line["event"] == "peer_matched"]
    assert {m["peerId"] for m in matched} == set(ids.values())
    assert len({m["roomId"] for m in matched}) == 1
    assert all(isinstance(m["wait_s"], float) and m["wait_s"] >= 0 for m in matched)
    (closed,) = [line for line in lines if line["event"] == "room_closed"]
    assert closed["roomId"] == matched[0]["roomId"] and closed["reason"] == "next"
    gone = {line["peerId"] for line in lines if line["event"] == "peer_disconnected"}
    assert gone == set(ids.values())


@pytest.mark.slow
async def test_console_log_format_is_readable_lines() -> None:
    proc = await AsyncServeProcess.start("--log-format", "console")
    try:
        client = await WsClient.connect(proc.ws_url)
        await client.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait(timeout=TIMEOUT) == 0
    finally:
        await proc.kill()
    lines = [line for line in proc.stderr if "peer_connected" in line]
    assert lines and not lines[0].startswith("{")
    assert f"peerId={client.peer_id}" in lines[0]


# ---------------------------------------------------------------- metrics


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(server: Server) -> tuple[dict[str, Any], dict[Any, float]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/stats") as resp:
            stats = await resp.json()
        async with session.get(server.url + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            metrics = parse_metrics(await resp.text())
    return stats, metrics


async def test_metrics_after_a_scripted_session_and_stats_agree(make_server: MakeServer) -> None:
    server = await make_server(max_connections=4, max_connections_per_ip=0)
    url = ws_url(server)
    answerer, offerer = await pair(url)
    offer = {"type": "offer", "sdp": {"type": "offer", "sdp": "v=0\r\n"}}
    await offerer.send(offer)
    await answerer.expect("offer")
    await answerer.send({"type": "answer", "sdp": {"type": "answer", "sdp": "v=0\r\n"}})
    await offerer.expect("answer")
    for candidate in ({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}, None):
        await offerer.send({"type": "ice-candidate", "candidate": candidate})
        await answerer.expect("ice-candidate")
    await offerer.send_raw("nope")
    await offerer.expect_error("invalid-json")
    waiter = await WsClient.connect(url)
    await waiter.send({"type": "leave"})
    await waiter.expect_error("invalid-state")
    await waiter.send({"type": "join"})
    await waiter.expect("waiting")
    big = await WsClient.connect(url)
    await big.send_raw('{"type":"join","pad":"' + "x" * 70_000 + '"}')
    assert await big.expect_close() == 1009
    await big.close()
    bad_utf8 = await WsClient.connect(url)
    await bad_utf8.ws.send_frame(b'{"type":"join","x":"\xff\xfe"}', aiohttp.WSMsgType.TEXT)
    assert await bad_utf8.expect_close() == 1007  # aiohttp, per RFC 6455 (docs/operations.md)
    await bad_utf8.close()
    await until(lambda: server.lobby.connections == 3)
    extra = await WsClient.connect(url)  # 4th of max 4
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as refused:
        assert (await refused.receive(timeout=TIMEOUT)).type is aiohttp.WSMsgType.CLOSE
        assert refused.close_code == 1013

    stats, m = await scrape(server)
    assert m[("drift_connections", ())] == 4 == stats["connections"]
    assert m[("drift_waiting", ())] == 1 == stats["waiting"]
    assert m[("drift_rooms", ())] == 1 == stats["rooms"]
    assert m[("drift_matches_total", ())] == 1 == stats["matches_total"]
    messages = {
        labels[0][1]: v for (name, labels), v in m.items() if name == "drift_messages_total"
    }
    assert messages == {"join": 3, "offer": 1, "answer": 1, "ice-candidate": 2, "leave": 1}
    errors = {labels[0][1]: v for (name, labels), v in m.items() if name == "drift_errors_total"}
    assert errors == {"invalid-json": 1, "invalid-state": 1}
    closes = {labels[0][1]: v for (name, labels), v in m.items() if name == "drift_closes_total"}
    assert closes == {"1007": 1, "1009": 1, "1013": 1}
    # One observation per matched peer (the waiter and the newcomer).
    assert m[("drift_match_wait_seconds_count", ())] == 2
    assert m[("drift_match_wait_seconds_sum", ())] >= 0
    assert m[("drift_match_wait_seconds_bucket", (("le", "+Inf"),))] == 2
    # the standard process metric, not a drift_rss_bytes of its own
    assert not [name for name, _ in m if name == "drift_rss_bytes" or name.endswith("_created")]
    rss = m[("process_resident_memory_bytes", ())]
    assert 10e6 < rss < 4e9
    assert abs(stats["rss_bytes"] - rss) < 0.5 * rss
    assert stats["uptime_s"] > 0

    # Everyone leaves: the gauges go back to 0 and the totals stay.
    for client in (answerer, offerer, waiter, extra):
        await client.close()
    await until(lambda: server.lobby.connections == 0)
    stats, m = await scrape(server)
    assert m[("drift_connections", ())] == m[("drift_waiting", ())] == m[("drift_rooms", ())] == 0
    assert stats["connections"] == stats["waiting"] == stats["rooms"] == 0
    assert m[("drift_matches_total", ())] == 1 == stats["matches_total"]
