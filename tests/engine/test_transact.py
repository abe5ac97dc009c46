"""Server-side transactions: a change made in Python reaches every client as one update."""

from __future__ import annotations

import asyncio
import operator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map

from clients.provider import BoardClient
from crdt.board import Board
from crdt.errors import TransactionFailed
from crdt.protocol import SyncStep2, SyncUpdate, decode_frame, sync_step1
from tests.conftest import serve, wait_until


def add_sprint(board: Board, count: int) -> None:
    """Several edits, one transaction: a column and its tasks."""
    board.add_column("Sprint", column_id="sprint", position="a0")
    for index in range(count):
        board.add_task(f"sprint task {index}", "sprint", task_id=f"s{index}")


def add_task(board: Board, task_id: str, title: str) -> None:
    """A task in the "todo" column, which is created if missing."""
    if "todo" not in {column.id for column in board.columns()}:
        board.add_column("To do", column_id="todo")
    board.add_task(title, "todo", task_id=task_id)


def add_numbered(board: Board) -> None:
    """A task with a fresh id each time it runs: applying it twice makes two."""
    if "todo" not in {column.id for column in board.columns()}:
        board.add_column("To do", column_id="todo")
    board.add_task(f"imported {len(board.tasks()) + 1}", "todo")


def half_then_fail(board: Board) -> None:
    board.add_task("written before the error", "todo", task_id="half")
    raise RuntimeError("the change broke half-way")


async def updates_seen(url: str, board_id: str, until: asyncio.Event) -> list[bytes]:
    """Every sync update a raw client receives on the board until ``until`` is set."""
    seen: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}/{board_id}", max_msg_size=0)
        await ws.send_bytes(sync_step1(Doc().get_state()))
        while not until.is_set():
            try:
                message = await asyncio.wait_for(ws.receive(), 0.1)
            except TimeoutError:
                continue
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            for item in decode_frame(message.data):
                if isinstance(item, SyncUpdate) or (
                    isinstance(item, SyncStep2) and len(item.update) > 2
                ):
                    seen.append(item.update)
        await ws.close()
    return seen


async def test_a_server_side_change_is_one_update_for_every_client_and_is_durable(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        async with BoardClient(server.url, "planning") as alice:
            await alice.synced()
            stop = asyncio.Event()
            watcher = asyncio.create_task(updates_seen(server.url, "planning", stop))
            await asyncio.sleep(0.3)
            version = await server.cluster.transact("planning", partial(add_sprint, count=5))
            await wait_until(lambda: len(alice.doc.get("tasks", type=Map)) == 5)
            await asyncio.sleep(0.3)
            stop.set()
            seen = await watcher
            assert len(seen) == 1, f"the change arrived as {len(seen)} updates"
            assert version >= 1
    # Durable: a fresh server on the same store has it.
    async with serve(backend, tmp_path, cluster_name=f"{cluster_name}b") as server:
        async with BoardClient(server.url, "planning", ack=False) as reader:
            await reader.synced()
            assert sorted(reader.doc.get("tasks", type=Map).keys()) == [
                f"s{index}" for index in range(5)
            ]


async def test_a_retried_transaction_with_the_same_key_applies_once(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    change = partial(add_task, task_id="once", title="applied once")
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        first = await server.cluster.transact("retry", change, idempotency_key="k-1")
        again = await server.cluster.transact("retry", change, idempotency_key="k-1")
        assert again == first
        other = await server.cluster.transact(
            "retry",
            operator.methodcaller("update_task", "once", title="edited"),
            idempotency_key="k-2",
        )
        assert other > first
        async with BoardClient(server.url, "retry", ack=False) as reader:
            await reader.synced()
            task: Any = reader.doc.get("tasks", type=Map)["once"]
            assert task["title"] == "edited"


async def test_a_retry_after_a_restart_applies_once(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    # The first server stops cleanly: its snapshot folds the change into history.
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        first = await server.cluster.transact("import", add_numbered, idempotency_key="job-1")
    async with serve(backend, tmp_path, cluster_name=f"{cluster_name}b") as server:
        # A new host has never seen the key: the store remembers it.
        again = await server.cluster.transact("import", add_numbered, idempotency_key="job-1")
        assert again == first
        other = await server.cluster.transact("import", add_numbered, idempotency_key="job-2")
        assert other > first
        async with BoardClient(server.url, "import", ack=False) as reader:
            await reader.synced()
            titles = sorted(task["title"] for task in reader.doc.get("tasks", type=Map).values())
            assert titles == ["imported 1", "imported 2"]


async def test_a_change_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server:
        async with BoardClient(server.url, "safe") as alice:
            await alice.synced()
            await server.cluster.transact("safe", partial(add_task, task_id="kept", title="kept"))
            with pytest.raises(TransactionFailed):
                await server.cluster.transact("safe", half_then_fail)
            await wait_until(lambda: "kept" in alice.doc.get("tasks", type=Map))
            await asyncio.sleep(0.2)
            assert "half" not in alice.doc.get("tasks", type=Map)
        async with BoardClient(server.url, "safe", ack=False) as reader:
            await reader.synced()
            assert list(reader.doc.get("tasks", type=Map).keys()) == ["kept"]
