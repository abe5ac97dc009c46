"""Webhook delivery against a real server: ``python -m bench webhooks``.

Starts ``boardcast serve`` (Ray board hosts, the worker actor with the webhook plugin, the
embedded SQLite store) on a free loopback port, registers a webhook to a receiver in this
process (it checks every signature), and reports, as JSON:

- ``latency``: from a task creation acknowledged by REST (the change is durable) until
  the receiver got the signed call for it: p50/p99 over ``--events`` creations made one at
  a time (after ``--warmup`` of them), in milliseconds;
- ``throughput``: ``--burst`` tasks created by one bulk request (one update, that many
  events); deliveries per second from the bulk's answer until the receiver got them all,
  median of ``--repeat`` runs.

The path measured: the host's group commit, the event log, the worker runtime's poll
(``BOARDCAST_WORKER_POLL_SECONDS``, 0.1 s by default, the floor of the latency), the
webhook worker recording deliveries, the delivery loop's claim, the signed POST.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.targets import TARGETS, ServerProcess


class Receiver:
    """Verifies each call's signature and notes when each task's call arrived."""

    def __init__(self) -> None:
        self.key = b""
        self.arrived: dict[str, float] = {}
        self.bad = 0
        self.calls = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        self.calls += 1
        signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}."
        digest = hmac.new(self.key, signed.encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(digest).decode()
        if expected not in request.headers["webhook-signature"].split(" "):
            self.bad += 1
            return web.Response(status=401)
        event = json.loads(body)
        self.arrived.setdefault(event["data"]["task_id"], now)
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, task_ids: set[str], timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while not task_ids <= self.arrived.keys():
                self.changed.clear()
                await self.changed.wait()


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
        "samples": len(ordered),
    }


async def measure(args: argparse.Namespace, server: ServerProcess) -> dict[str, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(
            server.http_url, timeout=aiohttp.ClientTimeout(total=300)
        ) as http:

            async def call(method: str, path: str, body: Any) -> Any:
                async with http.request(method, path, json=body) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"{method} {path}: {response.status}")
                    return await response.json()

            project = await call("POST", "/v1/projects", {"name": "bench"})
            board = await call("POST", f"/v1/projects/{project['id']}/boards", {"name": "b"})
            hook = await call(
                "POST",
                f"/v1/projects/{project['id']}/webhooks",
                {"url": f"http://127.0.0.1:{port}/hooks", "events": ["task.created"]},
            )
            receiver.key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
            tasks = f"/v1/boards/{board['id']}/tasks"

            latencies: list[float] = []
            for n in range(args.warmup + args.events):
                task = await call("POST", tasks, {"title": f"t{n}", "column": "todo"})
                acknowledged = time.perf_counter()
                await receiver.wait_for({task["id"]})
                if n >= args.warmup:
                    latencies.append((receiver.arrived[task["id"]] - acknowledged) * 1000)

            rates: list[float] = []
            for run in range(args.repeat):
                bulk = {
                    "tasks": [{"title": f"b{run}-{n}", "column": "todo"} for n in range(args.burst)]
                }
                answer = await call("POST", f"{tasks}/bulk", bulk)
                acknowledged = time.perf_counter()
                made = set(answer["created"])
                await receiver.wait_for(made)
                last = max(receiver.arrived[task_id] for task_id in made)
                rates.append(len(made) / (last - acknowledged))
    finally:
        await runner.cleanup()
    return {
        "target": server.target.name,
        "latency": _percentiles(latencies),
        "throughput": {
            "burst": args.burst,
            "deliveries_per_s_median": round(statistics.median(rates), 1),
            "runs": [round(rate, 1) for rate in rates],
        },
        "bad_signatures": receiver.bad,
        "calls": receiver.calls,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webhooks", description=__doc__)
    parser.add_argument("--target", choices=["boardcast", "boardcast-memory"], default="boardcast")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--burst", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    log = Path(tempfile.mkdtemp(prefix="bench-webhooks-")) / "server.log"
    server = ServerProcess(
        TARGETS[args.target], log, extra_env={"BOARDCAST_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}
    )
    server.start()
    try:
        result = asyncio.run(measure(args, server))
    finally:
        server.stop()
        server.cleanup()
    report = {"command": "python -m bench webhooks " + " ".join(argv), **result}
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
