"""An honest pair's round trip under each attack of ``drift fuzz --attack``, against no attack.

One ``drift serve`` child (default limits, the short socket deadlines of the
embedded ``drift fuzz --attack`` server). For each attack and repetition,
:func:`drift.fuzz.attacks.run_attack` measures the honest pair (from another
loopback address) first alone, then while the attack runs: the row is the
median offer->answer round trip under attack against the one alone, measured
in the same repetition, seconds apart. Target: at most 2x.

Run alone: ``python -m drift.bench.suites.abuse [--quick]``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from drift.bench.results import Outcome, Row, Section
from drift.bench.runner import Bench
from drift.fuzz.attack_command import EMBEDDED_ARGS
from drift.fuzz.attacks import ATTACKS, AttackConfig, AttackReport, run_attack
from drift.harness.serve import ServeProcess

#: The target of every row: an attacker may at most double an honest round trip.
TARGET = 2.0


def run(bench: Bench) -> Outcome:
    reps = 1 if bench.quick else bench.sizes.reps
    duration = 2.0 if bench.quick else 3.0
    bench.begin("abuse", reps * len(ATTACKS))
    server = ServeProcess(EMBEDDED_ARGS, bench.log_dir / "abuse-server.out", name="abuse")
    server.start()
    results: dict[str, list[AttackReport]] = {name: [] for name in ATTACKS}
    try:
        for rep in range(1, reps + 1):
            for name in ATTACKS:
                with bench.step(f"rep {rep}: {name} ({duration:g} s)"):
                    cfg = AttackConfig(url=server.ws_url, attack=name, duration=duration)
                    results[name].append(asyncio.run(run_attack(cfg)))
    finally:
        server.stop(kill=True)
    rows = [
        Row(
            f"honest offer->answer median under {name}",
            "ms",
            [r.attack_rtt_ms for r in reports],
            "same pair, no attack",
            [r.baseline_rtt_ms for r in reports],
            target=TARGET,
            digits=3,
        )
        for name, reports in results.items()
    ]
    raw: dict[str, Any] = {
        name: [r.to_json() for r in reports] for name, reports in results.items()
    }
    return Outcome(rows=rows, sections=[_section(results)], raw={"attacks": raw})


def _section(results: dict[str, list[AttackReport]]) -> Section:
    lines = [
        "Each attack for a few seconds against one `drift serve` (default limits), while an",
        "honest pair from another address measures; medians over the repetitions.",
        "",
        "| attack | offer->answer alone / under (ms) | join->matched alone / under (ms) "
        "| verdict | the server's answer |",
        "|---|---|---|---|---|",
    ]
    for name, reports in results.items():

        def med(values: list[float]) -> float:
            ordered = sorted(values)
            return ordered[len(ordered) // 2]

        rtt = (med([r.baseline_rtt_ms for r in reports]), med([r.attack_rtt_ms for r in reports]))
        match = (
            med([r.baseline_match_ms for r in reports]),
            med([r.attack_match_ms for r in reports]),
        )
        verdict = "PASS" if all(r.ok for r in reports) else "FAIL"
        lines.append(
            f"| {name} | {rtt[0]:.3f} / {rtt[1]:.3f} | {match[0]:.3f} / {match[1]:.3f} "
            f"| {verdict} | {reports[-1].outcome or '; '.join(reports[-1].problems)} |"
        )
    return Section("Abuse: an honest pair under attack", "\n".join(lines))


if __name__ == "__main__":
    from drift.bench.command import bench as bench_command

    sys.exit(bench_command(["--only", "abuse", *sys.argv[1:]]))
