"""Summary statistics shared by simulate, loadtest and the benchmarks.

One implementation so that a "p95" means the same thing in every report: linear
interpolation between closest ranks, which is numpy's default (``method="linear"``),
without making numpy a dependency of the package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summarize"]


def _sorted_finite(values: Sequence[float]) -> list[float]:
    xs = sorted(float(v) for v in values)
    if any(math.isnan(x) for x in xs):
        # NaN breaks sorting silently (every comparison is False); refuse it loudly.
        raise ValueError("values contain NaN")
    return xs


def _percentile_sorted(xs: Sequence[float], p: float) -> float:
    rank = (len(xs) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    frac = rank - lo
    if frac == 0.0:
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * frac


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, interpolated like numpy's default.

    Raises ``ValueError`` on empty input, NaN values or ``p`` outside 0..100: a report
    that silently shows 0 ms for "no samples" hides exactly the failures it exists for.
    """
    if not 0.0 <= p <= 100.0:  # also rejects NaN
        raise ValueError(f"percentile must be within 0..100, got {p!r}")
    if len(values) == 0:
        raise ValueError("percentile of an empty sequence")
    return _percentile_sorted(_sorted_finite(values), p)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """count, min, mean, p50, p95, p99 and max of ``values`` (sorted once).

    Empty input gives count 0 and 0.0 everywhere else, so a run with no samples
    still produces a well-formed report row; check ``count`` before trusting it.
    """
    keys = ("min", "mean", "p50", "p95", "p99", "max")
    if len(values) == 0:
        return {"count": 0, **dict.fromkeys(keys, 0.0)}
    xs = _sorted_finite(values)
    return {
        "count": len(xs),
        "min": xs[0],
        "mean": math.fsum(xs) / len(xs),
        "p50": _percentile_sorted(xs, 50.0),
        "p95": _percentile_sorted(xs, 95.0),
        "p99": _percentile_sorted(xs, 99.0),
        "max": xs[-1],
    }
