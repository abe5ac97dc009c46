"""``python -m bench run SCENARIO --targets a,b --out DIR``: start each target, run, report.

For every target and repeat: start the server on a free loopback port, start the
sampler on its processes, run the scenario's load, stop everything, and read the
server's CPU and memory over the scenario's measured window. Writes
DIR/results.json (one object per target: medians over repeats, and every run),
DIR/summary.md, DIR/*.png, and per-run raw data under DIR/runs/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.compare import DELIVERY_LATENCY, cpu_us_per_update, versus_reference
from bench.report import aggregate, write_summary
from bench.samples import read_samples, window_stats
from bench.scenarios import capacity, failover, fanout, host_crash, opens
from bench.scenarios.base import Measured, RunContext
from bench.stats import summarize_ms
from bench.targets import TARGETS, ServerProcess, Target

SETTLE_S = 2.0
SAMPLER_TAIL_S = 1.5


@dataclass(frozen=True)
class Scenario:
    """A scenario: its defaults, its load, and which targets it applies to."""

    name: str
    defaults: dict[str, Any]
    run: Callable[[RunContext], Awaitable[Measured]]
    latency_is: str
    applies: Callable[[Target], bool] = lambda target: True
    not_applicable: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # Starts the servers it measures itself (a multi-node cluster): no target process.
    own_servers: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("hot-board", fanout.HOT_BOARD, fanout.hot_board, "update delivery"),
        Scenario("many-boards", fanout.MANY_BOARDS, fanout.many_boards, "update delivery"),
        Scenario(
            "idle-capacity", capacity.IDLE_CAPACITY, capacity.idle_capacity, "connect to synced"
        ),
        Scenario(
            "cold-opens",
            opens.COLD_OPENS,
            opens.cold_opens,
            "open to synced (after restart)",
            applies=lambda target: target.persistent,
            not_applicable="runs in memory as shipped here: nothing survives a restart",
            # Boards leave memory soon after seeding, so seeding 1,000 large boards stays small.
            env={"BOARDCAST_IDLE_SECONDS": "5"},
        ),
        Scenario("large-board", opens.LARGE_BOARD, opens.large_board, "late joiner to synced"),
        Scenario(
            "failover",
            failover.FAILOVER,
            failover.failover,
            "update delivery",
            applies=lambda target: target.name == "boardcast",
            not_applicable="runs Boardcast's own multi-node cluster (one shared SQLite store)",
            own_servers=True,
        ),
        Scenario(
            "host-crash",
            host_crash.HOST_CRASH,
            host_crash.host_crash,
            "update delivery",
            applies=lambda target: target.ray,
            not_applicable="no Ray board hosts to kill",
        ),
    )
}

# Command-line flags that override a scenario default of the same name.
OVERRIDES: dict[str, type] = {
    "duration": float,
    "warmup": float,
    "boards": int,
    "clients_per_board": int,
    "writers": int,
    "rate": float,
    "tasks": int,
    "joins": int,
    "hold": float,
    "kill_after": float,
    "settle": float,
}


def machine_info() -> dict[str, Any]:
    """Where the figures come from."""
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def run_async(coroutine: Awaitable[Measured]) -> Measured:
    """Run the load on uvloop when installed, like the server's gateway."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]


def run_once(
    scenario: Scenario,
    target: Target,
    params: dict[str, Any],
    out: Path,
    repeat: int,
    *,
    profile: bool = False,
) -> dict[str, Any]:
    """One repeat of one scenario on one target; raw data goes to ``out/runs``."""
    tag = f"{target.name}-{scenario.name}-{repeat}"
    samples_path = out / "samples" / f"{tag}.jsonl"
    samples_path.unlink(missing_ok=True)
    server: ServerProcess | None = None
    load_before = os.getloadavg()
    started = time.monotonic()
    if scenario.own_servers:
        ctx = RunContext(url="", wire_name=target.wire, params=params)
        measured = run_async(scenario.run(ctx))
    else:
        server = ServerProcess(target, out / "logs" / f"{tag}.log", extra_env=scenario.env)
        ctx = RunContext.for_server(server, samples_path, params)
        if profile:
            ctx.profile_dir = out / "profiles" / tag
        try:
            server.start()
            ctx.start_sampler()
            time.sleep(SETTLE_S)
            measured = run_async(scenario.run(ctx))
            time.sleep(SAMPLER_TAIL_S)  # one more sample after the window closes
        finally:
            ctx.stop_sampler()
            server.stop()
            server.cleanup()
    samples = read_samples(samples_path)
    record: dict[str, Any] = {
        "target": target.name,
        "scenario": scenario.name,
        "repeat": repeat,
        "parameters": params,
        "latency_is": scenario.latency_is,
        "latency_ms": summarize_ms(measured.latencies_s),
        "lost": measured.lost,
        **window_stats(samples, *measured.window),
        **measured.loadgen_report(),
        "window_s": round(measured.window[1] - measured.window[0], 3),
        "server_ready_s": None if server is None else round(server.ready_s, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.monotonic() - started, 1),
        "details": measured.details,
    }
    if scenario.latency_is == DELIVERY_LATENCY:
        # One latency sample per (measured update, recipient): the deliveries the CPU paid for.
        record["server_cpu_us_per_update"] = cpu_us_per_update(
            record["server_cpu_s"], len(measured.latencies_s)
        )
    if ctx.profiles:
        record["profile"] = ctx.profiles
    busy, server_cpu = record["machine_busy_cpus_mean"], record["server_cpu_fraction"]
    if busy is not None and server_cpu is not None:
        # CPUs kept busy by other work on the machine during the window.
        record["machine_other_cpus"] = round(
            max(0.0, busy - server_cpu - record["loadgen_cpu_fraction"]), 2
        )
    raw = {
        "record": record,
        "window": measured.window,
        "latencies_s": measured.latencies_s,
        "timeline": measured.timeline,
        "samples": samples,
    }
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with open(out / "runs" / f"{tag}.json", "w", encoding="utf-8") as file:
        json.dump(raw, file)
    return record


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The ``run`` command line."""
    parser = argparse.ArgumentParser(prog="python -m bench run", description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--targets", default="boardcast", help=f"comma list of {list(TARGETS)}")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", required=True, help="directory for results")
    parser.add_argument("--no-awareness", action="store_true", help="clients send no awareness")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server's Python processes (window)"
    )
    for name, kind in OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets.split(",") if t not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {list(TARGETS)}")
    return args


def main(argv: Sequence[str]) -> int:
    """Run a scenario on every target, ``--repeat`` times each; write the reports."""
    args = parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    params = dict(scenario.defaults)
    for name in OVERRIDES:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in params:
            print(
                f"--{name.replace('_', '-')} is not a parameter of {scenario.name}", file=sys.stderr
            )
            return 2
        params[name] = value
    if args.no_awareness:
        params["awareness"] = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench run " + " ".join(argv)
    names = args.targets.split(",")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    # Round robin (every target once, then again): load from other work on the
    # machine then spreads over all targets instead of hitting one.
    for repeat in range(args.repeat):
        for name in names:
            target = TARGETS[name]
            if not scenario.applies(target):
                continue
            print(f"[bench] {scenario.name} on {name}, run {repeat + 1}/{args.repeat}", flush=True)
            record = run_once(scenario, target, params, out, repeat, profile=args.profile)
            runs[name].append(record)
            print(f"[bench]   {_one_line(record)}", flush=True)
    results: list[dict[str, Any]] = []
    for name in names:
        if runs[name]:
            results.append(aggregate(runs[name]))
        else:
            results.append(
                {"target": name, "scenario": scenario.name, "parameters": params,
                 "not_applicable": scenario.not_applicable}
            )  # fmt: skip
    meta = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    comparison = versus_reference(results)
    for entry in results:
        entry["run_info"] = meta
        if entry["target"] in comparison:
            entry["versus_reference"] = comparison[entry["target"]]
    with open(out / "results.json", "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    write_summary(out / "summary.md", scenario.name, results, meta)
    if not args.no_plots:
        with contextlib.suppress(ImportError):
            from bench.plots import plot_all

            plot_all(out, scenario.name)
    print((out / "summary.md").read_text(), flush=True)
    return 0


def _one_line(record: dict[str, Any]) -> str:
    latency = record["latency_ms"]
    return (
        f"p50 {latency['p50']} p99 {latency['p99']} max {latency['max']} ms "
        f"(n={latency['count']}), lost {record['lost']}, server cpu {record['server_cpu_s']} s, "
        f"uss {record['server_uss_mb']} MB, loadgen {record['loadgen_cpu_fraction']:.0%}"
        + (
            f", {record['server_cpu_us_per_update']} us CPU per update"
            if record.get("server_cpu_us_per_update") is not None
            else ""
        )
        + (" LOADGEN-BOUND" if record["loadgen_bound"] else "")
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
