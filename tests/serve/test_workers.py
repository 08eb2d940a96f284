"""``drift serve --workers``: the children run with exactly the parent's frozen settings."""

from __future__ import annotations

import json
import signal
import sys

import psutil
import pytest

from drift.core.lobby import Fault
from drift.exitcodes import ExitCode
from drift.harness.serve import AsyncServeProcess
from drift.harness.waiting import until
from drift.serve.command import config_argv, config_env, serve, server_config
from drift.serve.config import ServerConfig
from drift.serve.workers import MAX_DEATHS, worker_configs
from tests.conftest import StartServe
from tests.support.wsclient import TIMEOUT, WsClient


def parse(argv: list[str]) -> ServerConfig:
    ctx = serve.make_context("serve", argv)
    return server_config(dict(ctx.params))


def test_flags_written_from_a_config_give_back_the_same_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = ServerConfig(
        host="::1",
        port=0,
        rate_limit=0.1 + 0.2,  # a float whose shortest text is long
        allowed_origins=("https://b.example", "https://a.example"),
        stun_urls=("stun:127.0.0.1:3478",),
        turn_urls=("turn:127.0.0.1:3478",),
        turn_secret="not-on-argv",
        faults=frozenset({Fault.SWAP_ROLES, Fault.NEVER_MATCH}),
        trust_proxy=True,
        redis_url="redis://127.0.0.1:1/0",
        node_id="n1",
        reuse_port=True,
    )
    argv = config_argv(config)
    assert "not-on-argv" not in argv, "a secret must never be on a command line"
    secrets = config_env(config)
    assert secrets, "the secret travels in the environment instead"
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    assert parse(argv) == config
    # the defaults too, with no variable left over
    for name in secrets:
        monkeypatch.delenv(name)
    assert parse(config_argv(ServerConfig())) == ServerConfig()


def test_each_worker_shares_the_port_and_has_its_own_name() -> None:
    config = ServerConfig(workers=3, node_id="edge", redis_url="redis://127.0.0.1:1/0")
    workers = worker_configs(config, 4321)
    assert [w.node_id for w in workers] == ["edge-w0", "edge-w1", "edge-w2"]
    assert {(w.port, w.workers, w.reuse_port) for w in workers} == {(4321, 1, True)}
    assert {w.redis_url for w in workers} == {config.redis_url}


@pytest.mark.slow
async def test_workers_get_the_settings_of_a_serve_invoked_from_python(
    redis_url: str, drift_serve: StartServe
) -> None:
    """``main(["serve", ...])`` (as the profiler runs it): no "serve" in sys.argv to re-read."""
    # The flags reach main() as a list, and this process's argv holds none of them.
    code = (
        "import sys; from drift.cli import main; args = sys.argv[1:]; del sys.argv[1:]; main(args)"
    )
    program = (sys.executable, "-c", code)
    proc = await drift_serve(
        "serve",
        "--host", "127.0.0.1", "--port", "0",
        "--workers", "2", "--redis", redis_url, "--queue-timeout", "0.2",
        host=None,
        program=program,
    )  # fmt: skip
    # Both workers answer, and both apply the short queue timeout they were given.
    for _ in range(4):
        client = await WsClient.connect(proc.ws_url)
        await client.send({"type": "join"})
        await client.expect("waiting")
        await client.expect_error("queue-timeout")
        await client.close()
    # The parent passes SIGTERM on; every worker drains and exits 0.
    proc.signal(signal.SIGTERM)
    assert await proc.wait(TIMEOUT * 3) == 0, proc.output()


# ---------------------------------------------------------------- supervision


def workers_of(proc: AsyncServeProcess) -> list[psutil.Process]:
    """The live ``drift serve`` worker processes under the parent."""
    return [
        child
        for child in psutil.Process(proc.pid).children()
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    ]


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def events(proc: AsyncServeProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.stderr if line.startswith("{")]


def logged(proc: AsyncServeProcess, event: str) -> list[dict[str, object]]:
    return [e for e in events(proc) if e["event"] == event]


async def start_workers(drift_serve: StartServe, redis: str) -> AsyncServeProcess:
    return await drift_serve(
        "--workers", "2", "--redis", redis, "--log-format", "json", "--log-level", "warning"
    )  # fmt: skip


@pytest.mark.slow
async def test_a_killed_worker_is_logged_and_replaced_by_one_that_serves(
    redis_url: str, drift_serve: StartServe
) -> None:
    proc = await start_workers(drift_serve, redis_url)
    first, second = workers_of(proc)
    first.kill()
    await until(lambda: logged(proc, "worker_restarted"), TIMEOUT * 3)
    (died,) = logged(proc, "worker_died")
    assert died["pid"] == first.pid and died["exit_code"] == -signal.SIGKILL
    assert died["restart_in_s"] == 0.5
    replacement = next(p for p in workers_of(proc) if p.pid not in (first.pid, second.pid))
    # With the other original gone too, only replacements are left to answer.
    second.kill()
    await until(lambda: len(logged(proc, "worker_restarted")) == 2, TIMEOUT * 3)
    assert replacement.is_running()
    client = await WsClient.connect(proc.ws_url)
    await client.send({"type": "join"})
    await client.expect("waiting")
    await client.close()
    survivors = workers_of(proc)
    proc.signal(signal.SIGTERM)
    assert await proc.wait(TIMEOUT * 3) == 0, proc.output()
    psutil.wait_procs(survivors, timeout=TIMEOUT)
    assert not [p for p in survivors if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert "Traceback" not in proc.output()


@pytest.mark.slow
async def test_workers_do_not_outlive_a_killed_supervisor(
    redis_url: str, drift_serve: StartServe
) -> None:
    proc = await start_workers(drift_serve, redis_url)
    workers = workers_of(proc)
    assert len(workers) == 2
    # SIGKILL: the supervisor cannot pass anything on; the kernel must stop them
    await proc.kill()
    await until(lambda: not any(map(alive, workers)), TIMEOUT * 3)


@pytest.mark.slow
async def test_a_worker_that_keeps_dying_ends_the_server_with_its_exit_code(
    redis_url: str, drift_serve: StartServe
) -> None:
    """Five deaths of one worker within the window end the server with exit code 4."""
    proc = await start_workers(drift_serve, redis_url)
    spared = workers_of(proc)[1]
    for death in range(1, MAX_DEATHS + 1):
        (victim,) = [p for p in workers_of(proc) if p.pid != spared.pid]
        victim.kill()
        if death < MAX_DEATHS:
            await until(lambda n=death: len(logged(proc, "worker_restarted")) == n, TIMEOUT * 4)
    code = await proc.wait(TIMEOUT * 3)
    assert code == ExitCode.WORKERS_FAILING == 4, proc.output()
    died = logged(proc, "worker_died")
    assert [e["restart_in_s"] for e in died] == [0.5, 1.0, 2.0, 4.0, 8.0]
    (failing,) = logged(proc, "workers_failing")
    assert failing["exit_code"] == 4
    assert not spared.is_running() or spared.status() == psutil.STATUS_ZOMBIE
