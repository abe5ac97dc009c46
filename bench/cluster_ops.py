"""Operating a cluster, timed: failover after a node is killed, a drain, and a clean stop.

Runs on a multi-node Ray cluster on this machine (the harness of tests/cluster/nodes.py:
each node at its own loopback address, Ray with token auth, `boardcast serve` per node):

* ``failover``: a worker node's processes get SIGKILL while a client writes to each of
  its boards through another node's gateway; ``serving_again_s`` is the time from the kill
  until a fresh client on the same board has an update acknowledged (durable). A node is
  added back after every trial.
* ``drain``: SIGTERM to a worker node's `boardcast serve`; ``exit_s`` is when it exited,
  ``serving_again_s`` as above for its boards.
* ``stop``: `boardcast serve` on its own (a local Ray), SIGTERM to it alone
  (``one``) and to every process of it at once, Ray's included (``all``, systemd's
  KillMode=control-group); ``exit_s`` until the serve process exited.

    .venv/bin/python -m bench.cluster_ops --trials 3 --out bench/results/cluster-ops.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
    found, index = [], 0
    while len(found) < count:
        board = f"{prefix}-{index}"
        if rendezvous_host(board, names) == target:
            found.append(board)
        index += 1
    return found


async def writable_after(url: str, board: str, since: float) -> float:
    """Seconds from ``since`` until a fresh client gets an update on ``board`` acknowledged."""
    deadline = since + PROBE_TIMEOUT_S
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            async with BoardClient(url, board) as client:
                await client.synced(timeout=5)
                client.doc.get("tasks", type=Map)[f"probe-{attempt}"] = attempt
                await client.persisted(timeout=5)
                return time.monotonic() - since
        except Exception:
            await asyncio.sleep(0.05)
    return float("nan")


async def keep_writing(url: str, board: str, stop: asyncio.Event) -> None:
    """Load on the board until ``stop``: one write every 50 ms, reconnecting as needed."""
    index = 0
    while not stop.is_set():
        try:
            async with BoardClient(url, board) as client:
                await client.synced(timeout=5)
                while not stop.is_set() and client.connected:
                    client.doc.get("tasks", type=Map)[f"load-{index}"] = index
                    index += 1
                    await asyncio.sleep(0.05)
        except Exception:
            await asyncio.sleep(0.1)


async def failover_trial(cluster: LocalCluster, survivor: NodeProcess) -> dict[str, Any]:
    """Kill one worker node while its boards are written; time until they serve again."""
    victim = next(ip for ip in sorted(cluster.servers) if ip != survivor.ip)
    boards = boards_on(survivor, victim, 2, f"failover-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    load = [asyncio.create_task(keep_writing(survivor.url, b, stop)) for b in boards]
    await asyncio.sleep(2.0)
    killed_at = time.monotonic()
    processes = cluster.kill_node(victim)
    times = await asyncio.gather(*(writable_after(survivor.url, b, killed_at) for b in boards))
    stop.set()
    await asyncio.gather(*load, return_exceptions=True)
    await asyncio.to_thread(cluster.add_node)
    return {"processes_killed": processes, "serving_again_s": list(times)}


async def drain_trial(cluster: LocalCluster, survivor: NodeProcess) -> dict[str, Any]:
    """SIGTERM one worker node's serve while its boards are written."""
    leaving_ip = next(ip for ip in sorted(cluster.servers) if ip != survivor.ip)
    leaving = cluster.servers.pop(leaving_ip)
    boards = boards_on(survivor, leaving_ip, 2, f"drain-{uuid.uuid4().hex[:6]}")
    stop = asyncio.Event()
    load = [asyncio.create_task(keep_writing(survivor.url, b, stop)) for b in boards]
    await asyncio.sleep(2.0)
    started = time.monotonic()
    exited = asyncio.create_task(asyncio.to_thread(leaving.stop))
    times = await asyncio.gather(*(writable_after(survivor.url, b, started) for b in boards))
    code = await exited
    exit_s = time.monotonic() - started
    stop.set()
    await asyncio.gather(*load, return_exceptions=True)
    cluster.kill_node(leaving_ip)
    await asyncio.to_thread(cluster.add_node)
    return {"exit_code": code, "exit_s": exit_s, "serving_again_s": list(times)}


def stop_trial(mode: str) -> dict[str, Any]:
    """`boardcast serve` on a local Ray; SIGTERM to it (``one``) or to all its processes."""
    with tempfile.TemporaryDirectory(prefix="bc-stop-") as data:
        process = subprocess.Popen(
            [*boardcast_command(), "serve", "--port", "0", "--data-dir", data],
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
            process.communicate(timeout=60)
            exit_s = time.monotonic() - started
        except subprocess.TimeoutExpired:
            exit_s = float("nan")
        # Whatever is left of it (a hung stop) goes, by pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return {"mode": mode, "exit_code": process.returncode, "exit_s": exit_s}


def summary(values: list[float]) -> dict[str, float]:
    """Median and extremes."""
    finite = [v for v in values if v == v]
    if not finite:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


async def run_cluster(trials: int) -> dict[str, Any]:
    """The failover and drain trials on one three-node cluster."""
    with tempfile.TemporaryDirectory(prefix="bc-ops-") as data:
        cluster = LocalCluster(Path(data), cluster_name=f"ops{uuid.uuid4().hex[:6]}")
        try:
            head = cluster.start_head()
            survivor = cluster.serve(head)
            cluster.add_node()
            cluster.add_node()
            failovers = [await failover_trial(cluster, survivor) for _ in range(trials)]
            drains = [await drain_trial(cluster, survivor) for _ in range(trials)]
        finally:
            cluster.stop()
    return {"failover": failovers, "drain": drains}


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
        "failover_serving_again_s": summary(
            [t for trial in report["failover"] for t in trial["serving_again_s"]]
        ),
        "drain_serving_again_s": summary(
            [t for trial in report["drain"] for t in trial["serving_again_s"]]
        ),
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
