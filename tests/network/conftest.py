"""Real labs: namespaces, nftables and coturn, each test checked for leftovers afterwards.

Runs need root, nftables, iproute2 and coturn (scripts/test installs them);
without them the tests fail in CI and are skipped elsewhere. Every test runs
``drift simulate --network`` as a whole process (the command users run) and
reads its summary.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drift.netlab import namespaces as ns
from drift.netlab.requirements import missing

REPO = Path(__file__).resolve().parents[2]
#: seconds any single lab run may take before the test gives up on it
RUN_TIMEOUT = 120.0


@pytest.fixture(autouse=True)
def _lab_machine() -> None:
    problems = missing()
    if problems:
        message = "the network lab needs " + "; ".join(problems)
        if os.environ.get("DRIFT_CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    folder: Path

    @property
    def summary(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads((self.folder / "summary.json").read_text())
        return value

    @property
    def network(self) -> dict[str, Any]:
        value: dict[str, Any] = self.summary["network"]
        return value


def simulate_argv(folder: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "drift", "simulate", "--no-live", "--report-dir", str(folder),
            *args]  # fmt: skip


def lab_processes(pid: int) -> list[str]:
    """Processes a lab of ``pid`` started (coturn names the lab's state folder)."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    )
    return [line for line in out.stdout.splitlines() if f"/run/drift-netlab/{pid}-" in line]


def leftovers(pid: int) -> list[str]:
    names = [n for n in ns.list_drift_namespaces() if ns.owner_pid(n) == pid]
    folders = [str(p) for p in Path("/run/drift-netlab").glob(f"{pid}-*")]
    return names + folders + lab_processes(pid)


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[Any]:
    """Run ``drift simulate`` to completion; after the test, nothing of its labs remains."""
    pids: list[int] = []

    def run(*args: str, name: str = "run") -> Run:
        folder = tmp_path / name
        proc = subprocess.Popen(
            simulate_argv(folder, *args),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pids.append(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return Run(proc.returncode, stdout, stderr, folder)

    yield run
    for pid in pids:
        assert leftovers(pid) == [], f"run {pid} left these behind"
