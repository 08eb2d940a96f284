"""The shared reporting toolkit: statistics, SVG charts, HTML pages, JUnit and run folders."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from drift.report import (
    Case,
    Section,
    bar_chart,
    cdf_chart,
    histogram,
    line_chart,
    percentile,
    render_page,
    reports_root,
    run_dir,
    stacked_area_chart,
    summarize,
    table_html,
    write_junit,
    write_page,
)

SVG = "{http://www.w3.org/2000/svg}"

# --- stats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 99, 3.97),  # rank 0.99 * 3 = 2.97 -> 3 + 0.97 * (4 - 3)
        ([1, 2, 3, 4], 95, 3.85),
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([4, 1, 3, 2], 25, 1.75),  # unsorted input
        ([7], 99, 7.0),
        ([10, 20], 90, 19.0),
    ],
)
def test_percentile_matches_hand_computed_values(
    values: list[float], p: float, expected: float
) -> None:
    assert percentile(values, p) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "p"), [([], 50), ([1.0], -1), ([1.0], 100.5), ([1.0, math.nan], 50)]
)
def test_percentile_rejects_bad_input(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract
        percentile(values, p)


def test_summarize() -> None:
    s = summarize([3, 1, 2, 4])
    assert s == {
        "count": 4,
        "min": 1.0,
        "mean": 2.5,
        "p50": 2.5,
        "p95": pytest.approx(3.85),
        "p99": pytest.approx(3.97),
        "max": 4.0,
    }
    empty = summarize([])
    assert set(empty) == {"count", "min", "mean", "p50", "p95", "p99", "max"}
    assert all(v == 0 for v in empty.values())


# --- charts ----------------------------------------------------------------------------

TWO_SERIES = {"alpha <&>": [(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)], "beta": [(0.0, 2.0), (2.0, 5.0)]}

CHARTS: dict[str, Callable[[str], str]] = {
    "line": lambda t: line_chart(t, TWO_SERIES, x_label="time (s)", y_label="peers"),
    "stacked": lambda t: stacked_area_chart(t, TWO_SERIES, x_label="time (s)", y_label="peers"),
    "histogram": lambda t: histogram(t, [1, 2, 2, 3, 3, 3, 10], x_label="latency (ms)", bins=5),
    "cdf": lambda t: cdf_chart(
        t, {"alpha <&>": [1, 2, 3], "beta": [2.5, 4, 8, 9]}, x_label="latency (ms)"
    ),
    "bar": lambda t: bar_chart(t, {"alpha <&>": 3.5, "beta": -1.0}, y_label="MB"),
}

EMPTY_CHARTS: dict[str, Callable[[], str]] = {
    "line-no-series": lambda: line_chart("t", {}, x_label="x", y_label="y"),
    "line-empty-series": lambda: line_chart("t", {"a": []}, x_label="x", y_label="y"),
    "line-only-nan": lambda: line_chart("t", {"a": [(math.nan, 1.0)]}, x_label="x", y_label="y"),
    "stacked": lambda: stacked_area_chart("t", {"a": [], "b": []}, x_label="x", y_label="y"),
    "histogram": lambda: histogram("t", [], x_label="x"),
    "cdf": lambda: cdf_chart("t", {"a": []}, x_label="x"),
    "bar": lambda: bar_chart("t", {}, y_label="y"),
}


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def _texts(root: ET.Element) -> str:
    return " ".join(t for el in root.iter() for t in [el.text or ""])


@pytest.mark.parametrize("kind", CHARTS)
def test_chart_is_xml_with_accessible_title_and_series_names(kind: str) -> None:
    title = 'Queue "latency" <p99> & more'
    root = _parse(CHARTS[kind](title))
    assert root.get("role") == "img"
    assert root.get("aria-label") == title
    first = root[0]
    assert first.tag == f"{SVG}title"
    assert first.text == title
    if kind != "histogram":
        assert "alpha <&>" in _texts(root)
        assert "beta" in _texts(root)
    # at least one drawn mark and some tick labels
    assert any(
        el.tag in {f"{SVG}polyline", f"{SVG}polygon", f"{SVG}path", f"{SVG}rect"}
        for el in root.iter()
    )
    assert "no data" not in _texts(root)


@pytest.mark.parametrize("kind", EMPTY_CHARTS)
def test_empty_chart_says_no_data(kind: str) -> None:
    root = _parse(EMPTY_CHARTS[kind]())
    assert "no data" in _texts(root)


def test_chart_has_no_script_or_style_attributes() -> None:
    for make in CHARTS.values():
        svg = make("t")
        assert "<script" not in svg
        assert "style=" not in svg  # blocked by a strict CSP
        assert "href" not in svg


def test_single_points_and_constant_values_render() -> None:
    for svg in [
        line_chart("t", {"a": [(5.0, 5.0)]}, x_label="x", y_label="y"),
        stacked_area_chart("t", {"a": [(1.0, 2.0)], "b": [(1.0, 3.0)]}, x_label="x", y_label="y"),
        histogram("t", [4.0, 4.0, 4.0], x_label="x"),
        cdf_chart("t", {"a": [0.0]}, x_label="x"),
        bar_chart("t", {"zero": 0.0}, y_label="y"),
    ]:
        root = _parse(svg)
        assert "no data" not in _texts(root)
        assert "nan" not in svg.lower()


def test_axis_tick_labels_are_round_numbers() -> None:
    root = _parse(line_chart("t", {"a": [(0.0, 0.0), (97.0, 1234.0)]}, x_label="x", y_label="y"))
    labels = _texts(root).split()
    assert "0" in labels
    assert "100" in labels  # x axis extended to a round end
    assert any(label in labels for label in ("1200", "1250", "1400", "1500"))


def test_stacked_area_stacks_series() -> None:
    root = _parse(
        stacked_area_chart(
            "t",
            {"low": [(0.0, 1.0), (1.0, 1.0)], "high": [(0.0, 2.0), (1.0, 2.0)]},
            x_label="x",
            y_label="y",
        )
    )
    polygons = [el for el in root.iter(f"{SVG}polygon")]
    assert len(polygons) == 2
    # the second layer's top edge is higher (smaller y) than the first's
    tops = [min(float(pt.split(",")[1]) for pt in el.get("points", "").split()) for el in polygons]
    assert tops[1] < tops[0]


def test_large_cdf_is_downsampled() -> None:
    svg = cdf_chart("t", {"a": [float(i) for i in range(100_000)]}, x_label="x")
    _parse(svg)
    assert len(svg) < 100_000


def test_chart_rejects_tiny_size_and_bad_bins() -> None:
    with pytest.raises(ValueError, match="too small"):
        line_chart("t", {}, x_label="x", y_label="y", width=10)
    with pytest.raises(ValueError, match="bins"):
        histogram("t", [1.0], x_label="x", bins=0)


# --- html -----------------------------------------------------------------------------


def _page() -> str:
    chart = line_chart("Peers", TWO_SERIES, x_label="s", y_label="n")
    table = table_html(
        ["name", "value"], [["<b>bold</b>", 0.1 + 0.2], ["count", 250000], ["none", None]]
    )
    return render_page(
        "Run <1>",
        subtitle="loopback & friends",
        verdict="fail",
        summary={"peers": 500, "note": "<i>x</i>"},
        sections=[Section("Charts", chart), Section("Table", table)],
    )


def test_page_is_self_contained() -> None:
    page = _page()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    # The only URL allowed is the SVG namespace name, which is never fetched.
    without_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns
    assert "https://" not in without_ns
    assert not re.search(r"(src|href)\s*=", page)
    assert "<style>" in page
    assert "Content-Security-Policy" in page


def test_page_escapes_injected_markup() -> None:
    page = _page()
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<i>x</i>" not in page
    assert "<title>Run &lt;1&gt;</title>" in page
    assert "loopback &amp; friends" in page


def test_page_numbers_are_compact() -> None:
    page = _page()
    assert ">0.3<" in page
    assert "0.30000000000000004" not in page
    assert ">250000<" in page


def test_verdict_banner() -> None:
    def body(page: str) -> str:
        return page.split("<body>", 1)[1]

    assert 'class="verdict verdict-fail"' in body(_page())
    passing = body(render_page("t", sections=[], verdict="pass"))
    assert 'class="verdict verdict-pass"' in passing
    assert "Verdict: PASS" in passing
    assert "verdict" not in body(render_page("t", sections=[]))


def test_write_page(tmp_path: Path) -> None:
    out = write_page(tmp_path / "deep" / "report.html", "t", sections=[Section("s", "<p>hi</p>")])
    assert out == tmp_path / "deep" / "report.html"
    assert "<p>hi</p>" in out.read_text(encoding="utf-8")


# --- junit ----------------------------------------------------------------------------


def test_junit_counts_and_content(tmp_path: Path) -> None:
    cases = [
        Case("pairs connect", "drift.simulate", time_s=1.25),
        Case(
            "p99 < 500 ms",
            "drift.simulate",
            failure="p99 was 812 ms\nthreshold 500",
            failure_type="Threshold",
        ),
        Case("redis", "drift.simulate", skipped="no redis-server"),
        Case("output \x00 <&>", "drift.simulate", system_out="log \x1b[31m line"),
    ]
    path = write_junit(
        tmp_path / "junit.xml", "simulate", cases, {"peers": 500, "url": "ws://127.0.0.1"}
    )
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for el in (root, suite):
        assert el.get("tests") == "4"
        assert el.get("failures") == "1"
        assert el.get("skipped") == "1"
        assert el.get("errors") == "0"
        assert float(el.get("time", "")) == pytest.approx(1.25)
    assert [c.get("name") for c in suite.iter("testcase")] == [
        "pairs connect",
        "p99 < 500 ms",
        "redis",
        "output \ufffd <&>",
    ]
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.get("message") == "p99 was 812 ms"
    assert failure.get("type") == "Threshold"
    assert failure.text == "p99 was 812 ms\nthreshold 500"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"peers": "500", "url": "ws://127.0.0.1"}


def test_junit_empty_suite(tmp_path: Path) -> None:
    root = ET.parse(write_junit(tmp_path / "j.xml", "empty", [])).getroot()
    assert root.get("tests") == "0"
    assert root.find("testsuite/properties") is None


def test_case_cannot_fail_and_skip() -> None:
    with pytest.raises(ValueError, match="both"):
        Case("x", "y", failure="f", skipped="s")


# --- paths ----------------------------------------------------------------------------


def test_reports_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DRIFT_REPORTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert reports_root() == tmp_path / "reports"
    monkeypatch.setenv("DRIFT_REPORTS_DIR", str(tmp_path / "elsewhere"))
    assert reports_root() == tmp_path / "elsewhere"


def test_run_dir_is_distinct_within_one_second(tmp_path: Path) -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = run_dir("simulate", root=tmp_path, now=now)
    second = run_dir("simulate", root=tmp_path, now=now)
    third = run_dir("simulate", root=tmp_path, now=now)
    assert first.name == "20250102-030405-simulate"
    assert second.name == "20250102-030405-simulate-2"
    assert third.name == "20250102-030405-simulate-3"
    assert all(p.is_dir() for p in (first, second, third))


def test_run_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFT_REPORTS_DIR", str(tmp_path / "r"))
    a = run_dir("loadtest-basic")
    b = run_dir("loadtest-basic")
    assert a.parent == b.parent == tmp_path / "r"
    assert a != b
    assert a.is_dir()
    assert b.is_dir()


def test_run_dir_uses_utc_and_safe_names(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    d = run_dir(
        "../my scenario/x", root=tmp_path, now=datetime(2025, 1, 2, 5, 0, 0, tzinfo=plus_two)
    )
    assert d.parent == tmp_path
    assert d.name == "20250102-030000-my-scenario-x"
    with pytest.raises(ValueError, match="usable"):
        run_dir("///", root=tmp_path)
