"""Boards built on demand, end to end: a reopened board is served from its snapshot.

A local deployment stores a board; after a restart a new client gets the whole board
while the host has not built it (``boardcast_host_boards_built``), the first edit builds
it, and the edit is durable like any other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from clients.provider import BoardClient
from crdt.board import Board
from persistence.read_model import SqliteTaskIndex
from persistence.sqlite import READ_MODEL_FILENAME
from tests.conftest import RunningServer, serve, wait_until


async def unbuilt_boards(server: RunningServer) -> float:
    """Boards in memory over the deployment's hosts that are not built."""
    url = f"http://127.0.0.1:{server.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        text = await got.text()
    totals = {"boardcast_host_boards": 0.0, "boardcast_host_boards_built": 0.0}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            if name in totals:
                totals[name] += float(line.split()[-1])
    return totals["boardcast_host_boards"] - totals["boardcast_host_boards_built"]


def titles(client: BoardClient) -> list[str]:
    return sorted(task.title for task in Board(client.doc).tasks())


@pytest.mark.parametrize("on_demand", [True, False])
async def test_a_reopened_board_is_served_before_it_is_built(
    tmp_path: Path, on_demand: bool
) -> None:
    async with serve("local", tmp_path) as server, BoardClient(server.url, "b1") as alice:
        await alice.synced()
        board = Board(alice.doc)
        board.add_task("stored", board.add_column("To do"))
        await alice.persisted()
    # The stop snapshotted the board with its state vector.
    async with serve("local", tmp_path, build_on_demand=on_demand) as server:
        async with BoardClient(server.url, "b1") as bob:
            await bob.synced()
            assert titles(bob) == ["stored"]
            assert await unbuilt_boards(server) == (1.0 if on_demand else 0.0)
            board = Board(bob.doc)
            board.add_task("edited", board.columns()[0].id)
            await bob.persisted()
            assert await unbuilt_boards(server) == 0.0
            async with BoardClient(server.url, "b1") as carol:
                await carol.synced()
                await wait_until(lambda: titles(carol) == ["edited", "stored"])
    async with serve("local", tmp_path) as again, BoardClient(again.url, "b1") as dave:
        await dave.synced()
        assert titles(dave) == ["edited", "stored"]


async def test_a_board_behind_the_read_model_is_caught_up_and_stays_unbuilt(
    tmp_path: Path,
) -> None:
    # Written with the read model off: at the next load the board is behind it, and its
    # rows are rebuilt from a document of their own, not the board's.
    async with serve("local", tmp_path, read_model=False) as server:
        async with BoardClient(server.url, "b1") as alice:
            await alice.synced()
            board = Board(alice.doc)
            board.add_task("stored", board.add_column("To do"))
            await alice.persisted()
    index = SqliteTaskIndex(str(tmp_path / READ_MODEL_FILENAME))
    try:
        assert await index.board_version("b1") == 0
        async with serve("local", tmp_path) as server, BoardClient(server.url, "b1") as bob:
            await bob.synced()
            versions: list[int] = []

            async def caught_up() -> bool:
                versions.append(await index.board_version("b1"))
                return versions[-1] > 0

            for _ in range(500):
                if await caught_up():
                    break
                await asyncio.sleep(0.02)
            assert versions[-1] > 0, "the read model was not caught up"
            assert await unbuilt_boards(server) == 1.0
    finally:
        await index.close()
