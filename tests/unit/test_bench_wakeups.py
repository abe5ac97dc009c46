"""``python -m bench wakeups`` measures real wake-ups of a real event loop and writes JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.wakeups import main


def test_wakeups_are_counted_and_costed(tmp_path: Path) -> None:
    out = tmp_path / "wakeups.json"
    assert main(["--seconds", "0.5", "--sleep-ms", "5", "--repeat", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    runtimes = {"python-asyncio", "node"} if shutil.which("node") else {"python-asyncio"}
    assert set(report["runs"]) == runtimes
    for name in runtimes:
        (run,) = report["runs"][name]
        # A 5 ms sleep wakes about 100 times in 0.5 s; never more than 0.5 s / 5 ms.
        assert 20 <= run["wakes"] <= 101, run
        assert run["cpu_s"] > 0
        assert report["cpu_us_per_wake"][name] == [run["cpu_us_per_wake"]]
