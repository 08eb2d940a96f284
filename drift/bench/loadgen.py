"""The benchmark load client: ``python -m drift.bench.loadgen '<json spec>'``.

Always its own process: at 10,000 connections the client holds as many sockets
as the server (one process may not hold both under a 20,000 descriptor limit),
and its CPU must not be counted as the server's. It drives drift and the bare
relay with the same frames, measures the server processes it is given (their
pids) at its own phase boundaries, and prints one JSON object on stdout.

Scenarios (``spec["scenario"]``):

``hold``
    open ``connections`` WebSockets (``concurrency`` upgrades in flight), then
    pair the first half; report the upgrade rate and the server RSS growth.
``relay``
    ``pairs`` matched pairs ping-pong ~1 KB offer/answer frames until
    ``messages`` frames were relayed; report server CPU seconds over that phase.
``latency``
    one fresh connection per join, joins sent at ``rate`` per second for
    ``duration`` seconds; report join->matched latencies.
``echo``
    the same schedule against the echo server: one frame per connection, its
    round trip.

With several ``urls``, connection ``i`` goes to ``urls[i % len(urls)]``: half
the joins on each node of a two-node cluster.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import psutil

from drift import aio
from drift.core import protocol as p
from drift.errors import DriftError
from drift.harness.env import child_env
from drift.report.stats import summarize

#: Filler so each offer/answer frame is ~1 KB on the wire, like a small real SDP.
_SDP: Final = "v=0\r\n" + "a=x-bench:" + "x" * 960 + "\r\n"
_OFFER: Final = p.encode_client(p.Offer(sdp=p.SessionDescription(type="offer", sdp=_SDP))).decode()
_ANSWER: Final = p.encode_client(
    p.Answer(sdp=p.SessionDescription(type="answer", sdp=_SDP))
).decode()
_JOIN: Final = p.encode_client(p.Join()).decode()
#: Pause between opening the connections and the paced phase, so the server's
#: work (and garbage collection) of the ramp is not counted as join latency.
SETTLE: Final = 0.5
#: Every wait of the client is bounded: a stuck server fails the run, never hangs it.
TIMEOUT: Final = 60.0


@dataclass
class Conn:
    index: int
    ws: aiohttp.ClientWebSocketResponse
    matched_at: float = 0.0
    room: str = ""
    sent_at: float = 0.0


class Servers:
    """CPU seconds and RSS of the server processes under test, one figure per process."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]

    def cpu(self) -> list[float]:
        out = []
        for proc in self.procs:
            times = proc.cpu_times()
            out.append(times.user + times.system)
        return out

    def rss(self) -> list[int]:
        return [proc.memory_info().rss for proc in self.procs]


async def connect_all(
    session: aiohttp.ClientSession, urls: Sequence[str], count: int, concurrency: int
) -> tuple[list[Conn], float]:
    """Open ``count`` WebSockets and read each ``welcome``; return them and the seconds taken."""
    gate = asyncio.Semaphore(concurrency)
    conns: list[Conn | None] = [None] * count

    async def one(i: int) -> None:
        async with gate:
            ws = await session.ws_connect(
                urls[i % len(urls)], autoping=True, max_msg_size=0, compress=0
            )
            welcome = await ws.receive(timeout=TIMEOUT)
            if welcome.type is not aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"connection {i}: expected welcome, got {welcome.type!r}")
            conns[i] = Conn(i, ws)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    # The client's own collector must not pause it mid-measurement: what it holds
    # from here on is long-lived, so move it out of the collector's sight.
    gc.collect()
    gc.freeze()
    return [c for c in conns if c is not None], elapsed


async def expect(conn: Conn, kind: str) -> p.ServerMessage:
    """The next frame of type ``kind``, skipping others (``waiting`` before ``matched``)."""
    while True:
        msg = await conn.ws.receive(timeout=TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"connection {conn.index}: {msg.type!r} while expecting {kind}")
        frame = p.decode_server(msg.data)
        if _tag(frame) == kind:
            return frame
        if isinstance(frame, p.Error):
            raise RuntimeError(f"connection {conn.index}: error {frame.code}: {frame.message}")


def _tag(frame: p.ServerMessage) -> str:
    return str(type(frame).__struct_config__.tag)


async def pair_up(conns: Sequence[Conn]) -> None:
    """Match conns (0,1), (2,3)...: each first one waits, then its partner joins.

    Sequential on purpose: the relay needs to know who is whose partner, and
    with two nodes every pair then spans ``urls[0]`` and ``urls[1]`` (joins at
    once could pair two peers of the same node through the shared queue).
    """
    for a, b in zip(conns[::2], conns[1::2], strict=True):
        await a.ws.send_str(_JOIN)
        await expect(a, "waiting")
        await b.ws.send_str(_JOIN)
        await asyncio.gather(expect(a, "matched"), expect(b, "matched"))


async def pair_bulk(conns: Sequence[Conn]) -> None:
    """Join all of ``conns`` at once and wait until each is matched (any partner)."""
    await asyncio.gather(*(c.ws.send_str(_JOIN) for c in conns))
    await asyncio.gather(*(expect(c, "matched") for c in conns))


async def scenario_hold(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    count = int(spec["connections"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        rss_before = servers.rss()
        conns, connect_s = await connect_all(
            session, spec["urls"], count, int(spec.get("concurrency", 64))
        )
        matched = conns[: count // 2 - (count // 2) % 2]
        await pair_bulk(matched)
        await asyncio.sleep(float(spec.get("settle", 1.0)))
        rss_after = servers.rss()
        if "signal_when_held" in spec:
            # For profiling: e.g. SIGUSR1 makes a traced server snapshot its heap now.
            for proc in servers.procs:
                proc.send_signal(int(spec["signal_when_held"]))
            await asyncio.sleep(float(spec.get("hold_after_signal", 2.0)))
        # No polite close of 10,000 sockets: the process exit closes them, and the
        # server under test is stopped right after anyway.
        growth = sum(rss_after) - sum(rss_before)
        return {
            "connections": len(conns),
            "matched": len(matched),
            "connect_s": connect_s,
            "upgrades_per_s": len(conns) / connect_s,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "rss_per_connection": growth / len(conns),
        }


async def scenario_relay(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    pairs = int(spec["pairs"])
    rounds = max(1, int(spec["messages"]) // (2 * pairs))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, _ = await connect_all(session, spec["urls"], 2 * pairs, 64)
        await pair_up(conns)

        async def ping_pong(a: Conn, b: Conn) -> None:
            # ``a`` may be either role: the relay does not care who offers.
            for _ in range(rounds):
                await a.ws.send_str(_OFFER)
                await _receive_text(b)
                await b.ws.send_str(_ANSWER)
                await _receive_text(a)

        cpu_before = servers.cpu()
        start = time.perf_counter()
        await asyncio.gather(
            *(ping_pong(a, b) for a, b in zip(conns[::2], conns[1::2], strict=True))
        )
        wall = time.perf_counter() - start
        cpu_after = servers.cpu()
        relayed = 2 * rounds * pairs
        cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
        return {
            "pairs": pairs,
            "relayed": relayed,
            "frame_bytes": len(_OFFER),
            "wall_s": wall,
            "frames_per_s": relayed / wall,
            "cpu_s": cpu,
            "cpu_s_per_1000": sum(cpu) / relayed * 1000,
        }


async def _receive_text(conn: Conn) -> str:
    msg = await conn.ws.receive(timeout=TIMEOUT)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise RuntimeError(f"connection {conn.index}: {msg.type!r} during relay")
    return str(msg.data)


async def _paced(conns: Sequence[Conn], rate: float, frame: str) -> None:
    """Send ``frame`` once on each conn, on a fixed schedule of ``rate`` per second.

    The schedule is absolute: a late send does not push the later ones back, so
    the offered rate is the configured one even when the loop hiccups.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    for i, conn in enumerate(conns):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        conn.sent_at = time.perf_counter()
        await conn.ws.send_str(frame)


async def scenario_latency(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    rate = float(spec["rate"])
    joins = max(2, int(rate * float(spec["duration"])) // 2 * 2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, _ = await connect_all(session, spec["urls"], joins, 64)

        async def until_matched(conn: Conn) -> None:
            frame = await expect(conn, "matched")
            conn.matched_at = time.perf_counter()
            assert isinstance(frame, p.Matched)
            conn.room = frame.roomId

        await asyncio.sleep(SETTLE)
        cpu_before = servers.cpu()
        readers = [asyncio.create_task(until_matched(c)) for c in conns]
        await _paced(conns, rate, _JOIN)
        await asyncio.gather(*readers)
        cpu_after = servers.cpu()
    rooms: dict[str, list[Conn]] = {}
    for conn in conns:
        rooms.setdefault(conn.room, []).append(conn)
    # The join that completed a room is the later of its two; the time each
    # member then waits for ``matched`` is the server's (and the network's) share.
    latencies: list[float] = []
    worst: list[tuple[float, float]] = []
    first = min(c.sent_at for c in conns)
    for members in rooms.values():
        completed = max(m.sent_at for m in members)
        latencies.extend(m.matched_at - completed for m in members)
        worst.extend((m.matched_at - completed, completed - first) for m in members)
    worst.sort(reverse=True)
    cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    return {
        "rate": rate,
        "joins": joins,
        "rooms": len(rooms),
        "latency_s": summarize(latencies),
        # (latency, seconds into the run): tells a stall (many at once) from noise
        "worst": worst[:8],
        "cpu_s": cpu,
    }


async def scenario_echo(spec: dict[str, Any], servers: Servers) -> dict[str, Any]:
    rate = float(spec["rate"])
    count = max(2, int(rate * float(spec["duration"])) // 2 * 2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        conns, _ = await connect_all(session, spec["urls"], count, 64)

        async def until_echo(conn: Conn) -> float:
            await _receive_text(conn)
            return time.perf_counter() - conn.sent_at

        await asyncio.sleep(SETTLE)
        readers = [asyncio.create_task(until_echo(c)) for c in conns]
        await _paced(conns, rate, _JOIN)
        rtts = await asyncio.gather(*readers)
    return {"rate": rate, "frames": count, "latency_s": summarize(rtts)}


SCENARIOS: Final = {
    "hold": scenario_hold,
    "relay": scenario_relay,
    "latency": scenario_latency,
    "echo": scenario_echo,
}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    servers = Servers(spec.get("pids", []))
    result = await SCENARIOS[spec["scenario"]](spec, servers)
    return {"scenario": spec["scenario"], **result}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m drift.bench.loadgen '<json spec>'", file=sys.stderr)
        return 2
    # The same loop for every server under test: client overhead cancels out
    # of the ratios, and uvloop keeps it small.
    result = aio.run(run(json.loads(args[0])))
    print(json.dumps(result), flush=True)
    return 0


def run_json_client(
    module: str, spec: dict[str, Any], timeout: float = 180.0, what: str = "load client"
) -> dict[str, Any]:
    """``python3 -m module SPEC_JSON`` in its own process; the JSON its last line prints.

    Every load client of the bench runs this way, so its CPU and memory never
    mix with the measuring process's.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=False,
    )
    if done.returncode != 0:
        raise DriftError(f"{what} failed ({done.returncode}): {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def run_loadgen(spec: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """Run the load client in its own process (see above) and return its JSON result."""
    return run_json_client("drift.bench.loadgen", spec, timeout)


if __name__ == "__main__":
    sys.exit(main())
