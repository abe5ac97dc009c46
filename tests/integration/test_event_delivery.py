"""Domain events across crashes: never for an update that is not stored, at least once for
every one that is.

Real processes: ``boardcast serve`` with in-process board hosts and the embedded SQLite
store, killed with SIGKILL (the whole process tree) at the two moments that matter:

- between apply and commit: the update is in the document and broadcast, but the store is
  held locked by this test, so it is not durable. No consumer may hear of it, before the
  crash or after.
- between commit and delivery: the update is durable and acknowledged, but the consumer
  (``on_change``) hangs before finishing. The restarted server must deliver it again; the
  snapshot taken meanwhile must not have covered it (every commit snapshots here).

The consumer is ``tests/integration/event_recorder.py``, which writes what it is handed to
a file. The checks are tested too: fed what the consumer had seen before the restart (what
a server without redelivery would leave), the delivery check reports the lost change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Map

from clients.provider import BoardClient
from crdt.board import Board
from persistence.factory import SQLITE_FILENAME, open_store
from tests.conftest import wait_until
from tests.integration.event_recorder import handled_once, recorded
from tests.integration.test_crash import kill_process_tree
from tests.interop.servers import BoardcastProcess, serve_process

BOARD = "events-crash"
RECORDER = "tests.integration.event_recorder:RecordChanges"


@pytest.fixture
def changes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "changes.jsonl"
    monkeypatch.setenv("BOARDCAST_TEST_CHANGES", str(path))
    monkeypatch.setenv("BOARDCAST_TEST_STALL", str(tmp_path / "stall"))
    # The server imports the recorder from this checkout.
    paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    return path


@pytest.fixture
def server(tmp_path: Path, changes_file: Path) -> Iterator[BoardcastProcess]:
    process = serve_process(tmp_path / "data", "--backend", "local", "--extension", RECORDER)
    yield process
    with contextlib.suppress(Exception):
        kill_process_tree(process) if process.running else None


def created(events: list[dict[str, Any]]) -> list[str]:
    return [event["task_id"] for event in events if event["kind"] == "task.created"]


def tasks_created(changes: list[dict[str, Any]]) -> list[str]:
    return [task for change in changes for task in created(change["events"])]


async def add_task(client: BoardClient, task_id: str) -> None:
    board = Board(client.doc)
    if "todo" not in {column.id for column in board.columns()}:
        board.add_column("To do", column_id="todo")
    board.add_task(task_id, "todo", task_id=task_id)


async def stored_tasks(data_dir: Path) -> dict[int, list[str]]:
    """Per stored log entry, the tasks its stored events say it created."""
    from crdt.events import decode_events

    async with open_store("sqlite", data_dir=str(data_dir)) as store:
        stored = await store.load(BOARD)
    return {
        entry.seq: [
            event.task_id
            for event in decode_events(entry.events or b"\x90")
            if event.kind == "task.created"
        ]
        for entry in stored.updates
    }


def assert_every_stored_task_delivered(
    stored: dict[int, list[str]], changes: list[dict[str, Any]]
) -> None:
    handled = handled_once(changes)
    delivered = {task for events in handled.values() for task in created(events)}
    missing = {task for tasks in stored.values() for task in tasks} - delivered
    assert not missing, f"stored but never delivered: {sorted(missing)}"


async def newcomer_tasks(server: BoardcastProcess) -> list[str]:
    async with BoardClient(server.url, BOARD, ack=False) as reader:
        await reader.synced()
        return sorted(reader.doc.get("tasks", type=Map).keys())


async def test_an_update_killed_before_its_commit_never_becomes_an_event(
    server: BoardcastProcess, changes_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOARDCAST_SNAPSHOT_EVERY", "1000000")
    await server.astart()
    async with (
        BoardClient(server.url, BOARD) as alice,
        BoardClient(server.url, BOARD, ack=False) as bob,
    ):
        await alice.synced()
        await bob.synced()
        await add_task(alice, "stored")
        await alice.persisted()
        await wait_until(lambda: "stored" in tasks_created(recorded(changes_file)))

        # Hold SQLite's write lock: the host applies and broadcasts, but cannot commit.
        lock = sqlite3.connect(tmp_path / "data" / SQLITE_FILENAME, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            await add_task(alice, "unstored")
            await wait_until(lambda: "unstored" in bob.doc.get("tasks", type=Map))
            await asyncio.sleep(0.5)  # the host is trying to commit
            assert alice.persisted_seq < alice.updates_sent
            await asyncio.to_thread(kill_process_tree, server)
        finally:
            lock.execute("ROLLBACK")
            lock.close()

    before_restart = recorded(changes_file)
    assert tasks_created(before_restart) == ["stored"]
    await server.astart()
    assert await newcomer_tasks(server) == ["stored"]
    # The stored change may be delivered again after the crash, the lost one never.
    after_restart = recorded(changes_file)
    assert set(tasks_created(after_restart)) == {"stored"}
    handled = handled_once(after_restart)
    assert [task for events in handled.values() for task in created(events)] == ["stored"]
    await server.astop()


async def test_a_durable_change_whose_delivery_was_cut_off_is_delivered_after_restart(
    server: BoardcastProcess, changes_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A snapshot after every commit: it must stop short of the undelivered change.
    monkeypatch.setenv("BOARDCAST_SNAPSHOT_EVERY", "1")
    await server.astart()
    async with BoardClient(server.url, BOARD) as alice:
        await alice.synced()
        await add_task(alice, "first")
        await alice.persisted()
        await wait_until(lambda: "first" in tasks_created(recorded(changes_file)))

        (tmp_path / "stall").touch()  # the consumer hangs from here on
        await add_task(alice, "second")
        await alice.persisted()  # acknowledged: durable
        await asyncio.sleep(0.5)  # the host has handed it to the hanging consumer
        await asyncio.to_thread(kill_process_tree, server)
    (tmp_path / "stall").unlink()

    before_restart = recorded(changes_file)
    stored = await stored_tasks(tmp_path / "data")
    assert "second" in {task for tasks in stored.values() for task in tasks}, stored
    # The check sees the loss a server without redelivery would leave.
    with pytest.raises(AssertionError, match="stored but never delivered: \\['second'\\]"):
        assert_every_stored_task_delivered(stored, before_restart)

    await server.astart()
    assert await newcomer_tasks(server) == ["first", "second"]
    await wait_until(lambda: "second" in tasks_created(recorded(changes_file)))
    assert_every_stored_task_delivered(stored, recorded(changes_file))
    handled = handled_once(recorded(changes_file))
    assert sorted(task for events in handled.values() for task in created(events)) == [
        "first",
        "second",
    ]
    await server.astop()
