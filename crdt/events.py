"""Domain events derived from changes to a board document, whoever made them.

The server applies updates from clients as opaque Yjs bytes; :class:`BoardEventRecorder` turns
what each transaction changed into events (``task.moved``, ``task.assigned`` ...)::

    recorder = BoardEventRecorder(doc, board_id)
    doc.apply_update(update)
    events = recorder.drain()

Rules, per transaction and per task: a task created in it yields only ``TaskCreated``; a
deleted one only ``TaskDeleted``; otherwise a change of ``column`` and/or ``position`` is one
``TaskMoved``, a change of ``assignees`` is one ``TaskAssigned``, and any other field (text
edits inside ``description`` included) is named in one ``TaskUpdated``. ``updated_at`` alone is
bookkeeping and yields nothing. Plain objects stored as tasks or columns count as entries;
any other value under a task or column id is ignored. A comment appended to a task's
``comments`` is a ``TaskCommented`` (with the ``@username`` mentions in its text).

Some events carry context values beside what changed (the column a task was created in, a
task's ``due`` after the change, a column's ``position``): consumers such as analytics need
them without reading the board. They take no part in comparing events.

On a project's document (``boardcast.project.<id>``, ``crdt/project_doc.py``), a change of the
project's ``members`` or of a board's narrowed ``members`` is one ``MemberChanged`` per user.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, ClassVar

import msgpack
from pycrdt import Doc, Map, Subscription
from pycrdt._pycrdt import Array as _RawArray
from pycrdt._pycrdt import Map as _RawMap
from pycrdt._pycrdt import Transaction as _RawTransaction

from crdt.board_values import TASK_FIELDS, plain_value

_log = logging.getLogger(__name__)
_COLUMN_FIELDS = ("name", "position")
_META_FIELDS = ("title", "project")
_QUIET_FIELDS = frozenset({"updated_at"})
# The ids project documents are hosted under start with this (crdt/project_doc.py).
PROJECT_DOC_PREFIX = "boardcast.project."
# A mention in a comment: "@" then a user name, not preceded by a word character (mail).
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")
_MAX_MENTIONS = 50


def mentions_in(text: str) -> tuple[str, ...]:
    """The distinct user names ``@mentioned`` in ``text``, in order (at most 50)."""
    names = (match.group(1).rstrip(".") for match in _MENTION.finditer(text))
    return tuple(dict.fromkeys(name for name in names if name))[:_MAX_MENTIONS]


def _context(default: Any = None) -> Any:
    """A context value: carried in ``to_dict``, ignored when events are compared."""
    return field(default=default, compare=False)


@dataclass(frozen=True, slots=True)
class _Event:
    kind: ClassVar[str]
    board_id: str

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON- and msgpack-able values, with its ``kind``."""
        out: dict[str, Any] = {"kind": self.kind}
        for spec in fields(self):
            value = getattr(self, spec.name)
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class TaskCreated(_Event):
    """A task appeared (with whatever fields it was created with)."""

    kind: ClassVar[str] = "task.created"
    task_id: str
    column: str = _context("")  # the column it was created in
    due: str | None = _context()  # its due date, if it has one
    assignees: tuple[str, ...] = _context(())  # the users it was created assigned to


@dataclass(frozen=True, slots=True)
class TaskUpdated(_Event):
    """Fields of an existing task changed, other than placement and assignees."""

    kind: ClassVar[str] = "task.updated"
    task_id: str
    fields: tuple[str, ...]
    due: str | None = _context()  # the due date after the change (when "due" is in fields)


@dataclass(frozen=True, slots=True)
class TaskMoved(_Event):
    """A task changed column and/or position; ``position`` is where it is now."""

    kind: ClassVar[str] = "task.moved"
    task_id: str
    from_column: str
    to_column: str
    position: str


@dataclass(frozen=True, slots=True)
class TaskAssigned(_Event):
    """Users were added to and/or removed from a task's assignees."""

    kind: ClassVar[str] = "task.assigned"
    task_id: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskCommented(_Event):
    """A comment was added to a task; ``mentions`` are the users it ``@mentions``."""

    kind: ClassVar[str] = "task.commented"
    task_id: str
    comment_id: str
    author: str
    mentions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TaskDeleted(_Event):
    """A task was removed from the board."""

    kind: ClassVar[str] = "task.deleted"
    task_id: str


@dataclass(frozen=True, slots=True)
class ColumnCreated(_Event):
    """A column appeared."""

    kind: ClassVar[str] = "column.created"
    column_id: str
    position: str = _context("")  # its ordering key among columns


@dataclass(frozen=True, slots=True)
class ColumnUpdated(_Event):
    """A column was renamed or moved (``fields`` says which)."""

    kind: ClassVar[str] = "column.updated"
    column_id: str
    fields: tuple[str, ...]
    position: str = _context("")  # its ordering key after the change


@dataclass(frozen=True, slots=True)
class ColumnDeleted(_Event):
    """A column was removed (its tasks are reported separately)."""

    kind: ClassVar[str] = "column.deleted"
    column_id: str


@dataclass(frozen=True, slots=True)
class MetaUpdated(_Event):
    """The board's title and/or project changed."""

    kind: ClassVar[str] = "meta.updated"
    fields: tuple[str, ...]
    done_column: str | None = _context()  # the board's "done" column setting after the change


@dataclass(frozen=True, slots=True)
class MemberChanged(_Event):
    """Someone's role on a project or board changed (``role`` None: no longer a member there).

    ``scope`` is ``"project"`` (``target`` a project id) or ``"board"`` (a board's narrowed
    role, ``target`` a board id). Emitted by project documents only.
    """

    kind: ClassVar[str] = "member.changed"
    scope: str
    target: str
    user: str
    role: str | None


DomainEvent = (
    TaskCreated
    | TaskUpdated
    | TaskMoved
    | TaskAssigned
    | TaskCommented
    | TaskDeleted
    | ColumnCreated
    | ColumnUpdated
    | ColumnDeleted
    | MetaUpdated
    | MemberChanged
)
EVENT_TYPES: dict[str, type[DomainEvent]] = {
    event_type.kind: event_type
    for event_type in (
        TaskCreated,
        TaskUpdated,
        TaskMoved,
        TaskAssigned,
        TaskCommented,
        TaskDeleted,
        ColumnCreated,
        ColumnUpdated,
        ColumnDeleted,
        MetaUpdated,
        MemberChanged,
    )
}


def event_from_dict(data: Mapping[str, Any]) -> DomainEvent:
    """Rebuild an event from :meth:`to_dict` output; ``ValueError`` if it is not one."""
    event_type = EVENT_TYPES.get(data.get("kind", ""))
    if event_type is None:
        raise ValueError(f"unknown event kind {data.get('kind')!r}")
    try:
        values: dict[str, Any] = {}
        for spec in fields(event_type):
            if spec.name not in data and not spec.compare:
                continue  # a context value events stored before it existed lack
            value = data[spec.name]
            values[spec.name] = tuple(value) if isinstance(value, list) else value
        return event_type(**values)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {event_type.kind} event: {exc!r}") from exc


def encode_events(events: Iterable[DomainEvent]) -> bytes:
    """Events as bytes to store beside the update they came from (msgpack)."""
    packed: bytes = msgpack.packb([event.to_dict() for event in events], use_bin_type=True)
    return packed


def decode_events(data: bytes) -> list[DomainEvent]:
    """The events :func:`encode_events` stored; ``ValueError`` if ``data`` holds none."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ValueError(f"stored events do not decode: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError("stored events are not a list")
    return [event_from_dict(item) for item in raw if isinstance(item, dict)]


@dataclass(slots=True)
class _TaskChange:
    """What one transaction did to one task, gathered before events are emitted."""

    created: Any = None  # the new task map (raw) or plain object
    deleted: bool = False
    task: _RawMap | None = None
    moved: bool = False
    from_column: str | None = None
    to_column: str | None = None
    position: str | None = None
    # Where the new assignees can be read: the Y.Array edited, or the value that replaced it.
    assignees: Any = None
    fields: set[str] = field(default_factory=set)
    due: Any = None  # the new due value, when "due" was set
    comments: list[Any] = field(default_factory=list)  # comment entries appended


class BoardEventRecorder:
    """Collects domain events from every transaction on ``doc`` until :meth:`drain`."""

    def __init__(self, doc: Doc[Any], board_id: str, *, lazy: bool = False) -> None:
        """Observe ``doc`` from now on.

        Args:
            lazy: read the board's assignees (the one thing kept from before a change) only at
                :meth:`prime`, which the caller promises to call before the document's next
                change. Opening a board that nobody edits then costs no walk over its tasks
                (about 16 ms for 1,000 tasks, 6x what loading the document takes).
        """
        self._board_id = board_id
        self._tasks: Map[Any] = doc.get("tasks", type=Map)
        tasks = self._tasks
        columns: Map[Any] = doc.get("columns", type=Map)
        meta: Map[Any] = doc.get("meta", type=Map)
        self._events: list[DomainEvent] = []
        # Array deltas say how many items went, not which: keep each task's assignees to diff.
        self._assignees: dict[str, tuple[str, ...]] = {}
        self._primed = False
        if not lazy:
            self.prime()
        # Observing the Yrs types directly skips pycrdt's wrapping of every event value, which
        # cost 6-8 us per transaction: most of this recorder's overhead.
        self._subscriptions: list[Subscription] = [
            tasks.integrated.observe_deep(self._guarded(self._on_tasks)),
            columns.integrated.observe_deep(self._guarded(self._on_columns)),
            meta.integrated.observe_deep(self._guarded(self._on_meta)),
        ]
        if board_id.startswith(PROJECT_DOC_PREFIX):
            project = board_id.removeprefix(PROJECT_DOC_PREFIX)
            members: Map[Any] = doc.get("members", type=Map)
            boards: Map[Any] = doc.get("boards", type=Map)
            self._subscriptions += [
                members.integrated.observe_deep(
                    self._guarded(partial(self._on_project_members, project))
                ),
                boards.integrated.observe_deep(self._guarded(self._on_board_members)),
            ]

    @property
    def primed(self) -> bool:
        """True once the assignees of every task were read (see :meth:`prime`)."""
        return self._primed

    def prime(self) -> None:
        """Read every task's assignees, if not done yet: call it before the document changes."""
        if self._primed:
            return
        self._primed = True
        for task_id, task in plain_value(self._tasks).items():
            if isinstance(task, dict):
                self._assignees[task_id] = _strings(task.get("assignees"))

    def drain(self) -> list[DomainEvent]:
        """Return the events gathered since the last call, oldest first, and forget them."""
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """Stop observing the document (idempotent)."""
        for subscription in self._subscriptions:
            subscription.drop()
        self._subscriptions = []

    def _guarded(self, handler: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
        def observe(events: list[Any]) -> None:
            # An exception escaping a Yrs observer breaks the document's transaction state, and
            # the update is applied by then anyway: report it and keep the document usable.
            try:
                handler(events)
            except Exception:
                _log.exception("cannot derive domain events for board %s", self._board_id)

        return observe

    def _on_tasks(self, events: list[Any]) -> None:
        if not self._primed:
            # A change nobody primed for: the assignees from before it are gone, so this
            # transaction's assignment changes are misread. A caller's bug; say so.
            _log.error("board %s changed before its event recorder was primed", self._board_id)
            self.prime()
        txn = events[0].transaction
        changes: dict[str, _TaskChange] = {}
        for event in events:
            path = event.path
            if not path:
                for task_id, change in event.keys.items():
                    entry = changes.setdefault(task_id, _TaskChange())
                    entry.deleted |= _is_entry(change.get("oldValue"))
                    new_value = change.get("newValue")
                    if _is_entry(new_value):
                        entry.created = new_value
                continue
            entry = changes.setdefault(str(path[0]), _TaskChange())
            if len(path) > 1:
                if path[1] == "assignees":
                    entry.assignees = event.target
                elif path[1] == "comments" and len(path) == 2 and _only_inserts(event):
                    entry.comments.extend(_inserted(event))
                else:
                    entry.fields.add(str(path[1]))
                continue
            entry.task = event.target
            for key, change in event.keys.items():
                _note_task_key(entry, key, change)
        for task_id, entry in changes.items():
            self._emit_task(task_id, entry, txn)

    def _emit_task(self, task_id: str, entry: _TaskChange, txn: _RawTransaction) -> None:
        # Changed values come with the event; read the document only for what they lack.
        board = self._board_id
        if entry.deleted:
            self._assignees.pop(task_id, None)
            self._events.append(TaskDeleted(board, task_id))
        if entry.created is not None:
            created = _plain(entry.created, txn)
            assignees = _strings(created.get("assignees"))
            self._assignees[task_id] = assignees
            due = created.get("due")
            column = _string(created.get("column"))
            self._events.append(
                TaskCreated(
                    board,
                    task_id,
                    column,
                    due if isinstance(due, str) else None,
                    assignees,
                )
            )
        if entry.created is not None or entry.deleted:
            return
        if entry.moved and entry.task is not None:
            to_column = entry.to_column
            if to_column is None:
                to_column = _string(entry.task.get(txn, "column"))
            position = entry.position
            if position is None:
                position = _string(entry.task.get(txn, "position"))
            from_column = to_column if entry.from_column is None else entry.from_column
            self._events.append(TaskMoved(board, task_id, from_column, to_column, position))
        updated = entry.fields - _QUIET_FIELDS
        if updated:
            due = _plain(entry.due, txn) if "due" in updated else None
            self._events.append(
                TaskUpdated(
                    board,
                    task_id,
                    _ordered(updated, TASK_FIELDS),
                    due if isinstance(due, str) else None,
                )
            )
        for comment in _comment_entries(entry.comments, txn):
            plain = _plain(comment, txn)
            if isinstance(plain, dict) and isinstance(plain.get("id"), str):
                text = plain.get("text")
                self._events.append(
                    TaskCommented(
                        board,
                        task_id,
                        plain["id"],
                        _string(plain.get("author")),
                        mentions_in(text) if isinstance(text, str) else (),
                    )
                )
        if entry.assignees is not None:
            before = self._assignees.get(task_id, ())
            after = _strings(_plain(entry.assignees, txn))
            self._assignees[task_id] = after
            added = tuple(user for user in after if user not in before)
            removed = tuple(user for user in before if user not in after)
            if added or removed:
                self._events.append(TaskAssigned(board, task_id, added, removed))

    def _on_columns(self, events: list[Any]) -> None:
        board = self._board_id
        updated: dict[str, set[str]] = {}
        positions: dict[str, str] = {}
        gone: set[str] = set()
        txn = events[0].transaction if events else None
        for event in events:
            path = event.path
            if not path:
                for column_id, change in event.keys.items():
                    if _is_entry(change.get("oldValue")):
                        gone.add(column_id)
                        self._events.append(ColumnDeleted(board, column_id))
                    new_value = change.get("newValue")
                    if _is_entry(new_value):
                        gone.discard(column_id)
                        created = _plain(new_value, txn) if txn is not None else {}
                        position = created.get("position") if isinstance(created, dict) else ""
                        self._events.append(ColumnCreated(board, column_id, _string(position)))
                continue
            keys = [str(path[1])] if len(path) > 1 else event.keys
            updated.setdefault(str(path[0]), set()).update(keys)
            if len(path) == 1 and "position" in event.keys:
                positions[str(path[0])] = _string(event.keys["position"].get("newValue"))
        for column_id, names in updated.items():
            if column_id not in gone:
                self._events.append(
                    ColumnUpdated(
                        board,
                        column_id,
                        _ordered(names, _COLUMN_FIELDS),
                        positions.get(column_id, ""),
                    )
                )

    def _on_meta(self, events: list[Any]) -> None:
        names: set[str] = set()
        done_column: str | None = None
        for event in events:
            path = event.path
            names.update([str(path[0])] if path else event.keys)
            if not path and "done_column" in event.keys:
                value = event.keys["done_column"].get("newValue")
                done_column = value if isinstance(value, str) else None
        if names:
            self._events.append(
                MetaUpdated(self._board_id, _ordered(names, _META_FIELDS), done_column)
            )

    def _on_project_members(self, project: str, events: list[Any]) -> None:
        """A project document's ``members``: user id -> role."""
        for event in events:
            if event.path:
                continue
            for user, change in event.keys.items():
                role = change.get("newValue")
                self._events.append(
                    MemberChanged(
                        self._board_id,
                        "project",
                        project,
                        str(user),
                        role if isinstance(role, str) else None,
                    )
                )

    def _on_board_members(self, events: list[Any]) -> None:
        """A project document's ``boards``: changes of a board's narrowed ``members``."""
        for event in events:
            path = event.path
            if not path:
                # A board entry added, replaced or removed: its narrowed roles with it.
                for target, change in event.keys.items():
                    old = _plain(change.get("oldValue"), event.transaction)
                    new = _plain(change.get("newValue"), event.transaction)
                    self._member_diff("board", str(target), _roles(old), _roles(new))
            elif len(path) == 1 and "members" in event.keys:
                change = event.keys["members"]
                old = _plain(change.get("oldValue"), event.transaction)
                new = _plain(change.get("newValue"), event.transaction)
                self._member_diff("board", str(path[0]), _member_map(old), _member_map(new))
            elif len(path) == 2 and path[1] == "members":
                for user, change in event.keys.items():
                    role = change.get("newValue")
                    self._events.append(
                        MemberChanged(
                            self._board_id,
                            "board",
                            str(path[0]),
                            str(user),
                            role if isinstance(role, str) else None,
                        )
                    )

    def _member_diff(
        self, scope: str, target: str, before: dict[str, str], after: dict[str, str]
    ) -> None:
        for user in sorted(set(before) | set(after)):
            if before.get(user) != after.get(user):
                self._events.append(
                    MemberChanged(self._board_id, scope, target, user, after.get(user))
                )


def _note_task_key(entry: _TaskChange, key: str, change: Mapping[str, Any]) -> None:
    new_value = change.get("newValue")
    if key == "column":
        entry.moved = True
        entry.from_column = _string(change.get("oldValue"))
        entry.to_column = _string(new_value)
    elif key == "position":
        entry.moved = True
        entry.position = _string(new_value)
    elif key == "assignees":
        entry.assignees = new_value if new_value is not None else ()
    elif key == "comments" and change.get("oldValue") is None and new_value is not None:
        # The first comment: the array arrives with it, its items inside.
        entry.comments.append(new_value)
    else:
        if key == "due":
            entry.due = new_value
        entry.fields.add(key)


def _comment_entries(values: list[Any], txn: _RawTransaction) -> list[Any]:
    """Comment entries appended, with a whole new ``comments`` array opened into its items."""
    found: list[Any] = []
    for value in values:
        if isinstance(value, _RawArray):
            found.extend(_plain(value, txn))
        elif isinstance(value, list):
            found.extend(value)
        else:
            found.append(value)
    return found


def _only_inserts(event: Any) -> bool:
    """Whether an array event only appended or inserted items (no deletion)."""
    delta = getattr(event, "delta", None) or []
    return bool(delta) and all("delete" not in part for part in delta)


def _inserted(event: Any) -> list[Any]:
    return [item for part in event.delta for item in part.get("insert", [])]


def _member_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(user): role for user, role in value.items() if isinstance(role, str)}


def _roles(entry: object) -> dict[str, str]:
    """The ``members`` of a directory entry (a project or board), as plain values."""
    return _member_map(entry.get("members")) if isinstance(entry, dict) else {}


def _is_entry(value: object) -> bool:
    """Whether a value stored under a task or column id counts as one (see ``crdt.board``)."""
    return isinstance(value, _RawMap | dict)


def _plain(value: Any, txn: _RawTransaction) -> Any:
    if isinstance(value, _RawMap | _RawArray):
        return json.loads(value.to_json(txn))
    return value


def _strings(value: object) -> tuple[str, ...]:
    """Distinct strings of a list, in order; nothing for any other value."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(dict.fromkeys(item for item in value if isinstance(item, str)))


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _ordered(names: Iterable[str], known: tuple[str, ...]) -> tuple[str, ...]:
    """Known field names in schema order, then any others alphabetically."""
    present = set(names)
    return tuple(name for name in known if name in present) + tuple(
        sorted(present.difference(known))
    )
