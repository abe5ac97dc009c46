"""A host loads boards a few at a time, so a burst of opens cannot starve its event loop.

When every client comes back at once (after a restart), hundreds of boards load on each
host. Loaded all at once, their CPU queued ahead of the host's heartbeat for seconds and
the directory dropped the host as dead. The bound must hold, and every board must still
load.
"""

from __future__ import annotations

import asyncio

import pytest

from actors import host as host_module
from actors.host import BoardHost, HostSettings
from persistence.memory import MemoryStore
from persistence.store import StoredBoard

BOARDS = 20


class CountingStore(MemoryStore):
    """The in-memory store, counting how many board loads are in progress at once."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = 0
        self.most_at_once = 0

    async def load(self, board_id: str) -> StoredBoard:
        self.loading += 1
        self.most_at_once = max(self.most_at_once, self.loading)
        try:
            await asyncio.sleep(0.01)  # a store read takes a moment
            return await super().load(board_id)
        finally:
            self.loading -= 1


async def open_many_boards_at_once() -> tuple[CountingStore, list[int]]:
    store = CountingStore()
    host = BoardHost("host-test", store, HostSettings(drain_seconds=1.0, read_model=False))
    await host.start()
    try:
        versions = await asyncio.gather(
            *(host.transact(f"board-{i}", lambda b: b.add_column("To do")) for i in range(BOARDS))
        )
    finally:
        await host.stop()
    return store, list(versions)


async def test_a_burst_of_opens_loads_a_few_boards_at_a_time() -> None:
    store, versions = await open_many_boards_at_once()
    assert store.most_at_once <= host_module.LOAD_CONCURRENCY
    assert versions == [1] * BOARDS  # every board loaded and took its change


async def test_the_count_sees_a_burst_when_loads_are_not_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check's own test: with the bound lifted, the loads do overlap.
    monkeypatch.setattr(host_module, "LOAD_CONCURRENCY", BOARDS)
    store, _ = await open_many_boards_at_once()
    assert store.most_at_once > 4
