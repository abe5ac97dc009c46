"""Who is told what: from one logged event and what is known of its task, the notifications.

Pure functions, no I/O: the worker (``workers/notifications.py``) loads the task states and
resolves ``@mention`` names, calls :func:`apply_event` for each event in order, then records
what came out. The rules:

* ``task.assigned``: the ``added`` are told ``assigned``, the ``removed`` ``unassigned``;
* ``task.commented``: each ``@mentioned`` user is told ``mentioned``, the task's other
  assignees ``commented`` (a user both mentioned and assigned is told once, ``mentioned``);
* ``task.moved`` (to another column) / ``task.updated`` / ``task.deleted``: the task's
  assignees. Edits come one transaction at a time (typing a description is many), so
  ``updated`` is told at most once per task and user in each ``UPDATE_WINDOW_SECONDS`` of
  log time: its id is the task, the user and that window;
* ``member.changed``: the ``user`` is told ``member``;
* nobody is told about their own change (the event's actor, or a comment's author).

Each notification's id is the event id and the user (for ``updated``, the window), so an
event handled twice records nothing twice. A task state remembers the offset of the last
event applied to it: an event at or below it (a batch seen again after a crash) changes
nothing and tells nobody again (its notifications were recorded before the state was
saved).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from persistence.event_log import LoggedEvent
from persistence.notification_state import TaskState
from persistence.notification_store import Notification

_TASK_EVENTS = frozenset(
    {
        "task.created",
        "task.updated",
        "task.moved",
        "task.assigned",
        "task.commented",
        "task.deleted",
    }
)
_MAX_USER_CHARS = 200  # longer "user ids" in an event are not ids of anyone
_MAX_TITLE_CHARS = 200
#: ``updated`` is told at most once per task and user in each window of this many seconds.
UPDATE_WINDOW_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event leads to."""

    notifications: list[Notification] = field(default_factory=list)
    task: TaskState | None = None  # the task's state after the event (None: unchanged)
    forget: bool = False  # the task is gone: drop its state
    role: tuple[str, str, str | None] | None = None  # (project, user, role) learnt


@dataclass(frozen=True, slots=True)
class Names:
    """What the worker looked up for a batch: account ids of ``@mentioned`` names, and
    display names of actors (for the titles)."""

    ids_by_name: Mapping[str, str] = field(default_factory=dict)
    names_by_id: Mapping[str, str] = field(default_factory=dict)

    def display(self, user: str) -> str:
        """How a title names ``user``: their name if known, else "Someone"."""
        return self.names_by_id.get(user) or "Someone"


def is_task_event(event: LoggedEvent) -> bool:
    """Whether ``event`` is about one task (and has a task id)."""
    return event.type in _TASK_EVENTS and isinstance(event.data.get("task_id"), str)


def task_key(event: LoggedEvent) -> tuple[str, str]:
    """The (board id, task id) a task event is about."""
    return (event.board_id, str(event.data.get("task_id", "")))


def mention_names(event: LoggedEvent) -> list[str]:
    """The user names a ``task.commented`` event ``@mentions``."""
    if event.type != "task.commented":
        return []
    return _strings(event.data.get("mentions"))[:50]


def notification_id(event_id: str, user: str) -> str:
    """The id of what ``user`` is told about an event: stable, so recording twice is once."""
    return "n_" + _digest(f"event\x00{event_id}\x00{user}")


def update_id(board_id: str, task_id: str, user: str, at: float) -> str:
    """The id of an ``updated`` notification: one per task, user and window of log time
    (``at`` is when the event was logged, the same on every redelivery)."""
    window = int(at // UPDATE_WINDOW_SECONDS)
    return "n_" + _digest(f"updated\x00{board_id}\x00{task_id}\x00{user}\x00{window}")


def reminder_id(board_id: str, task_id: str, due: str, user: str, kind: str) -> str:
    """The id of a ``due_soon`` / ``overdue`` reminder: once per task, due date, user."""
    return "n_" + _digest(f"{kind}\x00{board_id}\x00{task_id}\x00{due}\x00{user}")


def notice_id(kind: str, subject: str, user: str) -> str:
    """The id of a notice not caused by an event (an endpoint disabled)."""
    return "n_" + _digest(f"{kind}\x00{subject}\x00{user}")


def due_at(due: object) -> float | None:
    """When a task with ``due`` (an ISO date, as events carry it) is due: the end of that
    UTC day, in unix seconds; None if there is no due date or it does not parse."""
    if not isinstance(due, str) or not due or len(due) > 40:
        return None
    try:
        day = date.fromisoformat(due[:10])
    except ValueError:
        return None
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return end.timestamp()


def apply_event(event: LoggedEvent, task: TaskState | None, names: Names, *, now: float) -> Outcome:
    """What ``event`` leads to, given what is known of its task (None if nothing)."""
    if event.type == "member.changed":
        return _member_changed(event, names, now=now)
    if not is_task_event(event):
        return Outcome()
    if task is not None and event.offset <= task.offset:
        return Outcome()  # applied before: seen again after a crash
    board_id, task_id = task_key(event)
    known = task if task is not None else TaskState(board_id, task_id, project=event.project)
    data = event.data
    actor = event.actor or ""
    if event.type == "task.created":
        due = data.get("due") if isinstance(data.get("due"), str) else None
        assignees = _users(data.get("assignees"))
        state = _advanced(
            known, event, assignees=assignees, due=due, due_at=due_at(due), reminded=""
        )
        return Outcome(
            notifications=_tell(event, state, assignees, "assigned", names, now=now), task=state
        )
    if event.type == "task.deleted":
        told = _tell(event, known, known.assignees, "deleted", names, now=now)
        return Outcome(notifications=told, forget=True)
    if event.type == "task.assigned":
        added = _users(data.get("added"))
        removed = _users(data.get("removed"))
        assignees = tuple(u for u in known.assignees if u not in removed)
        assignees += tuple(u for u in added if u not in assignees)
        # New assignees are owed reminders of a due date already near: start them again
        # (those already told are told once, by the reminder ids).
        state = _advanced(known, event, assignees=assignees, reminded="")
        told = _tell(event, state, added, "assigned", names, now=now)
        told += _tell(event, state, removed, "unassigned", names, now=now)
        return Outcome(notifications=told, task=state)
    if event.type == "task.commented":
        author = data.get("author") if isinstance(data.get("author"), str) else ""
        skip = {actor, str(author)} - {""}
        mentioned = [
            names.ids_by_name[name] for name in mention_names(event) if name in names.ids_by_name
        ]
        mentioned = [u for u in dict.fromkeys(mentioned) if u not in skip]
        others = [u for u in known.assignees if u not in mentioned and u not in skip]
        told = _tell(event, known, mentioned, "mentioned", names, now=now, skip=skip)
        told += _tell(event, known, others, "commented", names, now=now, skip=skip)
        return Outcome(notifications=told, task=_advanced(known, event))
    if event.type == "task.updated":
        fields = _strings(data.get("fields"))
        changes: dict[str, object] = {}
        if "due" in fields:
            due = data.get("due") if isinstance(data.get("due"), str) else None
            if due != known.due:
                changes.update(due=due, due_at=due_at(due), reminded="")
        state = _advanced(known, event, **changes)
        extra: dict[str, object] = {"fields": fields[:20]}
        told = _tell(event, state, known.assignees, "updated", names, now=now, extra=extra)
        return Outcome(notifications=told, task=state)
    # task.moved: a new place in the same column (a reorder) tells nobody.
    state = _advanced(known, event)
    if data.get("from_column") == data.get("to_column"):
        return Outcome(task=state)
    moved: dict[str, object] = {
        "from_column": str(data.get("from_column", ""))[:200],
        "to_column": str(data.get("to_column", ""))[:200],
    }
    told = _tell(event, state, known.assignees, "moved", names, now=now, extra=moved)
    return Outcome(notifications=told, task=state)


def title_for(kind: str, actor_name: str, board_id: str, **facts: str) -> str:
    """The one line a person reads for a notification of ``kind``."""
    where = f"a task on board {board_id}" if board_id else "a task"
    task = f"'{facts['task_title']}' on board {board_id}" if facts.get("task_title") else where
    lines = {
        "assigned": f"{actor_name} assigned you to {task}",
        "unassigned": f"{actor_name} removed you from {task}",
        "mentioned": f"{actor_name} mentioned you in a comment on {task}",
        "commented": f"{actor_name} commented on {task}",
        "moved": f"{actor_name} moved {task}"
        + (f" to column {facts['to_column']}" if facts.get("to_column") else ""),
        "updated": f"{actor_name} changed {task}",
        "deleted": f"{actor_name} deleted {task}",
        "due_soon": f"{task[0].upper()}{task[1:]} is due {facts.get('due', 'soon')}",
        "overdue": f"{task[0].upper()}{task[1:]} is overdue (due {facts.get('due', '')})",
        "member": facts.get("member_line", f"{actor_name} changed your role"),
        "webhook_disabled": facts.get("webhook_line", "A webhook endpoint was disabled"),
    }
    return lines.get(kind, kind)[:_MAX_TITLE_CHARS]


def reminders_for(task: TaskState, *, now: float, horizon: float) -> list[Notification]:
    """The ``due_soon`` or ``overdue`` reminders ``task`` is owed at ``now`` (one per
    assignee; ids make each once per task, due date and user)."""
    if task.due_at is None or task.due is None or task.due_at > horizon:
        return []
    kind = "overdue" if task.due_at <= now else "due_soon"
    if kind == "due_soon" and task.reminded in ("due_soon", "overdue"):
        return []
    if task.reminded == "overdue":
        return []
    line = title_for(kind, "", task.board_id, due=task.due, task_title=task.title)
    return [
        Notification(
            id=reminder_id(task.board_id, task.task_id, task.due, user, kind),
            user=user,
            kind=kind,
            title=line,
            created_at=now,
            board_id=task.board_id,
            project=task.project,
            task_id=task.task_id,
            data={"due": task.due},
        )
        for user in task.assignees
    ]


def _member_changed(event: LoggedEvent, names: Names, *, now: float) -> Outcome:
    data = event.data
    user = data.get("user")
    scope = data.get("scope")
    target = data.get("target")
    role = data.get("role")
    if not isinstance(user, str) or not user or len(user) > _MAX_USER_CHARS:
        return Outcome()
    if not isinstance(target, str) or scope not in ("project", "board"):
        return Outcome()
    role = role if isinstance(role, str) else None
    learnt = (target, user, role) if scope == "project" else None
    if user == (event.actor or ""):
        return Outcome(role=learnt)
    what = f"{scope} {target}"
    actor = names.display(event.actor or "")
    line = f"{actor} made you {role} of {what}" if role else f"{actor} removed you from {what}"
    told = Notification(
        id=notification_id(event.id, user),
        user=user,
        kind="member",
        title=title_for("member", actor, "", member_line=line),
        created_at=now,
        board_id=target if scope == "board" else "",
        project=event.project or (target if scope == "project" else ""),
        actor=event.actor or "",
        event_id=event.id,
        data={"scope": scope, "target": target, "role": role},
    )
    return Outcome(notifications=[told], role=learnt)


def _tell(
    event: LoggedEvent,
    task: TaskState,
    users: tuple[str, ...] | list[str],
    kind: str,
    names: Names,
    *,
    now: float,
    skip: set[str] | None = None,
    extra: dict[str, object] | None = None,
) -> list[Notification]:
    actor = event.actor or ""
    leave_out = skip if skip is not None else {actor} - {""}
    facts = {
        "task_title": task.title,
        "to_column": str(event.data.get("to_column", "")) if kind == "moved" else "",
    }
    line = title_for(kind, names.display(actor), event.board_id, **facts)
    data: dict[str, object] = {"event_type": event.type, **(extra or {})}
    if event.type == "task.commented":
        data["comment_id"] = str(event.data.get("comment_id", ""))[:200]
    return [
        Notification(
            id=(
                update_id(event.board_id, task.task_id, user, event.at)
                if kind == "updated"
                else notification_id(event.id, user)
            ),
            user=user,
            kind=kind,
            title=line,
            created_at=now,
            board_id=event.board_id,
            project=event.project or task.project,
            task_id=task.task_id,
            actor=actor,
            event_id=event.id,
            data=dict(data),
        )
        for user in dict.fromkeys(users)
        if user not in leave_out
    ]


def _advanced(task: TaskState, event: LoggedEvent, **changes: object) -> TaskState:
    return task.replace(
        offset=event.offset,
        project=event.project or task.project,
        updated_at=event.at,
        **changes,
    )


def _users(value: object) -> tuple[str, ...]:
    return tuple(dict.fromkeys(u for u in _strings(value) if 0 < len(u) <= _MAX_USER_CHARS))


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value[:1000] if isinstance(item, str)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
