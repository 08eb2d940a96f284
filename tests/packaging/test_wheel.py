"""A wheel built from this repository runs every tool from an empty folder.

Built with the project's own backend (hatchling, no download), installed
without its dependencies into a fresh virtualenv that sees this Python's
packages, then run from an empty folder, so nothing can come from the
checkout: the venv's ``drift`` must be the one imported, and it must find its
data (static/, scenarios/, loadtest/) and its benchmark suites inside itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from drift.harness.env import child_env
from tests.support.programs import require_program

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: What an installed drift reads from inside itself (see drift/resources.py, drift.bench).
SHIPPED = (
    "drift/_data/static/index.html",
    "drift/_data/scenarios/smoke.toml",
    "drift/_data/loadtest/locustfile.py",
    "drift/bench/suites/bare_relay.py",
    "drift/bench/suites/simulate_overhead.py",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    empty: Path

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``drift *args`` of the venv, from the empty folder, with no DRIFT_* or PYTHONPATH."""
        env = child_env()
        env.pop("PYTHONPATH", None)
        return subprocess.run(
            [str(self.venv / "bin" / "drift"), *args],
            cwd=self.empty,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # The backend is a dev dependency: build in this environment, offline.
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root)]
    subprocess.run([*build, str(REPO)], check=True, timeout=300)
    (wheel,) = root.glob("drift_signal-*.whl")
    venv = root / "venv"
    make = [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)]
    subprocess.run(make, check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, timeout=300)
    empty = root / "empty"
    empty.mkdir()
    return Installed(wheel, venv, empty)


def test_the_wheel_holds_the_data_and_the_benchmark_suites(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = [name for name in SHIPPED if name not in names]
    assert not missing, f"not in {installed.wheel.name}: {missing}"
    assert not any("__pycache__" in name for name in names)


def test_the_venv_imports_its_own_drift_not_the_checkout(installed: Installed) -> None:
    python = installed.venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import drift; print(drift.__file__)"],
        cwd=installed.empty,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    where = Path(done.stdout.strip()).resolve()
    assert where.is_relative_to(installed.venv.resolve()), where
    assert not where.is_relative_to(REPO), where


def test_bench_runs_from_an_empty_folder(installed: Installed) -> None:
    # --tiny: the --quick run's code paths (every default suite, the bare baseline
    # script, redis-server, simulate's overhead script) at smoke sizes; --quick
    # itself takes minutes and proves nothing more about the install.
    require_program("redis-server", "redis-server")
    done = installed.run("bench", "--tiny", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = installed.empty.glob("reports/*-bench/bench.json")
    benchmarks = json.loads(report.read_text())["benchmarks"]
    assert sorted(benchmarks) == ["redis", "server", "simulate"]
    skipped = {name: b["skipped"] for name, b in benchmarks.items() if "skipped" in b}
    assert not skipped, skipped


def test_loadtest_smoke_runs_from_an_empty_folder(installed: Installed) -> None:
    done = installed.run("loadtest", "smoke", "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(installed.empty.glob("reports/*-loadtest-smoke/report.html"))


def test_simulate_runs_from_an_empty_folder(installed: Installed) -> None:
    done = installed.run("simulate", "--peers", "50", "--no-live", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert list(installed.empty.glob("reports/*-simulate/summary.json"))
