"""locust, headless, as subprocesses: one local process, or a master and N workers.

locust runs on gevent and is never imported here (asyncio and gevent do not mix); this module only
builds command lines and watches the processes (:class:`drift.harness.child.Child`,
output in the run folder). The master (or the single process) writes locust's
CSV and HTML and, through the locustfile, every raw sample.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from drift.harness.child import Child
from drift.harness.ports import free_port
from drift.loadtest.scenario import Scenario
from drift.resources import data_dir

CSV_PREFIX = "locust"
#: seconds a ``--master`` waits for its remote workers to join
REMOTE_WAIT_S = 120.0
HTML_NAME = "locust.html"
SAMPLES_NAME = "samples.csv"


def locustfile() -> Path:
    return data_dir("loadtest") / "locustfile.py"


@dataclass(frozen=True)
class LocustPlan:
    scenario: Scenario
    scenario_path: Path
    host: str  # http(s)://... of the server under test
    out_dir: Path
    workers: int = 0  # 0: one local process; N: a master and N worker processes
    master_port: int = 0
    #: the N workers join from elsewhere (``--master``): none is started here
    remote: bool = False
    master_bind_host: str = "127.0.0.1"
    #: the master's locustfile when not drift's own (the wrapper of :mod:`.remote`)
    locust_file: Path | None = None

    @property
    def run_time_s(self) -> int:
        return math.ceil(self.scenario.duration_s)

    def env(self) -> dict[str, str]:
        """What the locustfile reads, on top of the child environment (see drift.harness.env)."""
        return {
            "DRIFT_SCENARIO": str(self.scenario_path),
            "DRIFT_LOADTEST_SAMPLES": str(self.out_dir / SAMPLES_NAME),
            "PYTHONUNBUFFERED": "1",
        }

    def main_command(self) -> list[str]:
        s = self.scenario
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(self.locust_file or locustfile()),
            "--headless",
            "--host",
            self.host,
            "--run-time",
            f"{self.run_time_s}s",
            "--csv",
            str(self.out_dir / CSV_PREFIX),
            "--html",
            str(self.out_dir / HTML_NAME),
            "--only-summary",
            # Failures are judged by the thresholds, not by locust's exit code.
            "--exit-code-on-error",
            "0",
        ]
        if not s.stages:  # with stages the locustfile's LoadTestShape drives the users
            cmd += ["--users", str(s.users), "--spawn-rate", f"{s.spawn_rate:g}"]
        if self.workers:
            cmd += [
                "--master",
                "--expect-workers",
                str(self.workers),
                "--master-bind-host",
                self.master_bind_host,
                "--master-bind-port",
                str(self.master_port),
            ]
            if self.remote:
                # a worker that never comes ends the run (exit 1) instead of a wait forever
                cmd += ["--expect-workers-max-wait", f"{REMOTE_WAIT_S:g}"]
        return cmd

    def worker_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile()),
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(self.master_port),
        ]


class LocustRun:
    """The processes of one locust run; ``stop()`` ends only the ones it started."""

    def __init__(self, plan: LocustPlan) -> None:
        if plan.workers and not plan.master_port:
            plan = LocustPlan(**{**plan.__dict__, "master_port": free_port()})
        self.plan = plan
        self.main: Child | None = None
        self.workers: list[Child] = []

    def _spawn(self, cmd: list[str], log_name: str) -> Child:
        # stdin closed (Child does it): headless locust otherwise reads it for its
        # keyboard controls and, given an open pipe it cannot read, never gets to exit.
        log = self.plan.out_dir / log_name
        child = Child(cmd, name=log_name, log_path=log, env=self.plan.env(), cwd=self.plan.out_dir)
        child.spawn()
        child.drain()  # no ready line: locust's readiness is the run itself
        return child

    def start(self) -> None:
        self.main = self._spawn(self.plan.main_command(), "locust.log")
        for i in range(0 if self.plan.remote else self.plan.workers):
            self.workers.append(self._spawn(self.plan.worker_command(), f"locust-worker-{i}.log"))

    def _children(self) -> list[Child]:
        return [self.main, *self.workers] if self.main is not None else self.workers

    def pids(self) -> list[int]:
        return [child.pid for child in self._children() if child.running]

    def poll(self) -> int | None:
        assert self.main is not None
        return self.main.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM each (the master first: its quit message ends the workers), SIGKILL after
        ``timeout``; the main exit code."""
        codes = [child.stop(timeout) for child in self._children()]
        return codes[0] if self.main is not None else None

    def wait_workers(self, timeout: float = 10.0) -> None:
        """Workers exit on the master's quit message; give them time before signalling."""
        for child in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                if child.proc is not None:
                    child.wait(timeout)
