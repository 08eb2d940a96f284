"""Two Redis workers under 2,000 concurrent peers: every pair verified, no swapped roles.

The scale-out setup a user runs: a real redis-server, ``drift serve --workers 2
--redis ...`` (two processes on one port, sharing the queue), and ``drift
simulate`` against it. With enough peers joining at once, one worker's
``paired`` message reaches the other worker before that worker's own join
result; a node that then matched its peer as answerer without telling it
``waiting`` first showed up here as ``swapped-roles`` (about 1 pair in 200).
The interleavings themselves are tested exhaustively, without processes, in
tests/core/test_cluster_interleavings.py; this is the whole system at the
scale where the race shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drift.harness.env import child_env
from drift.harness.redis import RedisServer
from drift.harness.serve import ServeProcess
from tests.support.programs import require_program

pytestmark = pytest.mark.slow

PEERS = 2_000


def test_two_redis_workers_verify_every_pair_of_2000_peers(tmp_path: Path) -> None:
    require_program("redis-server", "redis-server")
    with RedisServer(tmp_path) as redis_server:
        redis_url = redis_server.url
        serve_args = [
            "--workers", "2",
            "--redis", redis_url,
            # 2,000 connections from one address; nobody waits long enough to time out.
            "--max-connections-per-ip", "0",
            "--queue-timeout", "0",
            "--log-level", "warning",
        ]  # fmt: skip
        with ServeProcess(serve_args, tmp_path / "serve.log") as server:
            report_dir = tmp_path / "report"
            simulate = [
                sys.executable, "-m", "drift", "simulate",
                "--url", server.ws_url,
                "--peers", str(PEERS),
                "--media-fraction", "0",
                # Matching is what is checked; a loaded CI machine may take long to connect.
                "--timeout", "60",
                "--no-live",
                "--report-dir", str(report_dir),
            ]  # fmt: skip
            run = subprocess.run(
                simulate, env=child_env(), capture_output=True, text=True, timeout=180
            )
    summary = json.loads((report_dir / "summary.json").read_text())
    failures = summary["failures"]
    assert "swapped-roles" not in failures, (failures, summary["failure_examples"])
    assert run.returncode == 0, (failures, run.stdout[-2000:], run.stderr[-2000:])
    assert summary["verdict"] == "pass"
    assert summary["verified_pairs"] == PEERS // 2
