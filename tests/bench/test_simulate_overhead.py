"""The simulate benchmark: whole processes timed from outside, their whole CPU counted."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from drift.bench.command import bench
from drift.bench.suites.simulate_overhead import BARE_SCRIPT, timed_process

# A parent that exits at once, leaving a grandchild that then burns CPU: what the
# fork server and workers of ``drift simulate --procs 2`` do to a naive timer.
_ORPHAN = textwrap.dedent(
    """
    import os, time
    parent = os.getpid()
    if os.fork() == 0:
        # burn only once the parent has exited (and this process was adopted)
        deadline = time.monotonic() + 10
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.005)
        end = time.process_time() + 0.4
        while time.process_time() < end:
            pass
        os._exit(0)
    print("parent done", flush=True)
    """
)


def test_timed_process_counts_the_cpu_of_orphaned_descendants(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    timed = timed_process([sys.executable, str(script)])
    assert timed.code == 0
    assert timed.stdout.strip() == "parent done"
    # the grandchild's 0.4 s of CPU was spent after its parent (the timed command) exited
    assert timed.cpu_s >= 0.35
    assert timed.wall_s < timed.cpu_s


@pytest.mark.slow
def test_bench_simulate_compares_whole_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFT_REPORTS_DIR", str(tmp_path / "reports"))
    result = CliRunner().invoke(
        bench, ["--tiny", "--only", "simulate", "--no-docs"], catch_exceptions=False
    )
    (report,) = (tmp_path / "reports").glob("*-bench/bench.json")
    data = json.loads(report.read_text())
    rows = {row["name"]: row for row in data["rows"]}
    wall = next(r for name, r in rows.items() if "whole process wall (default procs" in name)
    cpu = next(r for name, r in rows.items() if name.startswith("CPU per verified pair"))
    assert wall["baseline_name"] == cpu["baseline_name"] == "bare aiortc process, 50 pairs"
    (rep,) = data["benchmarks"]["simulate"]["repetitions"]
    assert rep["bare"]["code"] == 0
    for run in (rep["readme"], rep["one_process"]):
        assert (run["code"], run["verdict"], run["verified_pairs"]) == (0, "pass", 50)
    # the README command's default sample of 2 % media still verified its media pair
    assert rep["readme"]["media_pairs_verified"] >= 1
    assert cpu["values"] == [pytest.approx(rep["one_process"]["cpu_s"] * 1000 / 50)]
    assert result.exit_code in (0, 1), result.output


def test_the_bare_loop_splits_its_pairs_over_processes_and_reaps_them() -> None:
    argv = [sys.executable, str(BARE_SCRIPT), "--pairs", "6", "--procs", "2"]
    timed = timed_process([*argv, "--concurrency", "2"])
    assert timed.code == 0, timed.stdout
    line = json.loads(timed.stdout.strip().splitlines()[-1])
    assert line["pairs"] == 6 and line["wall_s"] > 0
    # the forked shares' CPU is the run's: more than an interpreter start alone
    assert timed.cpu_s > 0.2
