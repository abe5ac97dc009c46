"""A board host that is busy when the server stops is still stopped cleanly (flushed, snapshotted).

Under load a host can take longer than the stop's one-second ping to answer (it is
snapshotting boards, or loading them). It must still be asked to stop, so that its boards
are snapshotted and the next start loads each from one compacted snapshot rather than
replaying its log (and delivering its events again) as after a crash.

Mutation run when this test was written: with the busy-host clause of
``RayCluster._answering`` removed, the host was skipped ("0 board hosts flushed and
stopped") and the board came back from its log (snapshot None, one stored update).
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest

from crdt.board import Board
from persistence.factory import open_store
from tests.conftest import serve

pytestmark = pytest.mark.ray


def block_the_host(board: Board, seconds: float, started: str) -> None:
    """A server-side change that keeps the host's event loop busy (nothing is changed)."""
    Path(started).touch()
    time.sleep(seconds)


async def test_a_host_busy_at_stop_still_snapshots_its_boards(
    ray_session: None, tmp_path: Path, cluster_name: str
) -> None:
    async with serve("ray", tmp_path, cluster_name=cluster_name, hosts=1) as server:
        version = await server.cluster.transact(
            "busy-at-stop", functools.partial(Board.add_column, name="To do")
        )
        assert version >= 1
        # Busy for longer than the stop's ping waits, from just before the stop.
        started = tmp_path / "host-busy"
        block = functools.partial(block_the_host, seconds=4.0, started=str(started))
        busy = asyncio.ensure_future(server.cluster.transact("other-board", block))
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert started.exists(), "the blocking change never ran"
    busy.cancel()
    async with open_store("sqlite", data_dir=str(tmp_path)) as store:
        stored = await store.load("busy-at-stop")
    assert stored.snapshot is not None, "the busy host was not stopped: no snapshot"
    assert stored.snapshot_seq >= version
    assert stored.updates == []
