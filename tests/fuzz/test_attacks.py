"""``drift fuzz --attack`` finds each defect it is for, and passes a protected server.

Each attack runs against a ``drift serve`` started with the one protection it
targets switched off (the hidden ``--unsafe``), where it must FAIL with its own
finding, and against a normal one, where it must PASS. The servers are child
processes, so the attacker never shares the server's event loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from drift.fuzz.attack_command import EMBEDDED_ARGS
from drift.fuzz.attacks import ATTACKS, AttackConfig, run_attack
from drift.harness.serve import AsyncServeProcess

#: The protection each attack is for.
DEFECT = {
    "ping-flood": "free-control-frames",
    "fragment-flood": "free-control-frames",
    "flood-after-close": "read-after-close",
    "stalled-reader": "await-writes",
    "idle-sockets": "unbounded-upgrades",
    "slowloris": "unbounded-upgrades",
}


def config(url: str, attack: str) -> AttackConfig:
    # Small and short; the latency bound is loose (a shared machine): each
    # attack's own finding is what tells the servers apart.
    return AttackConfig(
        url=url, attack=attack, duration=2.0, baseline=0.5, sockets=30, slack_ms=250.0
    )


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, AsyncServeProcess]]:
    started: dict[str, AsyncServeProcess] = {}
    yield started
    for proc in started.values():
        await proc.kill()


async def serve(started: dict[str, AsyncServeProcess], unsafe: str | None) -> str:
    key = unsafe or "safe"
    if key not in started:
        extra = ("--unsafe", unsafe) if unsafe else ()
        started[key] = await AsyncServeProcess.start(*EMBEDDED_ARGS, *extra)
    return started[key].ws_url


@pytest.mark.parametrize("attack", ATTACKS)
async def test_each_attack_fails_without_its_protection_and_passes_with_it(
    servers: dict[str, AsyncServeProcess], attack: str
) -> None:
    unsafe = await run_attack(config(await serve(servers, DEFECT[attack]), attack))
    assert not unsafe.ok
    assert any(p.startswith(f"{attack}:") for p in unsafe.problems), unsafe.problems
    safe = await run_attack(config(await serve(servers, None), attack))
    assert safe.ok, safe.problems
    assert safe.outcome


async def test_the_command_exits_1_when_an_attack_finds_its_defect(
    servers: dict[str, AsyncServeProcess],
) -> None:
    url = await serve(servers, "unbounded-upgrades")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drift", "fuzz", "--url", url,
        "--attack", "idle-sockets", "--attack-duration", "1.5", "--attack-sockets", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, out.decode()
    assert b"FAIL" in out and b"still open" in out
