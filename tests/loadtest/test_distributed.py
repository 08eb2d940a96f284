"""``drift loadtest --master`` with workers that join as if from other machines.

Each worker is a separate ``drift loadtest --worker`` process, started from a folder
holding no scenario and no drift checkout files, reaching the master over loopback
only through ``--master-host``/``--master-port``: exactly what a remote machine has.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drift.exitcodes import ExitCode
from drift.harness.child import Child
from drift.harness.ports import free_port

RUN_TIMEOUT = 120.0


def drift_loadtest(*args: str, cwd: Path, log: Path) -> Child:
    child = Child(
        [sys.executable, "-m", "drift", "loadtest", *args], name=log.stem, log_path=log, cwd=cwd
    )
    child.spawn()
    child.drain()
    return child


@pytest.mark.slow
def test_remote_workers_join_the_master_and_the_report_comes_out_on_the_master(
    tmp_path: Path,
) -> None:
    port = str(free_port())
    reports = tmp_path / "reports"
    master = drift_loadtest(
        "smoke", "--master", "--expect-workers", "2", "--master-port", port,
        "--users", "6", "--duration", "3", "--report-dir", str(reports), "--no-progress",
        cwd=tmp_path, log=tmp_path / "master.log",
    )  # fmt: skip
    workers = []
    for i in range(2):
        elsewhere = tmp_path / f"machine-{i}"
        elsewhere.mkdir()
        workers.append(
            drift_loadtest(
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                port,
                cwd=elsewhere,
                log=tmp_path / f"worker-{i}.log",
            )
        )
    try:
        assert master.wait(RUN_TIMEOUT) == ExitCode.OK, (tmp_path / "master.log").read_text()
        for i, worker in enumerate(workers):
            assert worker.wait(30) == 0, (tmp_path / f"worker-{i}.log").read_text()
    finally:
        for child in (master, *workers):
            child.stop(kill=True)
    (run,) = reports.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["target"]["workers"] == 2 and summary["passed"] is True
    # the workers' samples reached the master: its report, thresholds and sampling
    assert summary["requests"]["queue"]["count"] >= 10
    assert {c["name"] for c in summary["thresholds"]} >= {"queue_p99_ms", "min_matches"}
    assert summary["memory"], "the master sampled the server"
    for name in ("junit.xml", "report.html", "server_samples.csv"):
        assert (run / name).is_file()
    # no worker wrote a report of its own
    assert not list((tmp_path / "machine-0").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker", "smoke"], "--worker takes no SCENARIO"),
        (["smoke", "--master"], "--master and --expect-workers N go together"),
        (["smoke", "--expect-workers", "2"], "--master and --expect-workers N go together"),
        (["smoke", "--master", "--expect-workers", "2", "--workers", "2"], "--workers"),
        ([], "missing SCENARIO"),
    ],
)
def test_bad_distribution_flags_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "drift", "loadtest", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
