"""``drift fuzz --attack``: run the attacks of :mod:`drift.fuzz.attacks`, print and judge them.

Without ``--url`` drift starts its own ``drift serve`` as a child process (so
the attacker never shares the server's CPU) with short socket deadlines, and
also fails the run on any ERROR line or traceback in that server's log: a
peer's misbehaviour is never a server bug.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from drift.cli import set_summary
from drift.errors import CheckFailed, TargetUnreachable
from drift.fuzz.attacks import AttackConfig, AttackReport, run_attack
from drift.harness.serve import AsyncServeProcess

#: The embedded server's deadlines: short, so idle-sockets and slowloris
#: finish in seconds (the defaults are 10 s to upgrade, 5 s between requests).
EMBEDDED_ARGS: Final = (
    "--upgrade-timeout", "1", "--keepalive-timeout", "1", "--send-timeout", "1",
    "--log-level", "warning",
)  # fmt: skip


def run_attacks(
    console: Console, base: AttackConfig, names: Sequence[str], report_path: Path | None
) -> list[AttackReport]:
    """Run ``names`` one after the other; raise :class:`CheckFailed` if one fails."""
    reports, server_log = asyncio.run(_run(console, base, names))
    problems = sum(len(r.problems) for r in reports) + len(server_log)
    _summary(console, reports, server_log, embedded=not base.url)
    body = {"attacks": [r.to_json() for r in reports], "server_log": server_log}
    set_summary(body)
    if report_path is not None:
        report_path.write_text(json.dumps(body, indent=2) + "\n")
    if problems:
        raise CheckFailed(f"attacks found {problems} problem(s)")
    return reports


async def _run(
    console: Console, base: AttackConfig, names: Sequence[str]
) -> tuple[list[AttackReport], list[str]]:
    server: AsyncServeProcess | None = None
    if not base.url:
        server = await AsyncServeProcess.start(*EMBEDDED_ARGS)
        base = replace(base, url=server.ws_url)
    reports: list[AttackReport] = []
    try:
        for name in names:
            console.print(f"drift fuzz: attack {name} on {base.url} ({base.duration:g} s)")
            try:
                reports.append(await run_attack(replace(base, attack=name)))
            except OSError as exc:
                raise TargetUnreachable(f"cannot reach {base.url}: {exc}") from exc
    finally:
        log: list[str] = []
        if server is not None:
            server.signal(signal.SIGTERM)
            await server.wait(timeout=15)
            log = [
                line.strip()[:300]
                for line in server.stderr
                if '"level": "error"' in line or "Traceback" in line or "1011" in line
            ]
    return reports, log


def _ms(value: float) -> str:
    return "-" if value == float("inf") or not value else f"{value:.2f}"


def _summary(
    console: Console, reports: list[AttackReport], server_log: list[str], *, embedded: bool
) -> None:
    table = Table(title="drift fuzz --attack (honest medians: baseline -> under attack)")
    for column in ("attack", "offer->answer ms", "join->matched ms", "/healthz", "verdict"):
        table.add_column(column)
    for r in reports:
        table.add_row(
            r.attack,
            f"{_ms(r.baseline_rtt_ms)} -> {_ms(r.attack_rtt_ms)}",
            f"{_ms(r.baseline_match_ms)} -> {_ms(r.attack_match_ms)}",
            f"{r.healthz_ok} ok, {r.healthz_failed} failed",
            "[green]PASS[/]" if r.ok else f"[red]FAIL[/] ({len(r.problems)})",
        )
    console.print(table)
    for r in reports:
        if r.outcome:
            console.print(f"  {r.attack}: {r.outcome}", markup=False, soft_wrap=True)
        for text in r.problems[:10]:
            console.print(f"  - {text}", markup=False, soft_wrap=True)
    if embedded:
        console.print(
            "server log: no ERROR and no traceback"
            if not server_log
            else f"server log: {len(server_log)} ERROR line(s) or traceback(s)"
        )
        for line in server_log[:10]:
            console.print(f"  - server log: {line}", markup=False, soft_wrap=True)
