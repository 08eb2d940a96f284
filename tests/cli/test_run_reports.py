"""Every run that starts leaves a complete report folder, and says why it failed.

- a target that cannot be reached (exit 3): summary.json, report.html and a
  junit.xml whose one case is an *error*, for CI to publish;
- the JUnit suite time is the run's wall time, not the sum of overlapping pairs;
- peers refused before ``welcome`` (close 1013) are explained: the cap and the flag.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drift.exitcodes import ExitCode
from drift.harness.serve import ServeProcess

RUN_TIMEOUT = 120.0


def drift(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drift", *args],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def closed_port() -> int:
    """A loopback port nobody listens on (bound by nobody once returned)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("command", "url"),
    [("simulate", "ws://127.0.0.1:{port}/ws"), ("loadtest smoke", "http://127.0.0.1:{port}")],
)
def test_an_unreachable_target_leaves_a_complete_folder_with_an_error_case(
    tmp_path: Path, command: str, url: str
) -> None:
    folder = tmp_path / "run"
    target = url.format(port=closed_port())
    extra = ["--no-live"] if command == "simulate" else ["--no-progress"]
    result = drift(
        *command.split(), "--url", target, "--report-dir", str(folder), *extra, cwd=tmp_path
    )
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot reach" in result.stderr
    if command != "simulate":  # loadtest makes its run folder inside --report-dir
        (folder,) = folder.iterdir()
    assert str(folder) in result.stderr, "the one line names the report"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == "unreachable" and summary["exit_code"] == 3
    assert "cannot reach" in summary["reason"]
    suite = ET.parse(folder / "junit.xml").getroot()
    assert suite.get("errors") == "1" and suite.get("tests") == "1"
    (error,) = suite.iter("error")
    assert "cannot reach" in (error.get("message") or "")
    assert "unreachable" in (folder / "report.html").read_text().lower()


@pytest.mark.slow
def test_junit_time_is_the_wall_time_of_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    result = drift(
        "simulate", "--peers", "6", "--hold", "1", "--report-dir", str(folder), "--no-live",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    summary = json.loads((folder / "summary.json").read_text())
    suite = ET.parse(folder / "junit.xml").getroot()
    cases = list(suite.iter("testcase"))
    assert len(cases) == 3
    # three pairs held 1 s each, at once: their times add up to more than the run took
    assert sum(float(c.get("time") or 0) for c in cases) > summary["wall_s"]
    assert float(suite.get("time") or 0) == pytest.approx(summary["wall_s"], abs=0.001)


@pytest.mark.slow
def test_peers_refused_before_welcome_are_explained_with_the_flag(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with ServeProcess(["--max-connections-per-ip", "2", "--log-level", "warning"]) as server:
        result = drift(
            "simulate", "--url", server.ws_url, "--peers", "6", "--timeout", "5",
            "--report-dir", str(folder), "--no-live", cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == ExitCode.CHECK_FAILED, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # rich wraps long lines
    verdict_line = out[out.index("FAIL") :]
    assert "refused before welcome (close 1013)" in verdict_line
    assert "--max-connections-per-ip 0" in verdict_line
    summary = json.loads((folder / "summary.json").read_text())
    (hint,) = summary["hints"]
    assert "per address" in hint and "--max-connections-per-ip 0" in hint
    assert "--max-connections-per-ip 0" in (folder / "report.html").read_text()
