"""host-crash: SIGKILL one board host process mid-run; until its boards serve again, what is lost.

Boardcast on Ray, on one node: Ray restarts the actor process on the same node, so this
measures a process crash (``failover`` kills a whole node of a multi-node cluster).
Clients write and read as in the fan-out scenarios; at ``kill_after`` seconds into the
measured window the bench reads ``/readyz``, picks the host with the most connections and
kills its process. Clients reconnect and resync as the stock provider does. Per board on
that host: ``serving_again_s`` = first delivery of an update made after the kill, minus
the kill time; ``resynced_s`` = when every client of the board had synced again.
``lost`` counts measured deliveries that never arrived, after a long drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import aiohttp

from bench.client import Behaviour, StockClient
from bench.ledger import Ledger
from bench.scenarios.base import (
    Measured,
    Pool,
    RunContext,
    client_session,
    process_cpu_s,
    watch_loop_lag,
)
from bench.scenarios.fanout import board_names, write_at_rate
from bench.stats import summarize_ms

HOST_CRASH: dict[str, Any] = {
    "boards": 20,
    "clients_per_board": 3,
    "writers": 1,
    "rate": 5.0,
    "duration": 30.0,
    "warmup": 2.0,
    "kill_after": 10.0,
    "drain": 20.0,
    "awareness": True,
}
READYZ_TIMEOUT_S = 2.0
HOST_BACK_TIMEOUT_S = 60.0


async def read_hosts(session: aiohttp.ClientSession, http_url: str) -> list[dict[str, Any]]:
    """The board hosts listed by ``/readyz`` (empty if it does not answer in time)."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with asyncio.timeout(READYZ_TIMEOUT_S):
            async with session.get(f"{http_url}/readyz") as response:
                body = await response.json()
                return list(body.get("hosts", []))
    return []


async def kill_busiest_host(ctx: RunContext, session: aiohttp.ClientSession) -> dict[str, Any]:
    """SIGKILL the host process with the most connections; return what was killed and when."""
    hosts = await read_hosts(session, ctx.http_url)
    if not hosts:
        raise RuntimeError("/readyz listed no hosts")
    victim = max(hosts, key=lambda host: host.get("connections", 0))
    killed_at = time.monotonic()
    os.kill(int(victim["pid"]), signal.SIGKILL)
    back_s = None
    deadline = killed_at + HOST_BACK_TIMEOUT_S
    while time.monotonic() < deadline:
        for host in await read_hosts(session, ctx.http_url):
            if host.get("name") == victim["name"] and host.get("pid") != victim["pid"]:
                back_s = time.monotonic() - killed_at
                break
        if back_s is not None:
            break
        await asyncio.sleep(0.2)
    return {"victim": victim, "killed_at": killed_at, "host_back_s": back_s}


def start_writing(
    clients: list[StockClient], ledger: Ledger, params: dict[str, Any]
) -> list[asyncio.Task[None]]:
    """Open the measured window (after the warm-up) and start every writing client."""
    start_at = time.monotonic() + 0.1
    ledger.measure_start = start_at + float(params["warmup"])
    ledger.measure_end = ledger.measure_start + float(params["duration"])
    return [
        asyncio.create_task(
            write_at_rate(
                client,
                ledger,
                rate=float(params["rate"]),
                start_at=start_at,
                stop_at=ledger.measure_end,
                receivers=int(params["clients_per_board"]) - 1,
                payload_bytes=32,
            )
        )
        for client in clients
        if client.writer_id is not None
    ]


async def drained(ledger: Ledger, seconds: float) -> None:
    """Wait (at most ``seconds``) until every expected delivery arrived."""
    until = time.monotonic() + seconds
    while ledger.observed_total < ledger.expected_total and time.monotonic() < until:
        await asyncio.sleep(0.05)


def board_recovery(
    clients: list[StockClient], ledger: Ledger, killed_at: float
) -> dict[str, dict[str, float | None]]:
    """Per board whose clients were cut off: when it served again, when all had resynced."""
    by_board: dict[str, list[StockClient]] = {}
    for client in clients:
        by_board.setdefault(client.board, []).append(client)
    recovery: dict[str, dict[str, float | None]] = {}
    receipts = ledger.receipts or {}
    for board, members in by_board.items():
        if not any(t >= killed_at for c in members for t in c.disconnected_at):
            continue
        after = [got for made, got in receipts.get(board, []) if made >= killed_at]
        resyncs = []
        for client in members:
            again = [done for started, done in client.syncs if started >= killed_at]
            resyncs.append(min(again) - killed_at if again else None)
        recovery[board] = {
            "serving_again_s": min(after) - killed_at if after else None,
            "resynced_s": None if None in resyncs else max(r for r in resyncs if r is not None),
        }
    return recovery


async def host_crash(ctx: RunContext) -> Measured:
    """Kill -9 a board host process in the middle of a fan-out run."""
    params = ctx.params
    ledger = Ledger(receipts={})
    behaviour = Behaviour(awareness=bool(params["awareness"]))
    per_board = int(params["clients_per_board"])
    async with client_session() as session:
        pool = Pool(ctx, session, ledger, behaviour)
        writer_ids = iter(range(1_000_000))
        clients = [
            pool.make(board, next(writer_ids) if index < int(params["writers"]) else None)
            for board in board_names("host-crash", int(params["boards"]))
            for index in range(per_board)
        ]
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        try:
            await pool.open(clients)
            writers = start_writing(clients, ledger, params)
            await asyncio.sleep(max(0.0, ledger.measure_start - time.monotonic()))
            lags.clear()
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            ctx.window_started()
            await asyncio.sleep(float(params["kill_after"]))
            kill = await kill_busiest_host(ctx, session)
            await asyncio.gather(*writers)
            await asyncio.sleep(max(0.0, ledger.measure_end - time.monotonic()))
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await ctx.window_ended()
            await drained(ledger, float(params["drain"]))
        finally:
            watcher.cancel()
            await pool.close()
    recovery = board_recovery(clients, ledger, kill["killed_at"])
    serving = [r["serving_again_s"] for r in recovery.values()]
    resynced = [r["resynced_s"] for r in recovery.values()]
    return Measured(
        latencies_s=list(ledger.delivery_latency),
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=ledger.lost,
        loop_lag_s=lags,
        timeline=(list(ledger.delivery_sent_at), list(ledger.delivery_latency)),
        details={
            "killed_host": kill["victim"].get("name"),
            "killed_pid": kill["victim"].get("pid"),
            "killed_host_boards": kill["victim"].get("boards"),
            "host_back_s": None if kill["host_back_s"] is None else round(kill["host_back_s"], 2),
            "boards_cut_off": len(recovery),
            "boards_never_serving_again": sum(1 for s in serving if s is None),
            "serving_again_ms": summarize_ms([s for s in serving if s is not None]),
            "all_clients_resynced_ms": summarize_ms([r for r in resynced if r is not None]),
            "sends": ledger.sends,
            "expected_deliveries": ledger.expected,
            "observed_deliveries": ledger.observed,
            "observed_via_resync": ledger.observed_via_resync,
            "duplicates": ledger.duplicates,
            **pool.report(),
        },
    )
