"""PNG plots of a run directory: latency distribution, latency over time, server CPU, memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt

MAX_POINTS = 20_000


def _runs(out: Path, scenario: str) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "runs").glob(f"*-{scenario}-*.json")):
        with open(path, encoding="utf-8") as file:
            raw = json.load(file)
        runs.setdefault(raw["record"]["target"], []).append(raw)
    return runs


def plot_all(out: Path, scenario: str) -> list[Path]:
    """Write every plot for ``scenario`` from ``out/runs``; return the files written."""
    runs = _runs(out, scenario)
    if not runs:
        return []
    written = [
        _latency_distribution(out, scenario, runs),
        _latency_over_time(out, scenario, runs),
        _server_series(out, scenario, runs, "cpu"),
        _server_series(out, scenario, runs, "memory"),
    ]
    return [path for path in written if path is not None]


def _latency_distribution(
    out: Path, scenario: str, runs: dict[str, list[dict[str, Any]]]
) -> Path | None:
    figure, axis = plt.subplots(figsize=(8, 5))
    plotted = False
    for target, raws in runs.items():
        values = sorted(v * 1000 for raw in raws for v in raw["latencies_s"])
        if not values:
            continue
        shares = [(i + 1) / len(values) for i in range(len(values))]
        step = max(1, len(values) // MAX_POINTS)
        axis.plot([*values[::step], values[-1]], [*shares[::step], 1.0], label=target)
        plotted = True
    if not plotted:
        plt.close(figure)
        return None
    axis.set_xscale("log")
    axis.set_xlabel("latency (ms, log scale)")
    axis.set_ylabel("share of deliveries at or below")
    axis.set_title(f"{scenario}: latency distribution (all repeats)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    path = out / f"{scenario}-latency-cdf.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _latency_over_time(
    out: Path, scenario: str, runs: dict[str, list[dict[str, Any]]]
) -> Path | None:
    targets = [t for t, raws in runs.items() if raws[0]["timeline"][0]]
    if not targets:
        return None
    figure, axes = plt.subplots(
        len(targets), 1, figsize=(9, 2.4 * len(targets)), sharex=True, squeeze=False
    )
    for axis, target in zip(axes[:, 0], targets, strict=True):
        raw = runs[target][0]
        sent, latency = raw["timeline"]
        start = raw["window"][0]
        step = max(1, len(sent) // MAX_POINTS)
        axis.scatter(
            [s - start for s in sent[::step]], [v * 1000 for v in latency[::step]], s=2, alpha=0.4
        )
        axis.set_yscale("log")
        axis.set_ylabel("ms")
        axis.set_title(f"{target} (run 1)", fontsize=9)
        axis.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("send time (s from the start of the measured window)")
    figure.suptitle(f"{scenario}: latency of each delivery over time")
    path = out / f"{scenario}-latency-over-time.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _server_series(
    out: Path, scenario: str, runs: dict[str, list[dict[str, Any]]], kind: str
) -> Path | None:
    figure, axis = plt.subplots(figsize=(9, 5))
    plotted = False
    for target, raws in runs.items():
        raw = raws[0]
        samples = raw["samples"]
        if len(samples) < 2:
            continue
        start = raw["window"][0]
        times = [s["t"] - start for s in samples]
        if kind == "cpu":
            # The server's CPU counter is the sum over its processes: it falls when they
            # are restarted (cold opens), and that interval is left as a gap.
            values = [
                (b["cpu_s"] - a["cpu_s"]) / max(b["t"] - a["t"], 1e-9)
                if b["cpu_s"] >= a["cpu_s"]
                else float("nan")
                for a, b in itertools.pairwise(samples)
            ]
            axis.plot(times[1:], values, label=target)
        else:
            (line,) = axis.plot(times, [s["uss_mb"] for s in samples], label=f"{target} USS")
            axis.plot(
                times, [s["rss_mb"] for s in samples], linestyle="--", color=line.get_color(),
                alpha=0.6, label=f"{target} RSS",
            )  # fmt: skip
        plotted = True
    if not plotted:
        plt.close(figure)
        return None
    first = next(iter(runs.values()))[0]
    axis.axvspan(0, first["window"][1] - first["window"][0], color="grey", alpha=0.1)
    axis.set_xlabel("s from the start of the measured window (shaded)")
    if kind == "cpu":
        axis.set_ylabel("server CPU (cores, all its processes)")
        axis.set_title(f"{scenario}: server CPU over time (run 1)")
    else:
        axis.set_ylabel("server memory (MB, all its processes)")
        axis.set_title(f"{scenario}: server memory over time (run 1)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    path = out / f"{scenario}-server-{kind}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
