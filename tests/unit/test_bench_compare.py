"""The bench's CPU per delivered update and its ratios to the reference server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from bench.compare import cpu_us_per_update, ratio, versus_reference
from bench.report import aggregate, write_summary


def run_record(
    target: str, cpu_s: float, deliveries: int, p50: float, p99: float
) -> dict[str, Any]:
    """A run record as bench.runner.run_once writes it, for an update-delivery scenario."""
    return {
        "target": target,
        "scenario": "hot-board",
        "repeat": 0,
        "parameters": {"boards": 1},
        "latency_is": "update delivery",
        "latency_ms": {"count": deliveries, "p50": p50, "p95": p99, "p99": p99, "max": p99},
        "lost": 0,
        "loadgen_bound": False,
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_update": cpu_us_per_update(cpu_s, deliveries),
        "details": {},
    }


def test_cpu_per_update_is_cpu_seconds_over_deliveries_in_microseconds() -> None:
    # The hot-board run of 2026-11-26: 3.62 s of server CPU for 49,000 deliveries.
    assert cpu_us_per_update(3.62, 49_000) == 73.88
    assert cpu_us_per_update(1.0, 1) == 1_000_000.0
    assert cpu_us_per_update(None, 10) is None
    assert cpu_us_per_update(1.0, 0) is None


def test_ratio_is_target_over_reference_and_missing_without_a_reference() -> None:
    assert ratio(3.62, 1.68) == 2.15
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None


def test_versus_reference_compares_cpu_per_update_not_only_cpu_seconds() -> None:
    # Same CPU seconds, but the target delivered half as many updates: twice the cost.
    results = [
        aggregate([run_record("boardcast", 2.0, 10_000, 3.0, 9.0)]),
        aggregate([run_record("y-websocket", 2.0, 20_000, 2.0, 6.0)]),
    ]
    comparison = versus_reference(results)
    assert comparison["boardcast"] == {
        "p50_ratio": 1.5,
        "p99_ratio": 1.5,
        "server_cpu_s_ratio": 1.0,
        "server_cpu_us_per_update_ratio": 2.0,
    }
    assert comparison["y-websocket"]["server_cpu_us_per_update_ratio"] == 1.0


def test_versus_reference_is_empty_when_the_reference_did_not_run() -> None:
    results = [aggregate([run_record("boardcast", 2.0, 10_000, 3.0, 9.0)])]
    assert versus_reference(results) == {}
    not_run = {"target": "y-websocket", "scenario": "hot-board", "not_applicable": "no"}
    assert versus_reference([*results, not_run]) == {}


def test_repeats_fold_to_the_median_cost_per_update() -> None:
    runs = [
        run_record("boardcast", 1.0, 10_000, 1.0, 2.0),  # 100 us
        run_record("boardcast", 3.0, 10_000, 1.0, 2.0),  # 300 us
        run_record("boardcast", 2.5, 10_000, 1.0, 2.0),  # 250 us
    ]
    assert aggregate(runs)["server_cpu_us_per_update"] == 250.0


def test_summary_shows_the_cost_per_update_and_its_ratio(tmp_path: Path) -> None:
    results = [
        aggregate([run_record("boardcast", 3.0, 10_000, 3.0, 9.0)]),
        aggregate([run_record("y-websocket", 1.0, 10_000, 2.0, 6.0)]),
    ]
    meta = {
        "command": "python -m bench run hot-board",
        "date": "2026-12-02T00:00:00+00:00",
        "machine": {"cpus": 2, "memory_gb": 24.0, "python": "3.11"},
    }
    write_summary(tmp_path / "summary.md", "hot-board", results, meta)
    summary = (tmp_path / "summary.md").read_text()
    assert "| boardcast | 300 | 3 | 1.5 | 1.5 | 3 |" in summary
    assert "| y-websocket | 100 | 1 | 1 | 1 | 1 |" in summary
    json.dumps(results)  # what results.json holds stays serialisable


def test_the_cold_open_wait_sums_boards_in_memory_over_hosts() -> None:
    from bench.scenarios.opens import boards_in_memory

    page = (
        "# HELP boardcast_host_boards Boards in memory on the host\n"
        "# TYPE boardcast_host_boards gauge\n"
        'boardcast_host_boards{host="h-0",node="n"} 3.0\n'
        'boardcast_host_boards{host="h-1",node="n"} 1.0\n'
        'boardcast_host_boards_total{host="h-1",node="n"} 9.0\n'
        'boardcast_host_connections{host="h-0",node="n"} 7.0\n'
    )
    assert boards_in_memory(page) == 4.0
    # Another server (the reference answers any GET with "okay"): no such metric at all.
    assert boards_in_memory("") is None
    assert boards_in_memory("okay") is None


async def test_a_peer_counts_as_flushed_once_its_data_dir_stops_changing(tmp_path: Path) -> None:
    import asyncio

    from bench.scenarios.opens import wait_until_quiet

    async def write_for_a_while() -> None:
        for n in range(6):
            (tmp_path / f"log-{n}").write_bytes(b"x" * 100)
            await asyncio.sleep(0.3)

    writer = asyncio.create_task(write_for_a_while())
    waited = await wait_until_quiet(tmp_path, 20.0, quiet_s=1.0)
    await writer
    assert waited is not None
    assert waited >= 1.8 + 1.0 - 0.6  # the writes went on for 1.8 s, then 1 s of quiet
    assert await wait_until_quiet(tmp_path, 0.6, quiet_s=5.0) is None  # bounded


async def test_the_cold_open_wait_rides_out_a_scrape_without_the_hosts() -> None:
    # Right after the seeding a busy host may not answer the gateway's stats call in
    # time: that page has no host lines, and the wait must go on, not give up.
    from aiohttp import web

    from bench.scenarios.opens import wait_until_passivated

    def boards(count: int) -> str:
        return f'boardcast_host_boards{{host="h-0",node="n"}} {count}.0\n'

    pages = iter(["boardcast_gateway_host_links 2.0\n", boards(5), boards(0)])

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=next(pages))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            waited = await wait_until_passivated(session, f"http://127.0.0.1:{port}", 0.0, 30.0)
    finally:
        await runner.cleanup()
    assert waited is not None and waited >= 2.0  # three scrapes, a second apart
