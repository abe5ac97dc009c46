"""The event log and its first worker, analytics: ``python -m bench events``.

Starts ``boardcast serve`` (Ray board hosts, the worker actor, the embedded SQLite store) on
a free loopback port and reports, as JSON:

- ``latency``: event-to-effect, from a task creation acknowledged by REST (the change is
  durable) until the board's analytics row holds the task: p50/p99 over ``--events``
  creations made one at a time (after ``--warmup``), in milliseconds. The path: the host's
  group commit, its append to the event log, the worker's poll
  (``BOARDCAST_WORKER_POLL_SECONDS``, 0.1 s by default: the floor of this latency), the
  analytics batch and its write;
- ``throughput``: ``--burst`` tasks created by one bulk request (one update, that many
  events): events per second from the bulk's answer until the analytics row holds them all,
  median of ``--repeat`` runs;
- ``worker``: the analytics worker alone in this process over a SQLite log holding
  ``--burst`` events of ``--boards`` boards: events per second, median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.targets import TARGETS, ServerProcess
from persistence.event_log import NewEvent
from persistence.event_log_sqlite import SqliteEventLog
from workers.analytics import AnalyticsWorker
from workers.analytics_store import SqliteAnalyticsStore
from workers.runtime import RuntimeSettings, WorkerRuntime


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"count": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}


def _tasks_in_row(path: Path, board: str) -> int:
    """How many tasks the board's analytics row holds (0 before the first write)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        try:
            row = db.execute(
                "SELECT (SELECT count(*) FROM json_each(doc, '$.tasks'))"
                " FROM analytics_boards WHERE board_id = ?",
                (board,),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0]) if row else 0


async def _until(path: Path, board: str, count: int, timeout: float = 120.0) -> float:
    """Poll the row every millisecond until it holds ``count`` tasks; when it did."""
    deadline = time.perf_counter() + timeout
    while _tasks_in_row(path, board) < count:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"analytics never reached {count} tasks")
        await asyncio.sleep(0.001)
    return time.perf_counter()


async def measure_served(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    """Latency and throughput through a running ``boardcast serve``."""
    row = Path(server.data_dir) / "analytics.sqlite3"
    async with aiohttp.ClientSession(
        server.http_url, timeout=aiohttp.ClientTimeout(total=300)
    ) as http:

        async def call(method: str, path: str, body: Any) -> Any:
            async with http.request(method, path, json=body) as response:
                if response.status >= 300:
                    raise RuntimeError(f"{method} {path}: {response.status}")
                return await response.json()

        board = "bench-events"
        await call("POST", f"/v1/boards/{board}/columns", {"name": "todo", "id": "todo"})
        tasks = f"/v1/boards/{board}/tasks"
        latencies: list[float] = []
        made = 0
        for n in range(args.warmup + args.events):
            await call("POST", tasks, {"title": f"t{n}", "column": "todo"})
            acknowledged = time.perf_counter()
            made += 1
            seen = await _until(row, board, made)
            if n >= args.warmup:
                latencies.append((seen - acknowledged) * 1000)
        rates: list[float] = []
        for run in range(args.repeat):
            bulk = {
                "tasks": [{"title": f"b{run}-{n}", "column": "todo"} for n in range(args.burst)]
            }
            await call("POST", f"{tasks}/bulk", bulk)
            acknowledged = time.perf_counter()
            made += args.burst
            seen = await _until(row, board, made)
            rates.append(args.burst / (seen - acknowledged))
    return {
        "latency": _percentiles(latencies),
        "throughput": {
            "burst": args.burst,
            "events_per_s_median": round(statistics.median(rates), 1),
            "runs": [round(rate, 1) for rate in rates],
        },
    }


async def measure_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The analytics worker alone over a SQLite log, batches as the runtime feeds them."""
    rates: list[float] = []
    for _ in range(args.repeat):
        directory = Path(tempfile.mkdtemp(prefix="bench-events-worker-"))
        log = SqliteEventLog(directory / "events.sqlite3")
        store = SqliteAnalyticsStore(directory / "analytics.sqlite3")
        events = []
        for n in range(args.burst):
            board = f"b{n % args.boards}"
            kind = "task.created" if n % 2 == 0 else "task.moved"
            data = (
                {"task_id": f"t{n // 2}", "column": "todo"}
                if kind == "task.created"
                else {"task_id": f"t{n // 2}", "from_column": "todo", "to_column": "done"}
            )
            events.append(NewEvent(f"{board}:{n}:0", board, "p", kind, data, "bench"))
        for start in range(0, len(events), 1000):
            await log.append(events[start : start + 1000])
        worker = AnalyticsWorker(store)
        runtime = WorkerRuntime(log, [worker], RuntimeSettings(batch_size=args.batch))
        started = time.perf_counter()
        handled = await runtime.catch_up(worker)
        rates.append(handled / (time.perf_counter() - started))
        await store.close()
        await log.close()
    return {
        "events": args.burst,
        "boards": args.boards,
        "batch_size": args.batch,
        "events_per_s_median": round(statistics.median(rates), 1),
        "runs": [round(rate, 1) for rate in rates],
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench events", description=__doc__)
    parser.add_argument("--target", choices=["boardcast"], default="boardcast")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--burst", type=int, default=2_000)
    parser.add_argument("--boards", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    worker = asyncio.run(measure_worker(args))
    log_path = Path(tempfile.mkdtemp(prefix="bench-events-")) / "server.log"
    server = ServerProcess(TARGETS[args.target], log_path)
    server.start()
    try:
        served = asyncio.run(measure_served(args, server))
    finally:
        server.stop()
        server.cleanup()
    report = {
        "command": "python -m bench events " + " ".join(argv),
        "target": args.target,
        **served,
        "worker": worker,
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
