"""An SQLite file from before snapshots kept their state vector still loads, and then keeps one."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pycrdt

from persistence.coverage import Coverage
from persistence.sqlite import SqliteStore


def task_update(doc: pycrdt.Doc[Any], key: str) -> bytes:
    before = doc.get_state()
    doc.get("tasks", type=pycrdt.Map)[key] = key
    return bytes(doc.get_update(before))


def drop_vector_column(path: Path) -> None:
    """Make the file look as it did before the column existed."""
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """CREATE TABLE old (
                board_id TEXT PRIMARY KEY,
                seq INTEGER NOT NULL,
                at REAL NOT NULL,
                state BLOB NOT NULL
            );
            INSERT INTO old SELECT board_id, seq, at, state FROM snapshots;
            DROP TABLE snapshots;
            ALTER TABLE old RENAME TO snapshots;"""
        )
        columns = {row[1] for row in connection.execute("PRAGMA table_info(snapshots)")}
    assert "vector" not in columns


async def test_an_older_file_gains_the_column_and_its_snapshots_load_without_a_vector(
    tmp_path: Path,
) -> None:
    path = tmp_path / "boards.sqlite3"
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with SqliteStore(str(path)) as store:
        await store.append({"b": [task_update(doc, "a")]})
        assert await store.write_snapshot("b", doc.get_update(), 1, covers=None)
    drop_vector_column(path)

    async with SqliteStore(str(path)) as store:
        board = await store.load("b")
        assert (board.snapshot, board.snapshot_seq, board.snapshot_vector) == (
            doc.get_update(),
            1,
            None,
        )
        await store.append({"b": [task_update(doc, "b")]})
        vector = doc.get_state()
        assert await store.write_snapshot("b", doc.get_update(), 2, covers=Coverage(vector))
        assert (await store.load("b")).snapshot_vector == vector
