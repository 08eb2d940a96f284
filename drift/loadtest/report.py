"""From one run's raw files to ``summary.json``, ``report.html`` and ``junit.xml``.

Percentiles come from the raw samples the locustfile wrote (exact), through
:mod:`drift.report.stats`, so a "p99" means the same as in every other drift
report; locust's own (rounded) figures stay in its CSV and HTML beside them.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from drift.loadtest.sampler import ServerSample
from drift.loadtest.scenario import Scenario
from drift.report import charts
from drift.report.html import Section, table_html, write_page
from drift.report.junit import Case, write_junit
from drift.report.stats import percentile, summarize

MIB: Final = 1024 * 1024
#: Request types whose latency is the measure (locust request types of the locustfile).
MEASURED: Final = ("connect", "queue", "relay")


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    kind: str
    name: str
    ms: float
    error: str


def read_samples(path: Path) -> list[Sample]:
    if not path.is_file():
        return []
    out: list[Sample] = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                out.append(
                    Sample(
                        float(row["t"]), row["kind"], row["name"], float(row["ms"]), row["error"]
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue  # a line cut short by a killed process
    return out


def read_locust_stats(path: Path) -> dict[str, dict[str, str]]:
    """locust's ``*_stats.csv``: rows by ``"Type Name"`` (``"Aggregated"`` for the total)."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {f"{r['Type']} {r['Name']}".strip(): r for r in csv.DictReader(f)}


def read_user_history(path: Path) -> list[tuple[float, float]]:
    """(unix time, user count) from locust's ``*_stats_history.csv``."""
    if not path.is_file():
        return []
    out: list[tuple[float, float]] = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == "Aggregated":
                try:
                    out.append((float(row["Timestamp"]), float(row["User Count"])))
                except (KeyError, ValueError):
                    continue
    return out


@dataclass(frozen=True)
class Check:
    name: str
    limit: float | bool
    actual: float | bool | None
    passed: bool
    detail: str


@dataclass
class RunFacts:
    """What the command knows about the run besides the files locust wrote."""

    scenario: Scenario
    scenario_path: str
    url: str
    started_server: bool
    server_command: list[str]
    workers: int
    started_at: float
    load_started_at: float
    load_ended_at: float
    finished_at: float
    locust_exit_code: int | None
    stats_after: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _rounded(summary: Mapping[str, float]) -> dict[str, float]:
    return {k: (v if k == "count" else round(v, 3)) for k, v in summary.items()}


class Analysis:
    """Every figure of a run, computed once; the summary, HTML and JUnit read from it."""

    def __init__(
        self,
        facts: RunFacts,
        samples: Sequence[Sample],
        server: Sequence[ServerSample],
        users: Sequence[tuple[float, float]],
        locust_rows: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.facts = facts
        self.samples = samples
        self.server = server
        self.users = users
        self.locust_rows = locust_rows
        scenario = facts.scenario
        expected = set(scenario.expected_errors)
        honest = [s for s in samples if s.kind != "abuse"]
        self.ok = {k: [s.ms for s in honest if s.kind == k and not s.error] for k in MEASURED}
        self.failures = Counter(s.error for s in honest if s.error)
        self.unexpected = Counter({c: n for c, n in self.failures.items() if c not in expected})
        self.honest_total = len(honest)
        self.abuse = Counter(s.name for s in samples if s.kind == "abuse")
        self.warmup_t = facts.load_started_at + scenario.warmup_at_s
        # The steady window ends at the last honest sample: locust starts a second or
        # two after its process does, and the process outlives the load by as much.
        last_t = max((s.t for s in honest), default=facts.load_ended_at)
        steady_q = [s for s in honest if s.kind == "queue" and self.warmup_t <= s.t <= last_t]
        window = max(last_t - self.warmup_t, 1e-9)
        self.joins_per_s = len(steady_q) / window if steady_q else 0.0
        self.queue_steady = [s.ms for s in steady_q if not s.error]

    # ------------------------------------------------------------ figures

    def requests(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for kind in MEASURED:
            row = _rounded(summarize(self.ok[kind]))
            row["failures"] = sum(1 for s in self.samples if s.kind == kind and s.error)
            out[kind] = row
        return out

    def failure_ratio(self) -> float:
        return sum(self.unexpected.values()) / self.honest_total if self.honest_total else 0.0

    def memory(self) -> dict[str, Any]:
        rss = [(s.t, s.rss_bytes) for s in self.server if s.rss_bytes is not None]
        if not rss:
            return {"available": False}
        warm = next((r for t, r in rss if t >= self.warmup_t), rss[-1][1])
        end = rss[-1][1]
        return {
            "available": True,
            "rss_start_mb": round(rss[0][1] / MIB, 2),
            "rss_warmup_mb": round(warm / MIB, 2),
            "rss_peak_mb": round(max(r for _, r in rss) / MIB, 2),
            "rss_end_mb": round(end / MIB, 2),
            "rss_growth_mb": round((end - warm) / MIB, 2),
            "warmup_at_s": round(self.facts.scenario.warmup_at_s, 2),
        }

    def peaks(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in ("connections", "waiting", "rooms"):
            values = [v for s in self.server if (v := s.stat(key)) is not None]
            out[f"{key}_max"] = max(values) if values else None
        cpu = [s.cpu_percent for s in self.server if s.cpu_percent is not None]
        client = [s.client_cpu_percent for s in self.server if s.client_cpu_percent is not None]
        out["server_cpu_percent_max"] = _round(max(cpu), 1) if cpu else None
        out["server_cpu_percent_mean"] = _round(sum(cpu) / len(cpu), 1) if cpu else None
        out["locust_cpu_percent_max"] = _round(max(client), 1) if client else None
        out["users_max"] = max((u for _, u in self.users), default=None)
        return out

    def checks(self) -> list[Check]:
        t = self.facts.scenario.thresholds
        out: list[Check] = []
        for key, kind, stat in (
            ("connect_p99_ms", "connect", 99.0),
            ("queue_p50_ms", "queue", 50.0),
            ("queue_p99_ms", "queue", 99.0),
            ("relay_p99_ms", "relay", 99.0),
        ):
            limit = getattr(t, key)
            if limit is None:
                continue
            values = self.ok[kind]
            if not values:
                out.append(Check(key, limit, None, False, f"no successful {kind} samples"))
                continue
            actual = percentile(values, stat)
            out.append(
                Check(key, limit, round(actual, 3), actual <= limit, f"{kind} p{stat:g} (ms)")
            )
        if t.failure_ratio is not None:
            ratio = self.failure_ratio()
            codes = ", ".join(f"{c}: {n}" for c, n in self.unexpected.most_common(5)) or "none"
            out.append(
                Check(
                    "failure_ratio",
                    t.failure_ratio,
                    round(ratio, 6),
                    ratio <= t.failure_ratio,
                    f"{sum(self.unexpected.values())} of {self.honest_total} ({codes})",
                )
            )
        if t.rss_growth_mb is not None:
            mem = self.memory()
            if not mem["available"]:
                out.append(Check("rss_growth_mb", t.rss_growth_mb, None, False, "no RSS samples"))
            else:
                growth = mem["rss_growth_mb"]
                out.append(
                    Check(
                        "rss_growth_mb",
                        t.rss_growth_mb,
                        growth,
                        growth <= t.rss_growth_mb,
                        f"RSS {mem['rss_warmup_mb']} MiB at warm-up -> "
                        f"{mem['rss_end_mb']} MiB after the users left",
                    )
                )
        if t.stats_zero_after:
            after = self.facts.stats_after
            last = after.get("last")
            out.append(
                Check(
                    "stats_zero_after",
                    True,
                    bool(after.get("zero")),
                    bool(after.get("zero")),
                    f"/stats {json.dumps(last) if last else 'unavailable'} "
                    f"after {after.get('waited_s', 0):.1f} s",
                )
            )
        if t.min_matches is not None:
            n = len(self.ok["queue"])
            out.append(Check("min_matches", t.min_matches, n, n >= t.min_matches, "matched"))
        return out

    def summary(self, files: Mapping[str, str]) -> dict[str, Any]:
        f = self.facts
        checks = self.checks()
        return {
            "kind": "loadtest",
            "scenario": {"name": f.scenario.name, "path": f.scenario_path, **f.scenario.to_dict()},
            "target": {
                "url": f.url,
                "started_server": f.started_server,
                "server_command": f.server_command,
                "workers": f.workers,
                "notes": f.notes,
            },
            "started_at": _iso(f.started_at),
            "finished_at": _iso(f.finished_at),
            "load_s": round(f.load_ended_at - f.load_started_at, 3),
            "requests": self.requests(),
            "queue_steady": _rounded(summarize(self.queue_steady)),
            "joins_per_s": round(self.joins_per_s, 2),
            "failures_by_code": dict(self.failures.most_common()),
            "failure_ratio": round(self.failure_ratio(), 6),
            "abuse_events": dict(self.abuse.most_common()),
            "memory": self.memory(),
            "peaks": self.peaks(),
            "stats_after": f.stats_after,
            "locust_exit_code": f.locust_exit_code,
            "locust": {
                k: {
                    "requests": int(r.get("Request Count", 0)),
                    "failures": int(r.get("Failure Count", 0)),
                }
                for k, r in self.locust_rows.items()
            },
            "thresholds": [asdict(c) for c in checks],
            "passed": all(c.passed for c in checks),
            "files": dict(files),
        }

    # ------------------------------------------------------------ charts

    def _window(self) -> float:
        span = self.facts.load_ended_at - self.facts.load_started_at
        return max(1.0, span / 40)

    def percentile_series(self, kind: str) -> dict[str, list[tuple[float, float]]]:
        """p50/p95/p99 of ``kind`` per time window, x = seconds since the load started."""
        t0, w = self.facts.load_started_at, self._window()
        buckets: dict[int, list[float]] = {}
        for s in self.samples:
            if s.kind == kind and not s.error:
                buckets.setdefault(int((s.t - t0) // w), []).append(s.ms)
        series: dict[str, list[tuple[float, float]]] = {"p50": [], "p95": [], "p99": []}
        for i in sorted(buckets):
            x = round((i + 0.5) * w, 2)
            for name, p in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
                series[name].append((x, percentile(buckets[i], p)))
        return series

    def throughput_series(self) -> dict[str, list[tuple[float, float]]]:
        t0, w = self.facts.load_started_at, self._window()
        matched: Counter[int] = Counter()
        failed: Counter[int] = Counter()
        for s in self.samples:
            if s.kind == "abuse":
                continue
            i = int((s.t - t0) // w)
            if s.error:
                failed[i] += 1
            elif s.kind == "queue":
                matched[i] += 1
        keys = sorted(set(matched) | set(failed))
        x = [(i, round((i + 0.5) * w, 2)) for i in keys]
        return {
            "matches/s": [(xv, matched[i] / w) for i, xv in x],
            "failures/s": [(xv, failed[i] / w) for i, xv in x],
        }

    def server_series(self) -> dict[str, list[tuple[float, float]]]:
        t0 = self.facts.load_started_at
        series: dict[str, list[tuple[float, float]]] = {
            "locust users": [(round(t - t0, 2), u) for t, u in self.users]
        }
        for key in ("connections", "waiting", "rooms"):
            series[f"server {key}"] = [
                (round(s.t - t0, 2), v) for s in self.server if (v := s.stat(key)) is not None
            ]
        return series

    def rss_series(self) -> dict[str, list[tuple[float, float]]]:
        t0 = self.facts.load_started_at
        return {
            "server RSS": [
                (round(s.t - t0, 2), s.rss_bytes / MIB) for s in self.server if s.rss_bytes
            ]
        }

    def cpu_series(self) -> dict[str, list[tuple[float, float]]]:
        t0 = self.facts.load_started_at
        return {
            "server": [
                (round(s.t - t0, 2), s.cpu_percent)
                for s in self.server
                if s.cpu_percent is not None
            ],
            "locust (all processes)": [
                (round(s.t - t0, 2), s.client_cpu_percent)
                for s in self.server
                if s.client_cpu_percent is not None
            ],
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _rows(mapping: Mapping[str, object]) -> list[list[object]]:
    return [[k, v] for k, v in mapping.items()]


def render(analysis: Analysis, summary: Mapping[str, Any], path: Path) -> Path:
    """The self-contained ``report.html`` (inline SVG, no scripts, no external files)."""
    f = analysis.facts
    s = f.scenario
    checks = analysis.checks()
    sections = [
        Section(
            "Thresholds",
            table_html(
                ["threshold", "limit", "actual", "result", "detail"],
                [
                    [c.name, c.limit, c.actual, "pass" if c.passed else "FAIL", c.detail]
                    for c in checks
                ],
            )
            if checks
            else "<p>This scenario has no thresholds.</p>",
        ),
        Section(
            "Latency (honest users, successful requests, ms)",
            table_html(
                ["type", "count", "failures", "p50", "p95", "p99", "max"],
                [
                    [k, r["count"], r["failures"], r["p50"], r["p95"], r["p99"], r["max"]]
                    for k, r in summary["requests"].items()
                ],
            )
            + charts.line_chart(
                "Queue latency (join/next -> matched) over time",
                analysis.percentile_series("queue"),
                x_label="seconds since the load started",
                y_label="ms",
            )
            + charts.line_chart(
                "Relay latency (offer sent -> answer received) over time",
                analysis.percentile_series("relay"),
                x_label="seconds since the load started",
                y_label="ms",
            )
            + charts.cdf_chart(
                "Latency distribution",
                {k: analysis.ok[k] for k in MEASURED},
                x_label="ms",
            ),
        ),
        Section(
            "Users and server state over time",
            charts.line_chart(
                "Users (locust) and /stats of the server",
                analysis.server_series(),
                x_label="seconds since the load started",
                y_label="count",
            )
            + charts.line_chart(
                "Throughput",
                analysis.throughput_series(),
                x_label="seconds since the load started",
                y_label="per second",
            ),
        ),
        Section(
            "Server memory and CPU",
            table_html(["figure", "value"], _rows(summary["memory"]))
            + charts.line_chart(
                "Server RSS over time",
                analysis.rss_series(),
                x_label="seconds since the load started",
                y_label="MiB",
            )
            + charts.line_chart(
                "CPU over time",
                analysis.cpu_series(),
                x_label="seconds since the load started",
                y_label="% of one core",
            ),
        ),
        Section(
            "Failures by code (honest users)",
            (
                table_html(
                    ["code", "count", "expected"],
                    [[c, n, c in s.expected_errors] for c, n in analysis.failures.most_common()],
                )
                + charts.bar_chart(
                    "Failures by code", dict(analysis.failures.most_common(12)), y_label="count"
                )
            )
            if analysis.failures
            else "<p>No failures.</p>",
        ),
    ]
    if analysis.abuse:
        sections.append(
            Section(
                "Abusive users (expected outcomes)",
                table_html(["event", "count"], _rows(dict(analysis.abuse.most_common()))),
            )
        )
    sections.append(
        Section(
            "Setup",
            table_html(
                ["setting", "value"],
                [
                    ["scenario", f"{s.name} ({f.scenario_path})"],
                    ["description", s.description],
                    ["target", f.url],
                    [
                        "server",
                        " ".join(f.server_command) if f.server_command else "not started by drift",
                    ],
                    [
                        "locust",
                        f"{f.workers} worker(s) + master" if f.workers else "one local process",
                    ],
                    *([["note", n] for n in f.notes]),
                    *(
                        [k, v]
                        for k, v in s.to_dict().items()
                        if k not in ("description", "name", "thresholds")
                    ),
                ],
            )
            + "<p>locust's own report, CSV files, the raw samples and the logs are in "
            "the same folder as this file.</p>",
        )
    )
    passed = summary["passed"]
    headline: dict[str, object] = {
        "scenario": s.name,
        "load": f"{summary['load_s']:g} s",
        "matches": len(analysis.ok["queue"]),
        "joins/s (steady)": summary["joins_per_s"],
        "queue p50 / p99 (ms)": _pair(summary["requests"]["queue"]),
        "relay p50 / p99 (ms)": _pair(summary["requests"]["relay"]),
        "failure ratio": summary["failure_ratio"],
        "peak connections": summary["peaks"].get("connections_max"),
    }
    if summary["memory"].get("available"):
        headline["RSS warm-up -> end (MiB)"] = (
            f"{summary['memory']['rss_warmup_mb']} -> {summary['memory']['rss_end_mb']}"
        )
    write_page(
        path,
        f"drift loadtest: {s.name}",
        sections=sections,
        summary=headline,
        verdict="pass" if passed else "fail",
        subtitle=f"{summary['started_at']} against {f.url}",
    )
    return path


def _pair(row: Mapping[str, float]) -> str:
    return f"{row['p50']:.1f} / {row['p99']:.1f}" if row["count"] else "no samples"


SERVER_FIELDS: Final = ("t", "rss_bytes", "cpu_percent", "locust_cpu_percent", "stats")


def write_server_samples(path: Path, samples: Sequence[ServerSample]) -> None:
    """The sampler's series (RSS, CPU, /stats over time) for anyone who wants to look closer."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(SERVER_FIELDS)
        for s in samples:
            stats = json.dumps(s.stats, separators=(",", ":")) if s.stats is not None else ""
            writer.writerow([s.t, s.rss_bytes, s.cpu_percent, s.client_cpu_percent, stats])


def write_outputs(analysis: Analysis, out_dir: Path, files: Mapping[str, str]) -> dict[str, Any]:
    """summary.json, report.html, junit.xml and server_samples.csv; returns the summary."""
    write_server_samples(out_dir / "server_samples.csv", analysis.server)
    all_files = {
        **files,
        "server_samples": "server_samples.csv",
        "summary": "summary.json",
        "report": "report.html",
        "junit": "junit.xml",
    }
    summary = analysis.summary(all_files)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    render(analysis, summary, out_dir / "report.html")
    write_junit(
        out_dir / "junit.xml",
        f"drift loadtest {analysis.facts.scenario.name}",
        _cases(analysis.checks()),
        properties={"url": analysis.facts.url, "scenario": analysis.facts.scenario_path},
        wall_s=analysis.facts.finished_at - analysis.facts.started_at,
    )
    return summary


def _cases(checks: Iterable[Check]) -> list[Case]:
    return [
        Case(
            name=c.name,
            classname="drift.loadtest.thresholds",
            failure=None if c.passed else f"{c.name}: {c.actual} vs limit {c.limit} ({c.detail})",
            system_out=c.detail,
        )
        for c in checks
    ]
