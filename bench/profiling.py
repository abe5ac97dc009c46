"""py-spy profiles of a Python server's processes over a scenario's measured window.

``python -m bench run ... --profile`` records every Python process of the server
(for Boardcast: the gateway, each Ray actor, Ray's Python agents and monitors) and the
load generator (this process) with ``py-spy record --format raw`` (collapsed stacks)
while the window runs, then summarises where the time went:
for each process, the functions with the most samples on top of the stack (self)
and anywhere on it (total). Idle threads are left out, so a share is of the time
the process was busy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.processes import ServerTree
from bench.sampler import process_kind

# Processes py-spy cannot read: Ray's C++ servers and the Node peers.
NATIVE_KINDS = frozenset({"gcs_server", "raylet", "node"})
LOADGEN_KIND = "loadgen"
STOP_TIMEOUT_S = 20.0


def is_python_kind(kind: str) -> bool:
    """Whether a process of this kind (``bench.sampler.process_kind``) runs Python."""
    if kind in NATIVE_KINDS:
        return False
    return kind == "boardcast" or kind.startswith("ray::") or kind.endswith(".py")


def py_spy() -> str:
    """The py-spy executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else "py-spy"


class Profiler:
    """py-spy on every Python process of a server, from ``start`` to ``stop``."""

    def __init__(
        self, root_pid: int, out_dir: Path, *, rate: int = 100, loadgen_pid: int | None = None
    ) -> None:
        self.root_pid = root_pid
        self.out_dir = out_dir
        self.rate = rate
        # The load generator runs in the bench's own process unless told otherwise.
        self.loadgen_pid = os.getpid() if loadgen_pid is None else loadgen_pid
        self.recorders: list[tuple[str, int, Path, subprocess.Popen[bytes]]] = []

    def targets(self) -> list[tuple[str, int]]:
        """(kind, pid) of every process to record: the server's Python ones, the loadgen."""
        found = [
            (kind, process.pid)
            for process in ServerTree(self.root_pid).refresh(session_scan_every=0.0)
            if is_python_kind(kind := process_kind(process))
        ]
        return [*found, (LOADGEN_KIND, self.loadgen_pid)]

    def start(self) -> None:
        """Attach py-spy to every process ``targets`` names."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for kind, pid in self.targets():
            name = kind.replace("ray::", "").replace("/", "_")
            path = self.out_dir / f"{name}-{pid}.txt"
            recorder = subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--format", "raw",
                 "--rate", str(self.rate), "--nonblocking", "--output", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.recorders.append((kind, pid, path, recorder))

    def stop(self) -> list[dict[str, Any]]:
        """Stop recording (SIGINT makes py-spy write its file); return the summaries."""
        for _, _, _, recorder in self.recorders:
            with contextlib.suppress(ProcessLookupError):
                recorder.send_signal(signal.SIGINT)
        summaries = []
        for kind, pid, path, recorder in self.recorders:
            try:
                recorder.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(5)
            if path.exists():
                summaries.append({"process": kind, "pid": pid, **summarize_collapsed(path)})
        return summaries


def summarize_collapsed(path: Path, top: int = 12) -> dict[str, Any]:
    """Top functions by self and total samples in a py-spy ``raw`` (collapsed stacks) file."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(frame) for frame in stack.split(";")]
            samples += count
            self_counts[frames[-1]] += count
            for frame in set(frames):
                total_counts[frame] += count
    if samples == 0:
        return {"samples": 0, "self": [], "total": []}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[round(100 * n / samples, 1), frame] for frame, n in counter.most_common(top)]

    return {"samples": samples, "self": share(self_counts), "total": share(total_counts)}


def _short(frame: str) -> str:
    # "function (package/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({where})" if where else name
