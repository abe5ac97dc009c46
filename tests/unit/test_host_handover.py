"""A board host handing boards over to another host, without Ray: real SQLite, real streams.

Two hosts on one SQLite file stand for two nodes of a cluster sharing a store. What is
checked is what a client sees (closed with 1012, the board's text on the new owner) and
what the store holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from actors.host import BoardHost, HostSettings
from crdt.close_codes import CloseCode
from persistence.sqlite import SqliteStore
from tests.conftest import wait_until
from tests.unit.test_host import BOARD, FakeGateway, rebuild, synced, text, type_text

# Long enough that a stop waiting for it could not pass the bound below.
LONG_DRAIN_SECONDS = 120.0


def sqlite_host(path: Path, name: str, **settings: Any) -> BoardHost:
    options: dict[str, Any] = {"idle_seconds": 3600.0, "sweep_seconds": 3600.0}
    options.update(settings)
    return BoardHost(name, SqliteStore(path), HostSettings(**options))


async def test_a_handed_over_board_is_durable_and_its_clients_reconnect_elsewhere(
    tmp_path: Path,
) -> None:
    path = tmp_path / "boards.sqlite3"
    old, new = sqlite_host(path, "old"), sqlite_host(path, "new")
    to_old = await FakeGateway.connect(old)
    to_new = await FakeGateway.connect(new)
    try:
        alice, watcher = to_old.join(1), to_old.join(2)
        await synced(alice, watcher)
        type_text(alice, "moved with the board")
        await wait_until(lambda: text(watcher) == "moved with the board", message="applied")

        assert await old.hand_over(BOARD) is True
        await wait_until(lambda: len(to_old.rejected) == 2, message="both clients closed")
        assert {code for code, _ in to_old.rejected.values()} == {CloseCode.SERVICE_RESTART}
        assert old.board_ids() == []
        stored = await SqliteStore(path).load(BOARD)
        assert stored.snapshot is not None and stored.updates == []
        assert rebuild(stored) == "moved with the board"

        # Reconnected to the new owner, a client finds everything.
        bob = to_new.join(3)
        await synced(bob)
        assert text(bob) == "moved with the board"
        assert await old.hand_over("never-loaded") is False
    finally:
        await to_old.close()
        await to_new.close()
        await old.stop()
        await new.stop()


async def test_opens_of_boards_placed_elsewhere_are_refused_with_1012(tmp_path: Path) -> None:
    host = sqlite_host(tmp_path / "boards.sqlite3", "host-a")
    gateway = await FakeGateway.connect(host)
    try:
        host.set_placement(lambda board_id: board_id != "elsewhere")
        gateway.join(1, "elsewhere")
        await wait_until(lambda: 1 in gateway.rejected, message="open refused")
        assert gateway.rejected[1][0] == CloseCode.SERVICE_RESTART
        assert host.board_ids() == []  # not loaded here

        here = gateway.join(2, "here")
        await synced(here)
        assert host.board_ids() == ["here"]

        host.set_placement(None)
        again = gateway.join(3, "elsewhere")
        await synced(again)
        assert host.board_ids() == ["elsewhere", "here"]
    finally:
        await gateway.close()
        await host.stop()


async def test_a_stop_after_every_board_was_handed_over_does_not_wait_for_links(
    tmp_path: Path,
) -> None:
    host = sqlite_host(tmp_path / "boards.sqlite3", "leaving", drain_seconds=LONG_DRAIN_SECONDS)
    gateway = await FakeGateway.connect(host)
    try:
        alice = gateway.join(1)
        await synced(alice)
        type_text(alice, "kept")
        watcher = gateway.join(2)
        await wait_until(lambda: text(watcher) == "kept", message="applied")
        assert await host.hand_over(BOARD) is True
        assert host.everything_handed_over
        # The gateway keeps its link open; a stop that waited for it would take minutes.
        await asyncio.wait_for(host.stop(), timeout=LONG_DRAIN_SECONDS / 4)
    finally:
        await gateway.close()
    async with SqliteStore(tmp_path / "boards.sqlite3") as store:
        assert rebuild(await store.load(BOARD)) == "kept"


async def test_a_board_opened_again_after_a_hand_over_counts_as_held(tmp_path: Path) -> None:
    host = sqlite_host(tmp_path / "boards.sqlite3", "host-a")
    gateway = await FakeGateway.connect(host)
    try:
        alice = gateway.join(1)
        await synced(alice)
        assert await host.hand_over(BOARD) is True
        assert host.everything_handed_over
        gateway.join(2)
        await wait_until(lambda: host.board_ids() == [BOARD], message="opened again")
        assert not host.everything_handed_over
    finally:
        await gateway.close()
        await host.stop()


async def test_a_snapshot_missing_another_hosts_edit_is_refused_and_the_board_reloads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "boards.sqlite3"
    host = sqlite_host(path, "host-a")
    gateway = await FakeGateway.connect(host)
    try:
        alice, watcher = gateway.join(1), gateway.join(2)
        await synced(alice, watcher)
        type_text(alice, "from A. ")
        await wait_until(lambda: text(watcher) == "from A. ", message="applied")
        await host.flush()
        # Another host holding the board for a moment appends an edit this one never saw.
        other: Doc[Any] = Doc()
        async with SqliteStore(path) as store:
            stored = await store.load(BOARD)
            for entry in stored.updates:
                other.apply_update(entry.update)
            before = other.get_state()
            field = other.get("t", type=Text)
            field.insert(len(field), "from B.")
            await store.append({BOARD: [other.get_update(before)]})
        type_text(alice, "again A.")
        await wait_until(lambda: text(watcher).endswith("again A."), message="applied")

        assert await host.hand_over(BOARD) is True
        assert host.stats()["snapshots_refused"] == 1
        async with SqliteStore(path) as store:
            stored = await store.load(BOARD)
            assert stored.snapshot is None
            assert "from B." in rebuild(stored) and "again A." in rebuild(stored)
        # Loaded again from the whole log, the board has both hosts' edits.
        bob = gateway.join(3)
        await synced(bob)
        assert "from B." in text(bob) and "from A. " in text(bob)
    finally:
        await gateway.close()
        await host.stop()
