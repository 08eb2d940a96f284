"""``drift serve --workers``: the children run with exactly the parent's frozen settings."""

from __future__ import annotations

import signal
import sys

import pytest

from drift.core.lobby import Fault
from drift.serve.command import config_argv, config_env, serve, server_config
from drift.serve.config import ServerConfig
from drift.serve.workers import worker_configs
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
    for name, value in config_env(config).items():
        monkeypatch.setenv(name, value)
    assert parse(argv) == config
    # the defaults too, with no variable left over
    monkeypatch.delenv("DRIFT_TURN_SECRET")
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
