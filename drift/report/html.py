"""Self-contained HTML report pages.

A report is read from disk, attached to CI runs and mailed around, so it is one file
with no script and nothing fetched: inline CSS in one ``<style>`` element and charts
as inline SVG. The page declares a Content-Security-Policy that allows exactly that,
so even a caller's ``body_html`` cannot make it run code or phone home.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

__all__ = ["Section", "format_value", "render_page", "table_html", "write_page"]

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)

_NUM = ' class="num"'

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2937;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 16px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.15rem; margin: 0 0 12px; }
.subtitle { color: #4b5563; margin: 0 0 16px; }
.verdict { border-radius: 8px; padding: 12px 16px; margin: 16px 0; font-weight: 700;
  font-size: 1.1rem; letter-spacing: .04em; border: 1px solid; }
.verdict-pass { background: #dcfce7; color: #14532d; border-color: #16a34a; }
.verdict-fail { background: #fee2e2; color: #7f1d1d; border-color: #dc2626; }
.verdict-other { background: #e5e7eb; color: #1f2937; border-color: #6b7280; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
  padding: 16px; margin: 16px 0; overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #e5e7eb;
  vertical-align: top; }
th { color: #4b5563; font-weight: 600; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { padding-right: 24px; }
svg.drift-chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
pre { background: #f9fafb; padding: 8px; overflow-x: auto; font-size: .85rem; }
"""


@dataclass(frozen=True)
class Section:
    """One titled block of the page; ``body_html`` is trusted markup (charts, tables)."""

    title: str
    body_html: str


def format_value(value: object) -> str:
    """Compact text for a table cell: 0.30000000000000004 shows as 0.3, 12345.678 as 12345.7."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == 0:
            return "0"
        if abs(value) >= 1e9 or abs(value) < 1e-4:
            return f"{value:.3g}"
        if abs(value) >= 1000:
            return f"{value:.1f}".removesuffix(".0")
        return f"{value:.4g}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _td(value: object) -> str:
    css = _NUM if _is_number(value) else ""
    return f"<td{css}>{escape(format_value(value))}</td>"


def table_html(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A ``<table>``; every header and cell is escaped, numbers are right-aligned."""
    numeric = [
        any(_is_number(c) for c in cells) and all(_is_number(c) or c is None for c in cells)
        for cells in ([row[i] for row in rows if i < len(row)] for i in range(len(headers)))
    ]
    head = "".join(
        f'<th scope="col"{_NUM if num else ""}>{escape(str(h))}</th>'
        for h, num in zip(headers, numeric, strict=True)
    )
    body = "".join(f"<tr>{''.join(_td(c) for c in row)}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(summary: Mapping[str, object]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(str(k))}</th>{_td(v)}</tr>' for k, v in summary.items()
    )
    return f'<table class="summary"><tbody>{rows}</tbody></table>'


def _verdict_html(verdict: str) -> str:
    kind = verdict.strip().lower()
    css = {"pass": "verdict-pass", "fail": "verdict-fail"}.get(kind, "verdict-other")
    return (
        f'<div class="verdict {css}" role="status">Verdict: {escape(verdict.strip().upper())}</div>'
    )


def render_page(
    title: str,
    *,
    sections: Sequence[Section],
    summary: Mapping[str, object] | None = None,
    verdict: str | None = None,
    subtitle: str = "",
) -> str:
    """A complete HTML5 document: verdict banner, summary table, then the sections.

    ``verdict`` "pass" is shown green and "fail" red (any other text neutral grey).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<header><h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="subtitle">{escape(subtitle)}</p>')
    parts.append("</header>")
    if verdict is not None:
        parts.append(_verdict_html(verdict))
    if summary:
        parts.append(f"<section><h2>Summary</h2>{_summary_html(summary)}</section>")
    for section in sections:
        parts.append(f"<section><h2>{escape(section.title)}</h2>\n{section.body_html}\n</section>")
    parts.extend(["</main>", "</body>", "</html>", ""])
    return "\n".join(parts)


def write_page(
    path: Path,
    title: str,
    *,
    sections: Sequence[Section],
    summary: Mapping[str, object] | None = None,
    verdict: str | None = None,
    subtitle: str = "",
) -> Path:
    """Write :func:`render_page` to ``path`` (creating its folder) and return ``path``."""
    page = render_page(
        title, sections=sections, summary=summary, verdict=verdict, subtitle=subtitle
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
