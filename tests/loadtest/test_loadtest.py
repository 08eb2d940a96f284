"""``drift loadtest``: scenario validation, the report folder, thresholds and the leak check.

The end-to-end tests run the real command as a subprocess (server, locust and
sampler are processes of their own), on loopback, with small user counts and
durations so the whole file stays well under two minutes.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from drift.client.urls import ws_url
from drift.errors import ConfigError
from drift.exitcodes import ExitCode
from drift.loadtest.scenario import available, load_scenario, parse
from drift.resources import data_dir

#: Upper bound for one command run: generous, because other test suites share the 2 cores.
RUN_TIMEOUT = 180.0

SHIPPED = ("smoke", "steady", "churn", "flash-crowd", "odd-population", "abuse")


def drift(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drift", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def only_run_dir(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def summary_of(root: Path) -> dict[str, Any]:
    value = json.loads((only_run_dir(root) / "summary.json").read_text())
    assert isinstance(value, dict)
    return value


def check(summary: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in summary["thresholds"] if c["name"] == name]
    assert len(found) == 1, summary["thresholds"]
    result: dict[str, Any] = found[0]
    return result


# ------------------------------------------------------------------ scenarios (no processes)


def test_every_required_scenario_ships_and_validates() -> None:
    assert set(SHIPPED) <= set(available())
    for name in SHIPPED:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.description


def test_flash_crowd_has_a_spike_and_abuse_has_abusers() -> None:
    flash = load_scenario("flash-crowd")
    assert flash.peak_users >= 10 * flash.users
    assert load_scenario("abuse").abuse_share > 0
    odd = load_scenario("odd-population")
    assert odd.users % 2 == 1 and "queue-timeout" in odd.expected_errors


BASE = "users = 4\nspawn_rate = 4.0\nduration_s = 2\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "colour = 'red'\n", "unknown key 'colour'"),
        (BASE + "[thresholds]\nqueue_p98_ms = 5\n", "unknown key 'thresholds.queue_p98_ms'"),
        (BASE.replace("users = 4", "users = 'four'"), "key 'users' must be int, got str"),
        (BASE.replace("spawn_rate = 4.0\n", ""), "missing required key 'spawn_rate'"),
        (BASE + "next_share = 0.9\n", "key 'next_share'"),
        (BASE + "[[stages]]\nat_s = 0\nusers = 'x'\nspawn_rate = 1\n", "key 'stages[0].users'"),
        (BASE + "users = 5\n", "not valid TOML"),
    ],
)
def test_a_bad_scenario_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "bad.toml", "bad")
    line = str(info.value)
    assert line.startswith("bad.toml: ")
    assert message in line
    assert "\n" not in line


def test_locustfile_side_of_drift_imports_no_asyncio() -> None:
    """The locustfile runs on gevent: what it imports from drift must not pull in asyncio."""
    code = (
        "import sys, drift.core.protocol, drift.loadtest.scenario; "
        "sys.exit('asyncio' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_malformed_scenario_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "[thresholds]\nqueue_p99 = 10\n")
    result = drift(str(bad), "--report-dir", str(tmp_path / "reports"), cwd=tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(bad) in lines[0] and "'thresholds.queue_p99'" in lines[0]
    assert not (tmp_path / "reports").exists()  # refused before anything ran


def test_unreachable_url_exits_3(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = drift("smoke", "--url", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach" in result.stderr


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_smoke_run_writes_a_complete_report(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    result = drift("smoke", "--report-dir", str(reports), "--no-progress", cwd=tmp_path)
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    run = only_run_dir(reports)
    assert run.name.endswith("-loadtest-smoke")
    summary = summary_of(reports)
    assert summary["passed"] is True
    assert summary["requests"]["queue"]["count"] >= 10
    assert summary["requests"]["relay"]["count"] >= 5
    assert summary["requests"]["queue"]["p99"] > 0
    assert summary["memory"]["available"] and summary["memory"]["rss_end_mb"] > 0
    assert summary["stats_after"]["zero"] is True
    assert any("max-connections-per-ip 0" in note for note in summary["target"]["notes"])

    with (run / "locust_stats.csv").open(newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    for kind in ("connect", "queue", "relay"):
        assert int(rows[(kind, kind)]["Request Count"]) > 0
    with (run / "samples.csv").open(newline="") as f:
        kinds = {r["kind"] for r in csv.DictReader(f)}
    assert {"connect", "queue", "relay"} <= kinds

    page = (run / "report.html").read_text()
    assert page.count("<svg") >= 5 and "<script" not in page
    assert "Queue latency" in page and "Server RSS" in page
    assert (run / "locust.html").stat().st_size > 0
    suite = ET.parse(run / "junit.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests", "0")) >= 4


@pytest.mark.slow
def test_an_impossible_threshold_fails_the_run(tmp_path: Path) -> None:
    text = (data_dir("scenarios") / "smoke.toml").read_text()
    text = text.replace("queue_p99_ms = 2000", "queue_p99_ms = 0.0001")
    assert "queue_p99_ms = 0.0001" in text
    scenario = tmp_path / "impossible.toml"
    scenario.write_text(text)
    reports = tmp_path / "reports"
    result = drift(
        str(scenario),
        "--duration",
        "4",
        "--report-dir",
        str(reports),
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == ExitCode.CHECK_FAILED, result.stderr[-3000:]
    assert "queue_p99_ms" in result.stderr.strip().splitlines()[-1]
    summary = summary_of(reports)
    assert summary["passed"] is False
    assert check(summary, "queue_p99_ms")["passed"] is False
    assert check(summary, "min_matches")["passed"] is True  # the run itself did work


@pytest.mark.slow
@pytest.mark.parametrize("leaky", [False, True], ids=["reference", "leak-on-disconnect"])
def test_leak_check_passes_clean_and_catches_the_leak(tmp_path: Path, leaky: bool) -> None:
    reports = tmp_path / "reports"
    args = ["churn", "--users", "40", "--duration", "10", "--report-dir", str(reports)]
    if leaky:
        args.append("--server-arg=--fault=leak-on-disconnect")
    result = drift(*args, "--no-progress", cwd=tmp_path)
    summary = summary_of(reports)
    zero = check(summary, "stats_zero_after")
    assert summary["memory"]["available"]
    assert "rss_growth_mb" in summary["memory"]
    assert summary["requests"]["queue"]["count"] >= 100  # many join/match/leave cycles
    if leaky:
        assert result.returncode == ExitCode.CHECK_FAILED, result.stderr[-3000:]
        assert zero["passed"] is False
        assert summary["stats_after"]["last"]["connections"] > 0
    else:
        assert result.returncode == ExitCode.OK, result.stderr[-3000:]
        assert zero["passed"] is True
        assert check(summary, "rss_growth_mb")["passed"] is True


@pytest.mark.slow
def test_workers_mode_runs_a_master_and_workers(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    result = drift(
        "smoke",
        "--workers",
        "2",
        "--duration",
        "5",
        "--report-dir",
        str(reports),
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    run = only_run_dir(reports)
    assert (run / "locust-worker-0.log").is_file() and (run / "locust-worker-1.log").is_file()
    summary = summary_of(reports)
    assert summary["target"]["workers"] == 2
    # samples travel from the workers to the master and still reach the report
    assert summary["requests"]["queue"]["count"] >= 10


@pytest.mark.slow
def test_url_mode_tests_a_server_it_did_not_start(tmp_path: Path) -> None:
    from drift.loadtest.server import ServerProcess

    reports = tmp_path / "reports"
    with ServerProcess([], tmp_path / "server.log") as server:
        ws = ws_url(server.url)
        result = drift(
            "smoke",
            "--url",
            ws,
            "--duration",
            "3",
            "--report-dir",
            str(reports),
            "--no-progress",
            cwd=tmp_path,
        )
    assert result.returncode == ExitCode.OK, result.stderr[-3000:]
    summary = summary_of(reports)
    assert summary["target"]["started_server"] is False
    assert summary["target"]["url"] == ws
    assert summary["requests"]["queue"]["count"] > 0
    assert summary["memory"]["available"]  # RSS from the target's /stats
