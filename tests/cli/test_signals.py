"""Real signals to real long-running commands: the right exit code within 5 s, no
traceback, no process left behind, and a partial report marked interrupted.

Each command runs in its own session (as under a shell's job control), so the
test decides who gets the signal: the main process only (``kill PID``, what a
supervisor sends), or its whole process group (a terminal's Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from drift.harness.child import Child
from drift.harness.serve import ServeProcess
from drift.harness.waiting import wait_until

#: the promise: stopped, children included, within this many seconds of the signal
STOP_WITHIN = 5.0
START_TIMEOUT = 60.0


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone, or a zombie not yet reaped
        return ""


def alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {cmdline(proc)[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def has(pid: int, *words: str) -> Callable[[], bool]:
    """True once a descendant's command line holds every word (a real process, started)."""

    def check() -> bool:
        return any(all(w in cmdline(proc) for w in words) for proc in descendants(pid))

    return check


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(*args: str) -> Child:
        child = Child(
            [sys.executable, "-m", "drift", *args],
            name=f"drift {args[0]}",
            log_path=tmp_path / f"{args[0]}.log",
            env={"DRIFT_REPORTS_DIR": str(tmp_path / "reports")},
            cwd=tmp_path,
        )
        child.spawn()
        child.drain()
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop(kill=True)


def stop(child: Child, signum: int, *, group: bool) -> tuple[int, list[str]]:
    """Send ``signum``; the exit code and the descendants that outlived the command."""
    tree = descendants(child.pid)
    assert tree, "nothing was started yet"
    if group:
        os.killpg(child.pid, signum)
    else:
        child.send_signal(signum)
    code = child.wait(STOP_WITHIN)
    psutil.wait_procs(tree, timeout=1.0)  # reaped by their own parent, a moment after it exits
    return code, alive(tree)


def interrupted_report(tmp_path: Path, code: int) -> dict[str, object]:
    (folder,) = (tmp_path / "reports").iterdir()
    for name in ("summary.json", "junit.xml", "report.html"):
        assert (folder / name).is_file(), f"{name} missing from {folder}"
    assert "<error " in (folder / "junit.xml").read_text()
    summary: dict[str, object] = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == code
    return summary


def log_of(child: Child) -> str:
    assert child.log_path is not None
    return child.log_path.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "group", "code"),
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130), (signal.SIGINT, False, 130)],
    ids=["sigterm", "ctrl-c-to-the-group", "sigint-to-main-only"],
)
def test_simulate_with_worker_processes_stops_cleanly(
    tmp_path: Path, command: Callable[..., Child], signum: int, group: bool, code: int
) -> None:
    # pairs held for a minute: the run is surely in progress when the signal comes
    child = command("simulate", "--peers", "8", "--procs", "2", "--hold", "60", "--no-live")
    wait_until(has(child.pid, "drift", "serve"), START_TIMEOUT, what="the embedded server")
    wait_until(
        lambda: (
            len([p for p in descendants(child.pid) if "forkserver" in cmdline(p)]) >= 3
        ),  # the fork server and the two workers it forked
        START_TIMEOUT,
        what="two peer worker processes",
    )
    exit_code, survivors = stop(child, signum, group=group)
    assert exit_code == code, log_of(child)
    assert survivors == []
    log = log_of(child)
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert f"interrupted by {signal.Signals(signum).name}" in log
    summary = interrupted_report(tmp_path, code)
    assert summary["kind"] == "simulate" and summary["verdict"] == "interrupted"


@pytest.mark.slow
def test_simulate_in_one_process_stops_on_sigterm(
    tmp_path: Path, command: Callable[..., Child]
) -> None:
    child = command("simulate", "--peers", "4", "--procs", "1", "--hold", "60", "--no-live")
    wait_until(has(child.pid, "drift", "serve"), START_TIMEOUT, what="the embedded server")
    exit_code, survivors = stop(child, signal.SIGTERM, group=False)
    assert exit_code == 143, log_of(child)
    assert survivors == []
    assert "Traceback" not in log_of(child)
    interrupted_report(tmp_path, 143)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "sigint"]
)
def test_loadtest_stops_locust_and_its_server(
    tmp_path: Path, command: Callable[..., Child], signum: int, code: int
) -> None:
    child = command("loadtest", "smoke", "--workers", "1", "--duration", "60", "--no-progress")
    wait_until(has(child.pid, "drift", "serve"), START_TIMEOUT, what="the server")
    wait_until(has(child.pid, "locust", "--worker"), START_TIMEOUT, what="a locust worker")
    wait_until(
        lambda: any((tmp_path / "reports").glob("*/samples.csv")), START_TIMEOUT, what="load"
    )
    exit_code, survivors = stop(child, signum, group=False)
    assert exit_code == code, log_of(child)
    assert survivors == []
    assert "Traceback" not in log_of(child)
    summary = interrupted_report(tmp_path, code)
    assert summary["kind"] == "loadtest"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_serve_with_workers_drains_every_worker(redis_url: str, signum: int) -> None:
    """A server's stop is its drain: exit 0 once every worker has drained."""
    server = ServeProcess(["--workers", "2", "--redis", redis_url], name="drift serve --workers")
    with server:
        workers = descendants(server.pid)
        assert len(workers) == 2
        server.send_signal(signum)
        assert server.wait(STOP_WITHIN) == 0
        psutil.wait_procs(workers, timeout=1.0)
        assert alive(workers) == []
