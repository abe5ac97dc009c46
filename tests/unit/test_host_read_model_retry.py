"""A read-model write the database refuses for a moment is written later, not dropped.

Under load two hosts writing one SQLite file meet "database is locked"; a batch dropped
then left every board in it behind, to be rewritten whole (a walk over every task) at its
next load, in the middle of the opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from actors import host as host_module
from actors.host import BoardHost, HostSettings
from persistence.read_model import IndexWrite, SqliteTaskIndex, TaskIndex
from persistence.sqlite import SqliteStore
from tests.conftest import wait_until


class LockedIndex(SqliteTaskIndex):
    """The real SQLite read model, whose first ``refusals`` writes find the file locked."""

    def __init__(self, path: str, refusals: int) -> None:
        super().__init__(path)
        self.refusals = refusals
        self.attempts = 0
        self.written = 0

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise sqlite3.OperationalError("database is locked")
        await super().write(writes)
        self.written += 1


class StoreWithLockedIndex(SqliteStore):
    def __init__(self, path: Path, refusals: int) -> None:
        super().__init__(path)
        self.index = LockedIndex(str(path.parent / "readmodel.sqlite3"), refusals)

    def task_index(self) -> TaskIndex:
        return self.index


async def written_version(tmp_path: Path, refusals: int) -> tuple[int, int]:
    """The board's version, and the read model's for it once the host is done trying."""
    store = StoreWithLockedIndex(tmp_path / "boards.sqlite3", refusals)
    settings = HostSettings(drain_seconds=1.0, store_retry_seconds=0.01)
    host = BoardHost("host-test", store, settings)
    await host.start()
    try:
        version = await host.transact(
            "indexed", lambda board: board.add_task("Write it", board.add_column("To do"))
        )
        index = store.index
        await wait_until(
            lambda: index.written > 0 or index.attempts >= host_module.INDEX_WRITE_ATTEMPTS,
            message="the host to write or give up",
        )
        indexed = await store.index.board_version("indexed")
    finally:
        await host.stop()
    return version, indexed


async def test_a_write_refused_a_few_times_is_written(tmp_path: Path) -> None:
    refusals = host_module.INDEX_WRITE_ATTEMPTS - 1
    version, indexed = await written_version(tmp_path, refusals=refusals)
    assert indexed == version


async def test_without_retries_the_refused_write_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guarantee's test: one attempt only, and the board is behind its read model.
    monkeypatch.setattr(host_module, "INDEX_WRITE_ATTEMPTS", 1)
    version, indexed = await written_version(tmp_path, refusals=1)
    assert version == 1 and indexed == 0
