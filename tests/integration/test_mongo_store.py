"""The MongoDB store against a real server: races, crashes, durability, and migration into it.

The contract every store passes runs in ``tests/unit/test_store_contract.py``; these are the
behaviours only a shared, separately running database has.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DocumentTooLarge, ServerSelectionTimeoutError

from crdt.encoding import Decoder
from persistence import BoardStore, LogEntry, SqliteStore, StoredBoard
from persistence.history import KEEP_NOTHING
from persistence.mongo import MongoStore
from persistence.store import Version
from persistence.transfer import board_state, export_all, export_board, import_all, import_board
from tests.persistence_servers import MongoServer, database_url, secantus_command
from tests.services import free_port


def entries(board: StoredBoard) -> list[tuple[int, bytes]]:
    return [(entry.seq, entry.update) for entry in board.updates]


async def test_a_seq_taken_by_another_process_is_retried_in_order(mongo_url: str) -> None:
    async with MongoStore(mongo_url) as first, MongoStore(mongo_url) as second:
        assert await first.append({"a": [b"a1"], "b": [b"b1"], "c": [b"c1"]}) == {
            "a": 1,
            "b": 1,
            "c": 1,
        }
        # The second process writes board b behind the first one's back.
        assert await second.append({"b": [b"b2"]}) == {"b": 2}
        # The first still believes b is at 1: its insert of b2 collides and is renumbered,
        # while a (before b in the batch) and c (after it) are written once each.
        assert await first.append({"a": [b"a2"], "b": [b"b3", b"b4"], "c": [b"c2"]}) == {
            "a": 2,
            "b": 4,
            "c": 2,
        }
        assert entries(await second.load("b")) == [(1, b"b1"), (2, b"b2"), (3, b"b3"), (4, b"b4")]
        assert entries(await second.load("a")) == [(1, b"a1"), (2, b"a2")]
        assert entries(await second.load("c")) == [(1, b"c1"), (2, b"c2")]


@pytest.mark.parametrize("transactions", [True, False], ids=["transaction", "ordered-writes"])
async def test_compaction_with_and_without_transactions(mongo_url: str, transactions: bool) -> None:
    clock = Clock(100.0)
    async with MongoStore(mongo_url, transactions=transactions, clock=clock) as store:
        await store.append({"b": [b"u1", b"u2", b"u3"]})
        clock.now = 200.0
        await store.write_snapshot("b", b"upto-2", 2)
        clock.now = 300.0
        await store.write_snapshot("b", b"upto-3", 3)
        await store.write_snapshot("b", b"stale", 1)
        await store.append({"b": [b"u4"]})

        board = await store.load("b")
        assert (board.snapshot, board.snapshot_seq, entries(board)) == (b"upto-3", 3, [(4, b"u4")])
        # Snapshots carry the time of the updates they cover; the covered updates are kept.
        assert await store.versions("b") == [
            Version(1, 100.0, "update"),
            Version(2, 100.0, "update"),
            Version(2, 100.0, "snapshot"),
            Version(3, 100.0, "update"),
            Version(3, 100.0, "snapshot"),
            Version(4, 300.0, "update"),
        ]
        assert (await store.load_at("b", 250.0)).snapshot == b"upto-3"
        assert (await store.load_at("b", 99.0)).snapshot is None
        await store.delete_board("b")
        assert await store.versions("b") == [] and await store.list_boards() == []


async def test_a_crash_between_snapshot_and_trim_loses_nothing(mongo_url: str) -> None:
    async with MongoStore(mongo_url, transactions=False) as store:
        await store.append({"b": [b"u1", b"u2", b"u3"]})
        # What a crash after writing the snapshot but before trimming the log leaves behind.
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        try:
            snapshots = client.get_default_database()["snapshots"]
            document = {"board_id": "b", "seq": 2, "at": time.time(), "state": b"upto-2"}
            await snapshots.insert_one(document)
        finally:
            await client.close()

        board = await store.load("b")
        assert (board.snapshot, board.snapshot_seq, entries(board)) == (b"upto-2", 2, [(3, b"u3")])
        assert sorted((v.seq, v.kind) for v in await store.versions("b")) == [
            (2, "snapshot"),
            (3, "update"),
        ]
        assert await store.append({"b": [b"u4"]}) == {"b": 4}
        await store.write_snapshot("b", b"upto-4", 4)
        # The entries the crash left in the log moved to history once, like the rest.
        versions = [(v.seq, v.kind) for v in await store.versions("b")]
        assert sorted(versions) == [
            (1, "update"),
            (2, "snapshot"),
            (2, "update"),
            (3, "update"),
            (4, "snapshot"),
            (4, "update"),
        ]


@pytest.mark.skipif(secantus_command() is None, reason="SecantusDB is not installed")
async def test_acknowledged_appends_survive_a_killed_server(tmp_path: Path) -> None:
    server = MongoServer(tmp_path / "data")
    server.start()
    try:
        url = database_url(server.url, "boardcast")
        async with MongoStore(url) as store:
            assert await store.append({"b": [b"one", b"two"], "c": [b"three"]}) == {"b": 2, "c": 1}
            await store.write_snapshot("c", b"snap", 1)
        server.kill()
        server.start()
        async with MongoStore(url) as store:
            assert entries(await store.load("b")) == [(1, b"one"), (2, b"two")]
            assert (await store.load("c")).snapshot == b"snap"
            assert await store.append({"b": [b"four"]}) == {"b": 3}
    finally:
        server.stop()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def build_board(store: BoardStore, board_id: str, seed: int) -> None:
    """Store a board edited by three clients: adds, renames, deletes, text, a snapshot."""
    rng = random.Random(seed)
    docs: list[pycrdt.Doc[Any]] = [pycrdt.Doc() for _ in range(3)]
    updates: list[bytes] = []
    docs[0].observe(lambda event: updates.append(event.update))
    for step in range(120):
        author = docs[rng.randrange(3)]
        tasks = author.get("tasks", type=pycrdt.Map)
        if step % 7 == 3 and len(tasks) > 2:
            del tasks[rng.choice(sorted(tasks.keys()))]
        elif step % 5 == 1 and len(tasks):
            tasks[rng.choice(sorted(tasks.keys()))]["title"] = f"renamed {step} · ünïcødé"
        else:
            notes = pycrdt.Text(f"notes {step}")
            tasks[f"t{seed}-{step}"] = pycrdt.Map({"title": f"task {step}", "notes": notes})
        # Every client syncs with the first, whose observed updates are what the server logs.
        for other in docs[1:]:
            docs[0].apply_update(other.get_update(docs[0].get_state()))
            other.apply_update(docs[0].get_update(other.get_state()))
        if step == 60:
            last = (await store.append({board_id: list(updates)}))[board_id]
            await store.write_snapshot(board_id, docs[0].get_update(), last)
            updates.clear()
    await store.append({board_id: list(updates)})


def loaded(board: StoredBoard) -> pycrdt.Doc[Any]:
    """The document a board host builds from what the store returned."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if board.snapshot is not None:
        doc.apply_update(board.snapshot)
    for entry in board.updates:
        doc.apply_update(entry.update)
    return doc


def state_vector(doc: pycrdt.Doc[Any]) -> dict[int, int]:
    """The document's state vector decoded: client id -> clock."""
    decoder = Decoder(doc.get_state())
    count = decoder.read_var_uint()
    return dict((decoder.read_var_uint(), decoder.read_var_uint()) for _ in range(count))


async def assert_same_board(source: BoardStore, target: BoardStore, board_id: str) -> None:
    """The board loads from ``target`` as the same document it is in ``source``."""
    source_doc = loaded(await source.load(board_id))
    target_doc = loaded(await target.load(board_id))
    assert state_vector(target_doc) == state_vector(source_doc)
    assert len(state_vector(source_doc)) == 3
    source_tasks = source_doc.get("tasks", type=pycrdt.Map).to_py()
    assert target_doc.get("tasks", type=pycrdt.Map).to_py() == source_tasks
    assert source_tasks and len(source_tasks) > 20
    # Byte for byte: the state each store hands out, and the document the target loads.
    exported = await board_state(source, board_id)
    assert await board_state(target, board_id) == exported
    assert target_doc.get_update() == exported


async def test_a_board_moves_from_the_embedded_store_to_mongo_unchanged(
    tmp_path: Path, mongo_url: str
) -> None:
    async with SqliteStore(tmp_path / "boards.sqlite3") as sqlite, MongoStore(mongo_url) as mongo:
        await build_board(sqlite, "roadmap", seed=1)
        await import_board(mongo, await export_board(sqlite, "roadmap"))
        await assert_same_board(sqlite, mongo, "roadmap")


async def test_a_whole_store_moves_from_the_embedded_store_to_mongo(
    tmp_path: Path, mongo_url: str
) -> None:
    board_ids = ["alpha", "team/beta", "γάμμα"]
    async with SqliteStore(tmp_path / "boards.sqlite3") as sqlite, MongoStore(mongo_url) as mongo:
        for seed, board_id in enumerate(board_ids):
            await build_board(sqlite, board_id, seed=seed)
        await export_all(sqlite, tmp_path / "export")
        assert sorted(await import_all(mongo, tmp_path / "export")) == sorted(board_ids)

        assert await mongo.list_boards() == sorted(board_ids)
        for board_id in board_ids:
            await assert_same_board(sqlite, mongo, board_id)


MIB = 1024 * 1024


async def chunk_count(url: str, board_id: str) -> int:
    """How many chunk documents the board has in the database, counted behind the store."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        return await client.get_default_database()["chunks"].count_documents({"board_id": board_id})
    finally:
        await client.close()


def big_board_updates(size: int) -> tuple[pycrdt.Doc[Any], bytes, bytes]:
    """A Yjs document whose first update is ``size`` bytes of text, and a small second one."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    notes = random.Random(7).choices("abcdefghijklmnopqrstuvwxyz ", k=size)
    doc.get("tasks", type=pycrdt.Map)["big"] = pycrdt.Map({"notes": "".join(notes)})
    doc.get("tasks", type=pycrdt.Map)["small"] = pycrdt.Map({"title": "after the big one"})
    return doc, updates[0], updates[1]


async def test_a_20_mib_update_and_snapshot_round_trip_and_leave_no_chunk(mongo_url: str) -> None:
    doc, big, small = big_board_updates(20 * MIB)
    assert len(big) > 20 * MIB
    clock = Clock(100.0)
    async with MongoStore(mongo_url, clock=clock) as store:
        assert await store.append({"b": [big], "other": [b"o1"]}) == {"b": 1, "other": 1}
        clock.now = 200.0
        assert await store.append({"b": [small]}) == {"b": 2}
        board = await store.load("b")
        assert [e.update for e in board.updates] == [big, small]
        assert await chunk_count(mongo_url, "b") == 3  # 8 + 8 + 4 MiB

        state = doc.get_update()
        assert len(state) > 20 * MIB
        await store.write_snapshot("b", state, 2)
        board = await store.load("b")
        assert board.snapshot == state and board.updates == []
        # The compacted 20 MiB update is history now, and the past reads it back whole.
        assert await store.load_at("b", 150.0) == StoredBoard(
            "b", None, 0, [LogEntry(1, big, 100.0)]
        )
        assert await store.load_at("b", 200.0) == StoredBoard("b", state, 2, [])
        exported = await board_state(store, "b")
        reloaded: pycrdt.Doc[Any] = pycrdt.Doc()
        reloaded.apply_update(state)
        assert exported == reloaded.get_update()

        await store.delete_board("b")
        assert await chunk_count(mongo_url, "b") == 0
        assert await store.list_boards() == ["other"]


async def test_without_chunks_a_20_mib_document_is_refused(mongo_url: str) -> None:
    """What the store avoids: the server (and the driver) refuse any document over 16 MiB."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        updates = client.get_default_database()["updates"]
        with pytest.raises(DocumentTooLarge):
            await updates.insert_one(
                {"board_id": "b", "seq": 1, "at": 1.0, "update": b"x" * (20 * MIB)}
            )
    finally:
        await client.close()


async def test_chunked_history_is_dropped_with_its_chunks(mongo_url: str) -> None:
    async with MongoStore(mongo_url, chunk_size=1000, history=KEEP_NOTHING) as store:
        updates = [bytes([i]) * 2500 for i in range(1, 4)]
        await store.append({"b": updates})
        assert await chunk_count(mongo_url, "b") == 9
        await store.write_snapshot("b", b"s" * 1500, 3)
        # The covered updates left no history, and took their chunks along: the snapshot's 2
        # chunks remain.
        assert [(v.seq, v.kind) for v in await store.versions("b")] == [(3, "snapshot")]
        assert await chunk_count(mongo_url, "b") == 2
        await store.write_snapshot("b", b"t" * 1500, 3)  # replaces it; old chunks are orphans
        assert (await store.load("b")).snapshot == b"t" * 1500


async def test_chunks_a_crash_left_unreferenced_are_swept_on_load(mongo_url: str) -> None:
    clock = Clock(10_000.0)
    async with MongoStore(mongo_url, chunk_size=1000, clock=clock, orphan_grace=60.0) as store:
        await store.append({"b": [b"k" * 2500]})
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
        try:
            chunks = client.get_default_database()["chunks"]
            # What a crash after writing chunks but before the entry naming them leaves.
            orphan = {"set": "crashed", "board_id": "b", "at": clock.now, "data": b"z" * 1000}
            await chunks.insert_many([{**orphan, "n": n} for n in range(2)])
            assert await chunk_count(mongo_url, "b") == 5
            # Within the grace period it may be a write in flight: left alone.
            await store.load("b")
            assert await chunk_count(mongo_url, "b") == 5
            clock.now += 61
            assert [e.update for e in (await store.load("b")).updates] == [b"k" * 2500]
            assert await chunk_count(mongo_url, "b") == 3
            assert await chunks.count_documents({"set": "crashed"}) == 0
        finally:
            await client.close()


async def test_an_unreachable_server_fails_a_call_within_the_timeout() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}/boardcast"
    async with MongoStore(url, server_selection_timeout=0.5, connect_timeout=0.5) as store:
        started = time.monotonic()
        with pytest.raises(ServerSelectionTimeoutError):
            await store.append({"b": [b"u1"]})
        assert time.monotonic() - started < 5.0
