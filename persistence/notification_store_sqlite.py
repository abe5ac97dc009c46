"""Notifications in SQLite: ``notifications.sqlite3`` beside the board store.

The ``seq`` is the row's ``INTEGER PRIMARY KEY AUTOINCREMENT``, assigned inside a write
transaction that holds the file's one write lock: seq *n* commits before *n + 1* is even
given out, so a reader following :meth:`since` never skips one. WAL with
``synchronous=FULL``: a notification recorded is on disk before the event log's offset moves
past its event. Calls run in a thread through ``SerialFile``, one at a time per process;
several processes (the worker, every gateway) share the file. ``title`` and ``data`` (and
learnt task titles) are sealed at rest when encryption is on.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from persistence.notification_state import ReminderStage, TaskState
from persistence.notification_store import Notification
from persistence.sqlite_files import SerialFile
from persistence.webhook_store import Sealer

FILENAME = "notifications.sqlite3"
_BUSY_SECONDS = 30.0

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user TEXT NOT NULL,
    created_at REAL NOT NULL, read_at REAL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user, seq);
CREATE INDEX IF NOT EXISTS notifications_unread ON notifications (user, read_at);
CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created_at);
CREATE TABLE IF NOT EXISTS notification_tasks (
    board_id TEXT NOT NULL, task_id TEXT NOT NULL, due_at REAL, reminded TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (board_id, task_id)
);
CREATE INDEX IF NOT EXISTS notification_tasks_due ON notification_tasks (due_at);
CREATE TABLE IF NOT EXISTS notification_roles (
    project TEXT NOT NULL, user TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (project, user)
);
"""

_COLUMNS = "seq, read_at, doc"


def notification_document(notification: Notification, sealer: Sealer) -> dict[str, Any]:
    """A notification as stored (without its seq and read time): title and data sealed."""
    return {
        "id": notification.id,
        "user": notification.user,
        "kind": notification.kind,
        "title": sealer.seal(notification.title, "notification-title", notification.id),
        "created_at": notification.created_at,
        "board_id": notification.board_id,
        "project": notification.project,
        "task_id": notification.task_id,
        "actor": notification.actor,
        "event_id": notification.event_id,
        "data": sealer.seal(
            json.dumps(notification.data, sort_keys=True), "notification-data", notification.id
        ),
    }


def notification_from(
    doc: dict[str, Any], sealer: Sealer, *, seq: int, read_at: float | None
) -> Notification:
    """The notification a stored document holds."""
    data = json.loads(sealer.open(doc["data"], "notification-data", doc["id"]))
    return Notification(
        id=doc["id"],
        user=doc["user"],
        kind=doc["kind"],
        title=sealer.open(doc["title"], "notification-title", doc["id"]),
        created_at=float(doc["created_at"]),
        board_id=doc.get("board_id") or "",
        project=doc.get("project") or "",
        task_id=doc.get("task_id") or "",
        actor=doc.get("actor") or "",
        event_id=doc.get("event_id") or "",
        data=data if isinstance(data, dict) else {},
        seq=seq,
        read_at=read_at,
    )


def task_document(task: TaskState, sealer: Sealer) -> dict[str, Any]:
    """A task's state as stored: a learnt title sealed."""
    doc = task.to_dict()
    if task.title:
        doc["title"] = sealer.seal(
            task.title, "notification-task", f"{task.board_id}/{task.task_id}"
        )
    return doc


def task_from(doc: dict[str, Any], sealer: Sealer) -> TaskState:
    """The task state a stored document holds."""
    task = TaskState.from_dict(doc)
    if task.title:
        key = f"{task.board_id}/{task.task_id}"
        task = task.replace(title=sealer.open(task.title, "notification-task", key))
    return task


class SqliteNotificationStore:
    """The embedded notification store (see the module docstring)."""

    def __init__(self, path: str, *, sealer: Sealer | None = None) -> None:
        self.path = path
        self._sealer = sealer or Sealer()
        self._file = SerialFile(path, _SCHEMA, busy_timeout=_BUSY_SECONDS)

    async def _run(self, work: Callable[[sqlite3.Connection], _T], *, write: bool = True) -> _T:
        return await self._file.run(work, write=write)

    def _row(self, row: tuple[int, float | None, str]) -> Notification:
        seq, read_at, doc = row
        return notification_from(json.loads(doc), self._sealer, seq=seq, read_at=read_at)

    async def add(self, notifications: Sequence[Notification]) -> list[Notification]:
        """See :meth:`NotificationStore.add`."""
        if not notifications:
            return []
        rows = [
            (
                n.id,
                n.user,
                n.created_at,
                n.read_at,
                json.dumps(notification_document(n, self._sealer)),
            )
            for n in notifications
        ]

        def add(db: sqlite3.Connection) -> list[int | None]:
            seqs: list[int | None] = []
            for row in rows:
                # Looked up first: an upsert that does nothing would still use up a seq.
                if db.execute("SELECT 1 FROM notifications WHERE id = ?", (row[0],)).fetchall():
                    seqs.append(None)
                    continue
                found = db.execute(
                    "INSERT INTO notifications (id, user, created_at, read_at, doc)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING seq",
                    row,
                ).fetchall()
                seqs.append(int(found[0][0]))
            return seqs

        seqs = await self._run(add)
        return [
            notification.replace(seq=seq)
            for notification, seq in zip(notifications, seqs, strict=True)
            if seq is not None
        ]

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        """See :meth:`NotificationStore.since`."""
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM notifications WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, max(0, limit)),
            ).fetchall(),
            write=False,
        )
        return [self._row(row) for row in rows]

    async def last_seq(self) -> int:
        """See :meth:`NotificationStore.last_seq`."""

        def last(db: sqlite3.Connection) -> int:
            # The AUTOINCREMENT counter: the highest seq ever given, even if trimmed since.
            found = db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'notifications'"
            ).fetchall()
            return int(found[0][0]) if found else 0

        return await self._run(last, write=False)

    async def inbox(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """See :meth:`NotificationStore.inbox`."""
        below = before if before is not None else 2**62
        unread = " AND read_at IS NULL" if unread_only else ""
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM notifications WHERE user = ? AND seq < ?{unread}"
                " ORDER BY seq DESC LIMIT ?",
                (user, below, max(0, limit)),
            ).fetchall(),
            write=False,
        )
        return [self._row(row) for row in rows]

    async def unread(self, user: str) -> int:
        """See :meth:`NotificationStore.unread`."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM notifications WHERE user = ? AND read_at IS NULL", (user,)
            ).fetchall(),
            write=False,
        )
        return int(rows[0][0])

    async def mark_read(self, user: str, ids: Sequence[str] | None, *, at: float) -> int:
        """See :meth:`NotificationStore.mark_read`."""
        if ids is None:
            return await self._run(
                lambda db: (
                    db.execute(
                        "UPDATE notifications SET read_at = ? WHERE user = ? AND read_at IS NULL",
                        (at, user),
                    ).rowcount
                )
            )
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0

        def mark(db: sqlite3.Connection) -> int:
            changed = 0
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                changed += db.execute(
                    "UPDATE notifications SET read_at = ? WHERE user = ? AND read_at IS NULL"
                    f" AND id IN ({','.join('?' * len(part))})",
                    (at, user, *part),
                ).rowcount
            return changed

        return await self._run(mark)

    async def get(self, ids: Sequence[str]) -> list[Notification]:
        """See :meth:`NotificationStore.get`."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []

        def get(db: sqlite3.Connection) -> list[tuple[int, float | None, str]]:
            rows: list[tuple[int, float | None, str]] = []
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows += db.execute(
                    f"SELECT {_COLUMNS} FROM notifications"
                    f" WHERE id IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            return sorted(rows)

        return [self._row(row) for row in await self._run(get, write=False)]

    async def trim(self, *, older_than: float, keep_per_user: int) -> int:
        """Drop notifications created before ``older_than``, and each user's beyond their
        newest ``keep_per_user``."""
        return await self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM notifications WHERE created_at < ? OR seq IN ("
                    " SELECT seq FROM (SELECT seq, ROW_NUMBER() OVER"
                    " (PARTITION BY user ORDER BY seq DESC) AS newer FROM notifications)"
                    " WHERE newer > ?)",
                    (older_than, max(0, keep_per_user)),
                ).rowcount
            )
        )

    # -- the worker's tables ----------------------------------------------------------------

    async def tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TaskState]:
        """See :meth:`NotificationStateStore.tasks`."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def read(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows: list[tuple[str, str]] = []
            for board_id, task_id in wanted:
                rows += db.execute(
                    "SELECT doc, reminded FROM notification_tasks"
                    " WHERE board_id = ? AND task_id = ?",
                    (board_id, task_id),
                ).fetchall()
            return rows

        found = [self._task(row) for row in await self._run(read, write=False)]
        return {task.key: task for task in found}

    def _task(self, row: tuple[str, str]) -> TaskState:
        # The column is the truth for the reminder sent: mark_reminded moves only it.
        doc, reminded = row
        task = task_from(json.loads(doc), self._sealer)
        return task.replace(reminded=reminded if reminded in ("due_soon", "overdue") else "")

    async def save_tasks(self, states: Sequence[TaskState]) -> None:
        """See :meth:`NotificationStateStore.save_tasks`."""
        rows = [
            (
                s.board_id,
                s.task_id,
                s.due_at,
                s.reminded,
                json.dumps(task_document(s, self._sealer)),
            )
            for s in states
        ]
        if rows:
            await self._run(
                lambda db: db.executemany(
                    "INSERT OR REPLACE INTO notification_tasks"
                    " (board_id, task_id, due_at, reminded, doc) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            )

    async def forget_tasks(self, keys: Sequence[tuple[str, str]]) -> None:
        """See :meth:`NotificationStateStore.forget_tasks`."""
        if keys:
            await self._run(
                lambda db: db.executemany(
                    "DELETE FROM notification_tasks WHERE board_id = ? AND task_id = ?",
                    list(keys),
                )
            )

    async def tasks_to_remind(self, *, now: float, horizon: float, limit: int) -> list[TaskState]:
        """See :meth:`NotificationStateStore.tasks_to_remind`."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc, reminded FROM notification_tasks WHERE due_at IS NOT NULL"
                " AND due_at <= ? AND reminded != 'overdue' AND (reminded = '' OR due_at <= ?)"
                " ORDER BY due_at, board_id, task_id LIMIT ?",
                (horizon, now, max(0, limit)),
            ).fetchall(),
            write=False,
        )
        return [self._task(row) for row in rows]

    async def mark_reminded(
        self, board_id: str, task_id: str, *, due_at: float, stage: ReminderStage
    ) -> None:
        """See :meth:`NotificationStateStore.mark_reminded`."""
        await self._run(
            lambda db: db.execute(
                "UPDATE notification_tasks SET reminded = ?"
                " WHERE board_id = ? AND task_id = ? AND due_at = ?",
                (stage, board_id, task_id, due_at),
            )
        )

    async def set_roles(self, changes: Sequence[tuple[str, str, str | None]]) -> None:
        """See :meth:`NotificationStateStore.set_roles`."""
        if not changes:
            return

        def apply(db: sqlite3.Connection) -> None:
            for project, user, role in changes:
                if role is None:
                    db.execute(
                        "DELETE FROM notification_roles WHERE project = ? AND user = ?",
                        (project, user),
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO notification_roles (project, user, role)"
                        " VALUES (?, ?, ?)",
                        (project, user, role),
                    )

        await self._run(apply)

    async def people_with_roles(self, project: str, roles: Sequence[str]) -> list[str]:
        """See :meth:`NotificationStateStore.people_with_roles`."""
        wanted = list(roles)
        if not wanted:
            return []
        rows = await self._run(
            lambda db: db.execute(
                "SELECT user FROM notification_roles WHERE project = ?"
                f" AND role IN ({','.join('?' * len(wanted))}) ORDER BY user",
                (project, *wanted),
            ).fetchall(),
            write=False,
        )
        return [str(user) for (user,) in rows]

    async def close(self) -> None:
        """Close the connection."""
        self._file.close()
