"""idle-capacity: what idle clients and open boards cost a server.

Clients connect, sync and then idle as a browser tab does (awareness renewed
every 15 s, echoes of peers' renewals). Memory is read at three points: before
any client, with one client on every board, and with every client; the
differences give the memory per open board and per extra idle client. CPU is
measured over a hold window with everyone idle. Latency = connect to synced.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.client import Behaviour
from bench.ledger import Ledger
from bench.samples import memory_near, read_samples
from bench.scenarios.base import (
    Measured,
    Pool,
    RunContext,
    client_session,
    process_cpu_s,
    watch_loop_lag,
)
from bench.scenarios.fanout import board_names

IDLE_CAPACITY: dict[str, Any] = {
    "boards": 100,
    "clients_per_board": 10,
    "hold": 40.0,
    "awareness": True,
    "connect_batch": 100,
}
SETTLE_S = 3.0


async def memory_after_settling(ctx: RunContext) -> dict[str, float | None]:
    """Wait a few seconds, then the server's mean USS and RSS over the last two."""
    await asyncio.sleep(SETTLE_S)
    now = time.monotonic()
    samples = read_samples(ctx.samples_path) if ctx.samples_path is not None else []
    return {
        "uss_mb": memory_near(samples, now - 2.0, now, "uss_mb"),
        "rss_mb": memory_near(samples, now - 2.0, now, "rss_mb"),
    }


def _per_item_kb(after: float | None, before: float | None, count: int) -> float | None:
    if after is None or before is None or count <= 0:
        return None
    return round((after - before) * 1024 / count, 1)


async def idle_capacity(ctx: RunContext) -> Measured:
    """Scenario 3: hold many idle clients; memory per board and per client, idle CPU."""
    params = ctx.params
    boards = board_names("idle", int(params["boards"]))
    per_board = int(params["clients_per_board"])
    batch = int(params["connect_batch"])
    behaviour = Behaviour(awareness=bool(params["awareness"]))
    async with client_session() as session:
        pool = Pool(ctx, session, Ledger(), behaviour)
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        try:
            base = await memory_after_settling(ctx)
            first = [pool.make(board) for board in boards]
            first_s = await pool.open(first, batch=batch)
            with_boards = await memory_after_settling(ctx)
            rest = [pool.make(board) for board in boards for _ in range(per_board - 1)]
            rest_s = await pool.open(rest, batch=batch) if rest else 0.0
            with_clients = await memory_after_settling(ctx) if rest else with_boards
            disconnects_before = pool.counters.disconnects
            awareness_before = pool.counters.awareness_in
            lags.clear()
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            ctx.window_started()
            await asyncio.sleep(float(params["hold"]))
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await ctx.window_ended()
            loop_lags = list(lags)
            disconnects = pool.counters.disconnects - disconnects_before
            awareness_in = pool.counters.awareness_in - awareness_before
        finally:
            watcher.cancel()
            await pool.close()
    extra_clients = len(rest)
    hold = window[1] - window[0]
    connect_times = [t for c in pool.clients if (t := c.first_sync_s) is not None]
    return Measured(
        latencies_s=connect_times,
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=None,
        loop_lag_s=loop_lags,
        details={
            "boards": len(boards),
            "clients": len(pool.clients),
            "connect_boards_s": round(first_s, 2),
            "connect_rest_s": round(rest_s, 2),
            "uss_mb_base": base["uss_mb"],
            "uss_mb_boards_open": with_boards["uss_mb"],
            "uss_mb_all_clients": with_clients["uss_mb"],
            "rss_mb_base": base["rss_mb"],
            "rss_mb_all_clients": with_clients["rss_mb"],
            "uss_kb_per_open_board": _per_item_kb(
                with_boards["uss_mb"], base["uss_mb"], len(boards)
            ),
            "uss_kb_per_extra_idle_client": _per_item_kb(
                with_clients["uss_mb"], with_boards["uss_mb"], extra_clients
            ),
            "rss_kb_per_open_board": _per_item_kb(
                with_boards["rss_mb"], base["rss_mb"], len(boards)
            ),
            "rss_kb_per_extra_idle_client": _per_item_kb(
                with_clients["rss_mb"], with_boards["rss_mb"], extra_clients
            ),
            "disconnects_while_idle": disconnects,
            "awareness_frames_in_per_s_idle": round(awareness_in / hold, 1),
            **pool.report(),
        },
    )
