"""Board hosts log every durable change's events; redelivery after a crash logs nothing twice.

Run on both backends: in-process hosts with the workers beside them, and Ray hosts with the
one worker actor.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from clients.provider import BoardClient
from crdt.board import Board
from crdt.events import TaskCreated, TaskMoved, encode_events
from persistence.event_log import LoggedEvent, NewEvent
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from persistence.store import Record
from tests.conftest import serve, wait_until
from tests.services import TIMEOUT_SCALE


async def logged(data_dir: Path) -> list[LoggedEvent]:
    # Opened as the hosts open it: beside the store, sealed as the store is (on by default).
    log = event_log_for(open_store("sqlite", data_dir=str(data_dir)))
    try:
        return await log.read(0, 10_000)
    finally:
        await log.close()


async def eventually_logged(data_dir: Path, count: int) -> list[LoggedEvent]:
    deadline = asyncio.get_running_loop().time() + 20 * TIMEOUT_SCALE
    while True:
        events = await logged(data_dir)
        if len(events) >= count or asyncio.get_running_loop().time() > deadline:
            return events
        await asyncio.sleep(0.05)


async def worker_stats(server: Any) -> dict[str, Any]:
    workers = server.cluster.workers
    if hasattr(workers, "stats") and not hasattr(workers.stats, "remote"):
        stats: dict[str, Any] = await workers.stats()
        return stats
    return dict(await workers.stats.remote())


async def test_client_edits_are_logged_with_ids_from_the_stored_seq(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        async with BoardClient(server.url, "ops") as client:
            await client.synced()
            board = Board(client.doc)
            board.add_column("To do", column_id="todo")
            board.add_column("Done", column_id="done")
            board.set_meta(title="Ops", project="infra")
            await client.persisted()
            task = board.add_task("Ship it", "todo", due="2026-12-24")
            await client.persisted()
            board.move_task(task, "done", "a5")
            await client.persisted()
        events = await eventually_logged(tmp_path, 5)
        # The worker consumed them: its lag reaches zero.
        deadline = asyncio.get_running_loop().time() + 20 * TIMEOUT_SCALE
        while True:
            stats = await worker_stats(server)
            if stats["lags"].get("analytics") == 0 and stats["last_offset"] >= len(events):
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.05)
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["task.created", "task.moved"]
    created, moved = events[-2], events[-1]
    assert created.data == {"task_id": task, "column": "todo", "due": "2026-12-24", "assignees": []}
    assert moved.data["to_column"] == "done"
    assert created.project == "infra"
    # "<board>:<seq>:<n>": each update's events are numbered from 0 under its own seq.
    board_id, seq, index = created.id.split(":")
    assert (board_id, index) == ("ops", "0")
    assert moved.id == f"ops:{int(seq) + 1}:0"
    assert [e.offset for e in events] == list(range(1, len(events) + 1))


async def test_a_crash_before_logging_is_made_good_when_the_board_loads_and_never_twice(
    tmp_path: Path,
) -> None:
    # What a host leaves when it dies between the store's commit and the log's append:
    # two stored updates with their events, the first already logged, the second not.
    doc: Doc[Any] = Doc()
    tasks = doc.get("tasks", type=Map)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    tasks["t1"] = Map({"title": "a", "column": "todo", "position": "a0"})
    tasks["t1"]["column"] = "done"
    store = open_store("sqlite", data_dir=str(tmp_path))
    first = [TaskCreated("crashed", "t1", "todo")]
    second = [TaskMoved("crashed", "t1", "todo", "done", "a0")]
    await store.append(
        {
            "crashed": [
                Record(updates[0], origin="ann", events=encode_events(first)),
                Record(updates[1], origin="bob", events=encode_events(second)),
            ]
        }
    )
    await store.close()
    log = event_log_for(open_store("sqlite", data_dir=str(tmp_path)))
    await log.append(
        [NewEvent("crashed:1:0", "crashed", "", "task.created", first[0].to_dict(), "ann")]
    )
    await log.close()
    for _ in range(2):  # loading twice (a second crash) appends nothing more
        async with serve("local", tmp_path, snapshot_every=10_000) as server:
            async with BoardClient(server.url, "crashed") as client:
                await client.synced()
                await wait_until(lambda: "t1" in client.doc.get("tasks", type=Map))
            events = await eventually_logged(tmp_path, 2)
    assert [(e.id, e.type, e.actor) for e in events] == [
        ("crashed:1:0", "task.created", "ann"),
        ("crashed:2:0", "task.moved", "bob"),
    ]


async def test_logged_event_data_is_sealed_at_rest(tmp_path: Path) -> None:
    # Encryption at rest is on by default: the log seals data as the store seals updates.
    async with serve("local", tmp_path) as server:
        async with BoardClient(server.url, "secret") as client:
            await client.synced()
            board = Board(client.doc)
            board.add_column("Plans", column_id="plans")
            await client.persisted()
            board.add_task("t", "plans", due="2031-07-04")
            await client.persisted()
        events = await eventually_logged(tmp_path, 2)
        assert events[-1].data["due"] == "2031-07-04"
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("events.sqlite3*"))
    assert b"2031-07-04" not in raw
