"""hot-board and many-boards: how long an edit takes to reach everyone else on its board.

R boards x C clients; W clients of each board write one marked update at a
fixed rate (open loop: a late send goes out as soon as possible rather than
being skipped, so a slow server cannot hide behind fewer sends). Every client
also behaves like the stock provider for awareness (renewals every 15 s, echoes
of every change). Latency = receive time - send time for every (update, other
client of the board) pair; ``lost`` = expected - observed after a drain.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import pycrdt

from bench.client import Behaviour, StockClient
from bench.ledger import Ledger, marker_for
from bench.scenarios.base import (
    Measured,
    Pool,
    RunContext,
    client_session,
    process_cpu_s,
    watch_loop_lag,
)
from crdt.protocol import sync_update

HOT_BOARD = {
    "boards": 1,
    "clients_per_board": 50,
    "writers": 5,
    "rate": 20.0,
    "duration": 20.0,
    "warmup": 2.0,
    "drain": 3.0,
    "payload_bytes": 32,
    "awareness": True,
}
MANY_BOARDS = {**HOT_BOARD, "boards": 100, "clients_per_board": 5, "writers": 1, "rate": 5.0}


async def write_at_rate(
    client: StockClient,
    ledger: Ledger,
    *,
    rate: float,
    start_at: float,
    stop_at: float,
    receivers: int,
    payload_bytes: int,
) -> None:
    """Set one marked key at ``rate`` per second from ``start_at`` until ``stop_at``.

    While the client is disconnected its edits stay in its document and reach
    the server with the resync, as with the stock provider.
    """
    assert client.doc is not None and client.writer_id is not None
    board_map = client.doc.get("bench", type=pycrdt.Map)
    updates: list[bytes] = []
    subscription = client.doc.observe(lambda event: updates.append(event.update))
    payload = "x" * payload_bytes
    interval = 1.0 / rate
    due = start_at + random.uniform(0.0, interval)
    seq = 0
    try:
        while due < stop_at:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            seq += 1
            marker = marker_for(client.writer_id, seq)
            board_map[marker] = payload
            frame = sync_update(updates.pop())
            ledger.record_send(
                marker.encode(),
                client.writer_id,
                client.board,
                receivers,
                at=time.monotonic(),
                due=due,
            )
            await client.send(frame)
            due += interval
    finally:
        client.doc.unobserve(subscription)


def board_names(prefix: str, count: int) -> list[str]:
    """``count`` board names, new on every run so runs never share documents."""
    run_id = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run_id}-{index}" for index in range(count)]


async def run_fanout(ctx: RunContext, params: dict[str, Any]) -> Measured:
    """Connect, write through warm-up and the measured window, drain, close."""
    ledger = Ledger()
    behaviour = Behaviour(awareness=bool(params["awareness"]))
    clients_per_board = int(params["clients_per_board"])
    writers_per_board = int(params["writers"])
    async with client_session() as session:
        pool = Pool(ctx, session, ledger, behaviour)
        writer_ids = iter(range(1_000_000))
        clients = [
            pool.make(board, next(writer_ids) if index < writers_per_board else None)
            for board in board_names("fanout", int(params["boards"]))
            for index in range(clients_per_board)
        ]
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        try:
            connect_s = await pool.open(clients)
            start_at = time.monotonic() + 0.1
            ledger.measure_start = start_at + float(params["warmup"])
            ledger.measure_end = ledger.measure_start + float(params["duration"])
            writers = [
                asyncio.create_task(
                    write_at_rate(
                        client,
                        ledger,
                        rate=float(params["rate"]),
                        start_at=start_at,
                        stop_at=ledger.measure_end,
                        receivers=clients_per_board - 1,
                        payload_bytes=int(params["payload_bytes"]),
                    )
                )
                for client in clients
                if client.writer_id is not None
            ]
            await asyncio.sleep(max(0.0, ledger.measure_start - time.monotonic()))
            lags.clear()
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            ctx.window_started()
            awareness_before = pool.counters.awareness_in
            await asyncio.gather(*writers)
            await asyncio.sleep(max(0.0, ledger.measure_end - time.monotonic()))
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await ctx.window_ended()
            loop_lags = list(lags)
            awareness_in = pool.counters.awareness_in - awareness_before
            drain_until = time.monotonic() + float(params["drain"])
            while ledger.observed_total < ledger.expected_total and time.monotonic() < drain_until:
                await asyncio.sleep(0.02)
        finally:
            watcher.cancel()
            await pool.close()
    seconds = window[1] - window[0]
    return Measured(
        latencies_s=list(ledger.delivery_latency),
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=ledger.lost,
        loop_lag_s=loop_lags,
        timeline=(list(ledger.delivery_sent_at), list(ledger.delivery_latency)),
        details={
            "connect_s": round(connect_s, 3),
            "sends": ledger.sends,
            "expected_deliveries": ledger.expected,
            "observed_deliveries": ledger.observed,
            "duplicates": ledger.duplicates,
            "deliveries_per_s": round(ledger.observed / params["duration"], 1),
            "awareness_frames_in_per_s": round(awareness_in / seconds, 1),
            "send_schedule_lag_ms_p99": _p99_ms(ledger.schedule_lags),
            **pool.report(),
        },
    )


def _p99_ms(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 3)


async def hot_board(ctx: RunContext) -> Measured:
    """Scenario 1: one board, 50 clients, 5 writers x 20 updates/s."""
    return await run_fanout(ctx, ctx.params)


async def many_boards(ctx: RunContext) -> Measured:
    """Scenario 2: 100 boards x 5 clients, 1 writer x 5 updates/s each."""
    return await run_fanout(ctx, ctx.params)
