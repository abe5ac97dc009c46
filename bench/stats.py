"""Percentiles and medians, the same way in every report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILE_KEYS = ("p50", "p95", "p99", "max")


def summarize_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, nearest-rank p50/p95/p99, max and mean of ``seconds``, in milliseconds."""
    if not seconds:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)

    return {
        "count": len(ordered),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": round(ordered[-1] * 1000, 3),
        "mean": round(statistics.fmean(ordered) * 1000, 3),
    }


def median_or_none(values: Iterable[float | int | None]) -> float | None:
    """The median of the values that are not None, or None if there are none."""
    present = [float(v) for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def median_summary(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Key by key median of several :func:`summarize_ms` results (one per repeat)."""
    keys = {key for summary in summaries for key in summary}
    return {key: median_or_none(s.get(key) for s in summaries) for key in sorted(keys)}
