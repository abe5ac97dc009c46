"""Server CPU per delivered update of several runs, side by side, as one PNG.

``python -m bench cost-plot --out cost.png before=DIR after=DIR`` reads each run
directory's ``results.json`` (written by ``python -m bench run``) and draws, per target,
one bar per labelled run with its CPU per update and its multiple of the reference
server's in the same run. Runs made on different days differ in the reference's own
figure too; the multiples are what compare across them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compare import REFERENCE

MAX_RUNS = 8


def load(directory: Path) -> list[dict[str, Any]]:
    """The per-target records of one run directory."""
    with open(directory / "results.json", encoding="utf-8") as file:
        records: list[dict[str, Any]] = json.load(file)
    return records


def cost_table(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """``{target: {label: (us per update, x reference)}}`` over the labelled runs."""
    table: dict[str, dict[str, Any]] = {}
    for label, records in runs:
        reference = next(
            (r["server_cpu_us_per_update"] for r in records if r["target"] == REFERENCE), None
        )
        for record in records:
            cost = record.get("server_cpu_us_per_update")
            if cost is None:
                continue
            times = cost / reference if reference else None
            table.setdefault(record["target"], {})[label] = (cost, times)
    return table


def plot(runs: Sequence[tuple[str, list[dict[str, Any]]]], out: Path, title: str) -> Path:
    """Write the bar chart of ``runs`` to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = cost_table(runs)
    targets = list(table)
    labels = [label for label, _ in runs]
    width = 0.8 / max(len(labels), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(targets)), 4.2))
    for index, label in enumerate(labels):
        xs = [t + (index - (len(labels) - 1) / 2) * width for t in range(len(targets))]
        values = [table[target].get(label, (0.0, None)) for target in targets]
        bars = axes.bar(xs, [cost for cost, _ in values], width, label=label)
        for bar, (cost, times) in zip(bars, values, strict=True):
            if cost:
                text = f"{cost:.0f}" + (f"\n{times:.2f}x" if times is not None else "")
                axes.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    axes.set_xticks(range(len(targets)), targets, fontsize=8)
    axes.set_ylabel("server CPU per delivered update (us)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    axes.margins(y=0.2)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main(argv: Sequence[str]) -> int:
    """The ``cost-plot`` command."""
    parser = argparse.ArgumentParser(prog="python -m bench cost-plot", description=__doc__)
    parser.add_argument("runs", nargs="+", help="LABEL=DIR, a run directory of `bench run`")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="server CPU per delivered update")
    args = parser.parse_args(argv)
    if len(args.runs) > MAX_RUNS:
        parser.error(f"at most {MAX_RUNS} runs")
    runs = []
    for spec in args.runs:
        label, sep, directory = spec.partition("=")
        if not sep or not label:
            parser.error(f"{spec!r}: expected LABEL=DIR")
        runs.append((label, load(Path(directory))))
    print(plot(runs, args.out, args.title))
    return 0
