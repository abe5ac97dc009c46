"""A board behind the read model is caught up after the opens, not in the middle of them.

Rebuilding a board's rows walks every task (tens of milliseconds for 1,000 tasks) on the
host's event loop. During a burst of opens (every client back after a restart) that time
would go to the boards still loading; so a catch-up waits until no board has loaded for
``CATCH_UP_QUIET_SECONDS``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from actors import host as host_module
from actors.host import BoardHost, HostSettings
from crdt.board import Board
from persistence.sqlite import SqliteStore
from persistence.store import StoredBoard


class SlowBoardStore(SqliteStore):
    """The SQLite store, whose load of board "slow" takes a while; it notes, as that load
    ends, the read model's version of board "behind"."""

    version_when_slow_loaded: int | None = None

    async def load(self, board_id: str) -> StoredBoard:
        stored = await super().load(board_id)
        if board_id == "slow":
            await asyncio.sleep(1.0)
            self.version_when_slow_loaded = await self.task_index().board_version("behind")
        return stored


async def version_as_the_slow_load_ended(tmp_path: Path) -> tuple[int | None, int]:
    store = SlowBoardStore(tmp_path / "boards.sqlite3")
    board: Board = Board(pycrdt.Doc())
    board.add_task("Write it", board.add_column("To do"))
    # Written without a host: the read model knows nothing of it.
    await store.append({"behind": [bytes(board.doc.get_update())]})
    host = BoardHost("host-test", store, HostSettings(drain_seconds=1.0))
    await host.start()
    try:
        slow = asyncio.create_task(host.transact("slow", lambda b: b.add_column("To do")))
        await asyncio.sleep(0.1)  # the slow board is loading
        await host.transact("behind", lambda b: None)  # loads it: its catch-up is due
        await slow
        index = store.task_index()
        for _ in range(300):
            if await index.board_version("behind"):
                break
            await asyncio.sleep(0.02)
        caught_up = await index.board_version("behind")
    finally:
        await host.stop()
    return store.version_when_slow_loaded, caught_up


async def test_a_catch_up_waits_for_the_board_still_loading(tmp_path: Path) -> None:
    during, after = await version_as_the_slow_load_ended(tmp_path)
    assert during == 0 and after == 1


async def test_a_catch_up_that_does_not_wait_runs_during_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check's own test: without the wait the rows are rebuilt while "slow" loads.
    async def at_once(self: Any) -> None:
        return None

    monkeypatch.setattr(host_module.BoardHost, "_loads_quiet", at_once)
    during, after = await version_as_the_slow_load_ended(tmp_path)
    assert during == 1 and after == 1
