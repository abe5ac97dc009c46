"""REST bulk writes and queries against a real server: ``python -m bench rest``.

Starts ``boardcast serve`` (the ``boardcast`` target: Ray board hosts, the embedded
SQLite store) on a free loopback port and reports, as JSON:

- ``bulk``: ``POST /v1/boards/{id}/tasks/bulk`` of ``--tasks`` tasks (10,000 by
  default) to a fresh board with a WebSocket client connected: seconds until the
  response (the change is durable), and until the client holds every task (it
  arrives as one update, counted);
- ``query``: ``GET /v1/boards/{id}/tasks?assignee=...`` over ``--boards`` boards of
  ``--board-tasks`` tasks each (100 x 1,000 by default): latency p50/p99 in
  milliseconds, each query answered by the board's actor;
- ``read_model``: ``GET /v1/tasks?assignee=...&due_from=...&due_to=...`` across all
  of those boards at once, answered by the read model (the page of 50 soonest due),
  drawn from 40 distinct queries so that answers repeat: with the query cache on
  (the server's default) and off (``BOARDCAST_REST_CACHE_TTL_SECONDS=0``), each
  quiet and while a client edits a board every 20 ms, with the cache's hit rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Map

from bench.targets import TARGETS, ServerProcess
from clients.provider import BoardClient

PEOPLE = [f"user{n}" for n in range(20)]


def _tasks(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "title": f"task {n}",
            "column": ("Backlog", "Next", "Doing", "Done")[n % 4],
            "assignees": [rng.choice(PEOPLE)],
            "due": f"2026-12-{rng.randint(1, 28):02d}",
            "labels": [rng.choice(("bug", "feature", "chore"))],
        }
        for n in range(count)
    ]


async def _bulk(http: aiohttp.ClientSession, url: str, board: str, tasks: int) -> dict[str, Any]:
    updates: list[int] = []
    async with BoardClient(url, board, ack=False) as watcher:
        await watcher.synced()
        watcher.doc.observe(lambda event: updates.append(len(event.update)))
        body = {"tasks": _tasks(tasks, 1)}
        started = time.perf_counter()
        async with http.post(f"/v1/boards/{board}/tasks/bulk", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"bulk failed: {response.status} {await response.text()}")
        responded = time.perf_counter() - started
        stored = watcher.doc.get("tasks", type=Map)
        while len(stored) < tasks:
            if time.perf_counter() - started > 300:
                raise RuntimeError("the client never saw every task")
            await asyncio.sleep(0.005)
        seen = time.perf_counter() - started
    return {
        "tasks": tasks,
        "response_s": round(responded, 3),
        "client_has_all_s": round(seen, 3),
        "updates_received": len(updates),
        "update_bytes": sum(updates),
    }


async def _query(
    http: aiohttp.ClientSession, url: str, boards: int, per_board: int, queries: int
) -> dict[str, Any]:
    names = [f"query-{n}" for n in range(boards)]
    for index, board in enumerate(names):
        body = {"tasks": _tasks(per_board, index)}
        async with http.post(f"/v1/boards/{board}/tasks/bulk", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"bulk failed: {response.status} {await response.text()}")
    rng = random.Random(7)
    per_board_ms: list[float] = []
    for _ in range(queries):
        board = rng.choice(names)
        params = {"assignee": rng.choice(PEOPLE), "limit": "50"}
        per_board_ms.append(await _timed(http, f"/v1/boards/{board}/tasks", params))
    return {
        "boards": boards,
        "tasks": boards * per_board,
        "queries": queries,
        "board_actor": _percentiles(per_board_ms),
        "read_model": {
            "quiet": await _across(http, queries, rng, None),
            "while_editing": await _across(http, queries, rng, url),
        },
    }


async def _across(
    http: aiohttp.ClientSession, queries: int, rng: random.Random, editing: str | None
) -> dict[str, Any]:
    pool = [
        {"assignee": person, "limit": "50", **dates}
        for person in PEOPLE
        for dates in ({}, {"due_from": "2026-12-01", "due_to": "2026-12-07"})
    ]
    stop = asyncio.Event()
    editor = asyncio.create_task(_edit(editing, stop)) if editing else None
    latencies: list[float] = []
    hits = 0
    try:
        for _ in range(queries):
            started = time.perf_counter()
            async with http.get("/v1/tasks", params=rng.choice(pool)) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"query failed: {response.status}")
                hits += response.headers.get("Boardcast-Cache") == "hit"
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        stop.set()
        if editor is not None:
            await editor
    return {**_percentiles(latencies), "cache_hit_rate": round(hits / queries, 3)}


async def _edit(url: str, stop: asyncio.Event) -> None:
    """Retitle tasks of one board every 20 ms until ``stop``."""
    async with BoardClient(url, "query-0", ack=False) as client:
        await client.synced()
        tasks = client.doc.get("tasks", type=Map)
        ids = list(tasks.keys())[:50]
        n = 0
        while not stop.is_set():
            tasks[ids[n % len(ids)]]["title"] = f"edited {n}"
            n += 1
            await asyncio.sleep(0.02)


async def _timed(http: aiohttp.ClientSession, path: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    async with http.get(path, params=params) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"query failed: {response.status}")
    return (time.perf_counter() - started) * 1000


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
    }


async def measure(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    async with aiohttp.ClientSession(
        server.http_url, timeout=aiohttp.ClientTimeout(total=600)
    ) as http:
        bulk = [await _bulk(http, server.url, f"bulk-{n}", args.tasks) for n in range(args.repeat)]
        query = await _query(http, server.url, args.boards, args.board_tasks, args.queries)
    return {
        "target": server.target.name,
        "bulk": bulk,
        "bulk_median": {
            key: statistics.median(run[key] for run in bulk)
            for key in ("response_s", "client_has_all_s")
        },
        "query": query,
    }


def _serve_and_measure(args: argparse.Namespace, cache_ttl: str) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="bench-rest-")) / "server.log"
    server = ServerProcess(
        TARGETS[args.target], log, extra_env={"BOARDCAST_REST_CACHE_TTL_SECONDS": cache_ttl}
    )
    server.start()
    try:
        return asyncio.run(measure(args, server))
    finally:
        server.stop()
        server.cleanup()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rest", description=__doc__)
    parser.add_argument("--target", choices=["boardcast", "boardcast-memory"], default="boardcast")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--boards", type=int, default=100)
    parser.add_argument("--board-tasks", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    report = {
        "command": "python -m bench rest " + " ".join(argv),
        "with_cache": _serve_and_measure(args, "30"),
        "without_cache": _serve_and_measure(args, "0"),
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
