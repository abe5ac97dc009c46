"""What authenticating a frame stream costs: a TCP connect alone versus connect plus handshake.

The handshake runs once per (gateway, board host) link, never per frame, so this
is the price of opening a link. Both ends run in this process on loopback, so the
CPU figure covers both sides of each handshake. Writes JSON.

    python -m bench.stream_handshake --links 500 --out /tmp/stream_handshake.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from actors.handshake import new_cluster_secret
from actors.stream import StreamGuard, open_stream


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p99/max/mean of a list of milliseconds."""
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50), 4),
        "p99": round(at(0.99), 4),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


async def measure(links: int) -> dict[str, Any]:
    """Open ``links`` connections each way; wall time per link and CPU per link."""
    secret = new_cluster_secret()
    guard = StreamGuard(secret, timeout=10.0)

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await guard.admit(reader, writer):
            await reader.read(1)
            writer.close()

    plain_server = await asyncio.start_server(plain, "127.0.0.1", 0)
    guarded_server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    plain_port = plain_server.sockets[0].getsockname()[1]
    guarded_port = guarded_server.sockets[0].getsockname()[1]

    async def connect_only() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", plain_port)
        writer.close()
        await writer.wait_closed()

    async def connect_and_authenticate() -> None:
        link = await open_stream("127.0.0.1", guarded_port, secret=secret)
        await link.close()

    results: dict[str, Any] = {}
    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "tcp_connect": connect_only,
        "connect_and_handshake": connect_and_authenticate,
    }
    for name, open_link in cases.items():
        for _ in range(min(100, links)):  # warm-up
            await open_link()
        samples: list[float] = []
        cpu_start = time.process_time()
        for _ in range(links):
            start = time.perf_counter()
            await open_link()
            samples.append((time.perf_counter() - start) * 1000)
        cpu_us = (time.process_time() - cpu_start) * 1e6 / links
        results[name] = {"per_link_ms": percentiles(samples), "cpu_per_link_us": round(cpu_us, 1)}
    results["handshake_extra_p50_ms"] = round(
        results["connect_and_handshake"]["per_link_ms"]["p50"]
        - results["tcp_connect"]["per_link_ms"]["p50"],
        4,
    )
    results["refused"] = guard.refused
    for server in (plain_server, guarded_server):
        server.close()
        await server.wait_closed()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.stream_handshake", description=__doc__)
    parser.add_argument("--links", type=int, default=500)
    parser.add_argument("--out", default="bench/results/stream_handshake.json")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(max(1, min(args.links, 100_000))))
    report = {
        "benchmark": "stream_handshake",
        "parameters": {"links": args.links},
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
