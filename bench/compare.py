"""Cost per delivered update, and each target measured against the reference server.

A server that is as fast as another but burns three times the CPU for the same
deliveries is not as good: these figures put the CPU beside the latency. The
reference is the Node y-websocket server (``REFERENCE``), the server most Yjs
users start from. Plain arithmetic on the records the runner writes; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REFERENCE = "y-websocket"
# Scenarios whose latency samples are update deliveries (one per update and recipient).
DELIVERY_LATENCY = "update delivery"
RATIO_KEYS = ("p50", "p99")


def cpu_us_per_update(cpu_s: float | None, deliveries: int) -> float | None:
    """Server CPU in microseconds per delivered update, or None without both figures."""
    if cpu_s is None or deliveries <= 0:
        return None
    return round(cpu_s * 1e6 / deliveries, 2)


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference`` to two decimals, or None when either is missing or zero."""
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 2)


def versus_reference(
    results: Sequence[dict[str, Any]], reference: str = REFERENCE
) -> dict[str, dict[str, float | None]]:
    """For every measured target, its latency and CPU per update as multiples of the reference.

    Returns ``{}`` when the reference target was not measured in this run. A ratio
    above 1 means the target needs more (milliseconds, CPU) than the reference.
    """
    measured = {r["target"]: r for r in results if "not_applicable" not in r}
    base = measured.get(reference)
    if base is None:
        return {}
    comparison: dict[str, dict[str, float | None]] = {}
    for name, result in measured.items():
        entry: dict[str, float | None] = {
            f"{key}_ratio": ratio(result["latency_ms"].get(key), base["latency_ms"].get(key))
            for key in RATIO_KEYS
        }
        entry["server_cpu_s_ratio"] = ratio(result.get("server_cpu_s"), base.get("server_cpu_s"))
        entry["server_cpu_us_per_update_ratio"] = ratio(
            result.get("server_cpu_us_per_update"), base.get("server_cpu_us_per_update")
        )
        comparison[name] = entry
    return comparison


def summary_lines(results: Sequence[dict[str, Any]], reference: str = REFERENCE) -> list[str]:
    """The Markdown table of :func:`versus_reference`, or nothing without a reference."""
    comparison = versus_reference(results, reference)
    if not comparison:
        return []
    lines = [
        "",
        f"Against {reference} (x = target / {reference}; above 1 = more than the reference):",
        "",
        "| target | server CPU us per update | CPU per update x | p50 x | p99 x | server CPU x |",
        "|---|---|---|---|---|---|",
    ]
    by_name = {r["target"]: r for r in results}
    for name, entry in comparison.items():
        cells = [
            by_name[name].get("server_cpu_us_per_update"),
            entry["server_cpu_us_per_update_ratio"],
            entry["p50_ratio"],
            entry["p99_ratio"],
            entry["server_cpu_s_ratio"],
        ]
        lines.append(f"| {name} | " + " | ".join(_text(c) for c in cells) + " |")
    return lines


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
