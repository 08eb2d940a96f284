"""Reporting shared by ``drift simulate``, ``drift loadtest`` and the benchmarks.

One implementation of each piece, so every report computes percentiles, draws charts,
writes JUnit and names its output folder the same way: :mod:`.stats`, :mod:`.charts`,
:mod:`.html`, :mod:`.junit` and :mod:`.paths`.
"""

from drift.report.charts import bar_chart, cdf_chart, histogram, line_chart, stacked_area_chart
from drift.report.html import Section, format_value, render_page, table_html, write_page
from drift.report.junit import Case, write_junit
from drift.report.paths import reports_root, run_dir
from drift.report.stats import percentile, summarize

__all__ = [
    "Case",
    "Section",
    "bar_chart",
    "cdf_chart",
    "format_value",
    "histogram",
    "line_chart",
    "percentile",
    "render_page",
    "reports_root",
    "run_dir",
    "stacked_area_chart",
    "summarize",
    "table_html",
    "write_junit",
    "write_page",
]
