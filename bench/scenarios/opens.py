"""cold-opens and large-board: how long until a client opening a big board is synced.

Boards are built once as one Yjs update following docs/schema.md (tasks with
every field, in three columns) and written through the server like any client
edit. A marker in the board's title proves each opener got the whole board
back: ``lost`` counts openers whose synced state lacked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.client import EMPTY_STATE_VECTOR, Behaviour, StockClient
from bench.ledger import Ledger, SendRecord
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
from bench.wire import Wire
from crdt.board import Board
from crdt.positions import position_between
from crdt.protocol import SyncStep2, iter_frame, sync_step1, sync_update

SEED_MARKER = b"~m0.0~"
COLD_OPENS: dict[str, Any] = {
    "boards": 1000,
    "tasks": 1000,
    "awareness": True,
    # Seconds to wait, after seeding, for the server to passivate (snapshot) the seeded
    # boards before the restart; 0 restarts at once (opens then replay whatever the stop
    # did not snapshot in time, as after a crash).
    "settle": 300.0,
}
LARGE_BOARD: dict[str, Any] = {
    "tasks": 10000,
    "clients_per_board": 5,
    "writers": 1,
    "rate": 2.0,
    "joins": 10,
    "awareness": True,
}
SEED_CONCURRENCY = 8
SEED_TIMEOUT_S = 60.0
DATA_QUIET_S = 5.0  # a peer's data dir unchanged this long counts as flushed
CONTENT_WAIT_S = 30.0  # after every opener synced, for content that comes after


def board_update(tasks: int) -> bytes:
    """One update creating a board of ``tasks`` tasks (every field set), titled with a marker."""
    board = Board()
    columns = [board.add_column(name) for name in ("To do", "Doing", "Done")]
    board.set_meta(title=f"Bench board {SEED_MARKER.decode()}", project="bench")
    last: dict[str, str | None] = dict.fromkeys(columns)
    for index in range(tasks):
        column = columns[index % len(columns)]
        position = position_between(last[column], None)
        last[column] = position
        board.add_task(
            f"Task {index}: check the quarterly figures",
            column,
            description=f"Details of task {index}, written by someone who cares.",
            assignees=[f"user-{index % 17}"],
            labels=["bench", f"label-{index % 5}"],
            due="2026-12-31",
            position=position,
        )
    return bytes(board.doc.get_update())


async def seed_board(
    session: aiohttp.ClientSession, wire: Wire, base_url: str, board: str, update: bytes
) -> None:
    """Write ``update`` to ``board`` through the server; return once the server holds it."""
    async with session.ws_connect(wire.socket_url(base_url, board), max_msg_size=0) as ws:
        for message in wire.opening(board):
            await ws.send_bytes(message)
        await ws.send_bytes(wire.wrap(board, sync_update(update)))
        # Messages on one socket are handled in order: the answer to this step 1
        # is a state that includes the update.
        await ws.send_bytes(wire.wrap(board, sync_step1(EMPTY_STATE_VECTOR)))
        async with asyncio.timeout(SEED_TIMEOUT_S):
            async for received in ws:
                if received.type is not aiohttp.WSMsgType.BINARY:
                    continue
                frame, _ = wire.unwrap(board, received.data)
                if frame is None:
                    continue
                for item in iter_frame(frame):
                    if isinstance(item, SyncStep2) and SEED_MARKER in item.update:
                        return
        raise RuntimeError(f"{board}: the server closed before confirming the seed")


async def seed_boards(ctx: RunContext, session: aiohttp.ClientSession, boards: list[str],
                      update: bytes) -> float:  # fmt: skip
    """Seed every board, a few at a time; return the seconds taken."""
    started = time.monotonic()
    gate = asyncio.Semaphore(SEED_CONCURRENCY)

    async def one(board: str) -> None:
        async with gate:
            await seed_board(session, ctx.wire, ctx.url, board, update)

    await asyncio.gather(*(one(board) for board in boards))
    return time.monotonic() - started


def boards_in_memory(metrics: str) -> float | None:
    """The sum of ``boardcast_host_boards`` over hosts in a Prometheus text page.

    None if the page has no such line: another server (the reference server answers
    any GET with 200 and "okay").
    """
    total, found = 0.0, False
    for line in metrics.splitlines():
        if line.startswith("boardcast_host_boards{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


async def wait_until_passivated(
    session: aiohttp.ClientSession, http_url: str, baseline: float | None, limit_s: float
) -> float | None:
    """Wait (at most ``limit_s``) until the server holds no more boards than ``baseline``.

    Returns the seconds waited, or None if the server has no such metric (another
    target) or the limit passed first.
    """
    if baseline is None or limit_s <= 0:
        return None
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        now = await _boards_now(session, http_url)
        # None here is a scrape without the hosts' figures (a host too busy to answer in
        # time, right after the seeding), not another server: the baseline had them.
        if now is not None and now <= baseline:
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    return None


async def wait_until_quiet(
    data_dir: Path, limit_s: float, *, quiet_s: float = DATA_QUIET_S
) -> float | None:
    """Wait (at most ``limit_s``) until nothing under ``data_dir`` changed for ``quiet_s``."""
    started = time.monotonic()
    last, unchanged_since = _tree_size(data_dir), time.monotonic()
    while time.monotonic() - started < limit_s:
        await asyncio.sleep(0.5)
        now = _tree_size(data_dir)
        if now != last:
            last, unchanged_since = now, time.monotonic()
        elif time.monotonic() - unchanged_since >= quiet_s:
            return time.monotonic() - started
    return None


def _tree_size(root: Path) -> tuple[int, int]:
    count = total = 0
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):  # a file compacted away meanwhile
            if path.is_file():
                count += 1
                total += path.stat().st_size
    return count, total


async def _boards_now(session: aiohttp.ClientSession, http_url: str) -> float | None:
    try:
        async with session.get(f"{http_url}/metrics") as response:
            if response.status != 200:
                return None
            return boards_in_memory(await response.text())
    except aiohttp.ClientError:
        return None


def _seed_ledger() -> Ledger:
    ledger = Ledger()
    # Known to the ledger so that openers remember seeing it; never measured.
    ledger.sent[SEED_MARKER] = SendRecord(at=0.0, writer_id=-1, board="*", measured=False)
    return ledger


async def cold_opens(ctx: RunContext) -> Measured:
    """Scenario 4: seed N stored boards, restart the server, open them all at once."""
    params = ctx.params
    update = board_update(int(params["tasks"]))
    boards = board_names("cold", int(params["boards"]))
    ledger = _seed_ledger()
    async with client_session() as session:
        baseline = await _boards_now(session, ctx.http_url)
        seed_s = await seed_boards(ctx, session, boards, update)
        settled_s = await wait_until_passivated(
            session, ctx.http_url, baseline, float(params["settle"])
        )
        if baseline is None and ctx.server is not None:
            # No board metric (a peer): wait until its data dir stops growing, so the
            # restart measures loading rather than writes still queued at the stop.
            settled_s = await wait_until_quiet(Path(ctx.server.data_dir), float(params["settle"]))
    restart_s = await ctx.restart_server()
    await asyncio.sleep(3.0)
    async with client_session() as session:
        pool = Pool(ctx, session, ledger, Behaviour(awareness=bool(params["awareness"])))
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        clients = [pool.make(board) for board in boards]
        for client in clients:
            client.watch = SEED_MARKER
        try:
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            ctx.window_started()
            open_s = await pool.open(clients, batch=len(clients), timeout=120.0)
            # A server may answer step 1 before its board is loaded and send the content
            # after (the reference server with y-leveldb does): wait for the content too.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONTENT_WAIT_S):
                    while any(c.watch_seen_at is None for c in clients):
                        await asyncio.sleep(0.05)
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await ctx.window_ended()
        finally:
            watcher.cancel()
            await pool.close()
    restored = sum(1 for c in clients if SEED_MARKER in c.seen)
    synced = [t for c in clients if (t := c.first_sync_s) is not None]
    return Measured(
        # Connect to holding the board's content: the step 2 that holds it, or, from a
        # server that synced first with an empty board, the update that brought it.
        latencies_s=[t for c in clients if (t := c.watch_seen_s) is not None],
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=len(boards) - restored,
        loop_lag_s=lags,
        details={
            "boards": len(boards),
            "tasks_per_board": int(params["tasks"]),
            "board_bytes": len(update),
            "seed_s": round(seed_s, 1),
            # Until every seeded board was passivated (None: not seen within "settle").
            "settled_s": None if settled_s is None else round(settled_s, 1),
            "restart_s": round(restart_s, 1),
            "open_all_s": round(open_s, 2),
            "restored_boards": restored,
            # Connect to the first sync, whatever it held.
            "first_sync_ms": summarize_ms(synced),
            # Synced with an empty board, the content coming after.
            "synced_before_content": sum(1 for c in clients if _content_after_sync(c)),
            **pool.report(),
        },
    )


def _content_after_sync(client: StockClient) -> bool:
    seen_at = client.watch_seen_at
    return bool(client.syncs) and seen_at is not None and seen_at > client.syncs[0][1]


async def large_board(ctx: RunContext) -> Measured:
    """Scenario 5: a live board of 10,000 tasks; late joiners one after another."""
    params = ctx.params
    build_started = time.monotonic()
    update = board_update(int(params["tasks"]))
    build_s = time.monotonic() - build_started
    (board,) = board_names("large", 1)
    ledger = _seed_ledger()
    behaviour = Behaviour(awareness=bool(params["awareness"]))
    async with client_session() as session:
        pool = Pool(ctx, session, ledger, behaviour)
        live = [
            pool.make(board, index if index < int(params["writers"]) else None)
            for index in range(int(params["clients_per_board"]))
        ]
        lags: list[float] = []
        watcher = asyncio.create_task(watch_loop_lag(lags))
        writers: list[asyncio.Task[None]] = []
        joiners = []
        try:
            # Clients first: servers that keep boards only in memory drop an empty room.
            await pool.open(live)
            seed_s = await seed_boards(ctx, session, [board], update)
            far = time.monotonic() + 3600.0
            writers = [
                asyncio.create_task(
                    write_at_rate(
                        c,
                        ledger,
                        rate=float(params["rate"]),
                        start_at=time.monotonic(),
                        stop_at=far,
                        receivers=len(live) - 1,
                        payload_bytes=32,
                    )
                )
                for c in live
                if c.writer_id is not None
            ]
            lags.clear()
            cpu_before, window_start = process_cpu_s(), time.monotonic()
            ctx.window_started()
            for _ in range(int(params["joins"])):
                joiner = pool.make(board)
                joiners.append(joiner)
                await pool.open([joiner], timeout=60.0)
                await joiner.close()
                await asyncio.sleep(0.5)
            window = (window_start, time.monotonic())
            loadgen_cpu = process_cpu_s() - cpu_before
            await ctx.window_ended()
        finally:
            for task in writers:
                task.cancel()
            watcher.cancel()
            await pool.close()
    restored = sum(1 for c in joiners if SEED_MARKER in c.seen)
    return Measured(
        latencies_s=[t for c in joiners if (t := c.first_sync_s) is not None],
        window=window,
        loadgen_cpu_s=loadgen_cpu,
        lost=len(joiners) - restored,
        loop_lag_s=lags,
        details={
            "tasks": int(params["tasks"]),
            "board_bytes": len(update),
            "build_s": round(build_s, 2),
            "seed_s": round(seed_s, 2),
            "joins": len(joiners),
            "joined_with_whole_board": restored,
            **pool.report(),
        },
    )
