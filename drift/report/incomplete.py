"""The report of a run that started but did not complete: interrupted, or its target unreachable.

Such a run still leaves a complete folder (summary.json, junit.xml, report.html),
so CI has a JUnit file to publish and a reader sees why nothing was measured.
The JUnit file holds one *error* case (the check could not run), never a pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any, Literal

from drift.report.html import Section, table_html, write_page
from drift.report.junit import Case, write_junit

__all__ = ["Incomplete", "write_incomplete"]

Incomplete = Literal["interrupted", "unreachable"]


def write_incomplete(
    folder: Path,
    *,
    kind: str,
    verdict: Incomplete,
    exit_code: int,
    reason: str,
    wall_s: float,
    facts: Mapping[str, Any] | None = None,
    progress: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the three files into ``folder``; return the summary written to summary.json.

    ``facts`` are the run's settings and target; ``progress`` what was counted
    before the run stopped (a partial figure, marked as such).
    """
    summary: dict[str, Any] = {
        "kind": kind,
        "verdict": verdict,
        "interrupted": verdict == "interrupted",
        "exit_code": exit_code,
        "reason": reason,
        "wall_s": round(wall_s, 3),
        **dict(facts or {}),
        "progress": dict(progress or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    write_junit(
        folder / "junit.xml",
        f"drift {kind}",
        [
            Case(
                name=f"drift {kind} run",
                classname=f"drift.{kind}.run",
                error=reason,
                error_type=verdict,
                time_s=wall_s,
            )
        ],
        properties={"verdict": verdict, "exit_code": exit_code},
        wall_s=wall_s,
    )
    sections = [Section("Why the run did not complete", f"<p>{escape(reason)}</p>")]
    if progress:
        sections.append(
            Section(
                "Counted before it stopped (partial)",
                table_html(["figure", "value"], [[k, v] for k, v in progress.items()]),
            )
        )
    if facts:
        sections.append(
            Section(
                "Settings",
                table_html(["setting", "value"], [[k, _flat(v)] for k, v in facts.items()]),
            )
        )
    write_page(
        folder / "report.html",
        f"drift {kind}",
        sections=sections,
        summary={"verdict": verdict, "exit code": exit_code, "wall time (s)": round(wall_s, 3)},
        verdict=verdict,
        subtitle=reason,
    )
    return summary


def _flat(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list | tuple) else str(value)
