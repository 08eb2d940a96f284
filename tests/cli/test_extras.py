"""Lean installs: ``pip install drift-signal`` runs ``drift serve``; the extras bring the rest.

pyproject.toml is read with tomllib and the sources with ast, so a new import
that nobody declared, or an extra that drifts from drift/cli.py, fails here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from drift import cli
from drift.harness.env import child_env
from drift.harness.serve import READY_LINE

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: what `drift serve` (with --redis and --workers), fuzz and proxy need, and no more
BASE = {"aiohttp", "msgspec", "click", "rich", "prometheus-client", "redis", "hiredis", "uvloop"}


def dist_name(requirement: str) -> str:
    """``redis[hiredis]>=5; ...`` -> ``redis`` (normalised as PEP 503 does)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match[0]).lower()


def extra(name: str) -> set[str]:
    """The distributions an extra installs, its references to other extras followed."""
    out: set[str] = set()
    for requirement in PROJECT["optional-dependencies"][name]:
        if dist_name(requirement) == "drift-signal":
            inner = re.search(r"\[(.*)\]", requirement)
            assert inner, requirement
            for other in inner[1].split(","):
                out |= extra(other.strip())
        else:
            out.add(dist_name(requirement))
    return out


def base() -> set[str]:
    return {dist_name(r) for r in PROJECT["dependencies"]}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files importing it, for drift/ and loadtest/ (absolute imports)."""
    found: dict[str, set[str]] = {}
    for folder in ("drift", "loadtest"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "drift":
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distributions_of(module: str) -> set[str]:
    dists = packages_distributions().get(module)
    assert dists, f"{module} is imported but not installed"
    return {dist_name(d) for d in dists}


def test_every_import_is_declared() -> None:
    declared = (
        base() | extra("all") | {dist_name(r) for r in PROJECT["optional-dependencies"]["dev"]}
    )
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if not distributions_of(module) & declared
    }
    assert undeclared == {}


def test_the_runtime_never_imports_a_dev_only_package() -> None:
    runtime = base() | extra("all")
    dev_only = {
        module for module in third_party_imports() if not distributions_of(module) & runtime
    }
    assert dev_only == set()


def test_a_plain_install_is_what_serve_needs() -> None:
    assert base() == BASE


#: Run first in a child: every module of every extra fails to import, as in a
#: plain ``pip install drift-signal`` (libraries that use one optionally go on without it).
LEAN = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Lean(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Lean())
sys.argv = ["drift", *sys.argv[2:]]
from drift.cli import main
main()
"""


def lean(*args: str, timeout: float = 60) -> subprocess.Popen[str]:
    blocked = ",".join(sorted({m for ms in cli.EXTRA_MODULES.values() for m in ms}))
    return subprocess.Popen(
        [sys.executable, "-c", LEAN, blocked, *args], env=child_env(), text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_serve_runs_without_any_extra() -> None:
    """``drift serve`` with no extra importable: it listens and answers /healthz."""
    import urllib.request

    proc = lean("serve", "--port", "0", "--log-format", "console")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = READY_LINE.search(line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(match["url"] + "/healthz", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "extra_name"),
    [(["simulate"], "simulate"), (["loadtest", "smoke"], "loadtest"),
     (["turn-check", "--url", "turn:127.0.0.1:9"], "simulate"), (["bench"], "bench")],
)  # fmt: skip
def test_without_its_extra_a_command_says_what_to_install(argv: list[str], extra_name: str) -> None:
    proc = lean(*argv)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert f"pip install 'drift-signal[{extra_name}]'" in err
    assert "Traceback" not in err
    proc = lean("--help")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert f"(needs [{extra_name}])" in " ".join(out.split())


@pytest.mark.parametrize("name", sorted(cli.EXTRA_MODULES))
def test_the_cli_knows_what_each_extra_installs(name: str) -> None:
    from_cli = set().union(*(distributions_of(m) for m in cli.EXTRA_MODULES[name]))
    assert from_cli <= extra(name)
    # every distribution the extra adds is one whose absence the CLI would notice
    assert extra(name) - base() - from_cli == set()


def test_every_extra_is_in_all() -> None:
    names = set(PROJECT["optional-dependencies"]) - {"all", "dev"}
    assert extra("all") == set().union(*(extra(n) for n in names))
    assert set(cli.EXTRA_MODULES) == names


def test_scripts_test_installs_every_extra_and_stops_when_pip_fails(tmp_path: Path) -> None:
    """scripts/test with a python3 whose pip fails: it must stop before lint and tests."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = {
        "python3": f'echo "python3 $*" >> {calls}\n[ "$1 $2" = "-m pip" ] && exit 1\nexit 0',
        "ruff": f'echo "ruff $*" >> {calls}',
        "mypy": f'echo "mypy $*" >> {calls}',
    }
    for program in ("chromium", "redis-server", "turnserver", "nft", "tc"):
        fake[program] = "exit 0"
    for name, body in fake.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    env = child_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "test")], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    recorded = calls.read_text().splitlines()
    assert recorded[0].startswith("python3 -m pip install") and ".[all,dev]" in recorded[0]
    assert [line for line in recorded if line.startswith(("ruff", "mypy"))] == []
