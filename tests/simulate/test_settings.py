"""``drift simulate``'s flags and its one frozen Settings object agree, default for default."""

from __future__ import annotations

import dataclasses
import os

import pytest

from drift.errors import ConfigError
from drift.simulate.command import settings_from_flags, simulate
from drift.simulate.settings import Settings, auto_procs


@pytest.fixture(autouse=True)
def _no_simulate_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("DRIFT_SIMULATE_") or name == "DRIFT_TURN_SECRET":
            monkeypatch.delenv(name)


def parse(*argv: str) -> Settings:
    ctx = simulate.make_context("simulate", list(argv))
    return settings_from_flags(dict(ctx.params))


def test_no_flags_give_the_settings_defaults() -> None:
    settings = parse()
    assert settings == Settings().resolved()
    assert settings.procs == auto_procs(Settings.peers)


def test_every_flag_lands_in_its_field() -> None:
    settings = parse(
        "--peers", "6", "--timeout", "7.5", "--hold", "0.5", "--no-trickle", "--no-live",
        "--media-fraction", "0", "--procs", "2", "--seed", "4", "--ice-policy", "relay",
        "--url", "ws://127.0.0.1:1/ws",
    )  # fmt: skip
    expected = dataclasses.replace(
        Settings(),
        peers=6,
        timeout=7.5,
        hold=0.5,
        trickle=False,
        live=False,
        media_fraction=0.0,
        procs=2,
        seed=4,
        ice_policy="relay",
        urls=("ws://127.0.0.1:1/ws",),
    )
    assert settings == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--peers", "2", "--procs", "3"],
        ["--url", "http://127.0.0.1:1/ws"],
        ["--turn-url", "turn:127.0.0.1:3478"],
        ["--url", "ws://127.0.0.1:1/ws", "--turn-ttl", "60"],
    ],
)
def test_bad_combinations_are_config_errors(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse(*argv)


def test_the_turn_secret_stays_in_the_command_process() -> None:
    settings = parse("--turn-url", "turn:127.0.0.1:3478", "--turn-secret", "s3cret")
    assert settings.turn_secret == "s3cret"
    assert settings.for_peers().turn_secret is None
    assert "s3cret" not in repr(settings)
    # without a TURN URL the secret signs nothing, so it is dropped at once
    assert parse("--turn-secret", "s3cret").turn_secret is None
