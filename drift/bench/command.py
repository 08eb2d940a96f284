"""``drift bench``: run every benchmark of :mod:`drift.bench.suites`, write JSON and the docs table.

The suites (and the bare baseline servers they start) are part of the package,
so an installed drift runs them from any folder; only ``--docs`` needs a clone,
whose ``docs/performance.md`` it rewrites (or ``--doc-path FILE``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

import drift
from drift.bench.results import Outcome, Row, rows_json, table, update_doc
from drift.bench.runner import FULL, QUICK, TINY, Bench, Sizes, machine
from drift.bench.servers import DRIFT_FLAGS
from drift.bench.suites import run_all
from drift.cli import progress_option, set_summary
from drift.errors import CheckFailed, ConfigError
from drift.harness.signals import interruptible
from drift.report.paths import run_dir

#: What a plain ``drift bench`` runs, in order. ``--only profile`` (pyinstrument)
#: and ``--only load`` (the locust capacity sweep, minutes long) are extra.
NAMES = ("server", "redis", "simulate")
CHOICES = (*NAMES, "profile", "load", "network", "abuse")


def default_doc_path() -> Path:
    """``docs/performance.md`` of the clone this drift runs from (editable install)."""
    path = Path(drift.__file__).resolve().parents[1] / "docs" / "performance.md"
    if not path.is_file():
        raise ConfigError(
            "--docs rewrites docs/performance.md of a clone; this drift is not one: "
            "pass --doc-path FILE"
        )
    return path


@click.command()
@click.option("--quick", is_flag=True, help="Smaller counts: a quicker, noisier look.")
@click.option(
    "--only",
    type=click.Choice(CHOICES),
    multiple=True,
    help="Run just this benchmark (repeatable); default: all.",
)
@click.option(
    "--docs/--no-docs",
    "write_docs",
    default=None,
    help="Write the table into docs/performance.md. Default: only for a full run of all.",
)
@click.option(
    "--doc-path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Markdown file to update (default: docs/performance.md of the clone).",
)
@click.option("--tiny", is_flag=True, hidden=True, help="Smoke-test sizes; measures nothing.")
@progress_option()
def bench(
    quick: bool,
    only: Sequence[str],
    write_docs: bool | None,
    doc_path: Path | None,
    tiny: bool,
    progress: bool,
) -> None:
    """Measure drift against baselines run alongside it: memory and CPU per connection and
    frame, match latency, connection rate, the Redis backend and simulate overhead.

    Figures are ratios to baselines measured in the same run (medians of repetitions).
    Writes reports/<time>-bench/bench.json and the table of docs/performance.md.
    """
    with interruptible():
        _bench(quick, only, write_docs, doc_path, tiny, progress)


def _bench(
    quick: bool,
    only: Sequence[str],
    write_docs: bool | None,
    doc_path: Path | None,
    tiny: bool,
    progress: bool,
) -> None:
    sizes: Sizes = TINY if tiny else QUICK if quick else FULL
    names = [n for n in CHOICES if n in only] if only else list(NAMES)
    if write_docs is None:
        write_docs = not (quick or tiny or only)
    path = (doc_path or default_doc_path()) if write_docs else None
    out_dir = run_dir("bench")
    console = Console(stderr=True)
    started = time.perf_counter()
    begun = datetime.now(UTC)
    context = machine()
    outcomes: dict[str, Outcome] = {}
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    )
    with bar:
        harness = Bench(sizes, out_dir, console, bar, quick=quick or tiny)
        for name in names:
            outcomes[name] = run_all.load(name)(harness)
    elapsed = time.perf_counter() - started
    rows = [row for outcome in outcomes.values() for row in outcome.rows]
    argv = "drift bench" + "".join(f" {a}" for a in sys.argv[2:] if sys.argv[1:2] == ["bench"])
    report = {
        "command": argv,
        "started": begun.isoformat(),
        "elapsed_s": elapsed,
        "sizes": sizes.__dict__,
        "drift_flags": list(DRIFT_FLAGS),
        "machine": context,
        "machine_after": machine(),
        "rows": rows_json(rows),
        "benchmarks": {name: o.raw for name, o in outcomes.items()},
    }
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    set_summary({**report, "report": str(out_dir / "bench.json")})
    console.print(_rich_table(rows))
    console.print(f"[bold]bench[/] done in {elapsed:.0f} s; results in {out_dir}/bench.json")
    if path is not None:
        sections = [s for o in outcomes.values() for s in o.sections]
        update_doc(path, _summary(rows, report, out_dir), sections)
        console.print(f"table written to {path}")
    missed = [row for row in rows if row.met is False]
    if missed and not tiny:  # --tiny sizes measure nothing, so they judge nothing either
        # the README's exit-code table: 1 when the run completed and a check failed
        which = ", ".join(
            f"{row.name} ({row.ratio:.2f}x, target {row.target_text()})" for row in missed
        )
        raise CheckFailed(f"{len(missed)} target(s) missed: {which}")


def _summary(rows: Sequence[Row], report: dict[str, Any], out_dir: Path) -> str:
    m = report["machine"]
    load = ", ".join(f"{x:g}" for x in m["load_average"])
    note = (
        f"Measured by `{report['command']}` on {report['started'][:16].replace('T', ' ')} UTC "
        f"in {report['elapsed_s']:.0f} s, on a **shared, loaded {m['cpus']}-core machine** "
        f"(other work runs on it too: load average {load} at the start), Python "
        f"{m['python']}. Every figure is the median of {report['sizes']['reps']} "
        "repetitions, run interleaved with its baseline; the runs are in brackets. Ratios "
        "are drift / baseline; for the connection rate higher is better. Raw data: "
        f"`reports/{out_dir.name}/bench.json` (reports/ is not committed)."
    )
    return f"{note}\n\n{table(rows)}"


def _rich_table(rows: Sequence[Row]) -> Table:
    out = Table(title="drift bench")
    for column in ("figure", "drift", "baseline", "ratio", "target", "result"):
        out.add_column(column)
    for row in rows:
        d = row.digits
        met = row.met
        style = "green" if met else "red" if met is False else ""
        out.add_row(
            row.name,
            f"{row.value:,.{d}f} {row.unit}",
            f"{row.baseline:,.{d}f} {row.unit} ({row.baseline_name})",
            f"{row.ratio:.2f}x",
            row.target_text(),
            row.result_text().replace("*", ""),
            style=style,
        )
    return out


__all__ = ["bench"]
