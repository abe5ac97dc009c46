"""Fold repeats into one result per target, and write the Markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.compare import summary_lines
from bench.stats import median_or_none, median_summary

_MEDIAN_FIELDS = (
    "server_cpu_s",
    "server_cpu_fraction",
    "server_cpu_us_per_update",
    "server_rss_mb",
    "server_uss_mb",
    "server_processes",
    "loadgen_cpu_s",
    "loadgen_cpu_fraction",
    "machine_busy_cpus_mean",
    "machine_other_cpus",
    "window_s",
    "server_ready_s",
)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One object per target: medians over the repeats, the summed losses, and every run."""
    first = runs[0]
    lost = [r["lost"] for r in runs if r["lost"] is not None]
    result: dict[str, Any] = {
        "target": first["target"],
        "scenario": first["scenario"],
        "parameters": first["parameters"],
        "repeats": len(runs),
        "latency_is": first["latency_is"],
        "latency_ms": median_summary([r["latency_ms"] for r in runs]),
        "lost": sum(lost) if lost else None,
        "loadgen_bound": any(r["loadgen_bound"] for r in runs),
    }
    for name in _MEDIAN_FIELDS:
        result[name] = median_or_none(r.get(name) for r in runs)
    result["details"] = _median_details([r["details"] for r in runs])
    result["runs"] = runs
    return result


def _median_details(details: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key in details[0]:
        values = [d.get(key) for d in details]
        dicts = [v for v in values if isinstance(v, dict)]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = median_or_none(values)
        elif len(dicts) == len(values) and all(
            isinstance(x, int | float) or x is None for v in dicts for x in v.values()
        ):
            merged[key] = median_summary(dicts)
        else:
            merged[key] = values[0] if len(details) == 1 else values
    return merged


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def write_summary(
    path: Path, scenario: str, results: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """The Markdown summary: one row per target, then scenario details side by side."""
    machine = meta["machine"]
    lines = [
        f"# {scenario}",
        "",
        f"`{meta['command']}`, {meta['date']}, {machine['cpus']} cores, "
        f"{machine['memory_gb']} GiB, Python {machine['python']}. Medians over repeats; "
        "`lost` is summed over repeats. Latency is "
        f"{next((r['latency_is'] for r in results if 'latency_is' in r), 'n/a')}.",
        "",
        "| target | runs | p50 ms | p95 ms | p99 ms | max ms | lost | server CPU s "
        "| server CPU % of a core | server RSS MB | server USS MB | loadgen CPU % "
        "| loadgen bound | other load (CPUs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if "not_applicable" in result:
            lines.append(f"| {result['target']} | n/a: {result['not_applicable']} |" + " |" * 12)
            continue
        latency = result["latency_ms"]
        cpu_fraction = result["server_cpu_fraction"]
        loadgen = result["loadgen_cpu_fraction"]
        lines.append(
            "| "
            + " | ".join(
                [
                    result["target"],
                    str(result["repeats"]),
                    _cell(latency.get("p50")),
                    _cell(latency.get("p95")),
                    _cell(latency.get("p99")),
                    _cell(latency.get("max")),
                    _cell(result["lost"]),
                    _cell(result["server_cpu_s"]),
                    "n/a" if cpu_fraction is None else f"{cpu_fraction * 100:.0f}",
                    _cell(result["server_rss_mb"]),
                    _cell(result["server_uss_mb"]),
                    "n/a" if loadgen is None else f"{loadgen * 100:.0f}",
                    "yes" if result["loadgen_bound"] else "no",
                    _cell(result["machine_other_cpus"]),
                ]
            )
            + " |"
        )
    measured = [r for r in results if "details" in r]
    if measured:
        for result in measured:
            result_details = result["details"]
            for key, value in list(result_details.items()):
                if isinstance(value, dict) and "p50" in value:
                    for part in ("p50", "p99", "max"):
                        result_details.setdefault(f"{key}.{part}", value.get(part))
        keys = [k for k in measured[0]["details"] if _scalar(measured[0]["details"][k])]
        lines += ["", "| detail | " + " | ".join(r["target"] for r in measured) + " |"]
        lines.append("|---|" + "---|" * len(measured))
        for key in keys:
            cells = [_cell(r["details"].get(key)) for r in measured]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += summary_lines(results)
    lines += _profile_lines(results)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _profile_lines(results: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for result in results:
        for run in result.get("runs", []):
            for process in run.get("profile", []):
                if not process.get("samples"):
                    continue
                lines += [
                    "",
                    f"py-spy, {result['target']} run {run['repeat'] + 1}, {process['process']} "
                    f"(pid {process['pid']}, {process['samples']} busy samples): share of busy "
                    "samples with the function on top of the stack (self) or anywhere (total)",
                    "",
                    "| self % | function | total % | function |",
                    "|---|---|---|---|",
                ]
                for own, total in zip(process["self"][:10], process["total"][:10], strict=False):
                    lines.append(f"| {own[0]} | `{own[1]}` | {total[0]} | `{total[1]}` |")
            break  # the first run is enough
    return lines


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str)
