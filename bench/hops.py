"""How much one gateway-to-host hop costs: a Ray actor call versus a frame stream.

Both paths carry the same message (a board id, a connection id and a 64-byte
frame) to an async Ray actor and back, one at a time (latency) and in bursts
of ``--burst`` messages per event-loop tick (the batched case). Writes JSON.

    python -m bench hops --messages 2000 --burst 50 --out bench/results/hops.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

from actors.stream import StreamLink

FRAME = bytes(64)


class EchoActor:
    """Answers a Ray call, and echoes every message of a frame stream."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None

    async def echo(self, messages: list[Any]) -> list[Any]:
        """The Ray-call path: a batch in, the same batch out."""
        return messages

    async def endpoint(self) -> int:
        """Start the stream server; return its port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = StreamLink(reader, writer)
        while (batch := await link.read_batches()) is not None:
            for message in batch:
                link.send(message)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of a list of milliseconds."""
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50), 4),
        "p95": round(at(0.95), 4),
        "p99": round(at(0.99), 4),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


async def measure(messages: int, burst: int) -> dict[str, Any]:
    """Run both paths, single messages and bursts; return the figures."""
    actor: Any = ray.remote(num_cpus=0)(EchoActor).remote()  # Ray's stubs miss .remote
    port = await actor.endpoint.remote()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = StreamLink(reader, writer)
    message = ["f", "board", 1, FRAME]
    results: dict[str, Any] = {}

    async def ray_round_trip(count: int) -> None:
        await actor.echo.remote([message] * count)

    async def stream_round_trip(count: int) -> None:
        for _ in range(count):
            link.send(message)
        received = 0
        while received < count:
            batch = await link.read_batches()
            assert batch is not None
            received += len(batch)

    for name, round_trip in (("ray_call", ray_round_trip), ("stream", stream_round_trip)):
        for _ in range(200):  # warm-up
            await round_trip(1)
        single: list[float] = []
        for _ in range(messages):
            start = time.perf_counter()
            await round_trip(1)
            single.append((time.perf_counter() - start) * 1000)
        bursts: list[float] = []
        for _ in range(max(1, messages // burst)):
            start = time.perf_counter()
            await round_trip(burst)
            bursts.append((time.perf_counter() - start) * 1000)
        results[name] = {
            "single_round_trip_ms": percentiles(single),
            f"burst_of_{burst}_round_trip_ms": percentiles(bursts),
            "per_message_in_burst_us": round(statistics.median(bursts) * 1000 / burst, 2),
        }
    await link.close()
    ray.kill(actor)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench hops", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--out", default="bench/results/hops.json")
    args = parser.parse_args(argv)
    ray.init(include_dashboard=False, logging_level=logging.WARNING, num_cpus=2)
    try:
        figures = asyncio.run(measure(args.messages, args.burst))
    finally:
        ray.shutdown()
    report = {
        "benchmark": "hops",
        "parameters": {"messages": args.messages, "burst": args.burst, "frame_bytes": len(FRAME)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": figures,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
