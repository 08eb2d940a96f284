"""Profile ``drift serve`` under the benchmark loads with pyinstrument.

    python -m drift.bench.suites.profile_server [--loads relay,join,redis-relay] [--out DIR]

The server runs in its own process, inside a pyinstrument sampling profiler
(``async_mode="disabled"``: plain stacks of whatever holds the CPU, the event
loop included), with the same flags as the benchmarks; the load client is
:mod:`drift.bench.loadgen`, as for the figures. On SIGTERM the server drains,
the profiler stops and writes ``profile-<load>.txt`` and ``.html``.

Not part of ``drift bench`` (a profiled server is slower, so its numbers are no
figures); ``drift bench --only profile`` runs it with the others' harness.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any

from drift.bench.loadgen import run_loadgen
from drift.bench.results import Outcome
from drift.bench.runner import Bench
from drift.bench.servers import DRIFT_FLAGS
from drift.harness.redis import RedisServer
from drift.harness.serve import ServeProcess
from drift.report.paths import run_dir

LOADS = ("relay", "join", "redis-relay")


def serve_profiled(out: Path, serve_args: list[str]) -> None:
    """``drift serve *serve_args`` under the profiler (runs in the server process)."""
    from pyinstrument import Profiler

    from drift.cli import main

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        main(["serve", *serve_args], standalone_mode=False)
    finally:
        profiler.stop()
        out.with_suffix(".txt").write_text(
            profiler.output_text(unicode=True, color=False, show_all=False)
        )
        out.with_suffix(".html").write_text(profiler.output_html())


def _server(name: str, out_dir: Path, extra: list[str]) -> ServeProcess:
    """``drift serve`` under the profiler: this module's ``--serve`` in the child."""
    profiled = str(out_dir / f"profile-{name}")
    program = (sys.executable, "-m", "drift.bench.suites.profile_server", "--serve", profiled, "--")
    log = out_dir / f"profiled-{name}.out"
    return ServeProcess([*DRIFT_FLAGS, *extra], log, program=program, name=f"profiled-{name}")


def profile(load: str, out_dir: Path, quick: bool = False) -> dict[str, Any]:
    scale = 4 if quick else 1
    redis: RedisServer | None = None
    extra: list[str] = []
    if load == "redis-relay":
        redis = RedisServer(out_dir, out_dir / "redis.out")
        redis.start()
        extra = ["--redis", redis.url]
    nodes = [_server(f"{load}-{i}", out_dir, extra) for i in range(2 if redis else 1)]
    try:
        for node in nodes:
            node.start()
        target = {"urls": [n.ws_url for n in nodes], "pids": [n.pid for n in nodes]}
        if load == "join":
            spec = {"scenario": "latency", "rate": 500, "duration": 8 / scale}
        else:
            spec = {"scenario": "relay", "pairs": 100, "messages": 60_000 // scale}
        result = run_loadgen({**spec, **target})
    finally:
        for node in nodes:
            node.stop(timeout=60)  # SIGTERM: the profile is written on the way out
        if redis is not None:
            redis.stop()
    return {"load": load, "result": result, "profiles": [str(n.log_path) for n in nodes]}


def run(bench: Bench) -> Outcome:
    """``drift bench --only profile``: every load, profiles in the run folder."""
    bench.begin("profile", len(LOADS))
    raw: dict[str, Any] = {}
    for load in LOADS:
        with bench.step(f"profile drift serve under {load}"):
            raw[load] = profile(load, bench.run_dir, bench.quick)
    bench.log(f"profiles: {bench.run_dir}/profile-*.txt / .html")
    return Outcome(raw=raw)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve"]:
        # In the server process: SIGTERM must reach drift's own drain handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        serve_profiled(Path(args[1]), args[3:] if args[2:3] == ["--"] else args[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args(args)
    out_dir = opts.out or run_dir("profile")
    out_dir.mkdir(parents=True, exist_ok=True)
    for load in opts.loads.split(","):
        done = profile(load, out_dir, opts.quick)
        print(f"{load}: {done['result']}", flush=True)
        for path in sorted(out_dir.glob(f"profile-{load}*.txt")):
            print(f"--- {path}")
            print(re.sub(r"\n{2,}", "\n", path.read_text())[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
