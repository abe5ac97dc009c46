"""The commit window: updates that arrive close together are stored by one group commit.

Each commit is a hand-off to the store's thread and an fsync, so a host serving many
boards spends less per update when it commits them together. The window delays only the
``Persisted`` acknowledgement: the other clients of a board get each update at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from persistence.memory import MemoryStore
from tests.conftest import wait_until
from tests.unit.test_host import MakeHost, make_host, synced, text, type_text

__all__ = ["make_host"]  # the fixture, used by name below


class RecordingStore(MemoryStore):
    """The in-memory store, noting which boards each group commit carried."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[list[str]] = []

    async def append(self, batches: Any) -> dict[str, int]:
        self.commits.append(sorted(batches))
        return await super().append(batches)


@pytest.mark.parametrize(("window", "commits"), [(0.5, [["a", "b"]]), (0.0, [["a"], ["b"]])])
async def test_updates_inside_the_window_share_one_commit(
    make_host: MakeHost, window: float, commits: list[list[str]]
) -> None:
    # With no window (the second case) the same edits take a commit each: the first case
    # fails if the host stops waiting.
    store = RecordingStore()
    host, gateway = await make_host(store, commit_window_seconds=window)
    on_a, on_b = gateway.join(1, "a"), gateway.join(2, "b")
    await synced(on_a, on_b)
    await host.flush()
    store.commits.clear()
    type_text(on_a, "first")
    await asyncio.sleep(0.1)  # well inside a 0.5 s window, well past a commit's time
    type_text(on_b, "second")
    await wait_until(lambda: sum(len(c) for c in store.commits) == 2, message="both stored")
    assert store.commits == commits
    stored = await store.load("a")
    assert stored.last_seq == 1


async def test_the_window_never_holds_an_update_back_from_the_other_clients(
    make_host: MakeHost,
) -> None:
    store = RecordingStore()
    host, gateway = await make_host(store, commit_window_seconds=3.0)
    alice, bob = gateway.join(1), gateway.join(2)
    await synced(alice, bob)
    await host.flush()
    store.commits.clear()
    type_text(alice, "live")
    await wait_until(lambda: text(bob) == "live", message="bob sees the edit")
    assert store.commits == []  # delivered while the commit still waits in its window
    await wait_until(lambda: store.commits == [["board-1"]], timeout=10, message="then stored")
