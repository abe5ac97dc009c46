"""People's notifications: the record, and the store interface.

A :class:`Notification` tells one user about one thing: a task assigned to them, an
``@mention`` in a comment, a change to a task they are assigned to, a due date coming, a
webhook endpoint of their project disabled. Its ``id`` is derived from what caused it (the
event id and the user, or the reminder's task, due date and user), so recording it twice
records it once: the notification worker may see an event again after a crash.

The store gives every new notification a ``seq``, strictly increasing across the store and
visible in seq order, so readers that follow the store (a gateway pushing to open sessions,
the e-mail worker) keep a cursor and read :meth:`NotificationStore.since` it, never
missing one.

Implementations (memory, SQLite beside the board store, MongoDB in its database) pass one
contract suite, ``tests/unit/test_notification_store_contract.py``;
``persistence/notification_store_factory.py`` picks one by the store URL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: What a notification is about (``kind``); the worker's rules are in workers/notifications.py.
KINDS: tuple[str, ...] = (
    "assigned",  # you were assigned to a task
    "unassigned",  # you were removed from a task
    "mentioned",  # someone @mentioned you in a comment
    "commented",  # a comment on a task you are assigned to
    "moved",  # a task you are assigned to moved to another column
    "updated",  # a task you are assigned to changed (title, due date...)
    "deleted",  # a task you were assigned to was deleted
    "due_soon",  # a task you are assigned to is due soon
    "overdue",  # a task you are assigned to is past its due date
    "member",  # you were added to a project or board, or your role changed
    "webhook_disabled",  # an endpoint of a project you own was disabled for failing
)


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing one user is told."""

    id: str  # stable for its cause, so recording it twice records it once
    user: str  # the account id of the person told
    kind: str  # one of KINDS
    title: str  # one line a person reads ("Ada assigned you to 'Ship it'")
    created_at: float  # unix seconds
    board_id: str = ""
    project: str = ""
    task_id: str = ""
    actor: str = ""  # who caused it (account id or service name), "" if unknown
    event_id: str = ""  # the logged event it came from, "" for reminders and notices
    data: dict[str, Any] = field(default_factory=dict)  # JSON fields of its kind
    seq: int = 0  # given by the store when first recorded; 0 before
    read_at: float | None = None

    def replace(self, **changes: Any) -> Notification:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """As the REST API and the live push show it."""
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "title": self.title,
            "created_at": self.created_at,
            "board_id": self.board_id,
            "project": self.project,
            "task_id": self.task_id,
            "actor": self.actor,
            "data": self.data,
            "read": self.read_at is not None,
            "read_at": self.read_at,
        }


@runtime_checkable
class NotificationStore(Protocol):
    """Where notifications live; every method is safe from several processes."""

    async def add(self, notifications: Sequence[Notification]) -> list[Notification]:
        """Record those not recorded yet (by id), each given the next ``seq``; the new ones,
        as stored (with their seq), in seq order. Ids already there change nothing."""
        ...

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        """Notifications of every user with a seq above ``seq``, in seq order, at most
        ``limit``; a notification with seq *n* is returned only once every lower seq is
        visible, so a reader that keeps the last seq it saw never skips one."""
        ...

    async def last_seq(self) -> int:
        """The highest seq recorded (0 if none)."""
        ...

    async def inbox(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """A user's notifications, newest first; only seqs below ``before`` if given."""
        ...

    async def unread(self, user: str) -> int:
        """How many of a user's notifications are unread."""
        ...

    async def mark_read(self, user: str, ids: Sequence[str] | None, *, at: float) -> int:
        """Mark these of the user's notifications read (all of them if ``ids`` is None);
        how many changed. Ids of other users' notifications change nothing."""
        ...

    async def get(self, ids: Sequence[str]) -> list[Notification]:
        """The notifications with these ids that exist, in seq order."""
        ...

    async def trim(self, *, older_than: float, keep_per_user: int) -> int:
        """Drop read or unread notifications created before ``older_than`` beyond each
        user's newest ``keep_per_user``; how many went."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
