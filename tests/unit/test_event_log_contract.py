"""One contract for every event log: memory, SQLite (plain and sealed) and MongoDB (SecantusDB).

What a worker relies on: offsets strictly increase and are read in order, an append is
idempotent on the event id, committed offsets never move back, two writers appending at once
never make a reader skip an event, and retention drops only what every consumer is past.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from persistence.encrypted import KeySource
from persistence.event_log import ManagedEventLog, NewEvent, Retention
from persistence.event_log_factory import SealedCodec
from persistence.event_log_memory import MemoryEventLog
from persistence.event_log_sqlite import SqliteEventLog
from persistence.keyring import KeyRing
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

Opener = Callable[[], ManagedEventLog]


def new_event(n: int, board: str = "b1", text: str = "hello") -> NewEvent:
    return NewEvent(
        f"{board}:{n}:0", board, "p1", "task.updated", {"task_id": f"t{n}", "text": text}, "ann"
    )


@pytest.fixture(params=["memory", "sqlite", "sealed-sqlite", "mongodb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same log again each call (another process's view of it, but memory's)."""
    if request.param == "memory":
        shared = MemoryEventLog()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SqliteEventLog(tmp_path / "events.sqlite3")
    if request.param == "sealed-sqlite":
        keys = KeySource(ring=KeyRing.open(str(tmp_path / "keys.json")))
        return lambda: SqliteEventLog(tmp_path / "events.sqlite3", codec=SealedCodec(keys))
    url = request.getfixturevalue("mongo_url")
    from persistence.event_log_mongo import MongoEventLog

    return lambda: MongoEventLog(url)


@pytest.fixture
async def log(opener: Opener) -> AsyncIterator[ManagedEventLog]:
    opened = opener()
    yield opened
    await opened.close()


async def test_appended_events_read_back_in_offset_order(log: ManagedEventLog) -> None:
    assert await log.last_offset() == 0
    last = await log.append([new_event(n) for n in range(1, 6)])
    assert last == await log.last_offset() == 5
    events = await log.read(0, 100)
    assert [e.offset for e in events] == [1, 2, 3, 4, 5]
    assert [e.id for e in events] == [f"b1:{n}:0" for n in range(1, 6)]
    assert events[0].data == {"task_id": "t1", "text": "hello"}
    assert (events[0].board_id, events[0].project, events[0].type, events[0].actor) == (
        "b1",
        "p1",
        "task.updated",
        "ann",
    )
    assert [e.offset for e in await log.read(2, 2)] == [3, 4]
    assert await log.read(5, 10) == []


async def test_appending_the_same_ids_again_appends_nothing(log: ManagedEventLog) -> None:
    await log.append([new_event(1), new_event(2)])
    # Redelivery after a crash: the same ids, and one new one after them.
    assert await log.append([new_event(1), new_event(2)]) == 2
    assert await log.append([new_event(2), new_event(3)]) == 3
    assert [e.id for e in await log.read(0, 10)] == ["b1:1:0", "b1:2:0", "b1:3:0"]


async def test_committed_offsets_never_move_back_but_a_rewind_does(log: ManagedEventLog) -> None:
    assert await log.committed("analytics") == 0
    await log.commit("analytics", 7)
    await log.commit("analytics", 3)
    assert await log.committed("analytics") == 7
    await log.commit("webhooks", 2)
    assert await log.consumers() == {"analytics": 7, "webhooks": 2}
    await log.rewind("analytics", 1)
    assert await log.committed("analytics") == 1


async def test_two_writers_at_once_never_make_a_reader_skip(opener: Opener) -> None:
    writers = [opener(), opener()]
    reader = opener()
    per_writer = 60
    seen: list[int] = []
    ids: list[str] = []
    done = asyncio.Event()

    async def write(number: int, log: ManagedEventLog) -> None:
        for n in range(per_writer):
            await log.append([new_event(n, board=f"w{number}")])

    async def read() -> None:
        # Reads as a worker does: after the last offset it saw, never looking back.
        after = 0
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            batch = await reader.read(after, 7)
            for event in batch:
                seen.append(event.offset)
                ids.append(event.id)
                after = event.offset
            if done.is_set() and not batch:
                return
            await asyncio.sleep(0.001)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(n, log) for n, log in enumerate(writers)))
    done.set()
    await asyncio.wait_for(reading, 60)
    assert sorted(ids) == sorted(f"w{w}:{n}:0" for w in range(2) for n in range(per_writer))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    for log in (*writers, reader):
        await log.close()


async def test_retention_drops_only_what_every_consumer_is_past(log: ManagedEventLog) -> None:
    await log.append([new_event(n) for n in range(1, 11)])
    keep_three = Retention(max_age_seconds=10**9, max_count=3)
    assert await log.trim(keep_three, now=0.0) == 0  # no consumer yet: nothing is known past
    await log.commit("analytics", 9)
    await log.commit("webhooks", 4)
    assert await log.trim(keep_three, now=0.0) == 4  # up to the slowest consumer
    assert await log.first_offset() == 5
    await log.commit("webhooks", 10)
    await log.trim(keep_three, now=0.0)
    assert [e.offset for e in await log.read(0, 100)] == [8, 9, 10]
    # By age: everything old goes but the newest, which the next offset continues from.
    await log.commit("analytics", 10)
    await log.trim(Retention(max_age_seconds=0, max_count=10**9), now=10**12)
    assert [e.offset for e in await log.read(0, 100)] == [10]
    assert await log.append([new_event(11)]) == 11


async def test_sealed_data_is_not_on_disk_in_plaintext(tmp_path: Path) -> None:
    keys = KeySource(ring=KeyRing.open(str(tmp_path / "keys.json")))
    log = SqliteEventLog(tmp_path / "events.sqlite3", codec=SealedCodec(keys))
    await log.append([new_event(1, text="the secret launch date")])
    assert (await log.read(0, 1))[0].data["text"] == "the secret launch date"
    await log.close()
    raw: Any = b"".join(path.read_bytes() for path in tmp_path.glob("events.sqlite3*"))
    assert b"secret launch" not in raw
    assert b"b1:1:0" in raw  # ids, boards and offsets stay readable, as in the store


async def test_a_mongodb_reader_waits_for_an_offset_that_shows_up_late(
    request: pytest.FixtureRequest,
) -> None:
    """A server may show offset n + 1 before n; the reader must not move past n meanwhile."""
    url = request.getfixturevalue("mongo_url")
    from pymongo import AsyncMongoClient

    from persistence.event_log_mongo import MongoEventLog

    log = MongoEventLog(url, gap_seconds=3600)
    await log.append([new_event(1)])
    # What a slow insert of offset 2 next to a fast insert of offset 3 looks like to a reader.
    [third] = await _stored_like(log, new_event(3), offset=3)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    events = client.get_default_database()["events"]
    await events.insert_one(third)
    try:
        assert [event.offset for event in await log.read(0, 10)] == [1]
        assert await log.read(1, 10) == []  # offset 2 is not there yet: wait, do not skip it
        [second] = await _stored_like(log, new_event(2), offset=2)
        await events.insert_one(second)
        assert [event.id for event in await log.read(1, 10)] == ["b1:2:0", "b1:3:0"]
    finally:
        await client.close()
        await log.close()


async def test_a_mongodb_reader_passes_a_gap_that_never_fills(
    request: pytest.FixtureRequest,
) -> None:
    url = request.getfixturevalue("mongo_url")
    from pymongo import AsyncMongoClient

    from persistence.event_log_mongo import MongoEventLog

    log = MongoEventLog(url, gap_seconds=0.2)
    await log.append([new_event(n) for n in range(1, 4)])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    await client.get_default_database()["events"].delete_one({"_id": 2})
    try:
        assert [event.offset for event in await log.read(1, 10)] == []
        await asyncio.sleep(0.3)
        assert [event.offset for event in await log.read(1, 10)] == [3]
    finally:
        await client.close()
        await log.close()


async def _stored_like(log: Any, event: NewEvent, *, offset: int) -> list[dict[str, Any]]:
    """The document the log would store for ``event`` at ``offset`` (written here by hand)."""
    from bson import Binary

    return [
        {
            "_id": offset,
            "id": event.id,
            "board_id": event.board_id,
            "project": event.project,
            "type": event.type,
            "data": Binary(log._codec.encode(event)),
            "actor": event.actor,
            "at": 0.0,
        }
    ]
