"""``--json`` on every command: the summary as one JSON document on stdout.

Each command runs as a real process (its children inherit stdout too) and its
stdout is parsed whole; progress and logs may only go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drift.harness.env import child_env
from drift.harness.serve import AsyncServeProcess
from tests.support.wsclient import WsClient


def drift(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drift", *args],
        env=child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False, cwd=cwd,
    )  # fmt: skip


def document(done: subprocess.CompletedProcess[str], command: str) -> dict[str, Any]:
    """stdout is exactly one JSON document about ``command`` with the process's exit code."""
    doc = json.loads(done.stdout)
    assert isinstance(doc, dict)
    assert doc["command"] == command
    assert doc["exit_code"] == done.returncode, done.stderr[-2000:]
    return doc


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_turn_check_json_says_which_server_failed_and_why() -> None:
    port = free_udp_port()  # closed again: nothing answers there
    done = drift(
        "turn-check", "--url", f"turn:127.0.0.1:{port}", "--secret", "s", "--timeout", "1",
        "--json",
    )  # fmt: skip
    doc = document(done, "turn-check")
    assert done.returncode == 3
    (server,) = doc["summary"]["servers"]
    assert server["url"] == f"turn:127.0.0.1:{port}"
    assert server["ok"] is False and server["problem"] == "turn-unreachable"
    assert doc["error"] and f"127.0.0.1:{port}" in doc["error"]


def test_fuzz_json_is_the_report() -> None:
    done = drift(
        "fuzz", "--frames", "200", "--connections", "2", "--bursts", "0", "--duration", "20",
        "--seed", "7", "--json",
    )  # fmt: skip
    doc = document(done, "fuzz")
    assert done.returncode == 0
    assert doc["error"] is None
    report = doc["summary"]
    assert report["seed"] == 7 and report["frames_tried"] >= 1
    assert "drift fuzz: seed 7" in done.stderr  # the readable output moved to stderr


def test_a_usage_error_is_a_document_too() -> None:
    done = drift("fuzz", "--url", "http://127.0.0.1:1/", "--json")
    doc = document(done, "fuzz")
    assert done.returncode == 2
    assert doc["summary"] is None and "--url must be a ws://" in doc["error"]
    assert "drift: --url must be" in done.stderr


@pytest.mark.slow
def test_simulate_json_is_the_summary(tmp_path: Path) -> None:
    done = drift("simulate", "--peers", "2", "--report-dir", str(tmp_path), "--json")
    doc = document(done, "simulate")
    assert done.returncode == 0
    summary = doc["summary"]
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert "PASS" in done.stderr


@pytest.mark.slow
def test_loadtest_json_is_the_summary(tmp_path: Path) -> None:
    done = drift(
        "loadtest", "smoke", "--users", "4", "--spawn-rate", "4", "--duration", "2",
        "--report-dir", str(tmp_path), "--json", timeout=180,
    )  # fmt: skip
    doc = document(done, "loadtest")
    summary = doc["summary"]
    (folder,) = tmp_path.iterdir()
    assert summary["report_dir"] == str(folder)
    assert summary["thresholds"] and {"passed", "requests"} <= summary.keys()


@pytest.mark.slow
def test_bench_json_is_its_results(tmp_path: Path) -> None:
    """The smoke-test sizes (about 20 s); run in tmp_path, where its reports/ goes."""
    done = drift(
        "bench", "--tiny", "--only", "server", "--no-docs", "--json", timeout=300, cwd=tmp_path
    )
    doc = document(done, "bench")
    summary = doc["summary"]
    assert summary["rows"] and Path(summary["report"]).is_file()
    assert Path(summary["report"]).is_relative_to(tmp_path)


async def test_serve_json_prints_only_json_lines() -> None:
    """``--log-format json``: the ready line too; stdout and stderr read together parse."""
    server = await AsyncServeProcess.start("--log-format", "json", "--log-level", "debug")
    try:
        client = await WsClient.connect(server.ws_url)
        await client.send({"type": "join"})
        await client.expect("waiting")
        await client.close()
        server.signal(signal.SIGTERM)
        assert await server.wait(timeout=20) == 0
    finally:
        await server.kill()
    ready = json.loads(server.stdout[0])
    assert ready["event"] == "ready" and ready["url"] == server.url
    assert ready["ws_url"] == server.ws_url and ready["level"] == "info" and ready["ts"]
    lines = [line for line in server.stdout + server.stderr if line.strip()]
    assert len(lines) > 3
    for line in lines:
        assert isinstance(json.loads(line), dict), line


async def test_serve_json_flag_and_its_fatal_line_are_json() -> None:
    server = await AsyncServeProcess.start("--log-format", "console", "--json")
    await server.kill()
    assert json.loads(server.stdout[0])["event"] == "ready"
    bad = drift("serve", "--json", "--port", "0", "--workers", "2")  # --workers needs --redis
    assert bad.returncode == 2
    (line,) = bad.stderr.strip().splitlines()
    fatal = json.loads(line)
    assert fatal["level"] == "error" and "--redis" in fatal["error"]


async def test_proxy_json_prints_its_ready_line_as_json() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drift", "proxy", "--upstream", "ws://127.0.0.1:9/ws", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["url"].startswith("ws://127.0.0.1:")
        assert ready["upstream"] == "ws://127.0.0.1:9/ws" and ready["fault"] == "none"
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
