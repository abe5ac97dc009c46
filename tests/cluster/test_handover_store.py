"""While a board moves, two hosts may append to its log: no snapshot may trim the others'.

The store itself refuses such a snapshot (``write_snapshot(..., covers=...)``), on every
backend; the store contract suite covers memory and MongoDB, this file the embedded store
the cluster tests run on, and a host that must then reload the board.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from persistence.coverage import Coverage
from persistence.sqlite import SqliteStore
from tests.writers import keys_in_store

BOARD = "moving"


def edit(doc: Doc[Any], key: str) -> bytes:
    """Set ``key`` on ``doc``; the update it makes."""
    before = doc.get_state()
    doc.get("tasks", type=Map)[key] = 1
    return doc.get_update(before)


async def interleaved(store: SqliteStore) -> tuple[Doc[Any], Doc[Any]]:
    """Host A writes a1, host B (which also holds the board) b1, then A writes a2."""
    host_a: Doc[Any] = Doc()
    host_b: Doc[Any] = Doc()
    await store.append({BOARD: [edit(host_a, "a1")]})
    await store.append({BOARD: [edit(host_b, "b1")]})
    await store.append({BOARD: [edit(host_a, "a2")]})
    return host_a, host_b


async def test_a_snapshot_missing_another_hosts_entry_keeps_the_log(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "guarded.sqlite3") as store:
        host_a, _ = await interleaved(store)
        # Host A snapshots what it holds, up to the last seq it wrote: b1 is not in it.
        covers = Coverage(host_a.get_state())
        written = await store.write_snapshot(BOARD, host_a.get_update(), 3, covers=covers)
        assert await keys_in_store(store, BOARD) == {"a1", "b1", "a2"}
        assert not written


async def test_without_the_state_vector_that_snapshot_loses_the_other_hosts_entry(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path / "bare.sqlite3") as store:
        host_a, _ = await interleaved(store)
        await store.write_snapshot(BOARD, host_a.get_update(), 3)
        assert await keys_in_store(store, BOARD) == {"a1", "a2"}


async def test_a_snapshot_that_holds_every_entry_is_written(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "whole.sqlite3") as store:
        host_a, host_b = await interleaved(store)
        host_a.apply_update(host_b.get_update())
        covers = Coverage(host_a.get_state())
        assert await store.write_snapshot(BOARD, host_a.get_update(), 3, covers=covers)
        stored = await store.load(BOARD)
        assert stored.snapshot_seq == 3 and not stored.updates
        assert await keys_in_store(store, BOARD) == {"a1", "b1", "a2"}
