"""What one wake-up of an idle event loop costs in CPU, in Python (asyncio) and in Node.

A server that handles updates one at a time, at a rate where it sleeps between them,
pays this once per update in every process the update crosses. Each runtime runs a loop
that only sleeps ``--sleep-ms`` at a time for ``--seconds``, in a fresh process, and
reports its CPU (user + system) divided by the wake-ups. Writes JSON.

    python -m bench wakeups --out DIR/wakeups.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PYTHON_LOOP = """
import asyncio, json, sys, time
async def main(seconds, sleep):
    start_cpu, start = time.process_time(), time.monotonic()
    wakes = 0
    while time.monotonic() - start < seconds:
        await asyncio.sleep(sleep)
        wakes += 1
    print(json.dumps({"wakes": wakes, "cpu_s": time.process_time() - start_cpu}))
asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""

NODE_LOOP = """
const [seconds, sleepMs] = [Number(process.argv[1]), Number(process.argv[2])];
const startCpu = process.cpuUsage(); const start = Date.now(); let wakes = 0;
function tick() {
  wakes++;
  if (Date.now() - start < seconds * 1000) { setTimeout(tick, sleepMs); return; }
  const used = process.cpuUsage(startCpu);
  console.log(JSON.stringify({ wakes, cpu_s: (used.user + used.system) / 1e6 }));
}
setTimeout(tick, sleepMs);
"""


def measure(command: list[str], timeout: float) -> dict[str, Any]:
    """Run one loop; its wake-ups, CPU and CPU per wake-up in microseconds."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_us_per_wake"] = round(1e6 * result["cpu_s"] / max(1, result["wakes"]), 1)
    return result


def main(argv: Sequence[str]) -> int:
    """``python -m bench wakeups``."""
    parser = argparse.ArgumentParser(prog="python -m bench wakeups", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per loop and repeat")
    parser.add_argument("--sleep-ms", type=float, default=4.0, help="one sleep of the loop")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON file (default: print only)")
    args = parser.parse_args(argv)
    seconds, sleep_ms = args.seconds, args.sleep_ms
    timeout = seconds + 30
    runtimes: dict[str, list[str]] = {
        "python-asyncio": [sys.executable, "-c", PYTHON_LOOP, str(seconds), str(sleep_ms / 1000)]
    }
    node = shutil.which("node")
    if node is not None:
        runtimes["node"] = [node, "-e", NODE_LOOP, str(seconds), str(sleep_ms)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runtimes}
    for _ in range(max(1, args.repeat)):
        for name, command in runtimes.items():  # taking turns, as `bench run` does
            runs[name].append(measure(command, timeout))
    report = {
        "benchmark": "wakeups",
        "parameters": {"seconds": seconds, "sleep_ms": sleep_ms, "repeat": args.repeat},
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "runs": runs,
        "cpu_us_per_wake": {
            name: sorted(run["cpu_us_per_wake"] for run in results)
            for name, results in runs.items()
        },
    }
    for name, values in report["cpu_us_per_wake"].items():
        print(f"[bench] {name}: {', '.join(f'{v:.1f}' for v in values)} us CPU per wake-up")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0
