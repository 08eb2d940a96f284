"""Inline SVG charts for drift's reports.

Hand-written SVG rather than a plotting library: a report must be one file that opens
from disk under a strict Content-Security-Policy (no scripts, no external resources),
and five simple chart kinds do not justify a plotting stack in every CI job.

Every function returns one ``<svg>`` element that is well-formed XML, carries the
SVG namespace (so it also works saved as a ``.svg`` file), names itself with
``<title>``/``aria-label`` for screen readers, and is styled with presentation
attributes only (a strict CSP blocks ``style="..."`` attributes, not ``fill=``).
Non-finite values (NaN, inf) cannot be drawn and are left out; a chart with nothing
left to draw says "no data" instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from html import escape

__all__ = ["bar_chart", "cdf_chart", "histogram", "line_chart", "stacked_area_chart"]

#: Tableau 10: distinguishable, and readable by most colour-blind viewers.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

_FONT = "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"
_INK = "#1f2937"
_MUTED = "#4b5563"
_GRID = "#e5e7eb"
_AXIS = "#6b7280"
_CHAR_W = 6.6  # average glyph width at font-size 11-12, for layout estimates
_MAX_CDF_STEPS = 2000

Point = tuple[float, float]


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _n(v: float) -> str:
    """A coordinate: one decimal is sub-pixel and keeps the SVG small."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _clip(text: str, max_chars: int) -> str:
    max_chars = max(max_chars, 2)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


# --- ticks and labels ---------------------------------------------------------------


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10.0 * mag


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    ticks: tuple[float, ...]
    step: float


def _scale(lo: float, hi: float, count: int = 5, *, min_step: float = 0.0) -> _Scale:
    """Extend [lo, hi] to round numbers and pick about ``count`` round ticks."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = (lo - pad, hi + pad) if lo != 0 else (0.0, 1.0)
    step = max(_nice_step(hi - lo, count), min_step)
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    n = round((end - start) / step)
    ticks = tuple(
        0.0 if abs(t) < step * 1e-9 else t for t in (start + i * step for i in range(n + 1))
    )
    return _Scale(start, end, ticks, step)


_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _tick_label(v: float, scale: _Scale) -> str:
    """Labels with just enough decimals for the tick step, and k/M/G for big axes."""
    if v == 0:
        return "0"
    biggest = max(abs(scale.lo), abs(scale.hi))
    div, suffix = 1.0, ""
    for d, s in _SUFFIXES:
        # A suffix only helps when the step is not tiny against it (epoch seconds would
        # otherwise read 1.70000001G).
        if biggest >= 10 * d and scale.step >= d / 10:
            div, suffix = d, s
            break
    step = scale.step / div
    decimals = 0
    while decimals < 9 and abs(round(step, decimals) - step) > step * 1e-6:
        decimals += 1
    return f"{v / div:.{decimals}f}{suffix}"


def _value_label(v: float) -> str:
    """A single value (bar labels): about four significant digits, no exponent below 1e6."""
    if not math.isfinite(v):
        return "n/a"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}" if abs(v) < 1e6 else f"{v:.3g}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


# --- layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Legend:
    rows: tuple[tuple[tuple[str, str, float, bool], ...], ...]  # (name, colour, x, empty)

    @property
    def height(self) -> float:
        return 18.0 * len(self.rows)


def _legend(names: Sequence[str], empty: Sequence[bool], width: int) -> _Legend:
    rows: list[tuple[tuple[str, str, float, bool], ...]] = []
    row: list[tuple[str, str, float, bool]] = []
    x = 12.0
    for i, name in enumerate(names):
        label = _clip(name, 40) + (" (no data)" if empty[i] else "")
        w = 14 + 6 + len(label) * _CHAR_W + 16
        if row and x + w > width - 12:
            rows.append(tuple(row))
            row, x = [], 12.0
        row.append((name, PALETTE[i % len(PALETTE)], x, empty[i]))
        x += w
    if row:
        rows.append(tuple(row))
    return _Legend(tuple(rows))


@dataclass(frozen=True)
class _Plot:
    """The drawing area in pixels and the data window it shows."""

    left: float
    top: float
    right: float
    bottom: float
    x: _Scale
    y: _Scale

    def sx(self, v: float) -> float:
        return self.left + (v - self.x.lo) / (self.x.hi - self.x.lo) * (self.right - self.left)

    def sy(self, v: float) -> float:
        return self.bottom - (v - self.y.lo) / (self.y.hi - self.y.lo) * (self.bottom - self.top)


class _Svg:
    def __init__(self, title: str, width: int, height: int, desc: str) -> None:
        if width < 160 or height < 120:
            raise ValueError(f"chart size {width}x{height} is too small (minimum 160x120)")
        self.width, self.height = width, height
        t = _esc(title)
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="drift-chart" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{t}" '
            f'font-family="{_FONT}" font-size="11" fill="{_INK}">',
            f"<title>{t}</title>",
            f"<desc>{_esc(desc)}</desc>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="12" y="20" font-size="14" font-weight="600">'
            f"{_esc(_clip(title, int((width - 24) / 8)))}</text>",
        ]

    def add(self, part: str) -> None:
        self.parts.append(part)

    def legend(self, legend: _Legend) -> None:
        for r, row in enumerate(legend.rows):
            y = 36 + 18 * r
            for name, colour, x, empty in row:
                label = _clip(name, 40) + (" (no data)" if empty else "")
                self.add(
                    f"<g><title>{_esc(name)}</title>"
                    f'<rect x="{_n(x)}" y="{y - 9}" width="14" height="10" rx="2" fill="{colour}"'
                    f' fill-opacity="{0.35 if empty else 1}"/>'
                    f'<text x="{_n(x + 20)}" y="{y}" font-size="12">{_esc(label)}</text></g>'
                )

    def done(self) -> str:
        return "\n".join([*self.parts, "</svg>"])


def _plot_area(
    svg: _Svg, legend: _Legend | None, x: _Scale, y: _Scale, y_labels: Sequence[str], x_last: str
) -> _Plot:
    top = 34 + (legend.height + 6 if legend and legend.rows else 0) + 6
    label_w = max((len(s) for s in y_labels), default=1) * _CHAR_W
    left = 26 + label_w + 8
    right = svg.width - max(16, len(x_last) * _CHAR_W / 2 + 4)
    bottom = svg.height - 42
    if bottom - top < 40:  # a very tall legend on a short chart: keep some plot visible
        top = bottom - 40
    return _Plot(left, top, right, bottom, x, y)


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str) -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}"/>'


def _axes(
    svg: _Svg,
    p: _Plot,
    x_label: str,
    y_label: str,
    *,
    x_ticks: Iterable[tuple[float, str]] | None,
    y_ticks: Iterable[tuple[float, str]],
) -> None:
    out = ['<g class="grid" stroke-width="1">']
    for v, text in y_ticks:
        y = _n(p.sy(v))
        out.append(_line(p.left, p.sy(v), p.right, p.sy(v), _GRID))
        out.append(
            f'<text x="{_n(p.left - 6)}" y="{y}" dy="0.32em" text-anchor="end" fill="{_MUTED}">'
            f"{_esc(text)}</text>"
        )
    if x_ticks is not None:
        for v, text in x_ticks:
            x = _n(p.sx(v))
            out.append(_line(p.sx(v), p.bottom, p.sx(v), p.bottom + 4, _AXIS))
            out.append(
                f'<text x="{x}" y="{_n(p.bottom + 16)}" text-anchor="middle" fill="{_MUTED}">'
                f"{_esc(text)}</text>"
            )
    out.append(_line(p.left, p.top, p.left, p.bottom, _AXIS))
    out.append(_line(p.left, p.bottom, p.right, p.bottom, _AXIS))
    out.append("</g>")
    mid_x = (p.left + p.right) / 2
    mid_y = (p.top + p.bottom) / 2
    out.append(
        f'<text x="{_n(mid_x)}" y="{svg.height - 8}" text-anchor="middle" font-size="12">'
        f"{_esc(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(14 {_n(mid_y)}) rotate(-90)" text-anchor="middle" '
        f'font-size="12">{_esc(y_label)}</text>'
    )
    svg.add("\n".join(out))


def _no_data(svg: _Svg, legend: _Legend | None, x_label: str, y_label: str) -> str:
    p = _plot_area(svg, legend, _scale(0, 1), _scale(0, 1), ["0"], "")
    svg.add(
        f'<rect x="{_n(p.left)}" y="{_n(p.top)}" width="{_n(p.right - p.left)}" '
        f'height="{_n(p.bottom - p.top)}" fill="#f9fafb" stroke="{_GRID}"/>'
    )
    svg.add(
        f'<text x="{_n((p.left + p.right) / 2)}" y="{_n((p.top + p.bottom) / 2)}" dy="0.32em" '
        f'text-anchor="middle" font-size="13" fill="{_MUTED}">no data</text>'
    )
    _axes(svg, p, x_label, y_label, x_ticks=(), y_ticks=())
    return svg.done()


def _labelled(scale: _Scale) -> list[tuple[float, str]]:
    return [(t, _tick_label(t, scale)) for t in scale.ticks]


def _clean_points(points: Sequence[tuple[float, float]]) -> list[Point]:
    return sorted((float(x), float(y)) for x, y in points if _finite(x) and _finite(y))


def _start(
    kind: str,
    title: str,
    clean: Mapping[str, Sized],
    x_label: str,
    y_label: str,
    width: int,
    height: int,
) -> tuple[_Svg, list[str], _Legend | None]:
    """The part every multi-series chart shares: the frame, its description and the legend."""
    svg = _Svg(
        title,
        width,
        height,
        _describe(kind, x_label, y_label, {k: len(v) for k, v in clean.items()}),
    )
    names = list(clean)
    legend = _legend(names, [not clean[n] for n in names], width) if names else None
    if legend:
        svg.legend(legend)
    return svg, names, legend


def _describe(kind: str, x_label: str, y_label: str, counts: Mapping[str, int]) -> str:
    parts = ", ".join(f"{name} ({n} points)" for name, n in counts.items())
    return f"{kind} of {y_label} against {x_label}: {parts or 'no series'}."


# --- charts ---------------------------------------------------------------------------


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 300,
) -> str:
    """One line per series; points are sorted by x. The y axis starts at 0 for non-negative data."""
    clean = {name: _clean_points(points) for name, points in series.items()}
    svg, names, legend = _start("Line chart", title, clean, x_label, y_label, width, height)
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    if not xs:
        return _no_data(svg, legend, x_label, y_label)
    xs_scale = _scale(min(xs), max(xs), 6)
    ys_scale = _scale(min(0.0, min(ys)), max(ys)) if min(ys) >= 0 else _scale(min(ys), max(ys))
    y_ticks = _labelled(ys_scale)
    x_ticks = _labelled(xs_scale)
    p = _plot_area(svg, legend, xs_scale, ys_scale, [t for _, t in y_ticks], x_ticks[-1][1])
    _axes(svg, p, x_label, y_label, x_ticks=x_ticks, y_ticks=y_ticks)
    for i, name in enumerate(names):
        pts = clean[name]
        if not pts:
            continue
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{_n(p.sx(x))},{_n(p.sy(y))}" for x, y in pts)
        body = [f"<g><title>{_esc(name)}</title>"]
        if len(pts) > 1:
            body.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2" '
                f'stroke-linejoin="round" stroke-linecap="round"/>'
            )
        if len(pts) <= 40:  # few points: show where the samples are
            body.extend(
                f'<circle cx="{_n(p.sx(x))}" cy="{_n(p.sy(y))}" r="2.5" fill="{colour}"/>'
                for x, y in pts
            )
        body.append("</g>")
        svg.add("".join(body))
    return svg.done()


def stacked_area_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 300,
) -> str:
    """Series stacked bottom-up in the given order (e.g. peer states over time).

    The series should share x values; an x missing from a series counts as 0 there.
    Negative values cannot stack meaningfully and are drawn as 0.
    """
    clean = {name: _clean_points(points) for name, points in series.items()}
    svg, names, legend = _start("Stacked area chart", title, clean, x_label, y_label, width, height)
    xs = sorted({x for pts in clean.values() for x, _ in pts})
    if not xs:
        return _no_data(svg, legend, x_label, y_label)
    layers: list[list[float]] = []
    below = [0.0] * len(xs)
    for name in names:
        values = dict(clean[name])
        top = [b + max(0.0, values.get(x, 0.0)) for b, x in zip(below, xs, strict=True)]
        layers.append(top)
        below = top
    xs_scale = _scale(xs[0], xs[-1], 6)
    ys_scale = _scale(0.0, max(below))
    y_ticks = _labelled(ys_scale)
    x_ticks = _labelled(xs_scale)
    p = _plot_area(svg, legend, xs_scale, ys_scale, [t for _, t in y_ticks], x_ticks[-1][1])
    _axes(svg, p, x_label, y_label, x_ticks=x_ticks, y_ticks=y_ticks)
    if len(xs) == 1:  # one sample has no width: draw it as a stacked bar
        half = max(3.0, (p.right - p.left) / 40)
        xs_px = [p.sx(xs[0]) - half, p.sx(xs[0]) + half]
        layers = [[t[0], t[0]] for t in layers]
    else:
        xs_px = [p.sx(x) for x in xs]
    lower = [0.0] * len(xs_px)
    for i, (name, upper) in enumerate(zip(names, layers, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        edge = [f"{_n(x)},{_n(p.sy(y))}" for x, y in zip(xs_px, upper, strict=True)]
        base = [
            f"{_n(x)},{_n(p.sy(y))}" for x, y in zip(reversed(xs_px), reversed(lower), strict=True)
        ]
        svg.add(
            f"<g><title>{_esc(name)}</title>"
            f'<polygon points="{" ".join(edge + base)}" fill="{colour}" fill-opacity="0.85" '
            f'stroke="{colour}" stroke-width="1"/></g>'
        )
        lower = upper
    return svg.done()


def histogram(
    title: str,
    values: Sequence[float],
    *,
    x_label: str,
    bins: int = 30,
    width: int = 720,
    height: int = 300,
    y_label: str = "count",
) -> str:
    """Counts of ``values`` in ``bins`` equal-width bins spanning their min..max."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    data = [float(v) for v in values if _finite(v)]
    svg = _Svg(
        title, width, height, f"Histogram of {len(data)} values of {x_label} in {bins} bins."
    )
    if not data:
        return _no_data(svg, None, x_label, y_label)
    lo, hi = min(data), max(data)
    if lo == hi:
        bins, lo, hi = 1, lo - 0.5, hi + 0.5
    bin_w = (hi - lo) / bins
    counts = [0] * bins
    for v in data:
        counts[min(int((v - lo) / bin_w), bins - 1)] += 1
    xs_scale = _scale(lo, hi, 6)
    ys_scale = _scale(0.0, max(counts), min_step=1.0)
    y_ticks = _labelled(ys_scale)
    x_ticks = _labelled(xs_scale)
    p = _plot_area(svg, None, xs_scale, ys_scale, [t for _, t in y_ticks], x_ticks[-1][1])
    _axes(svg, p, x_label, y_label, x_ticks=x_ticks, y_ticks=y_ticks)
    rects = []
    for i, c in enumerate(counts):
        if c == 0:
            continue
        x0, x1 = p.sx(lo + i * bin_w), p.sx(lo + (i + 1) * bin_w)
        gap = 1.0 if x1 - x0 > 4 else 0.0
        y = p.sy(c)
        rects.append(
            f'<rect x="{_n(x0 + gap / 2)}" y="{_n(y)}" width="{_n(max(x1 - x0 - gap, 0.5))}" '
            f'height="{_n(p.bottom - y)}" fill="{PALETTE[0]}"><title>'
            f"{_esc(_value_label(lo + i * bin_w))} – "
            f"{_esc(_value_label(lo + (i + 1) * bin_w))}: {c}</title></rect>"
        )
    svg.add("<g>" + "".join(rects) + "</g>")
    return svg.done()


def cdf_chart(
    title: str,
    series: Mapping[str, Sequence[float]],
    *,
    x_label: str,
    width: int = 720,
    height: int = 300,
    y_label: str = "share of values ≤ x",
) -> str:
    """Empirical cumulative distribution per series: where p50/p99 sit, at a glance."""
    clean = {
        name: sorted(float(v) for v in values if _finite(v)) for name, values in series.items()
    }
    svg, names, legend = _start(
        "Cumulative distribution", title, clean, x_label, y_label, width, height
    )
    xs = [v for vs in clean.values() for v in vs]
    if not xs:
        return _no_data(svg, legend, x_label, y_label)
    xs_scale = _scale(min(xs), max(xs), 6)
    ys_scale = _Scale(0.0, 1.0, (0.0, 0.25, 0.5, 0.75, 1.0), 0.25)
    y_ticks = [(t, f"{t:.0%}") for t in ys_scale.ticks]
    x_ticks = _labelled(xs_scale)
    p = _plot_area(svg, legend, xs_scale, ys_scale, [t for _, t in y_ticks], x_ticks[-1][1])
    _axes(svg, p, x_label, y_label, x_ticks=x_ticks, y_ticks=y_ticks)
    for i, name in enumerate(names):
        vs = clean[name]
        if not vs:
            continue
        n = len(vs)
        if n <= _MAX_CDF_STEPS:
            idx: Sequence[int] = range(n)
        else:  # keep the file small; 2000 steps is finer than the pixels
            idx = sorted({round(k * (n - 1) / (_MAX_CDF_STEPS - 1)) for k in range(_MAX_CDF_STEPS)})
        d = [f"M{_n(p.sx(vs[0]))},{_n(p.sy(0.0))}"]
        for j in idx:
            d.append(f"H{_n(p.sx(vs[j]))}V{_n(p.sy((j + 1) / n))}")
        colour = PALETTE[i % len(PALETTE)]
        svg.add(
            f"<g><title>{_esc(name)}</title>"
            f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-linejoin="round"/></g>'
        )
    return svg.done()


def bar_chart(
    title: str,
    bars: Mapping[str, float],
    *,
    y_label: str,
    width: int = 720,
    height: int = 300,
    x_label: str = "",
) -> str:
    """One bar per key, in the given order, with its value written above it."""
    items = [(str(k), float(v)) for k, v in bars.items()]
    svg = _Svg(
        title,
        width,
        height,
        f"Bar chart of {y_label}: "
        + (", ".join(f"{k} = {_value_label(v)}" for k, v in items) or "no bars")
        + ".",
    )
    finite = [v for _, v in items if _finite(v)]
    if not finite:
        return _no_data(svg, None, x_label, y_label)
    ys_scale = _scale(min(0.0, min(finite)), max(0.0, max(finite)))
    y_ticks = _labelled(ys_scale)
    p = _plot_area(svg, None, _scale(0, 1), ys_scale, [t for _, t in y_ticks], "")
    _axes(svg, p, x_label, y_label, x_ticks=None, y_ticks=y_ticks)
    slot = (p.right - p.left) / len(items)
    bar_w = max(1.0, min(slot * 0.7, 80.0))
    max_chars = int(slot / _CHAR_W)
    zero = p.sy(0.0)
    out = []
    for i, (name, v) in enumerate(items):
        cx = p.left + slot * (i + 0.5)
        label = _esc(_clip(name, max_chars))
        out.append(
            f'<text x="{_n(cx)}" y="{_n(p.bottom + 16)}" text-anchor="middle" fill="{_MUTED}">'
            f"<title>{_esc(name)}</title>{label}</text>"
        )
        if not _finite(v):
            out.append(
                f'<text x="{_n(cx)}" y="{_n(zero - 4)}" text-anchor="middle" '
                f'fill="{_MUTED}">n/a</text>'
            )
            continue
        y0, y1 = sorted((zero, p.sy(v)))
        out.append(
            f'<rect x="{_n(cx - bar_w / 2)}" y="{_n(y0)}" width="{_n(bar_w)}" '
            f'height="{_n(max(y1 - y0, 0.5))}" fill="{PALETTE[0]}">'
            f"<title>{_esc(name)}: {_esc(_value_label(v))}</title></rect>"
        )
        if max_chars >= 3:
            ty = y0 - 4 if v >= 0 else y1 + 12
            out.append(
                f'<text x="{_n(cx)}" y="{_n(ty)}" text-anchor="middle" font-size="11">'
                f"{_esc(_value_label(v))}</text>"
            )
    svg.add("<g>" + "".join(out) + "</g>")
    return svg.done()
