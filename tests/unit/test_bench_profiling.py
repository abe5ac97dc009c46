"""The bench's profiler records every Python process of a run, the load generator included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.profiling import LOADGEN_KIND, Profiler, is_python_kind

BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    sum([1])\n"


@pytest.mark.parametrize(
    ("kind", "python"),
    [
        ("boardcast", True),
        ("ray::HostActor", True),
        ("ray::WorkerActor", True),
        ("ray::DirectoryActor", True),
        ("log_monitor.py", True),
        ("pycrdt_server.py", True),
        ("gcs_server", False),
        ("raylet", False),
        ("node", False),
    ],
)
def test_python_processes_are_told_from_native_ones(kind: str, python: bool) -> None:
    assert is_python_kind(kind) is python


def test_the_load_generator_is_this_process_unless_told(tmp_path: Path) -> None:
    targets = Profiler(os.getpid(), tmp_path).targets()
    assert (LOADGEN_KIND, os.getpid()) in targets


def test_the_load_generator_profile_shows_where_it_spent_its_time(tmp_path: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        profiler = Profiler(busy.pid, tmp_path, rate=50, loadgen_pid=busy.pid)
        profiler.start()
        time.sleep(2)
        summaries = profiler.stop()
    finally:
        busy.kill()
        busy.wait()
    loadgen = [s for s in summaries if s["process"] == LOADGEN_KIND]
    assert len(loadgen) == 1, summaries
    assert loadgen[0]["samples"] > 0
    assert any(frame.startswith("<module>") for _, frame in loadgen[0]["total"])
