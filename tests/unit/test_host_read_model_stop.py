"""A read-model write in flight when a host stops is written by the stop, not dropped.

If it were dropped, every board in that batch would look behind at its next load and be
rewritten whole (for a 1,000-task board: a walk over every task, on the host's loop,
while the board is being opened).

Mutation run when this test was written: without the re-queue on cancellation in
``BoardHost._index_loop``, the board's read-model version stayed 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from actors.host import BoardHost, HostSettings
from persistence.read_model import IndexWrite, SqliteTaskIndex, TaskIndex
from persistence.sqlite import SqliteStore
from tests.conftest import wait_until


class SlowDiskIndex(SqliteTaskIndex):
    """The real SQLite read model, whose first write waits until the host is stopping."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.first_write_started = asyncio.Event()
        self._first = True

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        if self._first:
            self._first = False
            self.first_write_started.set()
            await asyncio.sleep(3600)  # cancelled by the host's stop
        await super().write(writes)


class StoreWithSlowIndex(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.index = SlowDiskIndex(str(path.parent / "readmodel.sqlite3"))

    def task_index(self) -> TaskIndex:
        return self.index


async def test_a_read_model_write_in_flight_at_stop_is_written(tmp_path: Path) -> None:
    store = StoreWithSlowIndex(tmp_path / "boards.sqlite3")
    host = BoardHost("host-test", store, HostSettings(drain_seconds=1.0))
    await host.start()
    version = await host.transact(
        "indexed", lambda board: board.add_task("Write it", board.add_column("To do"))
    )
    await wait_until(lambda: store.index.first_write_started.is_set(), message="index write")
    await host.stop()

    index = SqliteTaskIndex(str(tmp_path / "readmodel.sqlite3"))
    try:
        assert await index.board_version("indexed") == version
    finally:
        await index.close()
