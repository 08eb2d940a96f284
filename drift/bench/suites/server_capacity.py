"""Server capacity of ``drift serve`` against bare aiohttp baselines, in one run.

* memory per connection: server RSS growth with ``hold_connections`` open (half
  of them matched in rooms, half connected and idle), drift vs the bare relay;
* connection rate: upgrades (+ ``welcome``) per second while opening them;
* relay cost: server CPU seconds per 1,000 relayed ~1 KB offer/answer frames
  between matched pairs, drift vs the bare relay;
* match latency: join->matched at a fixed join rate, vs a WebSocket echo round
  trip at the same rate;
* event loop: the relay and latency figures again with plain asyncio instead of
  uvloop;
* peerjs-server (npm ``peer``, Node; :mod:`drift.bench.suites.peerjs`): memory per
  connection and relay CPU against the server most demos start from, when
  node and npm are present (otherwise the section says why it was skipped).

Repetitions are interleaved (drift, baseline, drift, baseline...) so that load
from other work on the machine hits both alike; the table shows medians.

Run alone: ``python -m drift.bench.suites.server_capacity [--quick]`` (``drift bench``
runs it with the others).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from statistics import median
from typing import Any

from drift.bench.loadgen import run_loadgen
from drift.bench.results import Outcome, Row, Section, fmt_latency
from drift.bench.runner import Bench
from drift.bench.servers import DRIFT_FLAGS, bare_server, drift_server
from drift.bench.suites import peerjs
from drift.harness.serve import ServeProcess

KB = 1000.0


def _hold(bench: Bench, server: ServeProcess) -> dict[str, Any]:
    server.start()
    try:
        return run_loadgen(
            {
                "scenario": "hold",
                "urls": [server.ws_url],
                "pids": [server.pid],
                "connections": bench.sizes.hold_connections,
                "concurrency": 64,
            }
        )
    finally:
        server.stop(kill=True)


def _relay_and_latency(bench: Bench, server: ServeProcess, latency: bool) -> dict[str, Any]:
    sizes = bench.sizes
    server.start()
    try:
        target = {"urls": [server.ws_url], "pids": [server.pid]}
        out: dict[str, Any] = {
            "relay": run_loadgen(
                {
                    "scenario": "relay",
                    **target,
                    "pairs": sizes.relay_pairs,
                    "messages": sizes.relay_messages,
                }
            )
        }
        if latency:
            out["latency"] = run_loadgen(
                {
                    "scenario": "latency",
                    **target,
                    "rate": sizes.join_rate,
                    "duration": sizes.latency_duration,
                }
            )
        return out
    finally:
        server.stop(kill=True)


def _echo(bench: Bench, server: ServeProcess) -> dict[str, Any]:
    server.start()
    try:
        return run_loadgen(
            {
                "scenario": "echo",
                "urls": [server.ws_url],
                "pids": [server.pid],
                "rate": bench.sizes.join_rate,
                "duration": bench.sizes.latency_duration,
            }
        )
    finally:
        server.stop(kill=True)


def run(bench: Bench) -> Outcome:
    sizes = bench.sizes
    logs = bench.log_dir
    node = peerjs.install()
    if isinstance(node, str):
        bench.log(f"[yellow]peerjs baseline skipped: {node}[/]")
    bench.begin("server capacity", sizes.reps * (6 if isinstance(node, str) else 8))
    reps: list[dict[str, Any]] = []
    for rep in range(1, sizes.reps + 1):
        r: dict[str, Any] = {}
        n = sizes.hold_connections
        with bench.step(f"rep {rep}: drift holds {n:,} connections"):
            r["drift_hold"] = _hold(bench, drift_server(f"drift-hold-{rep}", logs))
        with bench.step(f"rep {rep}: bare relay holds {n:,} connections"):
            r["bare_hold"] = _hold(bench, bare_server(f"bare-hold-{rep}", logs, bench.bare_script))
        with bench.step(f"rep {rep}: drift relay + joins at {sizes.join_rate:g}/s (uvloop)"):
            r["drift"] = _relay_and_latency(bench, drift_server(f"drift-{rep}", logs), True)
        with bench.step(f"rep {rep}: bare relay"):
            server = bare_server(f"bare-{rep}", logs, bench.bare_script)
            r["bare"] = _relay_and_latency(bench, server, False)
        with bench.step(f"rep {rep}: echo at {sizes.join_rate:g}/s"):
            r["echo"] = _echo(bench, bare_server(f"echo-{rep}", logs, bench.bare_script, "echo"))
        with bench.step(f"rep {rep}: drift relay + joins on plain asyncio"):
            server = drift_server(f"drift-asyncio-{rep}", logs, uvloop=False)
            r["drift_asyncio"] = _relay_and_latency(bench, server, True)
        if isinstance(node, Path):
            _peerjs_rep(bench, node, rep, r)
        reps.append(r)
    rows = _rows(reps, sizes.join_rate)
    if isinstance(node, Path):
        rows += _peerjs_rows(reps)
    skipped = node if isinstance(node, str) else None
    return Outcome(
        rows=rows,
        sections=[_section(bench, reps, rows, skipped)],
        raw={"repetitions": reps, "peerjs": skipped or f"peer@{peerjs.VERSION}"},
    )


def _peerjs_rep(bench: Bench, script: Path, rep: int, r: dict[str, Any]) -> None:
    sizes = bench.sizes
    n = sizes.hold_connections
    with bench.step(f"rep {rep}: peerjs-server holds {n:,} connections"):
        spec = {"scenario": "hold", "connections": n}
        r["peerjs_hold"] = peerjs.measure(script, bench.log_dir, f"peerjs-hold-{rep}", spec)
    with bench.step(f"rep {rep}: peerjs-server relay"):
        spec = {"scenario": "relay", "pairs": sizes.relay_pairs, "messages": sizes.relay_messages}
        r["peerjs_relay"] = peerjs.measure(script, bench.log_dir, f"peerjs-{rep}", spec)


def _peerjs_rows(reps: list[dict[str, Any]]) -> list[Row]:
    name = f"peerjs-server {peerjs.VERSION} (Node)"
    # aiohttp's floor, shown in every run: what drift's memory row could at
    # best reach without leaving aiohttp (reported, no target).
    floor = Row(
        "aiohttp's floor: bare aiohttp relay (not drift) memory per connection vs peerjs-server",
        "KB",
        [r["bare_hold"]["rss_per_connection"] / KB for r in reps],
        name,
        [r["peerjs_hold"]["rss_per_connection"] / KB for r in reps],
        digits=1,
    )
    drift_kb = [r["drift_hold"]["rss_per_connection"] / KB for r in reps]
    of_floor = median(drift_kb) / floor.value if floor.value else math.nan
    return [
        Row(
            "memory per connection vs peerjs-server",
            "KB",
            drift_kb,
            name,
            [r["peerjs_hold"]["rss_per_connection"] / KB for r in reps],
            target=1.0,
            digits=1,
            why_missed=f"the least an aiohttp server keeps is {floor.ratio:.2f}x peerjs's "
            f"(next row), and drift keeps {of_floor:.2f}x that least",
        ),
        floor,
        Row(
            "relay CPU per 1,000 ~1 KB frames vs peerjs-server",
            "ms",
            [r["drift"]["relay"]["cpu_s_per_1000"] * 1000 for r in reps],
            name,
            [r["peerjs_relay"]["cpu_s_per_1000"] * 1000 for r in reps],
            target=1.0,
            digits=1,
        ),
    ]


def _rows(reps: list[dict[str, Any]], rate: float) -> list[Row]:
    def each(*path: str) -> list[float]:
        out = []
        for r in reps:
            value: Any = r
            for key in path:
                value = value[key]
            out.append(float(value))
        return out

    def ms(*path: str) -> list[float]:
        return [v * 1000 for v in each(*path)]

    return [
        Row(
            "memory per connection",
            "KB",
            [v / KB for v in each("drift_hold", "rss_per_connection")],
            "bare aiohttp relay",
            [v / KB for v in each("bare_hold", "rss_per_connection")],
            target=1.2,
            digits=1,
        ),
        Row(
            "relay CPU per 1,000 ~1 KB frames",
            "ms",
            ms("drift", "relay", "cpu_s_per_1000"),
            "bare aiohttp relay",
            ms("bare", "relay", "cpu_s_per_1000"),
            target=1.2,
            digits=1,
        ),
        Row(
            f"join->matched p99 at {rate:g} joins/s",
            "ms",
            ms("drift", "latency", "latency_s", "p99"),
            "echo round trip p99",
            ms("echo", "latency_s", "p99"),
            target=2.0,
        ),
        Row(
            f"join->matched p50 at {rate:g} joins/s",
            "ms",
            ms("drift", "latency", "latency_s", "p50"),
            "echo round trip p50",
            ms("echo", "latency_s", "p50"),
        ),
        Row(
            "connection rate (upgrade + welcome)",
            "/s",
            each("drift_hold", "upgrades_per_s"),
            "bare aiohttp relay",
            each("bare_hold", "upgrades_per_s"),
            higher_is_better=True,
            digits=0,
        ),
        Row(
            "relay CPU on plain asyncio (vs uvloop)",
            "ms",
            ms("drift_asyncio", "relay", "cpu_s_per_1000"),
            "drift on uvloop",
            ms("drift", "relay", "cpu_s_per_1000"),
            digits=1,
        ),
        Row(
            f"join->matched p99 on plain asyncio (vs uvloop), {rate:g}/s",
            "ms",
            ms("drift_asyncio", "latency", "latency_s", "p99"),
            "drift on uvloop",
            ms("drift", "latency", "latency_s", "p99"),
        ),
    ]


def _section(
    bench: Bench, reps: list[dict[str, Any]], rows: list[Row], peerjs_skipped: str | None
) -> Section:
    sizes = bench.sizes
    lines = [
        "Run: `drift bench` (everything; how long it took is stated above the table), "
        "`drift bench --quick`, `drift bench --only server`; "
        "`python3 -m drift.bench.suites.profile_server` for profiles.",
        "",
        "Every drift server under test is `drift serve --host 127.0.0.1 --port 0 "
        + " ".join(DRIFT_FLAGS)
        + "` (all load comes from 127.0.0.1 and 10,000 connections must be let in; the "
        "per-connection rate limit is off so the relay figure measures relaying, not "
        "refusing). Everything else is at its default: JSON logs at info level, "
        "heartbeat 20 s, uvloop (unless the row says plain asyncio).",
        "",
        "The baseline `drift/bench/suites/bare_relay.py` is the least an aiohttp WebSocket server "
        "can do: parse the frame (msgspec), look up the partner, send; `join` pairs with "
        "whoever waits. No validation, rate limit, heartbeat, logs or metrics; per "
        "connection one dict entry of its own, and the 101 answer's headers dropped once "
        "sent: its memory per connection is aiohttp's floor through aiohttp's API (the row "
        '"aiohttp\'s floor" compares it with peerjs-server). Its '
        "`--mode echo` sends every frame back unparsed.",
        "",
        "The load client (`python3 -m drift.bench.loadgen`, aiohttp on uvloop) is a separate "
        "process from the server, so each holds its own sockets (the 20,000 descriptor "
        "limit per process) and the server's CPU and RSS are its own "
        "(`/proc/<pid>` via psutil, read by the client at its phase boundaries).",
        "",
        f"- **memory**: RSS growth of the server from before the first upgrade to 1 s after "
        f"{sizes.hold_connections:,} connections are open, half of them matched in rooms "
        "(the other half idle after `welcome`: a FIFO queue of compatible peers holds at "
        "most one waiting peer, any two would be paired), divided by the connection count.",
        "- **connection rate**: those upgrades (+ reading `welcome`), 64 in flight, from one "
        "client process; the client's own CPU bounds it on 2 cores, so it is reported, "
        "not targeted.",
        f"- **relay**: {sizes.relay_pairs} matched pairs ping-pong {sizes.relay_messages:,} "
        "offer/answer frames of ~1 KB in total; server CPU seconds (user + system) over "
        "that phase per 1,000 frames relayed.",
        f"- **match latency**: {sizes.join_rate:g} joins/s for {sizes.latency_duration:g} s, "
        "each on a fresh connection opened beforehand; for each room, the time from the "
        "join that completed it to each member's `matched`. The echo baseline sends one "
        "frame per fresh connection on the same schedule and times its round trip.",
        "",
        "| rep | drift KB/conn | bare KB/conn | drift upgrades/s | bare upgrades/s "
        "| drift ms/1k frames | bare ms/1k frames | asyncio ms/1k frames "
        "| drift p50/p99 | asyncio p50/p99 | echo p50/p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(reps, 1):
        lines.append(
            f"| {i} | {r['drift_hold']['rss_per_connection'] / KB:.1f} "
            f"| {r['bare_hold']['rss_per_connection'] / KB:.1f} "
            f"| {r['drift_hold']['upgrades_per_s']:,.0f} | {r['bare_hold']['upgrades_per_s']:,.0f} "
            f"| {r['drift']['relay']['cpu_s_per_1000'] * 1000:.1f} "
            f"| {r['bare']['relay']['cpu_s_per_1000'] * 1000:.1f} "
            f"| {r['drift_asyncio']['relay']['cpu_s_per_1000'] * 1000:.1f} "
            f"| {fmt_latency(r['drift']['latency']['latency_s'])} "
            f"| {fmt_latency(r['drift_asyncio']['latency']['latency_s'])} "
            f"| {fmt_latency(r['echo']['latency_s'])} |"
        )
    lines.append("")
    if peerjs_skipped is not None:
        lines.append(f"peerjs-server baseline: **skipped** ({peerjs_skipped}).")
    else:
        lines += [
            f"peerjs-server {peerjs.VERSION} (npm `peer`, installed by the bench under "
            "`reports/.cache/peerjs`), `--concurrent_limit 20000`, on Node "
            f"{peerjs.node_version()}. It has no rooms: "
            "every held connection is idle after `OPEN` (half of drift's are matched). Relay: "
            "the same pairs and counts, ~1 KB `OFFER`/`ANSWER` frames with `dst`.",
            "",
            "| rep | peerjs KB/conn | peerjs upgrades/s | peerjs ms/1k frames |",
            "|---|---|---|---|",
        ]
        for i, r in enumerate(reps, 1):
            lines.append(
                f"| {i} | {r['peerjs_hold']['rss_per_connection'] / KB:.1f} "
                f"| {r['peerjs_hold']['upgrades_per_s']:,.0f} "
                f"| {r['peerjs_relay']['cpu_s_per_1000'] * 1000:.1f} |"
            )
    return Section("Server", "\n".join(lines))


if __name__ == "__main__":
    from drift.bench.command import bench as bench_command

    sys.exit(bench_command(["--only", "server", *sys.argv[1:]]))
