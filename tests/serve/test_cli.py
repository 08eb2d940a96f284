"""`drift serve` as a user runs it: a real subprocess, its printed URL, its exit codes."""

from __future__ import annotations

import signal
import socket
import sys

import aiohttp
import pytest

from drift.client.urls import ws_url
from tests.conftest import StartServe
from tests.support.wsclient import TIMEOUT


async def test_port_zero_prints_the_chosen_url_and_serves(
    drift_serve: StartServe,
) -> None:
    # host=None: only the flags given here (or the environment) say where to listen.
    proc = await drift_serve("--port", "0", host=None)
    url = proc.url
    assert not url.endswith(":0")
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        async with session.get(url + "/") as resp:
            assert resp.status == 200
    proc.signal(signal.SIGTERM)
    assert await proc.wait(TIMEOUT * 2) == 0


async def test_settings_come_from_drift_environment_variables(
    drift_serve: StartServe,
) -> None:
    proc = await drift_serve(
        env={"DRIFT_PORT": "0", "DRIFT_HOST": "127.0.0.1", "DRIFT_QUEUE_TIMEOUT": "0.05"},
        host=None,
    )
    signaling_url = ws_url(proc.url)
    async with aiohttp.ClientSession() as session, session.ws_connect(signaling_url) as ws:
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "welcome"
        await ws.send_json({"type": "join"})
        assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "waiting"
        error = await ws.receive_json(timeout=TIMEOUT)
        assert error["code"] == "queue-timeout"


def run_cli(*args: str) -> tuple[int, str, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "drift", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--port", "70000"],
        ["serve", "--rate-limit", "fast"],
        ["serve", "--bogus"],
        ["serve", "--turn-url", "turn:127.0.0.1:3478"],
        ["nonsense"],
    ],
)
def test_bad_usage_is_one_readable_error_and_exit_code_2(args: list[str]) -> None:
    code, _, err = run_cli(*args)
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("Error: ", "drift: ")), err


def test_a_busy_port_is_one_line_not_a_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli("serve", "--port", str(port))
    assert code == 2
    assert "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_help_lists_serve_and_hides_faults() -> None:
    code, out, _ = run_cli("serve", "--help")
    assert code == 0
    assert "--rematch-cooldown" in out
    assert "DRIFT_REMATCH_COOLDOWN" in out
    assert "--fault" not in out
    assert run_cli("--version")[1].startswith("drift, version")
