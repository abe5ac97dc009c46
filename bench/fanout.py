"""Fan-out load against a server you started: ``python -m bench fanout --url ...``.

The same load as the hot-board and many-boards scenarios of ``python -m bench
run`` (see :mod:`bench.scenarios.fanout`), aimed at any running y-websocket or
Hocuspocus server instead of one the bench starts. With ``--server-pid`` (local
servers only) it also reports the CPU of that process and every process below
it (Ray's included) over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import psutil

from bench.processes import ServerTree
from bench.scenarios.base import RunContext
from bench.scenarios.fanout import HOT_BOARD, run_fanout
from bench.stats import summarize_ms


def tree_cpu_s(trees: list[ServerTree]) -> float:
    """CPU seconds used so far by the live processes of ``trees``."""
    total = 0.0
    for tree in trees:
        for process in tree.refresh(session_scan_every=0.0):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench fanout", description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="base WebSocket URL")
    parser.add_argument("--wire", choices=["y-websocket", "hocuspocus"], default="y-websocket")
    parser.add_argument("--boards", type=int, default=1)
    parser.add_argument("--clients", type=int, default=10, help="clients per board")
    parser.add_argument("--writers", type=int, default=1, help="writing clients per board")
    parser.add_argument("--rate", type=float, default=10.0, help="updates/s per writer")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--drain", type=float, default=3.0, help="max seconds to await stragglers")
    parser.add_argument("--payload-bytes", type=int, default=32, help="value size of each edit")
    parser.add_argument("--no-awareness", action="store_true", help="clients send no awareness")
    parser.add_argument("--out", help="write the JSON report here (default: stdout)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--server-pid", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    if not 0 <= args.writers <= args.clients or args.rate <= 0 or args.clients < 1:
        parser.error("need 0 <= writers <= clients, clients >= 1 and rate > 0")
    return args


def main(argv: Sequence[str]) -> int:
    """Run the load once; print a one-line summary to stderr."""
    args = parse_args(argv)
    params: dict[str, Any] = {
        **HOT_BOARD,
        "boards": args.boards,
        "clients_per_board": args.clients,
        "writers": args.writers,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "drain": args.drain,
        "payload_bytes": args.payload_bytes,
        "awareness": not args.no_awareness,
    }
    ctx = RunContext(url=args.url, wire_name=args.wire, params=params)
    trees = [ServerTree(pid) for pid in args.server_pid]
    cpu_before = tree_cpu_s(trees)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    measured = runner(run_fanout(ctx, params))
    report: dict[str, Any] = {
        "benchmark": "fanout",
        "server_url": args.url,
        "parameters": params,
        "latency_ms": summarize_ms(measured.latencies_s),
        "lost": measured.lost,
        **measured.loadgen_report(),
        "details": measured.details,
    }
    if trees:
        # Connect and drain time included: a bound, not the window's exact figure.
        report["server_cpu_s_whole_run"] = round(tree_cpu_s(trees) - cpu_before, 3)
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    else:
        print(text)
    latency = report["latency_ms"]
    print(
        f"fanout {args.boards}x{args.clients} w{args.writers}@{args.rate:g}/s: "
        f"p50 {latency['p50']} p99 {latency['p99']} max {latency['max']} ms, "
        f"lost {measured.lost}/{measured.details['expected_deliveries']}, "
        f"loadgen cpu {report['loadgen_cpu_fraction']:.0%}"
        + (" (LOADGEN-BOUND)" if report["loadgen_bound"] else ""),
        file=sys.stderr,
    )
    return 0
