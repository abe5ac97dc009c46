"""Crashes while clients write: no acknowledged update may be lost.

Real processes: `boardcast serve` (and a second `boardcast gateway`) as children on a real
local Ray cluster, killed with SIGKILL mid-stream. Writers are Python clients that ask for
acknowledgements; an update counts as acknowledged once the server said "persisted up to
here" for it on the connection it was sent on.

After the kill every writer is disconnected and held back, so nothing can resync the server.
Then the SQLite store is read from this process, and a brand-new client reads the board
through the (restarted) server: each must hold every acknowledged update. Only then do the
writers reconnect, each with a fresh document, write some more, and a last brand-new client
and the store must again hold everything acknowledged. The check is tested too: the same
store with its newest commits deleted must be reported as missing exactly the acknowledged
keys those commits held, and a server that keeps its store in memory must fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from persistence.factory import SQLITE_FILENAME
from tests.conftest import wait_until
from tests.interop.servers import BoardcastProcess, gateway_process, serve_process
from tests.writers import (
    BOARD,
    SteadyWriter,
    acknowledged_keys,
    assert_nothing_lost,
    keys_in_sqlite,
    keys_seen_by_newcomer,
)

WRITERS = 3
# Acknowledged keys each writer must have before the crash, and again after it.
ACKS_BEFORE = 30
ACKS_AFTER = 30


def host_pids(server: BoardcastProcess) -> list[dict[str, Any]]:
    """The board hosts behind a gateway, from its readiness endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=30) as reply:
        return list(json.load(reply)["hosts"])


def kill_process_tree(server: BoardcastProcess) -> int:
    """SIGKILL a server and every process it started (Ray's included); return the count."""
    process = server._process
    assert process is not None
    root = psutil.Process(process.pid)
    tree = [root, *root.children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    server.kill()
    return len(tree)


@dataclass
class CrashRun:
    """What the writers were told, and what was found after the crash and at the end."""

    writers: list[SteadyWriter]
    acknowledged_at_crash: set[str]
    in_store_at_crash: set[str]
    seen_after_crash: set[str]
    store_copy: Path
    acknowledged: set[str] = field(default_factory=set)
    in_store_at_end: set[str] = field(default_factory=set)
    seen_at_end: set[str] = field(default_factory=set)


async def crash_while_writing(
    crash: Callable[[], Awaitable[Any]],
    url: Callable[[], str],
    data_dir: Path,
    *,
    recover: Callable[[], Awaitable[Any]] | None = None,
) -> CrashRun:
    """Write, crash, check what survived while the writers wait, let them go on, check again.

    ``recover`` (a server restart) runs after the store was read and before the newcomer
    reads the board; the writers are still held back then.
    """
    store_path = data_dir / SQLITE_FILENAME
    gate = asyncio.Event()
    gate.set()
    writers = [SteadyWriter(f"w{index}", url, gate=gate) for index in range(WRITERS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writer.run(stop)) for writer in writers]
    try:
        await wait_until(
            lambda: all(len(w.acknowledged) >= ACKS_BEFORE for w in writers),
            timeout=60,
            message=f"{ACKS_BEFORE} acknowledged updates per writer",
        )
        gate.clear()
        await crash()
        await wait_until(
            lambda: all(w.paused for w in writers), timeout=60, message="every writer cut off"
        )
        run = CrashRun(
            writers,
            acknowledged_at_crash=acknowledged_keys(writers),
            in_store_at_crash=await keys_in_sqlite(store_path),
            seen_after_crash=set(),
            store_copy=data_dir.with_name(data_dir.name + "-store-at-crash.sqlite3"),
        )
        if store_path.exists():
            copy_database(store_path, run.store_copy)
        if recover is not None:
            await recover()
        run.seen_after_crash = await keys_seen_by_newcomer(url())
        gate.set()
        more = {w.name: len(w.acknowledged) + ACKS_AFTER for w in writers}
        await wait_until(
            lambda: all(len(w.acknowledged) >= more[w.name] for w in writers),
            timeout=90,
            message=f"{ACKS_AFTER} more acknowledged updates per writer after the crash",
        )
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        gate.set()
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    run.acknowledged = acknowledged_keys(writers)
    run.in_store_at_end = await keys_in_sqlite(store_path)
    run.seen_at_end = await keys_seen_by_newcomer(url())
    return run


def assert_nothing_acknowledged_lost(run: CrashRun) -> None:
    """Every acknowledged key survived the crash in the store and for a newcomer, and at the end."""
    assert all(w.reconnects >= 1 for w in run.writers), "a writer was never cut off"
    assert_nothing_lost(run.acknowledged_at_crash, run.in_store_at_crash, "from the store")
    assert_nothing_lost(
        run.acknowledged_at_crash, run.seen_after_crash, "for a newcomer after the crash"
    )
    assert_nothing_lost(run.acknowledged, run.in_store_at_end, "from the store at the end")
    assert_nothing_lost(run.acknowledged, run.seen_at_end, "for a newcomer at the end")
    assert run.acknowledged - run.acknowledged_at_crash, "nothing acknowledged after the crash"


# -- a store that lost its newest commits, to test the check ------------------------------


def copy_database(source: Path, target: Path) -> None:
    """Copy a live SQLite database, write-ahead log included, with SQLite's backup API."""
    with contextlib.closing(sqlite3.connect(source)) as src:
        with contextlib.closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
    keys = source.parent / "keys"
    # The key ring goes with the copy, as with any backup.
    if keys.is_dir() and source.parent.resolve() != target.parent.resolve():
        shutil.copytree(keys, target.parent / "keys", dirs_exist_ok=True)


def delete_newest_commits(path: Path, count: int) -> int:
    """Delete the board's ``count`` newest appends (rows sharing a commit time); the rows gone."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        times = [
            at
            for (at,) in db.execute(
                "SELECT DISTINCT at FROM updates WHERE board_id = ? ORDER BY at DESC LIMIT ?",
                (BOARD, count),
            )
        ]
        if not times:
            return 0
        cursor = db.execute(
            "DELETE FROM updates WHERE board_id = ? AND at >= ?", (BOARD, min(times))
        )
        return cursor.rowcount


async def assert_the_check_sees_lost_commits(run: CrashRun) -> None:
    """Deleting the newest commits that held acknowledged keys must report exactly those lost."""
    assert run.store_copy.exists(), "no store file to test the check on"
    acknowledged = run.acknowledged_at_crash
    for count in range(1, 200):
        damaged = run.store_copy.with_name(f"{run.store_copy.stem}-minus-{count}.sqlite3")
        copy_database(run.store_copy, damaged)
        if delete_newest_commits(damaged, count) == 0:
            break
        left = await keys_in_sqlite(damaged)
        dropped = run.in_store_at_crash - left
        if dropped & acknowledged:
            with pytest.raises(AssertionError, match="acknowledged updates missing") as failure:
                assert_nothing_lost(acknowledged, left, "from the damaged store")
            assert acknowledged - left == dropped & acknowledged, failure.value
            return
    pytest.fail("the store's log holds no acknowledged key to delete: the check was not tested")


# -- the crashes ----------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BoardcastProcess]:
    # No compaction: the test of the check deletes the newest log rows, which a snapshot
    # would have folded away. Compaction across crashes is covered by the engine tests.
    monkeypatch.setenv("BOARDCAST_SNAPSHOT_EVERY", "1000000")
    process = serve_process(tmp_path / "data", "--hosts", "2")
    process.start()
    yield process
    with contextlib.suppress(Exception):
        kill_process_tree(process) if process.running else None


@pytest.mark.ray
async def test_killing_a_board_host_loses_nothing_acknowledged(
    server: BoardcastProcess, tmp_path: Path
) -> None:
    async def crash() -> None:
        hosts = await asyncio.to_thread(host_pids, server)
        # The host serving the writers' board (another may hold only the directory).
        busy = [host for host in hosts if BOARD in host.get("board_ids", ())]
        assert busy, hosts
        os.kill(busy[0]["pid"], signal.SIGKILL)

    run = await crash_while_writing(crash, lambda: server.url, tmp_path / "data")
    assert_nothing_acknowledged_lost(run)
    await assert_the_check_sees_lost_commits(run)


@pytest.mark.ray
async def test_killing_a_gateway_loses_nothing_acknowledged(
    server: BoardcastProcess, tmp_path: Path
) -> None:
    assert server.ray_address is not None
    second = gateway_process(server.ray_address)
    await second.astart()
    use_second = True

    def url() -> str:
        return second.url if use_second else server.url

    async def crash() -> None:
        nonlocal use_second
        use_second = False
        await asyncio.to_thread(second.kill)

    run = await crash_while_writing(crash, url, tmp_path / "data")
    assert_nothing_acknowledged_lost(run)
    await assert_the_check_sees_lost_commits(run)


@pytest.mark.ray
async def test_killing_every_process_loses_nothing_acknowledged(
    server: BoardcastProcess, tmp_path: Path
) -> None:
    killed = 0

    async def crash() -> None:
        nonlocal killed
        killed = await asyncio.to_thread(kill_process_tree, server)

    run = await crash_while_writing(
        crash, lambda: server.url, tmp_path / "data", recover=server.astart
    )
    assert killed > 3  # the driver and Ray's own processes
    assert_nothing_acknowledged_lost(run)
    await assert_the_check_sees_lost_commits(run)


async def test_the_check_fails_a_server_that_keeps_its_store_in_memory(tmp_path: Path) -> None:
    # The same crash against a server whose store is memory: acknowledged, then gone.
    # In-process board hosts, so no Ray start is paid for it.
    server = serve_process(tmp_path / "data", "--backend", "local", "--store", "memory")
    await server.astart()
    try:
        run = await crash_while_writing(
            lambda: asyncio.to_thread(kill_process_tree, server),
            lambda: server.url,
            tmp_path / "data",
            recover=server.astart,
        )
    finally:
        await server.astop()
    assert run.acknowledged_at_crash
    with pytest.raises(AssertionError, match="acknowledged updates missing from the store"):
        assert_nothing_acknowledged_lost(run)
    assert run.acknowledged_at_crash - run.in_store_at_crash == run.acknowledged_at_crash
    assert run.acknowledged_at_crash - run.seen_after_crash == run.acknowledged_at_crash
