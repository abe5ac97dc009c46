"""Operating a cluster, timed: a drain and a clean stop.

Runs on a multi-node Ray cluster on this machine (the harness of tests/cluster/nodes.py:
each node at its own loopback address, Ray with token auth, `boardcast serve` per node).
A node killed outright is the bench's ``failover`` scenario
(``python -m bench run failover``, bench/scenarios/failover.py).

* ``drain``: SIGTERM to a worker node's `boardcast serve` while a client writes to each of
  its boards through another node's gateway; ``exit_s`` is when it exited,
  ``serving_again_s`` the time from the SIGTERM until a fresh client on the same board has
  an update acknowledged (durable). A node is added back after every trial.
* ``stop``: `boardcast serve` on its own (a local Ray), SIGTERM to it alone
  (``one``) and to every process of it at once, Ray's included (``all``, systemd's
  KillMode=control-group); ``exit_s`` until the serve process exited.

    .venv/bin/python -m bench.cluster_ops --trials 3 --out bench/results/cluster-ops.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from pycrdt import Map

from actors.directory import rendezvous_host
from clients.provider import BoardClient
from tests.cluster.nodes import LocalCluster, NodeProcess
from tests.interop.servers import boardcast_command

PROBE_TIMEOUT_S = 60.0


def hosts(server: NodeProcess) -> list[dict[str, Any]]:
    """The board hosts a gateway sees."""
    return list(server.get_json("/readyz")["hosts"])


def boards_on(server: NodeProcess, ip: str, count: int, prefix: str) -> list[str]:
    """``count`` boards that placement puts on node ``ip``'s host."""
    seen = hosts(server)
    names = [h["name"] for h in seen]
    target = next(h["name"] for h in seen if h["node_ip"] == ip)
    found: list[str] = []
    index = 0
    while len(found) < count:
        board = f"{prefix}-{index}"
        if rendezvous_host(board, names) == target:
            found.append(board)
        index += 1
    return found


class Writer:
    """Writes to one board every 50 ms through one gateway, reconnecting when cut off.

    Records when each acknowledgement arrived and on which connection, so a trial can
    tell when the board took durable writes again after an event.
    """

    def __init__(self, url: str, board: str) -> None:
        self.url = url
        self.board = board
        self.acks: list[tuple[int, float]] = []  # (connection number, time)
        self.connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop``."""
        index = 0
        while not stop.is_set():
            try:
                async with BoardClient(self.url, self.board) as client:
                    await client.synced(timeout=5)
                    self.connections += 1
                    seen = client.persisted_seq
                    while not stop.is_set() and client.connected:
                        client.doc.get("tasks", type=Map)[f"load-{index}"] = index
                        index += 1
                        await asyncio.sleep(0.05)
                        if client.persisted_seq > seen:
                            seen = client.persisted_seq
                            self.acks.append((self.connections, time.monotonic()))
            except Exception:
                await asyncio.sleep(0.05)

    def back_after(self, event: float, connection: int) -> float:
        """Seconds from ``event`` to the first acknowledgement on a later connection."""
        later = [at for number, at in self.acks if number > connection and at > event]
        return min(later) - event if later else float("nan")

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledgement, from just before ``since``."""
        times = [at for _, at in self.acks if at >= since - 1.0]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return max(gaps) if gaps else float("nan")


async def through(
    writers: list[Writer], event: Any, settle_s: float = 2.0
) -> tuple[float, list[int]]:
    """Run ``event()`` while the writers write; its start time and their connection numbers."""
    await asyncio.sleep(settle_s)
    connections = [w.connections for w in writers]
    started = time.monotonic()
    await event()
    return started, connections


async def moved_boards(
    cluster: LocalCluster, survivor: NodeProcess, ip: str, prefix: str, event: Any
) -> dict[str, Any]:
    """Write to two of node ``ip``'s boards through the survivor across ``event()``."""
    boards = boards_on(survivor, ip, 2, f"{prefix}-{uuid.uuid4().hex[:6]}")
    writers = [Writer(survivor.url, board) for board in boards]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in writers]
    try:
        started, connections = await through(writers, event)
        deadline = time.monotonic() + PROBE_TIMEOUT_S

        def waiting() -> bool:
            pairs = zip(writers, connections, strict=True)
            return any(math.isnan(w.back_after(started, c)) for w, c in pairs)

        while time.monotonic() < deadline and waiting():
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "serving_again_s": [
            w.back_after(started, c) for w, c in zip(writers, connections, strict=True)
        ],
        "longest_gap_s": [w.longest_gap(started) for w in writers],
    }


async def drain_trial(cluster: LocalCluster, survivor: NodeProcess) -> dict[str, Any]:
    """SIGTERM one worker node's serve while its boards are written."""
    leaving_ip = next(ip for ip in sorted(cluster.servers) if ip != survivor.ip)
    leaving = cluster.servers[leaving_ip]
    stopping: list[asyncio.Task[tuple[int | None, float]]] = []

    async def stop_and_time() -> tuple[int | None, float]:
        started = time.monotonic()
        code = await asyncio.to_thread(leaving.stop)
        return code, time.monotonic() - started

    async def drain() -> None:
        stopping.append(asyncio.create_task(stop_and_time()))

    result = await moved_boards(cluster, survivor, leaving_ip, "drain", drain)
    code, exit_s = await stopping[0]
    cluster.servers.pop(leaving_ip)
    cluster.kill_node(leaving_ip)
    await asyncio.to_thread(cluster.add_node)
    return {"exit_code": code, "exit_s": exit_s, **result}


def stop_trial(mode: str) -> dict[str, Any]:
    """`boardcast serve` on a local Ray; SIGTERM to it (``one``) or to all its processes."""
    with tempfile.TemporaryDirectory(prefix="bc-stop-") as data:
        process = subprocess.Popen(
            [*boardcast_command(), "serve", "--port", "0", "--data-dir", data, "--auth", "none"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "ready" in line:
                break
        time.sleep(2.0)
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)] if mode == "all" else [root]
        started = time.monotonic()
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
            exit_s = time.monotonic() - started
        except subprocess.TimeoutExpired:
            output, exit_s = "", float("nan")
        # Whatever is left of it (a hung stop) goes, by pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        said = [line for line in output.splitlines() if "boardcast" in line.lower()]
        return {
            "mode": mode,
            "exit_code": process.returncode,
            "exit_s": exit_s,
            "log_tail": said[-4:],
        }


def summary(values: list[float]) -> dict[str, float]:
    """Median and extremes."""
    finite = [v for v in values if v == v]
    if not finite:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


async def run_cluster(trials: int) -> dict[str, Any]:
    """The drain trials on one three-node cluster."""
    with tempfile.TemporaryDirectory(prefix="bc-ops-") as data:
        cluster = LocalCluster(Path(data), cluster_name=f"ops{uuid.uuid4().hex[:6]}")
        try:
            head = cluster.start_head()
            survivor = cluster.serve(head)
            cluster.add_node()
            cluster.add_node()
            drains = [await drain_trial(cluster, survivor) for _ in range(trials)]
        finally:
            cluster.stop()
    return {"drain": drains}


def main(argv: Sequence[str] | None = None) -> int:
    """Run every trial and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", default="bench/results/cluster-ops.json")
    parser.add_argument("--skip-stop", action="store_true", help="only the multi-node trials")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "scenario": "cluster-ops",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "trials": args.trials,
        **asyncio.run(run_cluster(args.trials)),
    }
    if not args.skip_stop:
        report["stop"] = [stop_trial(mode) for mode in ("one", "all") for _ in range(args.trials)]
    report["summary"] = {
        **{
            f"{kind}_{key}": summary([t for trial in report[kind] for t in trial[key]])
            for kind in ("drain",)
            for key in ("serving_again_s", "longest_gap_s")
        },
        "drain_exit_s": summary([trial["exit_s"] for trial in report["drain"]]),
        **{
            f"stop_{mode}_exit_s": summary(
                [t["exit_s"] for t in report.get("stop", []) if t["mode"] == mode]
            )
            for mode in ("one", "all")
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
