"""Benchmark figures: repetitions -> median, ratio to the baseline, target met or missed.

A :class:`Row` keeps every repetition's raw value for drift and for its baseline
(measured in the same run, interleaved), so the table shows the medians, the
ratio, and the raw numbers they came from. The table and sections are written
into ``docs/performance.md`` between markers / under headings this module owns;
other sections of that file (``## Simulate``, ``## Load``) are left as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from drift.report.stats import percentile

TABLE_START: Final = "<!-- drift bench: table start -->"
TABLE_END: Final = "<!-- drift bench: table end -->"
#: Ends the generated part of a section; hand-written notes below it survive a rerun.
GENERATED_END: Final = "<!-- drift bench: generated above, notes below are kept -->"


def median(values: Sequence[float]) -> float:
    """Median of the repetitions (the shared percentile, so p50 means one thing everywhere)."""
    return percentile(values, 50.0)


@dataclass
class Row:
    """One figure of the summary table: drift against its baseline, over repetitions."""

    name: str
    unit: str
    values: list[float]
    baseline_name: str
    baseline_values: list[float]
    #: Highest acceptable ratio (or lowest, when ``higher_is_better``); None = reported only.
    target: float | None = None
    higher_is_better: bool = False
    note: str = ""
    #: The measured reason, shown beside "missed" (e.g. a baseline that itself misses).
    why_missed: str = ""
    #: How many decimals the table shows for this figure.
    digits: int = 2

    @property
    def value(self) -> float:
        return median(self.values)

    @property
    def baseline(self) -> float:
        return median(self.baseline_values)

    @property
    def ratio(self) -> float:
        # NaN, not inf: a baseline of 0 (too few samples to measure) says nothing.
        return self.value / self.baseline if self.baseline else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None or math.isnan(self.ratio):
            return None
        if self.higher_is_better:
            return self.ratio >= self.target
        return self.ratio <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "—"
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}x"

    def result_text(self) -> str:
        met = self.met
        if math.isnan(self.ratio):
            return "no baseline"
        if met is None:
            return "reported"
        if met:
            return "**met**"
        assert self.target is not None
        by = (self.ratio / self.target - 1) * 100
        why = f": {self.why_missed}" if self.why_missed else ""
        return f"**missed** by {abs(by):.0f}%{why}"

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "value": self.value,
            "baseline": self.baseline,
            "ratio": None if math.isnan(self.ratio) else self.ratio,
            "met": self.met,
        }


@dataclass
class Section:
    """A ``## title`` section of docs/performance.md written by a benchmark."""

    title: str
    body: str


@dataclass
class Outcome:
    """What one benchmark module returns: its rows, its section(s), its raw data."""

    rows: list[Row] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _num(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}"


def _raw(values: Iterable[float], digits: int) -> str:
    return ", ".join(_num(v, digits) for v in values)


def table(rows: Sequence[Row]) -> str:
    """The summary table: one row per figure, medians with raw repetitions beside them."""
    lines = [
        "| figure | drift (median; runs) | baseline (median; runs) | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        d = row.digits
        lines.append(
            f"| {row.name} | {_num(row.value, d)} {row.unit} ({_raw(row.values, d)}) "
            f"| {row.baseline_name}: {_num(row.baseline, d)} {row.unit} "
            f"({_raw(row.baseline_values, d)}) | {row.ratio:.2f}x | {row.target_text()} "
            f"| {row.result_text()} |"
        )
    return "\n".join(lines)


def update_doc(
    path: Path, summary: str, sections: Sequence[Section], title: str = "Performance"
) -> None:
    """Write the summary block and replace (or append) ``sections``; keep everything else."""
    text = path.read_text() if path.exists() else f"# {title}\n"
    block = f"{TABLE_START}\n{summary.strip()}\n{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        tail = rest.split(TABLE_END, 1)[1]
        text = head + block + tail
    else:
        # Right under the title: the table is the first thing a reader sees.
        lines = text.split("\n")
        at = 1 if lines and lines[0].startswith("# ") else 0
        text = "\n".join([*lines[:at], "", block, "", *lines[at:]])
    for section in sections:
        text = _replace_section(text, section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n")


def _replace_section(text: str, section: Section) -> str:
    """Replace the generated part of ``## title``; notes written below its end marker stay."""
    heading = f"## {section.title}"
    new = f"{heading}\n\n{section.body.strip()}\n\n{GENERATED_END}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    found = pattern.search(text)
    if found is None:
        return text.rstrip() + "\n\n" + new
    old = found.group(0)
    kept = old.split(GENERATED_END, 1)[1] if GENERATED_END in old else ""
    return text[: found.start()] + new + kept.rstrip("\n") + "\n\n" + text[found.end() :]


def rows_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [row.to_json() for row in rows]


def fmt_latency(summary: Mapping[str, float]) -> str:
    """``p50/p99 ms`` of a :func:`drift.report.stats.summarize` result in seconds."""
    return f"{summary['p50'] * 1000:.2f}/{summary['p99'] * 1000:.2f} ms"
