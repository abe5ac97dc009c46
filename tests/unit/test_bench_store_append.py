"""``python -m bench store-append``: the per-append cost of the embedded store, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import store_append


def test_it_measures_both_sync_modes_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "append.json"
    assert store_append.main(["--appends", "5", "--boards", "2", "--out", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [r["synchronous"] for r in results] == ["FULL", "NORMAL"]
    for result in results:
        assert result["appends"] == 5 and result["boards_per_append"] == 2
        assert result["wall_us_per_append"] > 0


def test_unbounded_runs_are_refused() -> None:
    with pytest.raises(SystemExit):
        store_append.main(["--appends", "0"])
    with pytest.raises(SystemExit):
        store_append.main(["--appends", str(store_append.MAX_APPENDS + 1)])
