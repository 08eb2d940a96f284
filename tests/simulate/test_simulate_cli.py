"""``drift simulate`` as a real program: clean runs pass, every injected fault is named.

Each run is a fresh ``python -m drift simulate`` process with its embedded
server in another process, on loopback only; sizes stay small (6-20 peers) so
the whole file takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drift.exitcodes import ExitCode

#: generous: a loaded 2-core machine can take a while to start three interpreters
RUN_TIMEOUT = 120


@dataclass
class Run:
    code: int
    out: str
    err: str
    folder: Path

    @property
    def summary(self) -> dict[str, Any]:
        data = json.loads((self.folder / "summary.json").read_text())
        assert isinstance(data, dict)
        return data


def simulate(tmp_path: Path, *args: str, name: str = "run") -> Run:
    folder = tmp_path / name
    env = dict(os.environ, DRIFT_REPORTS_DIR=str(tmp_path / "reports"), COLUMNS="120")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drift",
            "simulate",
            "--no-live",
            "--report-dir",
            str(folder),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, folder)


def test_clean_server_passes_five_times_in_a_row(tmp_path: Path) -> None:
    for attempt in range(5):
        run = simulate(tmp_path, "--peers", "8", "--timeout", "15", name=f"clean{attempt}")
        assert run.code == ExitCode.OK, run.out + run.err
        summary = run.summary
        assert summary["verdict"] == "pass"
        assert summary["outcomes"] == {"verified": 8, "waiting": 0, "failed": 0}
        assert summary["verified_pairs"] == 4
        assert summary["media_pairs"] >= 1 and summary["media_pairs_verified"] >= 1


def test_reports_are_written_and_say_the_cap_is_off(tmp_path: Path) -> None:
    run = simulate(tmp_path, "--peers", "7", "--timeout", "15", "--hold", "0.2")
    assert run.code == ExitCode.OK, run.out + run.err
    summary = run.summary
    # odd N: one peer is left waiting, which is not a failure
    assert summary["outcomes"] == {"verified": 6, "waiting": 1, "failed": 0}
    assert "per-IP connection cap off" in summary["target"]["note"]
    assert set(summary["latency_ms"]) == {
        "join_to_matched", "matched_to_ice_connected", "matched_to_verified", "datachannel_rtt",
    }  # fmt: skip
    assert summary["latency_ms"]["matched_to_verified"]["count"] == 6
    rows = (run.folder / "peers.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 and rows[0].startswith("index,worker,peer_id")
    suite = ET.parse(run.folder / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("skipped") == "1"
    html = (run.folder / "report.html").read_text()
    assert html.count("<svg") >= 5 and "http://" not in html.split("</head>")[0]
    assert "drift simulate: outcomes" in run.out and "PASS" in run.out


@pytest.mark.parametrize(
    ("fault", "kind", "args"),
    [
        ("swap-roles", "swapped-roles", ("--peers", "8")),
        ("cross-wire", "cross-wired", ("--peers", "12", "--timeout", "5")),
        ("drop-candidates", "candidates-dropped", ("--peers", "6", "--timeout", "4")),
        ("never-match", "never-matched", ("--peers", "6")),
    ],
)
def test_each_fault_fails_with_its_own_kind(
    tmp_path: Path, fault: str, kind: str, args: tuple[str, ...]
) -> None:
    run = simulate(tmp_path, *args, "--server-fault", fault)
    assert run.code == ExitCode.CHECK_FAILED, run.out + run.err
    summary = run.summary
    assert summary["verdict"] == "fail"
    assert f"FAULTS INJECTED: {fault}" in summary["target"]["note"]
    failures = summary["failures"]
    # every peer failed, and the injected rule is the kind named for (nearly) all
    assert summary["outcomes"]["verified"] == 0
    assert failures.get(kind, 0) >= summary["peers"] - 2, failures
    assert max(failures, key=failures.get) == kind
    suite = ET.parse(run.folder / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) > 0
    assert kind in (run.folder / "junit.xml").read_text()


def test_a_leaking_server_fails_the_run_check(tmp_path: Path) -> None:
    run = simulate(tmp_path, "--peers", "6", "--server-fault", "leak-on-disconnect")
    assert run.code == ExitCode.CHECK_FAILED, run.out + run.err
    summary = run.summary
    assert summary["outcomes"]["verified"] == 6  # the calls themselves were fine
    assert any(item.startswith("server-leak") for item in summary["run_failures"])


def test_unreachable_url_is_one_line_and_exit_3(tmp_path: Path) -> None:
    run = simulate(tmp_path, "--peers", "4", "--url", "ws://127.0.0.1:9/ws")
    assert run.code == ExitCode.UNREACHABLE
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drift: cannot reach ws://127.0.0.1:9/ws")


@pytest.mark.parametrize(
    "args",
    [
        ("--peers", "0"),
        ("--url", "http://127.0.0.1:1/ws"),
        ("--peers", "2", "--procs", "3"),
        ("--media-fraction", "2"),
    ],
)
def test_bad_usage_is_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert simulate(tmp_path, *args).code == ExitCode.USAGE


def test_procs_next_and_several_urls(tmp_path: Path) -> None:
    """Two worker processes, peers pressing next, and --url repeated (round-robin)."""
    import asyncio

    from drift.simulate.embedded import EmbeddedServer

    async def main() -> Run:
        server = EmbeddedServer(peers=20)
        url = await server.start()
        try:
            return await asyncio.to_thread(
                simulate, tmp_path, "--peers", "16", "--procs", "2", "--next-fraction", "0.5",
                "--seed", "3", "--timeout", "15", "--url", url, "--url", url,
            )  # fmt: skip
        finally:
            await server.stop()

    run = asyncio.run(main())
    assert run.code == ExitCode.OK, run.out + run.err
    summary = run.summary
    assert summary["outcomes"]["failed"] == 0
    assert summary["next_pressed"] >= 1
    assert summary["settings"]["procs"] == 2
    assert len(summary["peak_rss_bytes"]["workers"]) == 2
    workers = {
        line.split(",")[1] for line in (run.folder / "peers.csv").read_text().splitlines()[1:]
    }
    assert workers == {"0", "1"}
