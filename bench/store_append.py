"""What one group commit of the embedded store costs: ``python -m bench store-append``.

Appends ``--appends`` batches of ``--boards`` boards' updates (one update each, 60 bytes)
to a fresh :class:`~persistence.sqlite.SqliteStore` from an asyncio loop, as a host's
commit loop does, and reports the wall time and this process's CPU (user and system)
per append, once with the store's ``synchronous=FULL`` and once with ``NORMAL`` (what
the fsync of each commit costs). Writes JSON to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persistence.sqlite import SqliteStore

MAX_APPENDS = 100_000


async def measure(path: Path, *, appends: int, boards: int, synchronous: str) -> dict[str, Any]:
    """Per-append wall and CPU microseconds of ``appends`` appends to a new store at ``path``."""
    store = SqliteStore(path)
    try:
        await store.append({"warm-up": [b"x"]})
        await store._run(lambda c: c.execute(f"PRAGMA synchronous = {synchronous}"))
        batch = {f"board-{index}": [b"u" * 60] for index in range(boards)}
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(appends):
            await store.append(batch)
        after, ended = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    finally:
        await store.close()
    scale = 1e6 / appends
    return {
        "synchronous": synchronous,
        "appends": appends,
        "boards_per_append": boards,
        "wall_us_per_append": round((ended - started) * scale, 1),
        "user_us_per_append": round((after.ru_utime - before.ru_utime) * scale, 1),
        "system_us_per_append": round((after.ru_stime - before.ru_stime) * scale, 1),
    }


def main(argv: Sequence[str]) -> int:
    """The ``store-append`` command."""
    parser = argparse.ArgumentParser(prog="python -m bench store-append", description=__doc__)
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--boards", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.appends <= MAX_APPENDS or not 1 <= args.boards <= 1000:
        parser.error(f"--appends 1..{MAX_APPENDS}, --boards 1..1000")
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for synchronous in ("FULL", "NORMAL"):
            path = Path(directory) / f"{synchronous.lower()}.sqlite3"
            result = asyncio.run(
                measure(path, appends=args.appends, boards=args.boards, synchronous=synchronous)
            )
            results.append(result)
            print(json.dumps(result))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0
