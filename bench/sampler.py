"""Sample a server's CPU and memory to a JSON-lines file: ``python -m bench.sampler``.

It runs in its own process so that reading ``/proc`` never pauses the load
generator. One line per tick: ``t`` (``time.monotonic``, the load generator's
clock), ``cpu_s`` (CPU seconds used so far by every process ever seen, so a
process that dies keeps its share), ``rss_mb``/``uss_mb`` (sums over the live
processes), ``procs``, the machine's ``busy_cpus`` since the last tick, and the
CPU seconds per process kind (``by_kind``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import psutil

from bench.processes import ServerTree

MB = 1024 * 1024


def process_kind(process: psutil.Process) -> str:
    """A short name for a process: ``ray::HostActor``, ``raylet``, ``boardcast``, ``node``..."""
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return "?"
    if not cmdline:
        return process.name()
    head = cmdline[0]
    if head.startswith("ray::"):
        return head.split(" ")[0]
    for arg in cmdline[:3]:
        name = arg.rsplit("/", 1)[-1]
        if name in {"boardcast", "gcs_server", "raylet", "node"} or name.endswith(".py"):
            return name
    return head.rsplit("/", 1)[-1]


def sample_forever(root_pid: int, out_path: str, interval: float) -> None:
    """Write one sample per ``interval`` until the root process is gone or SIGTERM."""
    tree = ServerTree(root_pid)
    cpu_seen: dict[int, float] = {}
    kind_of: dict[int, str] = {}
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    psutil.cpu_times()
    machine_before = psutil.cpu_times()
    with open(out_path, "a", encoding="utf-8") as out:
        while not stop:
            started = time.monotonic()
            processes = tree.refresh()
            rss = uss = 0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    cpu_seen[process.pid] = times.user + times.system
                    if process.pid not in kind_of:
                        kind_of[process.pid] = process_kind(process)
                    memory = process.memory_full_info()
                    rss += memory.rss
                    uss += memory.uss
            machine = psutil.cpu_times()
            busy = _busy(machine) - _busy(machine_before)
            idle = (machine.idle + machine.iowait) - (machine_before.idle + machine_before.iowait)
            machine_before = machine
            by_kind: dict[str, float] = {}
            for pid, cpu in cpu_seen.items():
                kind = kind_of.get(pid, "?")
                by_kind[kind] = round(by_kind.get(kind, 0.0) + cpu, 3)
            line = {
                "t": round(started, 4),
                "cpu_s": round(sum(cpu_seen.values()), 3),
                "rss_mb": round(rss / MB, 1),
                "uss_mb": round(uss / MB, 1),
                "procs": len(processes),
                "busy_cpus": round(busy / max(busy + idle, 1e-9) * (psutil.cpu_count() or 1), 3),
                "by_kind": by_kind,
            }
            out.write(json.dumps(line) + "\n")
            out.flush()
            if not processes:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__)
    parser.add_argument("--pid", type=int, required=True, help="the server's root process")
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args(argv)
    try:
        sample_forever(args.pid, args.out, args.interval)
    except psutil.NoSuchProcess:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
