"""Read the sampler's file and summarise the server over a time window."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

Sample = dict[str, Any]


def read_samples(path: Path) -> list[Sample]:
    """Every sample in the file, in time order (a torn last line is skipped)."""
    samples: list[Sample] = []
    if not path.exists():
        return samples
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    samples.sort(key=lambda s: s["t"])
    return samples


def cpu_at(samples: list[Sample], t: float, key: str = "cpu_s") -> float | None:
    """Cumulative CPU seconds at ``t``, interpolated between the samples around it."""
    before = [s for s in samples if s["t"] <= t]
    after = [s for s in samples if s["t"] >= t]
    if not before or not after:
        return None
    low, high = before[-1], after[0]
    if high["t"] == low["t"]:
        return float(low[key])
    share = (t - low["t"]) / (high["t"] - low["t"])
    return float(low[key] + share * (high[key] - low[key]))


def memory_near(
    samples: list[Sample], start: float, end: float, key: str = "uss_mb"
) -> float | None:
    """Mean memory over the samples in ``[start, end]`` (the nearest one if none)."""
    inside = [s[key] for s in samples if start <= s["t"] <= end]
    if inside:
        return round(statistics.fmean(inside), 1)
    if not samples:
        return None
    nearest = min(samples, key=lambda s: abs(s["t"] - end))
    return float(nearest[key])


def window_stats(samples: list[Sample], start: float, end: float) -> dict[str, Any]:
    """Server CPU, memory and machine load over ``[start, end]``."""
    cpu_start, cpu_end = cpu_at(samples, start), cpu_at(samples, end)
    inside = [s for s in samples if start <= s["t"] <= end]
    seconds = max(end - start, 1e-9)
    cpu_s = None if cpu_start is None or cpu_end is None else round(cpu_end - cpu_start, 3)
    by_kind: dict[str, float] = {}
    if inside:
        first, last = inside[0]["by_kind"], inside[-1]["by_kind"]
        by_kind = {k: round(v - first.get(k, 0.0), 3) for k, v in last.items()}
        by_kind = {k: v for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]) if v > 0}
    return {
        "server_cpu_s": cpu_s,
        "server_cpu_fraction": None if cpu_s is None else round(cpu_s / seconds, 3),
        "server_rss_mb": max((s["rss_mb"] for s in inside), default=None),
        "server_uss_mb": max((s["uss_mb"] for s in inside), default=None),
        "server_processes": max((s["procs"] for s in inside), default=None),
        "server_cpu_by_process_kind_s": by_kind,
        "machine_busy_cpus_mean": (
            round(statistics.fmean(s["busy_cpus"] for s in inside), 2) if inside else None
        ),
    }
