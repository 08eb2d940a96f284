"""The README and docs say what the programs do (each check reads the program, not a copy)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from drift.cli import main
from drift.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (REPO / "docs").glob("*.md")} | {"README.md": README}


def option(command: str, name: str) -> click.Option:
    loaded = main.get_command(click.Context(main), command)
    assert loaded is not None
    (found,) = [p for p in loaded.params if isinstance(p, click.Option) and p.name == name]
    return found


def test_the_first_command_installs_every_extra() -> None:
    first = README.split("```sh\n", 1)[1].splitlines()[0]
    assert "pip install" in first and "'.[all]'" in first


def test_the_exit_code_table_lists_every_code() -> None:
    table = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert listed == {int(code) for code in ExitCode}


def test_the_env_rule_is_the_one_the_readme_states() -> None:
    assert "`DRIFT_CMD_SOME_FLAG`" in README
    for command, name, variable in (
        ("simulate", "peers", "DRIFT_SIMULATE_PEERS"),
        ("loadtest", "users", "DRIFT_LOADTEST_USERS"),
        ("turn-check", "secret", "DRIFT_TURN_CHECK_SECRET"),
    ):
        envvar = option(command, name).envvar
        assert isinstance(envvar, list) and envvar[0] == variable
        assert variable in README


def test_the_five_clean_runs_check_is_where_the_readme_says() -> None:
    match = re.search(r"five times in a row \(`(tests/[\w/]+\.py)`\)", README)
    assert match
    assert "def test_clean_server_passes_five_times_in_a_row" in (REPO / match[1]).read_text()


def test_the_fuzz_duration_default_in_testing_md() -> None:
    match = re.search(r"`--duration` \(default (\d+) s", DOCS["testing.md"])
    assert match
    assert float(match[1]) == option("fuzz", "duration").default


@pytest.mark.parametrize("name", sorted(DOCS))
def test_commands_in_the_docs_say_python3(name: str) -> None:
    """Outside a virtualenv a Debian machine has python3 only."""
    assert re.findall(r"(?<![\w./-])python (?:-m\b|[\w./-]+\.py\b)", DOCS[name]) == []


@pytest.mark.parametrize("name", sorted(DOCS))
def test_the_docs_name_todays_metrics(name: str) -> None:
    text = DOCS[name]
    assert "drift_rss_bytes" not in text
    assert re.findall(r"drift_cluster_matches(?!_total)", text) == []
