"""How soon a person's open list of projects shows a membership change, and what it costs.

One gateway with in-process board hosts on a fresh data directory, auth off (every
caller is the local administrator, so no logins are timed). A client keeps
``boardcast.projects-of.bob`` open, as the board app does; each trial adds ``bob``
to a project through REST and times until his list shows it (the request's own time
included: the answer comes once the project's document, the index and the list are
durable), then removes him and times until it is gone. After warm-up trials, medians
and percentiles.

    python -m bench.project_lists --trials 50 --out /tmp/project-lists.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from boardcast.deployment import build_cluster
from clients.provider import BoardClient
from crdt.project_list import list_doc_id, listed_projects
from gateway.app import create_app
from gateway.settings import Settings


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("the list did not change")
        await asyncio.sleep(0.0005)


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def measure(trials: int, warmup: int) -> dict[str, Any]:
    """Run the trials; the figures as a JSON-able dict."""
    with tempfile.TemporaryDirectory(prefix="bc-lists-") as data_dir:
        settings = Settings(port=0, data_dir=data_dir, backend="local", auth="none")
        cluster = await build_cluster(settings)
        runner = web.AppRunner(create_app(settings, cluster), shutdown_timeout=2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"127.0.0.1:{runner.addresses[0][1]}"
        added: list[float] = []
        removed: list[float] = []
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://{base}/v1/projects", json={"name": "P"}) as answer:
                    project = (await answer.json())["id"]
                member = f"http://{base}/v1/projects/{project}/members/bob"
                client = BoardClient(f"ws://{base}/ws", list_doc_id("bob"))
                async with client:
                    await client.synced()

                    def shown() -> bool:
                        return any(entry["id"] == project for entry in listed_projects(client.doc))

                    for trial in range(warmup + trials):
                        start = time.perf_counter()
                        async with http.put(member, json={"role": "viewer"}) as answer:
                            assert answer.status == 200
                        await _until(shown)
                        middle = time.perf_counter()
                        async with http.delete(member) as answer:
                            assert answer.status == 204
                        await _until(lambda: not shown())
                        if trial >= warmup:
                            added.append(middle - start)
                            removed.append(time.perf_counter() - middle)
        finally:
            await runner.cleanup()
    return {
        "scenario": "project-list-push",
        "trials": trials,
        "added_to_list_shown": _summary(added),
        "removed_from_list_gone": _summary(removed),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.project_lists``: print the figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.trials, args.warmup))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
