"""Synthetic aiortc peers send call-reports; ``drift simulate`` checks what the server counted.

Real peers against a real server on both backends (in-process runs), a server
that does not announce the feature (the check is skipped and says so), and the
``drop-call-reports`` fault in a real ``drift simulate`` process (the run fails).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from drift.client.urls import ws_url
from drift.core import protocol as p
from drift.exitcodes import ExitCode
from drift.harness.waiting import until
from drift.serve.server import Server
from drift.simulate.call_reports import delta, mismatches
from drift.simulate.run import Settings, simulate_run
from tests.conftest import MakeServer
from tests.simulate.test_simulate_cli import simulate


async def get_json(server: Server, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as resp:
        value = await resp.json()
    assert isinstance(value, dict)
    return value


async def metric(server: Server, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} not exported")


def settings(url: str, tmp_path: Path, peers: int = 4) -> Settings:
    return Settings(
        peers=peers, urls=(url,), hold=0.2, media_fraction=0.0, live=False, report_dir=tmp_path
    )


async def test_reports_of_real_peers_reach_stats_and_metrics_on_both_backends(
    make_server: MakeServer, backend: dict[str, Any], tmp_path: Path
) -> None:
    server = await make_server(node_ttl=1.0, **backend)
    result = await simulate_run(settings(ws_url(server.url), tmp_path), Console(quiet=True))
    assert result.exit_code == ExitCode.OK, result.summary
    assert result.summary["call_reports"] == {"checked": True, "reports": 4, "mismatches": []}
    calls = (await get_json(server, "/stats"))["calls"]
    assert calls["connected"] == 4 and sum(calls["failed"].values()) == 0
    assert calls["pairs"] == {"host/host": 4}  # loopback: host candidates only
    assert sum(calls["connect_ms"]["counts"]) == 4
    assert sum(calls["rtt_ms"]["counts"]) == 4  # every peer pinged over its data channel
    assert await metric(server, "drift_call_reports_total", outcome="connected") == 4
    assert await metric(server, "drift_call_connect_seconds_count") == 4
    assert await metric(server, "drift_call_candidate_pairs_total", local="host") == 4
    if server.backend is not None:

        async def summed() -> bool:
            return (await get_json(server, "/stats"))["cluster"]["calls"]["connected"] == 4

        await until(summed, timeout=10)


async def test_a_server_without_the_feature_is_not_checked_and_the_run_says_so(
    make_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(p, "FEATURES", ())  # welcome as an older server sends it
    server = await make_server()
    result = await simulate_run(
        settings(ws_url(server.url), tmp_path, peers=2), Console(quiet=True)
    )
    assert result.exit_code == ExitCode.OK, result.summary
    outcome = result.summary["call_reports"]
    assert outcome["checked"] is False
    assert "does not announce call-report" in outcome["note"]
    # and the peers sent nothing the server would have to refuse as unknown-type
    assert server.lobby.counters.errors == {}
    assert (await get_json(server, "/stats"))["calls"]["connected"] == 0


def test_a_server_that_drops_reports_fails_the_run_check(tmp_path: Path) -> None:
    run = simulate(tmp_path, "--peers", "4", "--server-fault", "drop-call-reports")
    assert run.code == ExitCode.CHECK_FAILED, run.out + run.err
    summary = run.summary
    assert summary["outcomes"]["verified"] == 4  # the calls themselves were fine
    assert [f for f in summary["run_failures"] if f.startswith("call-report-mismatch")]
    assert "connected: server 0, peers 4" in summary["call_reports"]["mismatches"]
    junit = (run.folder / "junit.xml").read_text()
    assert "call-report-mismatch" in junit
    suite = ET.parse(run.folder / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", "0")) > 0
    assert "call-report-mismatch" in (run.folder / "report.html").read_text()
    assert "call-report-mismatch" in run.out


def test_the_check_compares_the_runs_change_bucket_by_bucket() -> None:
    before = {
        "connected": 3,
        "failed": {"ice": 1},
        "connect_ms": {"le": [1, 2], "counts": [1, 2, 0], "sum": 5.0},
    }
    after = {
        "connected": 5,
        "failed": {"ice": 1},
        "connect_ms": {"le": [1, 2], "counts": [1, 3, 1], "sum": 9.5},
    }
    change = delta(after, before)
    assert change == {
        "connected": 2,
        "failed": {"ice": 0},
        "connect_ms": {"le": [1, 2], "counts": [0, 1, 1], "sum": 4.5},
    }
    assert mismatches(change, change) == []
    moved = {**change, "connect_ms": {"le": [1, 2], "counts": [0, 2, 0], "sum": 4.5}}
    assert mismatches(moved, change) == ["connect_ms.counts: server [0, 2, 0], peers [0, 1, 1]"]
