"""``drift bench`` keeps working: a tiny run of the harness, and the docs table update.

Benchmarks, not timed tests: nothing here asserts a speed, only that every
figure was measured and written where it belongs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from drift.bench.command import bench
from drift.bench.results import GENERATED_END, Row, Section, table, update_doc
from tests.support.programs import require_program


def test_update_doc_replaces_only_its_own_parts(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Simulate\n\nsim\n\n## Server\n\nold\n\n## Load\n\nload\n")
    update_doc(doc, "TABLE 1", [Section("Server", "server 1"), Section("Redis backend", "r 1")])
    # A note written under the generated part survives the next run.
    doc.write_text(doc.read_text().replace(GENERATED_END, GENERATED_END + "\n\nmy note", 1))
    update_doc(doc, "TABLE 2", [Section("Server", "server 2"), Section("Redis backend", "r 2")])
    text = doc.read_text()
    assert text.startswith("# Performance\n")
    assert "TABLE 2" in text and "TABLE 1" not in text
    assert "server 2" in text and "server 1" not in text and "old" not in text
    assert "my note" in text
    assert text.count("## Server") == text.count("## Redis backend") == 1
    assert "## Simulate\n\nsim" in text and "## Load\n\nload" in text


def test_row_ratio_and_verdict() -> None:
    row = Row("memory", "KB", [12.0, 18.0, 13.0], "bare", [10.0, 11.0, 9.0], target=1.2)
    assert row.value == 13.0 and row.baseline == 10.0
    assert row.met is False and "missed" in row.result_text()
    faster = Row("rate", "/s", [5.0], "bare", [4.0], target=1.0, higher_is_better=True)
    assert faster.met is True
    nothing = Row("cpu", "ms", [0.0], "bare", [0.0], target=1.2)
    assert nothing.met is None and nothing.result_text() == "no baseline"
    assert "| memory | 13.00 KB (12.00, 18.00, 13.00)" in table([row])


@pytest.mark.slow
def test_a_missed_row_shows_its_measured_reason_and_a_met_one_none() -> None:
    why = "the baseline itself is 2x the target"
    missed = Row("x", "ms", [3.0], "b", [1.0], target=1.25, why_missed=why)
    met = Row("y", "ms", [1.0], "b", [1.0], target=1.25, why_missed=why)
    assert missed.result_text().endswith(f"missed** by 140%: {why}")
    assert met.result_text() == "**met**"
    assert why in table([missed]) and why not in table([met])


def test_bench_tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_program("redis-server", "redis-server")
    monkeypatch.setenv("DRIFT_REPORTS_DIR", str(tmp_path / "reports"))
    doc = tmp_path / "performance.md"
    result = CliRunner().invoke(
        bench,
        ["--tiny", "--only", "server", "--only", "redis", "--docs", "--doc-path", str(doc)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (report,) = (tmp_path / "reports").glob("*-bench/bench.json")
    data = json.loads(report.read_text())
    names = [row["name"] for row in data["rows"]]
    assert any(name.startswith("memory per connection") for name in names)
    assert any(name.startswith("Redis, 2 nodes") for name in names)
    for row in data["rows"]:
        assert len(row["values"]) == len(row["baseline_values"]) == data["sizes"]["reps"]
    server = data["benchmarks"]["server"]["repetitions"][0]
    assert server["drift_hold"]["connections"] == data["sizes"]["hold_connections"]
    assert server["drift"]["latency"]["latency_s"]["count"] > 0
    text = doc.read_text()
    assert "## Server" in text and "## Redis backend" in text and "| figure |" in text


def test_a_missed_target_exits_1_after_writing_the_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's exit-code table: 1 when the run completed and a check failed."""
    from drift.bench.results import Outcome
    from drift.bench.suites import run_all
    from drift.cli import main

    def fake(rows: list[Row]) -> object:
        return lambda harness: Outcome(rows=rows)

    monkeypatch.setenv("DRIFT_REPORTS_DIR", str(tmp_path / "reports"))
    missed = Row("memory per connection", "KB", [13.0], "bare", [10.0], target=1.2)
    met = Row("match latency", "ms", [10.0], "bare", [10.0], target=1.2)
    monkeypatch.setattr(run_all, "load", lambda name: fake([missed]))
    result = CliRunner().invoke(main, ["bench", "--only", "server", "--no-docs"])
    assert result.exit_code == 1, result.output
    assert "1 target(s) missed: memory per connection (1.30x" in result.output
    (report,) = (tmp_path / "reports").glob("*-bench/bench.json")
    assert json.loads(report.read_text())["rows"][0]["name"] == "memory per connection"

    monkeypatch.setattr(run_all, "load", lambda name: fake([met]))
    result = CliRunner().invoke(main, ["bench", "--only", "server", "--no-docs"])
    assert result.exit_code == 0, result.output
