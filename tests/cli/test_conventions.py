"""The rules every command follows (drift/cli.py): one env-var rule, one progress switch,
help for every option, whole summaries in the command list."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from drift.cli import COMMANDS, env_name, main
from drift.harness.env import child_env

#: commands that draw a live progress display
WITH_PROGRESS = ("simulate", "loadtest", "fuzz", "bench")


def command(name: str) -> click.Command:
    loaded = main.get_command(click.Context(main), name)
    assert loaded is not None, name
    return loaded


def options(name: str) -> list[click.Option]:
    return [p for p in command(name).params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_the_documented_variable_and_help_shows_it(name: str) -> None:
    """``--some-flag`` of ``drift CMD`` is ``DRIFT_CMD_SOME_FLAG``, read first and shown."""
    prefix = "DRIFT_" + name.upper().replace("-", "_") + "_"
    text = CliRunner().invoke(main, [name, "--help"], terminal_width=200).output
    for option in options(name):
        expected = prefix + option.opts[0].lstrip("-").upper().replace("-", "_")
        assert env_name(name, option) == expected
        assert isinstance(option.envvar, list) and option.envvar[0] == expected, option.opts
        assert option.show_envvar
        if not option.hidden:
            assert expected in text, (name, option.opts)


@pytest.mark.parametrize(
    ("argv", "env", "param", "value"),
    [
        (["serve"], {"DRIFT_SERVE_PORT": "9101"}, "port", 9101),
        (["serve"], {"DRIFT_PORT": "9102"}, "port", 9102),  # serve's short names still work
        (["serve"], {"DRIFT_SERVE_PORT": "9103", "DRIFT_PORT": "9104"}, "port", 9103),
        (["serve"], {"DRIFT_REDIS_URL": "redis://h/0"}, "redis_url", "redis://h/0"),
        (["simulate"], {"DRIFT_SIMULATE_PEERS": "6"}, "peers", 6),
        (["simulate"], {"DRIFT_SIMULATE_URLS": "ws://a/ws ws://b/ws"}, "urls",
         ("ws://a/ws", "ws://b/ws")),
        (["simulate"], {"DRIFT_SIMULATE_PROGRESS": "0"}, "progress", False),
        (["loadtest", "smoke"], {"DRIFT_LOADTEST_USERS": "7"}, "users", 7),
        (["loadtest", "smoke"], {"DRIFT_LOADTEST_PROGRESS": "false"}, "progress", False),
        (["fuzz"], {"DRIFT_FUZZ_FRAMES": "123"}, "frames", 123),
        (["fuzz"], {"DRIFT_FUZZ_ALLOW_REMOTE": "1"}, "allow_remote", True),
        (["bench"], {"DRIFT_BENCH_QUICK": "1"}, "quick", True),
        (["bench"], {"DRIFT_BENCH_ONLY": "server redis"}, "only", ("server", "redis")),
        (["turn-check"], {"DRIFT_TURN_CHECK_TTL": "60", "DRIFT_TURN_SECRET": "s",
                          "DRIFT_TURN_CHECK_URL": "turn:127.0.0.1:3478"}, "ttl", 60.0),
        (["turn-check"], {"DRIFT_TURN_CHECK_PEER_ID": "p", "DRIFT_TURN_SECRET": "s",
                          "DRIFT_TURN_URLS": "turn:127.0.0.1:3478"}, "peer_id", "p"),
        (["proxy"], {"DRIFT_PROXY_UPSTREAM": "ws://x/ws", "DRIFT_PROXY_DELAY": "2.5"}, "delay",
         2.5),
    ],
)  # fmt: skip
def test_the_variable_sets_the_option(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], param: str, value: object
) -> None:
    for key in [k for k in os.environ if k.startswith("DRIFT_")]:
        monkeypatch.delenv(key)
    for key, text in env.items():
        monkeypatch.setenv(key, text)
    name, *args = argv
    ctx = command(name).make_context(name, list(args))
    assert ctx.params[param] == value


def test_a_flag_beats_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFT_FUZZ_FRAMES", "5")
    assert command("fuzz").make_context("fuzz", ["--frames", "9"]).params["frames"] == 9


def test_a_bad_variable_is_a_usage_error_naming_it() -> None:
    """Exit 2 and one readable line, like a bad flag."""
    env = child_env({"DRIFT_FUZZ_CONNECTIONS": "many"})
    done = subprocess.run(
        [sys.executable, "-m", "drift", "fuzz"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "DRIFT_FUZZ_CONNECTIONS" in done.stderr or "--connections" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_one_name_for_the_progress_switch(name: str) -> None:
    switches = [
        o for o in options(name)
        if not o.hidden and {"live", "progress", "quiet"} & set((o.name or "").split("_"))
    ]  # fmt: skip
    if name in WITH_PROGRESS:
        (switch,) = switches
        assert switch.opts == ["--progress"] and switch.secondary_opts == ["--no-progress"]
    else:
        assert switches == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name: str) -> None:
    missing = [o.opts[0] for o in options(name) if not (o.help or "").strip()]
    assert missing == []


def test_the_command_list_cuts_no_summary() -> None:
    """``drift --help`` at 80 columns: every summary whole, none ending in '...'."""
    text = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    listing = text.split("Commands:")[1]
    assert "..." not in listing
    flat = " ".join(text.split())
    for name, entry in COMMANDS.items():
        assert f"{name} {entry.summary}" in flat
        assert entry.summary.endswith(".")


def test_simulate_help_lists_every_exit_code() -> None:
    text = " ".join(CliRunner().invoke(main, ["simulate", "--help"]).output.split())
    for code in ("0", "1", "2", "3", "130", "143"):
        assert f" {code} " in text or f"{code}/" in text or f"/{code}" in text, code
