"""Benchmark: ``drift simulate --peers 500`` against a bare aiortc loop, in the same run.

    python -m drift.bench.suites.simulate_overhead [--reps 3] [--peers 500] [--big]

Both sides run on the same event loop implementation (uvloop when installed,
as the CLI does) and both keep ICE on 127.0.0.1; the bare loop is also timed on
plain asyncio (what a bare script gets by default) and reported beside it. The baseline connects
``peers / 2`` in-process pairs with a data channel and no signaling at all;
simulate's figure is the wall time of the whole command body (embedded server
start, preflight, 500 WebSocket peers, trickle signaling, verification,
reports), measured in-process so both exclude interpreter start and imports.
The CLI's own wall time (a fresh ``python -m drift simulate`` process) is
measured too and reported beside it. Medians of ``--reps`` alternating runs;
the result goes to ``reports/<timestamp>-bench-simulate/simulate_overhead.json``.

``--big`` also runs ``drift simulate --peers 5000 --procs 2 --media-fraction 0``
once and records its verdict and peak memory per peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from drift import aio
from drift.bench.suites.bare_loop import bare_loop
from drift.harness.env import child_env
from drift.report.paths import run_dir
from drift.simulate.command import Settings, auto_procs, simulate_run

#: The issue's target: simulate may take at most this multiple of the bare loop.
TARGET_RATIO = 1.25


def simulate_once(peers: int, folder: Path) -> tuple[float, dict[str, Any]]:
    # The command's own default for --procs, as `drift simulate --peers N` runs it.
    settings = Settings(
        peers=peers, media_fraction=0.0, live=False, report_dir=folder, procs=auto_procs(peers)
    )
    started = time.perf_counter()
    result = aio.run(simulate_run(settings, Console(quiet=True)))
    wall = time.perf_counter() - started
    return wall, result.summary


def cli_once(argv: list[str], folder: Path) -> tuple[float, int, dict[str, Any]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drift",
            "simulate",
            "--no-live",
            "--report-dir",
            str(folder),
            *argv,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        check=False,
    )
    wall = time.perf_counter() - started
    summary_file = folder / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
    return wall, proc.returncode, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("--big", action="store_true", help="also run 5000 peers with --procs 2")
    args = parser.parse_args()
    pairs = args.peers // 2
    bare: list[float] = []
    bare_asyncio: list[float] = []
    sim: list[float] = []
    sim_peer_phase: list[float] = []
    cli: list[float] = []
    verified: list[int] = []
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        for rep in range(args.reps):
            bare.append(aio.run(bare_loop(pairs)))
            bare_asyncio.append(asyncio.run(bare_loop(pairs)))
            wall, summary = simulate_once(args.peers, Path(tmp) / f"sim{rep}")
            sim.append(wall)
            sim_peer_phase.append(float(summary["wall_s"]))
            verified.append(int(summary["verified_pairs"]))
            cli_wall, _, _ = cli_once(
                ["--peers", str(args.peers), "--media-fraction", "0"], Path(tmp) / f"cli{rep}"
            )
            cli.append(cli_wall)
            print(
                f"rep {rep + 1}: bare {bare[-1]:.2f} s (plain asyncio {bare_asyncio[-1]:.2f} s), "
                f"simulate {wall:.2f} s "
                f"(peer phase {sim_peer_phase[-1]:.2f} s, {verified[-1]} pairs verified), "
                f"CLI process {cli_wall:.2f} s",
                flush=True,
            )
        big: dict[str, Any] | None = None
        if args.big:
            wall, code, summary = cli_once(
                ["--peers", "5000", "--procs", "2", "--media-fraction", "0"], Path(tmp) / "big"
            )
            rss = summary.get("peak_rss_bytes", {})
            big = {
                "argv": "drift simulate --peers 5000 --procs 2 --media-fraction 0",
                "exit_code": code,
                "wall_s": round(wall, 2),
                "peer_phase_s": summary.get("wall_s"),
                "verified_pairs": summary.get("verified_pairs"),
                "outcomes": summary.get("outcomes"),
                "failures": summary.get("failures"),
                "peak_rss_workers_bytes": rss.get("workers"),
                "peak_rss_per_peer_mib": round(rss.get("per_peer", 0) / 2**20, 3),
                "peak_rss_server_bytes": rss.get("server"),
                "latency_ms": summary.get("latency_ms"),
            }
            print(json.dumps(big, indent=2))
    med_bare, med_sim, med_cli = (statistics.median(x) for x in (bare, sim, cli))
    med_bare_asyncio = statistics.median(bare_asyncio)
    ratio = med_sim / med_bare
    result = {
        "benchmark": "simulate_overhead",
        "peers": args.peers,
        "reps": args.reps,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "bare_loop_s": bare,
        "bare_loop_plain_asyncio_s": bare_asyncio,
        "simulate_s": sim,
        "simulate_peer_phase_s": sim_peer_phase,
        "cli_process_s": cli,
        "median_bare_loop_s": round(med_bare, 3),
        "median_bare_loop_plain_asyncio_s": round(med_bare_asyncio, 3),
        "ratio_vs_plain_asyncio_bare_loop": round(med_sim / med_bare_asyncio, 3),
        "median_simulate_s": round(med_sim, 3),
        "median_cli_process_s": round(med_cli, 3),
        "ratio": round(ratio, 3),
        "ratio_cli_process": round(med_cli / med_bare, 3),
        "target_ratio": TARGET_RATIO,
        "verified_pairs": verified,
        "big": big,
    }
    folder = run_dir("bench-simulate")
    out = folder / "simulate_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median: bare loop {med_bare:.2f} s, simulate {med_sim:.2f} s -> ratio {ratio:.2f} "
        f"(target <= {TARGET_RATIO}); CLI process {med_cli:.2f} s ({med_cli / med_bare:.2f}x); "
        f"vs a plain-asyncio bare loop ({med_bare_asyncio:.2f} s): "
        f"{med_sim / med_bare_asyncio:.2f}x"
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
