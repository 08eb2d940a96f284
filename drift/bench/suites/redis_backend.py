"""The Redis backend against the in-memory backend, in one run.

Its own ``redis-server`` on a free loopback port (``--save "" --appendonly no``),
two ``drift serve --redis`` nodes, half the connections on each:

* join->matched latency at a fixed join rate (200/s): joins alternate between
  the nodes, so nearly every room spans both and its pairing is the Lua script's;
* relay CPU per 1,000 ~1 KB frames between pairs that span the two nodes (each
  frame goes node -> Redis pub/sub -> node), summed over both nodes, against one
  in-memory node relaying the same load. redis-server's own CPU is shown apart.

Repetitions alternate in-memory and Redis. Run alone:
``python -m drift.bench.suites.redis_backend [--quick]``.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

from drift.bench.loadgen import run_loadgen
from drift.bench.results import Outcome, Row, Section, fmt_latency
from drift.bench.runner import Bench
from drift.bench.servers import DRIFT_FLAGS, drift_server
from drift.harness.programs import MissingProgram
from drift.harness.redis import RedisServer
from drift.harness.serve import ServeProcess


def _measure(bench: Bench, nodes: list[ServeProcess], extra_pids: list[int]) -> dict[str, Any]:
    sizes = bench.sizes
    for node in nodes:
        node.start()
    try:
        # With two nodes, connection i goes to node i % 2: every relay pair spans both.
        target = {
            "urls": [n.ws_url for n in nodes],
            "pids": [*(n.pid for n in nodes), *extra_pids],
        }
        relay = run_loadgen(
            {
                "scenario": "relay",
                **target,
                "pairs": sizes.relay_pairs,
                "messages": sizes.relay_messages,
            }
        )
        latency = run_loadgen(
            {
                "scenario": "latency",
                **target,
                "rate": sizes.redis_join_rate,
                "duration": sizes.latency_duration,
            }
        )
    finally:
        for node in nodes:
            node.stop(kill=True)
    node_cpu = sum(relay["cpu_s"][: len(nodes)])
    return {
        "relay": relay,
        "latency": latency,
        "node_cpu_s_per_1000": node_cpu / relay["relayed"] * 1000,
        "other_cpu_s_per_1000": sum(relay["cpu_s"][len(nodes) :]) / relay["relayed"] * 1000,
    }


def run(bench: Bench) -> Outcome:
    sizes = bench.sizes
    logs = bench.log_dir
    try:
        store = RedisServer(logs, logs / "redis.out")
    except MissingProgram as exc:
        # The rest of the run still counts; say loudly what is missing.
        why = f"{exc}: skipped"
        bench.log(f"[yellow]Redis backend: {why}[/]")
        return Outcome(raw={"skipped": why})
    bench.begin("redis backend", sizes.reps * 2)
    reps: list[dict[str, Any]] = []
    with store:
        client = redis.Redis.from_url(store.url)
        try:
            for rep in range(1, sizes.reps + 1):
                r: dict[str, Any] = {}
                with bench.step(f"rep {rep}: in-memory node, relay + {sizes.redis_join_rate:g}/s"):
                    r["memory"] = _measure(bench, [drift_server(f"memory-{rep}", logs)], [])
                with bench.step(f"rep {rep}: two Redis nodes, relay + {sizes.redis_join_rate:g}/s"):
                    # A clean store each time: no queue entries of the last rep's killed nodes.
                    client.flushall()
                    extra = ["--redis", store.url]
                    nodes = [drift_server(f"redis-{rep}-{i}", logs, extra) for i in (1, 2)]
                    r["redis"] = _measure(bench, nodes, [store.pid])
                reps.append(r)
        finally:
            client.close()
    rows = _rows(reps, sizes.redis_join_rate)
    return Outcome(rows=rows, sections=[_section(bench, reps)], raw={"repetitions": reps})


def _rows(reps: list[dict[str, Any]], rate: float) -> list[Row]:
    def latency(kind: str, stat: str) -> list[float]:
        return [r[kind]["latency"]["latency_s"][stat] * 1000 for r in reps]

    return [
        Row(
            f"Redis, 2 nodes: join->matched p99 at {rate:g} joins/s",
            "ms",
            latency("redis", "p99"),
            "in-memory node",
            latency("memory", "p99"),
        ),
        Row(
            f"Redis, 2 nodes: join->matched p50 at {rate:g} joins/s",
            "ms",
            latency("redis", "p50"),
            "in-memory node",
            latency("memory", "p50"),
        ),
        Row(
            "Redis, 2 nodes: relay CPU per 1,000 frames (cross-node, both nodes)",
            "ms",
            [r["redis"]["node_cpu_s_per_1000"] * 1000 for r in reps],
            "in-memory node",
            [r["memory"]["node_cpu_s_per_1000"] * 1000 for r in reps],
            # Each frame is handled by two processes (read+publish, receive+send):
            # at most twice one node relaying it itself (issue 18).
            target=2.0,
            digits=1,
        ),
    ]


def _section(bench: Bench, reps: list[dict[str, Any]]) -> Section:
    sizes = bench.sizes
    lines = [
        'Its own `redis-server` on a free loopback port (`--save "" --appendonly no`) and two '
        "nodes `drift serve --redis redis://127.0.0.1:PORT/0 " + " ".join(DRIFT_FLAGS) + "`; "
        "connection i goes to node i mod 2. The baseline is one in-memory node with the same "
        "flags, measured alternately with the two-node cluster in the same run.",
        "",
        f"- **match latency**: {sizes.redis_join_rate:g} joins/s for "
        f"{sizes.latency_duration:g} s, alternating nodes, so nearly every room spans both "
        "nodes (Lua pairing in Redis, `matched` to the remote member through its node's "
        "channel); measured as for the server (join that completed the room -> `matched`).",
        f"- **relay CPU**: {sizes.relay_pairs} pairs, each one peer on each node, ping-pong "
        f"{sizes.relay_messages:,} ~1 KB frames; CPU seconds of both nodes per 1,000 frames. "
        "Every frame is handled twice (decoded and published by the sender's node, received "
        "from pub/sub and sent by the partner's node), so up to ~2x the in-memory figure is "
        "the cost of the hop itself. redis-server's CPU is listed apart.",
        "",
        "| rep | in-memory p50/p99 | Redis p50/p99 | in-memory ms/1k frames "
        "| Redis nodes ms/1k frames | redis-server ms/1k frames | Redis relay frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(reps, 1):
        lines.append(
            f"| {i} | {fmt_latency(r['memory']['latency']['latency_s'])} "
            f"| {fmt_latency(r['redis']['latency']['latency_s'])} "
            f"| {r['memory']['node_cpu_s_per_1000'] * 1000:.1f} "
            f"| {r['redis']['node_cpu_s_per_1000'] * 1000:.1f} "
            f"| {r['redis']['other_cpu_s_per_1000'] * 1000:.1f} "
            f"| {r['redis']['relay']['frames_per_s']:,.0f} |"
        )
    return Section("Redis backend", "\n".join(lines))


if __name__ == "__main__":
    from drift.bench.command import bench as bench_command

    sys.exit(bench_command(["--only", "redis", *sys.argv[1:]]))
