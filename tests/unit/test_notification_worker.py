"""The notification worker over a real SQLite store: batches in, inbox out, twice is once.

Also the reminder loop over the same store, and the webhook ``on_disabled`` hook.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from persistence.event_log import LoggedEvent
from persistence.notification_store_sqlite import SqliteNotificationStore
from persistence.webhook_store import Endpoint
from workers.notification_rules import Names
from workers.notifications import NotificationWorker, notify_disabled
from workers.reminders import ReminderLoop, ReminderSettings

pytestmark = pytest.mark.timeout(60)


async def by_name(names: Any, ids: Any) -> Names:
    return Names(ids_by_name={"bob": "u-bob"}, names_by_id={"u-ada": "Ada"})


def event(offset: int, kind: str, actor: str = "u-ada", **data: Any) -> LoggedEvent:
    data.setdefault("task_id", "t1")
    return LoggedEvent(offset, f"b1:{offset}:0", "b1", "p1", kind, data, actor, 100.0)


BATCH = [
    event(1, "task.created", column="todo", due="2026-01-01"),
    event(2, "task.moved", from_column="todo", to_column="doing"),  # nobody assigned yet
    event(3, "task.assigned", added=["u-bob", "u-cy"], removed=[]),
    event(4, "task.commented", comment_id="c1", author="u-ada", mentions=["bob"]),
    event(5, "task.assigned", added=[], removed=["u-cy"]),
    event(6, "task.moved", from_column="doing", to_column="done"),
    event(7, "member.changed", scope="project", target="p1", user="u-dee", role="admin"),
]
EXPECTED = [
    ("u-bob", "assigned"),
    ("u-cy", "assigned"),
    ("u-bob", "mentioned"),
    ("u-cy", "commented"),
    ("u-cy", "unassigned"),
    ("u-bob", "moved"),
    ("u-dee", "member"),
]


async def everything(store: SqliteNotificationStore) -> list[tuple[str, str]]:
    return [(n.user, n.kind) for n in await store.since(0, limit=1000)]


async def test_a_batch_tells_each_person_once_even_when_handled_again(tmp_path: Path) -> None:
    store = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))
    worker = NotificationWorker(store, lookup=by_name, clock=lambda: 500.0)
    await worker.handle(BATCH)
    assert await everything(store) == EXPECTED
    assert await store.inbox("u-ada", limit=10) == []  # the actor of every change
    # The runtime may hand the batch again (a crash before its commit), or part of it.
    await worker.handle(BATCH)
    await worker.handle(BATCH[3:])
    assert await everything(store) == EXPECTED
    assert await store.people_with_roles("p1", ["owner", "admin"]) == ["u-dee"]
    await store.close()


async def test_a_batch_cut_short_by_a_crash_is_completed_by_its_redelivery(tmp_path: Path) -> None:
    store = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))

    class Crash(Exception):
        pass

    class CrashesAfterAdding(SqliteNotificationStore):
        async def save_tasks(self, states: Any) -> None:
            raise Crash  # the notifications are in, the task states are not

    crashing = CrashesAfterAdding(store.path)
    with pytest.raises(Crash):
        await NotificationWorker(crashing, lookup=by_name).handle(BATCH[:4])
    await crashing.close()
    await NotificationWorker(store, lookup=by_name).handle(BATCH)
    assert await everything(store) == EXPECTED
    await store.close()


async def test_reminders_are_sent_once_due_soon_and_once_overdue(tmp_path: Path) -> None:
    store = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))
    due = datetime(2026, 1, 2, tzinfo=UTC).timestamp()  # "2026-01-01" ends then
    await NotificationWorker(store, lookup=by_name).handle(BATCH[:3])
    now = [due - 3 * 86400]
    loop = ReminderLoop(store, ReminderSettings(due_soon_seconds=86400), clock=lambda: now[0])
    assert await loop.run_once() == 0  # not due within a day yet
    now[0] = due - 3600
    assert await loop.run_once() == 2 and await loop.run_once() == 0
    now[0] = due + 60
    assert await loop.run_once() == 2 and await loop.run_once() == 0
    reminders = [(n.user, n.kind) for n in await store.since(2, limit=100)]
    assert sorted(reminders) == sorted(
        [("u-bob", "due_soon"), ("u-cy", "due_soon"), ("u-bob", "overdue"), ("u-cy", "overdue")]
    )
    # A new assignee of a task already overdue is told so; those told are not told again.
    await NotificationWorker(store, lookup=by_name).handle(
        [event(8, "task.assigned", added=["u-eve"], removed=[])]
    )
    assert await loop.run_once() == 1
    assert [n.kind for n in await store.inbox("u-eve", limit=5)] == ["overdue", "assigned"]
    await store.close()


async def test_a_disabled_endpoint_is_told_to_the_projects_owners_and_admins(
    tmp_path: Path,
) -> None:
    store = SqliteNotificationStore(str(tmp_path / "n.sqlite3"))
    await NotificationWorker(store, lookup=by_name).handle(
        [
            event(1, "member.changed", scope="project", target="p1", user="u-own", role="owner"),
            event(2, "member.changed", scope="project", target="p1", user="u-adm", role="admin"),
            event(3, "member.changed", scope="project", target="p1", user="u-ed", role="editor"),
            event(4, "member.changed", scope="project", target="p2", user="u-x", role="owner"),
        ]
    )
    endpoint = Endpoint("wh1", "p1", "https://example.com/h", ("*",), "s", updated_at=5.0)
    hook = notify_disabled(store, clock=lambda: 900.0)
    await hook(endpoint, "410 Gone")
    await hook(endpoint, "410 Gone")  # told once
    told = [n for n in await store.since(0, limit=100) if n.kind == "webhook_disabled"]
    assert sorted(n.user for n in told) == ["u-adm", "u-own"]
    assert told[0].data["reason"] == "410 Gone" and told[0].project == "p1"
    await store.close()
