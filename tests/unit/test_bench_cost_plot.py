"""``python -m bench cost-plot``: CPU per update of labelled runs, x the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cost_plot


def write_run(directory: Path, costs: dict[str, float | None]) -> Path:
    directory.mkdir()
    records = [{"target": t, "server_cpu_us_per_update": c} for t, c in costs.items()]
    (directory / "results.json").write_text(json.dumps(records), encoding="utf-8")
    return directory


def test_each_target_gets_its_cost_and_multiple_of_the_same_runs_reference(
    tmp_path: Path,
) -> None:
    before = write_run(tmp_path / "before", {"boardcast": 300.0, "y-websocket": 100.0})
    after = write_run(tmp_path / "after", {"boardcast": 240.0, "idle": None, "y-websocket": 120.0})
    table = cost_plot.cost_table(
        [("before", cost_plot.load(before)), ("after", cost_plot.load(after))]
    )
    assert table["boardcast"] == {"before": (300.0, 3.0), "after": (240.0, 2.0)}
    assert "idle" not in table  # no deliveries measured: nothing to draw
    out = tmp_path / "cost.png"
    assert cost_plot.main(["--out", str(out), f"before={before}", f"after={after}"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_run_without_a_label_is_refused(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"boardcast": 1.0})
    with pytest.raises(SystemExit):
        cost_plot.main(["--out", str(tmp_path / "x.png"), str(run)])
