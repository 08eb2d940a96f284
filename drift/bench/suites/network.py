"""Benchmark: ``drift simulate --network mixed --peers 500`` against the plain ``--peers 500``.

Both are whole processes (``python -m drift simulate ...``: imports, the lab's
namespaces, routers, coturn and its removal included for the network run), the
figure a user would time. Repetitions alternate network and plain runs so that
load from other work on the shared machine hits both alike; the table shows
medians and the target is at most 3x the plain run. A run whose verdict is not
a pass is reported, not timed as a success. Without root, nftables, iproute2
or coturn the benchmark is skipped with the reason.

Run alone: ``drift bench --only network [--quick]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from drift.bench.results import Outcome, Row
from drift.bench.runner import Bench
from drift.harness.env import child_env

#: the issue's target: the lab may cost at most this multiple of a loopback run
TARGET_RATIO: Final = 3.0
PEERS: Final = 500
QUICK_PEERS: Final = 100


def _run(bench: Bench, folder: Path, extra: list[str], peers: int) -> tuple[float, dict[str, Any]]:
    # the command's own defaults otherwise (media on 2 % of pairs, --procs by peers):
    # exactly the two commands a user would compare
    argv = [sys.executable, "-m", "drift", "simulate", "--peers", str(peers), "--no-live",
            "--report-dir", str(folder), *extra]  # fmt: skip
    log = bench.log_dir / f"{folder.name}.out"
    started = time.perf_counter()
    with log.open("wb") as sink:
        done = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=child_env(), check=False
        )
    wall = time.perf_counter() - started
    summary_path = folder / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary["exit"] = done.returncode
    return wall, summary


def run(bench: Bench) -> Outcome:
    from drift.netlab.requirements import missing

    problems = missing()
    if problems:
        bench.log(f"[yellow]network: skipped, the lab needs {'; '.join(problems)}[/]")
        return Outcome(raw={"skipped": problems})
    peers = QUICK_PEERS if bench.quick else PEERS
    reps = 1 if bench.quick else 3
    bench.begin("network lab", 2 * reps)
    lab_s: list[float] = []
    plain_s: list[float] = []
    raw: dict[str, Any] = {"peers": peers, "runs": []}
    for rep in range(reps):
        with bench.step(f"simulate --network mixed --peers {peers} (#{rep + 1})"):
            wall, summary = _run(bench, bench.run_dir / f"network-{rep}", ["--network", "mixed"],
                                 peers)  # fmt: skip
        raw["runs"].append({"network": True, "wall_s": wall, "exit": summary["exit"],
                            "verdict": summary.get("verdict")})  # fmt: skip
        if summary["exit"] == 0:
            lab_s.append(wall)
        with bench.step(f"simulate --peers {peers} (#{rep + 1})"):
            wall, summary = _run(bench, bench.run_dir / f"plain-{rep}", [], peers)
        raw["runs"].append({"network": False, "wall_s": wall, "exit": summary["exit"],
                            "verdict": summary.get("verdict")})  # fmt: skip
        if summary["exit"] == 0:
            plain_s.append(wall)
    if not lab_s or not plain_s:
        bench.log("[red]network: a run did not pass; see the logs[/]")
        return Outcome(raw=raw)
    row = Row(
        f"`drift simulate --network mixed --peers {peers}` (whole process)",
        "s",
        lab_s,
        f"`drift simulate --peers {peers}` (whole process)",
        plain_s,
        target=TARGET_RATIO,
        note="1000 namespaces, 500 nft routers and coturn built and removed per run",
    )
    return Outcome(rows=[row], raw=raw)
