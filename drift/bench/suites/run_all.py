"""Every benchmark of the repository, in the order ``drift bench`` runs them.

A benchmark is a module of this folder with ``run(bench: Bench) -> Outcome``
(see :mod:`drift.bench.runner`). ``python -m drift.bench.suites.run_all [--quick]`` is
the same as ``drift bench [--quick]``.

``simulate`` is the hook for ``drift/bench/suites/simulate_overhead.py`` (``drift
simulate --peers 500`` vs a bare aiortc loop of 250 pairs), kept by the simulate
work: when that file has ``run(bench)``, it runs like the others; otherwise it is
run as its own script (``python -m drift.bench.suites.simulate_overhead``), its JSON is
read back into the table and its output kept in the run folder; when it is
missing, the run says so and goes on. ``load`` (``--only load``, not in a
default run) runs ``drift/bench/suites/loadtest_capacity.py`` the same way, output kept.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drift.bench.results import Outcome, Row
from drift.bench.runner import Bench
from drift.harness.env import child_env

Benchmark = Callable[[Bench], Outcome]

#: name (for ``--only``) -> module in this folder
MODULES: dict[str, str] = {
    "server": "drift.bench.suites.server_capacity",
    "redis": "drift.bench.suites.redis_backend",
    "simulate": "drift.bench.suites.simulate_overhead",
    # Not in a default run: a profiled server's numbers are no figures, and the
    # locust capacity sweep alone takes longer than the five-minute budget.
    "profile": "drift.bench.suites.profile_server",
    "load": "drift.bench.suites.loadtest_capacity",
    # Not in a default run: needs root, nftables and coturn (``--only network``).
    "network": "drift.bench.suites.network",
    # Not in a default run: six attacks, a few seconds each (``--only abuse``).
    "abuse": "drift.bench.suites.abuse",
}
SIMULATE_SCRIPT = Path(__file__).with_name("simulate_overhead.py")


def load(name: str) -> Benchmark:
    if name == "simulate":
        return simulate_overhead
    if name == "load":
        return loadtest_capacity
    module = importlib.import_module(MODULES[name])
    run: Benchmark = module.run
    return run


def simulate_overhead(bench: Bench) -> Outcome:
    """Run ``python -m drift.bench.suites.simulate_overhead`` and take its figures into the table.

    It is the simulate work's script (its own argv and JSON); it is run as it is,
    with its output folder placed inside this run's folder.
    """
    if not SIMULATE_SCRIPT.exists():
        bench.log(f"[yellow]simulate overhead: {SIMULATE_SCRIPT.name} not found, skipped[/]")
        return Outcome(raw={"skipped": f"{SIMULATE_SCRIPT} not found"})
    module = importlib.import_module(MODULES["simulate"])
    run = getattr(module, "run", None)
    if callable(run):
        outcome = run(bench)
        assert isinstance(outcome, Outcome)
        return outcome
    bench.begin("simulate overhead", 1)
    # --quick: one repetition of a smaller swarm, a look rather than a figure.
    args = ["--reps", "1", "--peers", "100"] if bench.quick else []
    argv = [sys.executable, "-m", MODULES["simulate"], *args]
    log = bench.log_dir / "simulate_overhead.out"
    env = child_env({"DRIFT_REPORTS_DIR": str(bench.run_dir)})
    label = "simulate --peers " + ("100" if bench.quick else "500") + " vs bare aiortc loop"
    with bench.step(label), log.open("wb") as sink:
        done = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=bench.run_dir, check=False
        )
    text = log.read_text(errors="replace")
    written = re.search(r"written to (\S+)", text)
    if done.returncode != 0 or written is None:
        bench.log(f"[red]simulate overhead failed ({done.returncode}); see {log}[/]")
        return Outcome(raw={"argv": argv, "exit": done.returncode, "output": str(log)})
    data: dict[str, Any] = json.loads(Path(written.group(1)).read_text())
    peers = int(data["peers"])
    bare = f"bare aiortc loop, {peers // 2} pairs"
    rows = [
        Row(
            f"simulate overhead: `drift simulate --peers {peers}` wall (in-process)",
            "s",
            [float(x) for x in data["simulate_s"]],
            bare,
            [float(x) for x in data["bare_loop_s"]],
            target=float(data.get("target_ratio", 1.25)),
        ),
        Row(
            f"`drift simulate --peers {peers}` as a fresh process (imports included)",
            "s",
            [float(x) for x in data["cli_process_s"]],
            bare,
            [float(x) for x in data["bare_loop_s"]],
        ),
    ]
    return Outcome(rows=rows, raw={"argv": argv, "json": written.group(1), **data})


def loadtest_capacity(bench: Bench) -> Outcome:
    """Run the load work's own script (``drift loadtest`` capacity), output kept in the run."""
    script = Path(__file__).with_name("loadtest_capacity.py")
    if not script.exists():
        bench.log(f"[yellow]load capacity: {script.name} not found, skipped[/]")
        return Outcome(raw={"skipped": f"{script} not found"})
    bench.begin("load capacity", 1)
    argv = [sys.executable, "-m", MODULES["load"]]
    log = bench.log_dir / "loadtest_capacity.out"
    env = child_env({"DRIFT_REPORTS_DIR": str(bench.run_dir)})
    with bench.step("drift loadtest capacity (script)"), log.open("wb") as sink:
        done = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=bench.run_dir, check=False
        )
    return Outcome(raw={"argv": argv, "exit": done.returncode, "output": str(log)})


def main() -> int:
    from drift.bench.command import bench as bench_command

    bench_command(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
