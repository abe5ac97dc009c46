"""Notifications in memory, for tests and single-process runs: lost with the process."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from persistence.notification_state import ReminderStage, TaskState
from persistence.notification_store import Notification


class MemoryNotificationStore:
    """The notification store as dicts in this process (every caller in it shares one)."""

    def __init__(self) -> None:
        self._by_seq: dict[int, Notification] = {}
        self._seqs: list[int] = []  # sorted, for since()
        self._by_id: dict[str, int] = {}
        self._by_user: dict[str, list[int]] = {}  # each sorted
        self._last = 0
        self._tasks: dict[tuple[str, str], TaskState] = {}
        self._roles: dict[str, dict[str, str]] = {}

    async def add(self, notifications: Sequence[Notification]) -> list[Notification]:
        """See :meth:`NotificationStore.add`."""
        added: list[Notification] = []
        for notification in notifications:
            if notification.id in self._by_id:
                continue
            self._last += 1
            stored = notification.replace(seq=self._last)
            self._by_seq[stored.seq] = stored
            self._seqs.append(stored.seq)
            self._by_id[stored.id] = stored.seq
            self._by_user.setdefault(stored.user, []).append(stored.seq)
            added.append(stored)
        return added

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        """See :meth:`NotificationStore.since`."""
        start = bisect.bisect_right(self._seqs, seq)
        return [self._by_seq[s] for s in self._seqs[start : start + max(0, limit)]]

    async def last_seq(self) -> int:
        """See :meth:`NotificationStore.last_seq`."""
        return self._last

    async def inbox(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """See :meth:`NotificationStore.inbox`."""
        found: list[Notification] = []
        for seq in reversed(self._by_user.get(user, [])):
            if len(found) >= limit:
                break
            if before is not None and seq >= before:
                continue
            notification = self._by_seq[seq]
            if unread_only and notification.read_at is not None:
                continue
            found.append(notification)
        return found

    async def unread(self, user: str) -> int:
        """See :meth:`NotificationStore.unread`."""
        return sum(1 for s in self._by_user.get(user, []) if self._by_seq[s].read_at is None)

    async def mark_read(self, user: str, ids: Sequence[str] | None, *, at: float) -> int:
        """See :meth:`NotificationStore.mark_read`."""
        if ids is None:
            seqs = list(self._by_user.get(user, []))
        else:
            seqs = [self._by_id[i] for i in dict.fromkeys(ids) if i in self._by_id]
        changed = 0
        for seq in seqs:
            notification = self._by_seq[seq]
            if notification.user == user and notification.read_at is None:
                self._by_seq[seq] = notification.replace(read_at=at)
                changed += 1
        return changed

    async def get(self, ids: Sequence[str]) -> list[Notification]:
        """See :meth:`NotificationStore.get`."""
        seqs = sorted({self._by_id[i] for i in ids if i in self._by_id})
        return [self._by_seq[s] for s in seqs]

    async def trim(self, *, older_than: float, keep_per_user: int) -> int:
        """Drop notifications created before ``older_than``, and each user's beyond their
        newest ``keep_per_user``."""
        gone: set[int] = set()
        for seqs in self._by_user.values():
            beyond = seqs[: max(0, len(seqs) - keep_per_user)]
            gone.update(beyond)
            gone.update(s for s in seqs if self._by_seq[s].created_at < older_than)
        for seq in gone:
            notification = self._by_seq.pop(seq)
            del self._by_id[notification.id]
        self._seqs = [s for s in self._seqs if s not in gone]
        for user in list(self._by_user):
            kept = [s for s in self._by_user[user] if s not in gone]
            if kept:
                self._by_user[user] = kept
            else:
                del self._by_user[user]
        return len(gone)

    # -- the worker's tables ----------------------------------------------------------------

    async def tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TaskState]:
        """See :meth:`NotificationStateStore.tasks`."""
        return {key: self._tasks[key] for key in keys if key in self._tasks}

    async def save_tasks(self, states: Sequence[TaskState]) -> None:
        """See :meth:`NotificationStateStore.save_tasks`."""
        for state in states:
            self._tasks[state.key] = state

    async def forget_tasks(self, keys: Sequence[tuple[str, str]]) -> None:
        """See :meth:`NotificationStateStore.forget_tasks`."""
        for key in keys:
            self._tasks.pop(key, None)

    async def tasks_to_remind(self, *, now: float, horizon: float, limit: int) -> list[TaskState]:
        """See :meth:`NotificationStateStore.tasks_to_remind`."""
        owed = [task for task in self._tasks.values() if owes_reminder(task, now, horizon)]
        owed.sort(key=lambda task: (task.due_at or 0.0, task.key))
        return owed[: max(0, limit)]

    async def mark_reminded(
        self, board_id: str, task_id: str, *, due_at: float, stage: ReminderStage
    ) -> None:
        """See :meth:`NotificationStateStore.mark_reminded`."""
        task = self._tasks.get((board_id, task_id))
        if task is not None and task.due_at == due_at:
            self._tasks[task.key] = task.replace(reminded=stage)

    async def set_roles(self, changes: Sequence[tuple[str, str, str | None]]) -> None:
        """See :meth:`NotificationStateStore.set_roles`."""
        for project, user, role in changes:
            members = self._roles.setdefault(project, {})
            if role is None:
                members.pop(user, None)
            else:
                members[user] = role

    async def people_with_roles(self, project: str, roles: Sequence[str]) -> list[str]:
        """See :meth:`NotificationStateStore.people_with_roles`."""
        members = self._roles.get(project, {})
        return sorted(user for user, role in members.items() if role in roles)

    async def close(self) -> None:
        """Nothing to release."""


def owes_reminder(task: TaskState, now: float, horizon: float) -> bool:
    """Whether a task is owed a reminder at ``now`` (see ``tasks_to_remind``)."""
    if task.due_at is None or task.due_at > horizon or task.reminded == "overdue":
        return False
    return task.reminded == "" or task.due_at <= now
