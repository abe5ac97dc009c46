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
any other value under a task or column id is ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
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


@dataclass(frozen=True, slots=True)
class TaskUpdated(_Event):
    """Fields of an existing task changed, other than placement and assignees."""

    kind: ClassVar[str] = "task.updated"
    task_id: str
    fields: tuple[str, ...]


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
class TaskDeleted(_Event):
    """A task was removed from the board."""

    kind: ClassVar[str] = "task.deleted"
    task_id: str


@dataclass(frozen=True, slots=True)
class ColumnCreated(_Event):
    """A column appeared."""

    kind: ClassVar[str] = "column.created"
    column_id: str


@dataclass(frozen=True, slots=True)
class ColumnUpdated(_Event):
    """A column was renamed or moved (``fields`` says which)."""

    kind: ClassVar[str] = "column.updated"
    column_id: str
    fields: tuple[str, ...]


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


DomainEvent = (
    TaskCreated
    | TaskUpdated
    | TaskMoved
    | TaskAssigned
    | TaskDeleted
    | ColumnCreated
    | ColumnUpdated
    | ColumnDeleted
    | MetaUpdated
)
EVENT_TYPES: dict[str, type[DomainEvent]] = {
    event_type.kind: event_type
    for event_type in (
        TaskCreated,
        TaskUpdated,
        TaskMoved,
        TaskAssigned,
        TaskDeleted,
        ColumnCreated,
        ColumnUpdated,
        ColumnDeleted,
        MetaUpdated,
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


class BoardEventRecorder:
    """Collects domain events from every transaction on ``doc`` until :meth:`drain`."""

    def __init__(self, doc: Doc[Any], board_id: str) -> None:
        self._board_id = board_id
        tasks: Map[Any] = doc.get("tasks", type=Map)
        columns: Map[Any] = doc.get("columns", type=Map)
        meta: Map[Any] = doc.get("meta", type=Map)
        self._events: list[DomainEvent] = []
        # Array deltas say how many items went, not which: keep each task's assignees to diff.
        self._assignees: dict[str, tuple[str, ...]] = {}
        for task_id, task in plain_value(tasks).items():
            if isinstance(task, dict):
                self._assignees[task_id] = _strings(task.get("assignees"))
        # Observing the Yrs types directly skips pycrdt's wrapping of every event value, which
        # cost 6-8 us per transaction: most of this recorder's overhead.
        self._subscriptions: list[Subscription] = [
            tasks.integrated.observe_deep(self._guarded(self._on_tasks)),
            columns.integrated.observe_deep(self._guarded(self._on_columns)),
            meta.integrated.observe_deep(self._guarded(self._on_meta)),
        ]

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
            self._assignees[task_id] = _strings(created.get("assignees"))
            self._events.append(TaskCreated(board, task_id))
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
            self._events.append(TaskUpdated(board, task_id, _ordered(updated, TASK_FIELDS)))
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
        gone: set[str] = set()
        for event in events:
            path = event.path
            if not path:
                for column_id, change in event.keys.items():
                    if _is_entry(change.get("oldValue")):
                        gone.add(column_id)
                        self._events.append(ColumnDeleted(board, column_id))
                    if _is_entry(change.get("newValue")):
                        gone.discard(column_id)
                        self._events.append(ColumnCreated(board, column_id))
                continue
            keys = [str(path[1])] if len(path) > 1 else event.keys
            updated.setdefault(str(path[0]), set()).update(keys)
        for column_id, names in updated.items():
            if column_id not in gone:
                self._events.append(
                    ColumnUpdated(board, column_id, _ordered(names, _COLUMN_FIELDS))
                )

    def _on_meta(self, events: list[Any]) -> None:
        names: set[str] = set()
        for event in events:
            path = event.path
            names.update([str(path[0])] if path else event.keys)
        if names:
            self._events.append(MetaUpdated(self._board_id, _ordered(names, _META_FIELDS)))


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
    else:
        entry.fields.add(key)


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
