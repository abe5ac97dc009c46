"""One contract for the notification stores: memory, SQLite beside the board store, MongoDB.

Each test runs on every store. What they promise: a notification recorded twice is recorded
once; seqs rise in the order of recording and a reader that follows ``since`` from the last
seq it saw never skips one, even with two writers at once; a user's inbox pages newest first
and holds only their own; marking read touches only the caller's; trim drops the old and
what passes a user's cap, and seqs never go back after it; titles and data are sealed at rest;
the worker's task and role tables round-trip and say which tasks are owed a reminder.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pymongo
import pytest

from persistence.encrypted import KeySource
from persistence.keyring import KeyRing
from persistence.notification_state import TaskState, WorkerNotificationStore
from persistence.notification_store import Notification
from persistence.notification_store_memory import MemoryNotificationStore
from persistence.notification_store_mongo import MongoNotificationStore
from persistence.notification_store_sqlite import FILENAME, SqliteNotificationStore
from persistence.webhook_store import Sealer
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)

Opener = Callable[[], WorkerNotificationStore]


@pytest.fixture(params=["memory", "sqlite", "mongo"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store again each call (another process's view of it, but memory's)."""
    ring = KeyRing.open(str(tmp_path / "keys" / "at-rest.json"))
    sealer = Sealer(KeySource(ring=ring), encrypt=True)
    if request.param == "memory":
        shared = MemoryNotificationStore()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SqliteNotificationStore(str(tmp_path / FILENAME), sealer=sealer)
    url = request.getfixturevalue("mongo_url")
    return lambda: MongoNotificationStore(url, sealer=sealer)


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[WorkerNotificationStore]:
    opened = opener()
    try:
        yield opened
    finally:
        await opened.close()


def note(n: int, user: str = "u1", *, at: float | None = None, **changes: object) -> Notification:
    made = Notification(
        id=f"ev{n}:{user}",
        user=user,
        kind="assigned",
        title=f"Ada assigned you to task {n}",
        created_at=float(n) if at is None else at,
        board_id="b1",
        project="p1",
        task_id=f"t{n}",
        actor="ada",
        event_id=f"b1:{n}:0",
        data={"n": n},
    )
    return made.replace(**changes)


async def test_a_notification_recorded_twice_is_recorded_once(
    store: WorkerNotificationStore,
) -> None:
    first = await store.add([note(1), note(2), note(1)])
    assert [(n.id, n.seq) for n in first] == [("ev1:u1", 1), ("ev2:u1", 2)]
    assert first[0] == note(1, seq=1)
    again = await store.add([note(2), note(3), note(1)])
    assert [(n.id, n.seq) for n in again] == [("ev3:u1", 3)]
    assert await store.add([]) == []
    assert await store.last_seq() == 3
    assert [n.id for n in await store.since(0, limit=100)] == ["ev1:u1", "ev2:u1", "ev3:u1"]
    assert [n.id for n in await store.get(["ev3:u1", "nope", "ev1:u1"])] == ["ev1:u1", "ev3:u1"]


async def test_since_pages_in_seq_order(store: WorkerNotificationStore) -> None:
    await store.add([note(n, user=f"u{n % 3}") for n in range(1, 11)])
    seen: list[int] = []
    cursor = 0
    for _ in range(10):
        page = await store.since(cursor, limit=3)
        if not page:
            break
        seen += [n.seq for n in page]
        cursor = page[-1].seq
    assert seen == list(range(1, 11))
    assert await store.since(10, limit=5) == []
    assert await store.since(0, limit=0) == []


async def test_two_writers_at_once_never_make_a_reader_skip(opener: Opener) -> None:
    writers = [opener(), opener()]
    reader = opener()
    per_writer = 40
    seen: list[int] = []
    ids: list[str] = []
    done = asyncio.Event()

    async def write(number: int, store: WorkerNotificationStore) -> None:
        for n in range(per_writer):
            # Both writers also record each other's ids now and then: recorded once.
            await store.add([note(n, user=f"w{number}"), note(n // 2, user="both")])

    async def read() -> None:
        cursor = 0
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            # Whether the writers had finished before this read began: only then does an
            # empty read mean the end.
            finished = done.is_set()
            batch = await reader.since(cursor, limit=7)
            for notification in batch:
                seen.append(notification.seq)
                ids.append(notification.id)
                cursor = notification.seq
            if finished and not batch:
                return
            await asyncio.sleep(0.001)

    reading = asyncio.create_task(read())
    await asyncio.gather(*(write(n, store) for n, store in enumerate(writers)))
    done.set()
    await asyncio.wait_for(reading, 60)
    expected = {f"ev{n}:w{w}" for w in range(2) for n in range(per_writer)}
    expected |= {f"ev{n}:both" for n in range(per_writer // 2)}
    assert sorted(ids) == sorted(expected)  # every one, once
    assert seen == list(range(1, len(expected) + 1))  # gap-free, in order
    for store in {id(s): s for s in (*writers, reader)}.values():
        await store.close()


async def test_the_inbox_pages_newest_first_and_holds_only_the_users_own(
    store: WorkerNotificationStore,
) -> None:
    await store.add([note(n, user="u1" if n % 2 else "u2") for n in range(1, 21)])
    seen: list[int] = []
    before = None
    for _ in range(10):
        page = await store.inbox("u1", limit=4, before=before)
        if not page:
            break
        assert {n.user for n in page} == {"u1"}
        seen += [n.seq for n in page]
        before = page[-1].seq
    assert seen == list(range(19, 0, -2))
    assert await store.inbox("nobody", limit=10) == []
    assert [n.seq for n in await store.inbox("u2", limit=3, before=15)] == [14, 12, 10]


async def test_unread_and_mark_read_are_scoped_to_the_user(
    store: WorkerNotificationStore,
) -> None:
    await store.add([note(n, user="u1") for n in range(1, 6)] + [note(9, user="u2")])
    assert await store.unread("u1") == 5 and await store.unread("u2") == 1
    # Another user's id changes nothing, nor does an unknown one.
    assert await store.mark_read("u1", ["ev9:u2", "ev1:u1", "ev2:u1", "nope"], at=50.0) == 2
    assert await store.unread("u2") == 1
    assert await store.mark_read("u1", ["ev1:u1"], at=60.0) == 0  # already read
    assert await store.unread("u1") == 3
    unread = await store.inbox("u1", limit=10, unread_only=True)
    assert [n.id for n in unread] == ["ev5:u1", "ev4:u1", "ev3:u1"]
    (read,) = await store.get(["ev1:u1"])
    assert read.read_at == 50.0 and read.to_json()["read"] is True
    assert await store.mark_read("u1", None, at=70.0) == 3
    assert await store.unread("u1") == 0 and await store.unread("u2") == 1
    assert await store.mark_read("u1", [], at=80.0) == 0


async def test_trim_drops_the_old_and_the_over_cap_and_seqs_never_go_back(
    store: WorkerNotificationStore,
) -> None:
    await store.add([note(n, user="u1", at=100.0 + n) for n in range(1, 9)])
    await store.add([note(n, user="u2", at=100.0 + n) for n in range(9, 11)])
    # u1 keeps its newest 3, both lose what is older than 102.5.
    assert await store.trim(older_than=102.5, keep_per_user=3) == 5
    assert [n.seq for n in await store.inbox("u1", limit=10)] == [8, 7, 6]
    assert [n.seq for n in await store.inbox("u2", limit=10)] == [10, 9]
    assert await store.trim(older_than=0.0, keep_per_user=1) == 3
    assert [n.seq for n in await store.since(0, limit=10)] == [8, 10]
    # The newest went too: the next seq still follows the highest ever given.
    assert await store.trim(older_than=10_000.0, keep_per_user=100) == 2
    assert await store.last_seq() == 10
    assert [n.seq for n in await store.add([note(11)])] == [11]
    assert [n.seq for n in await store.since(0, limit=10)] == [11]


@pytest.mark.parametrize("opener", ["sqlite", "mongo"], indirect=True)
async def test_titles_and_data_are_sealed_at_rest(opener: Opener) -> None:
    store = opener()
    secret = note(1, title="Ada assigned you to 'Launch the Zephyr line'", data={"x": "zephyr"})
    await store.add([secret])
    await store.save_tasks([TaskState("b1", "t1", title="Zephyr launch plan")])
    raw = _raw_contents(store)
    assert "Zephyr" not in raw and "zephyr" not in raw and "enc1:" in raw
    assert (await store.get([secret.id]))[0].title == secret.title
    assert (await store.tasks([("b1", "t1")]))[("b1", "t1")].title == "Zephyr launch plan"
    await store.close()


async def test_task_and_role_tables_round_trip(store: WorkerNotificationStore) -> None:
    ada = TaskState("b1", "t1", project="p1", assignees=("ada", "bob"), due="2026-12-24")
    ada = ada.replace(due_at=1000.0, title="Ship it", updated_at=5.0)
    other = TaskState("b/1", "t", assignees=("cy",))
    await store.save_tasks([ada, other])
    found = await store.tasks([("b1", "t1"), ("b/1", "t"), ("b1", "nope")])
    assert found == {("b1", "t1"): ada, ("b/1", "t"): other}
    await store.save_tasks([ada.replace(assignees=("bob",))])
    assert (await store.tasks([("b1", "t1")]))[("b1", "t1")].assignees == ("bob",)
    await store.forget_tasks([("b/1", "t")])
    assert await store.tasks([("b/1", "t")]) == {}

    await store.set_roles([("p1", "ada", "owner"), ("p1", "bob", "admin"), ("p1", "cy", "viewer")])
    await store.set_roles([("p2", "dee", "owner"), ("p1", "bob", None), ("p1", "cy", "admin")])
    assert await store.people_with_roles("p1", ["owner", "admin"]) == ["ada", "cy"]
    assert await store.people_with_roles("p2", ["owner"]) == ["dee"]
    assert await store.people_with_roles("p3", ["owner"]) == []


async def test_tasks_owed_a_reminder_are_found_once_per_stage(
    store: WorkerNotificationStore,
) -> None:
    soon = TaskState("b1", "soon", assignees=("ada",), due_at=1_100.0)
    late = TaskState("b1", "late", assignees=("ada",), due_at=900.0)
    far = TaskState("b1", "far", assignees=("ada",), due_at=5_000.0)
    none = TaskState("b1", "none", assignees=("ada",))
    await store.save_tasks([soon, late, far, none])
    owed = await store.tasks_to_remind(now=1_000.0, horizon=2_000.0, limit=10)
    assert [t.task_id for t in owed] == ["late", "soon"]
    await store.mark_reminded("b1", "soon", due_at=1_100.0, stage="due_soon")
    await store.mark_reminded("b1", "late", due_at=900.0, stage="overdue")
    await store.mark_reminded("b1", "far", due_at=1.0, stage="overdue")  # not its due date
    assert await store.tasks_to_remind(now=1_000.0, horizon=2_000.0, limit=10) == []
    # Once its due date passes, the task told "due soon" is owed "overdue".
    owed = await store.tasks_to_remind(now=1_200.0, horizon=2_200.0, limit=10)
    assert [(t.task_id, t.reminded) for t in owed] == [("soon", "due_soon")]
    assert (await store.tasks([("b1", "soon")]))[("b1", "soon")].reminded == "due_soon"
    # A mark for another due date changed nothing: "far" is still owed its first reminder.
    owed = await store.tasks_to_remind(now=0.0, horizon=9e9, limit=1)
    assert [t.task_id for t in owed] == ["far"]


class _NoGapCheck(MongoNotificationStore):
    """A broken variant: reads straight through a missing seq (what the check guards)."""

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        cursor = self._notes.find({"_id": {"$gt": seq}}).sort("_id", 1).limit(limit)
        return [self._note(doc) async for doc in cursor]


@pytest.mark.parametrize("variant", [MongoNotificationStore, _NoGapCheck])
async def test_a_mongodb_reader_waits_for_a_seq_that_shows_up_late(
    request: pytest.FixtureRequest, variant: type[MongoNotificationStore]
) -> None:
    """A server may show seq n + 1 before n; a reader must not move past n meanwhile."""
    url = request.getfixturevalue("mongo_url")
    store = variant(url, gap_seconds=3600)
    other = MongoNotificationStore(url)
    try:
        await store.add([note(1)])
        # What a slow insert of seq 2 beside a fast insert of seq 3 looks like to a reader.
        await other._notes.insert_one({**_stored(other, note(3)), "_id": 3})
        cursor = 0
        seen: list[str] = []
        for _ in range(2):
            page = await store.since(cursor, limit=10)
            seen += [n.id for n in page]
            cursor = page[-1].seq if page else cursor
        await other._notes.insert_one({**_stored(other, note(2)), "_id": 2})
        page = await store.since(cursor, limit=10)
        seen += [n.id for n in page]
        if variant is MongoNotificationStore:
            assert seen == ["ev1:u1", "ev2:u1", "ev3:u1"]
        else:  # the check is what keeps a reader from skipping seq 2
            assert seen == ["ev1:u1", "ev3:u1"]
    finally:
        await other.close()
        await store.close()


def _stored(store: MongoNotificationStore, notification: Notification) -> dict[str, object]:
    from persistence.notification_store_sqlite import notification_document

    return {**notification_document(notification, store._sealer), "read_at": None}


def _raw_contents(store: WorkerNotificationStore) -> str:
    if isinstance(store, SqliteNotificationStore):
        db = sqlite3.connect(store.path)
        try:
            rows = db.execute(
                "SELECT doc FROM notifications UNION ALL SELECT doc FROM notification_tasks"
            ).fetchall()
        finally:
            db.close()
        return "\n".join(doc for (doc,) in rows)
    assert isinstance(store, MongoNotificationStore)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(store.url)
    try:
        database = client.get_default_database()
        docs = [*database["notifications"].find(), *database["notification_tasks"].find()]
    finally:
        client.close()
    return "\n".join(json.dumps(doc, default=str) for doc in docs)
