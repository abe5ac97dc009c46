"""What the notification worker remembers between events: tasks and project roles.

Events name a task's change, not the whole task: ``task.moved`` does not say who is
assigned. So the worker keeps a small table per task (its assignees, due date and title,
learnt from the events themselves) and one of project roles (learnt from
``member.changed``), in the notification store beside the notifications. No board is read.

A task that existed before the log is learnt from its first ``task.assigned``; until then
it has no assignees here and changes to it tell nobody.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from persistence.notification_store import NotificationStore

#: The reminder last sent for a task's current due date: none yet, due soon, overdue.
ReminderStage = Literal["", "due_soon", "overdue"]

#: Roles that hear about their project's endpoints being disabled.
ADMIN_ROLES: tuple[str, ...] = ("owner", "admin")


@dataclass(frozen=True, slots=True)
class TaskState:
    """One task as the notification worker knows it."""

    board_id: str
    task_id: str
    project: str = ""
    assignees: tuple[str, ...] = ()
    due: str | None = None  # as events carry it: an ISO date ("2026-12-24")
    due_at: float | None = None  # when it is due (unix seconds): the end of that UTC day
    title: str = ""  # if an event carried one; "" otherwise
    reminded: ReminderStage = ""  # for the current due date and assignees
    updated_at: float = 0.0
    offset: int = 0  # the event log offset of the last event applied to it

    @property
    def key(self) -> tuple[str, str]:
        """The task's key: its board and id."""
        return (self.board_id, self.task_id)

    def replace(self, **changes: Any) -> TaskState:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        return {
            "board_id": self.board_id,
            "task_id": self.task_id,
            "project": self.project,
            "assignees": list(self.assignees),
            "due": self.due,
            "due_at": self.due_at,
            "title": self.title,
            "reminded": self.reminded,
            "updated_at": self.updated_at,
            "offset": self.offset,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TaskState:
        """From :meth:`to_dict`."""
        stored = raw.get("reminded")
        reminded: ReminderStage = (
            "due_soon" if stored == "due_soon" else "overdue" if stored == "overdue" else ""
        )
        return cls(
            board_id=str(raw["board_id"]),
            task_id=str(raw["task_id"]),
            project=str(raw.get("project") or ""),
            assignees=tuple(str(user) for user in raw.get("assignees") or ()),
            due=raw.get("due"),
            due_at=None if raw.get("due_at") is None else float(raw["due_at"]),
            title=str(raw.get("title") or ""),
            reminded=reminded,
            updated_at=float(raw.get("updated_at") or 0.0),
            offset=int(raw.get("offset") or 0),
        )


@runtime_checkable
class NotificationStateStore(Protocol):
    """The worker's task and role tables (see the module docstring)."""

    async def tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TaskState]:
        """The known tasks among ``keys`` (board id, task id)."""
        ...

    async def save_tasks(self, states: Sequence[TaskState]) -> None:
        """Store these tasks, replacing what was known of them."""
        ...

    async def forget_tasks(self, keys: Sequence[tuple[str, str]]) -> None:
        """Drop these tasks (deleted from their boards)."""
        ...

    async def tasks_to_remind(self, *, now: float, horizon: float, limit: int) -> list[TaskState]:
        """Tasks owed a reminder, soonest due first: due by ``horizon`` and not told
        ``due_soon`` yet, or due by ``now`` and not told ``overdue`` yet."""
        ...

    async def mark_reminded(
        self, board_id: str, task_id: str, *, due_at: float, stage: ReminderStage
    ) -> None:
        """Note the reminder sent for the task's due date ``due_at`` (nothing if its due
        date changed meanwhile)."""
        ...

    async def set_roles(self, changes: Sequence[tuple[str, str, str | None]]) -> None:
        """Apply (project, user, role) changes; role None: no longer a member."""
        ...

    async def people_with_roles(self, project: str, roles: Sequence[str]) -> list[str]:
        """The users of ``project`` holding one of ``roles``, sorted."""
        ...


@runtime_checkable
class WorkerNotificationStore(NotificationStore, NotificationStateStore, Protocol):
    """A notification store with the worker's tables: what every implementation is."""
