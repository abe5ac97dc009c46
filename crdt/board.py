"""The board document: tasks, columns and board metadata over one pycrdt ``Doc``.

Every client (Python or JavaScript) edits the same Yjs document, so the schema uses plain Yjs
types only. ``docs/schema.md`` is the reference; in short:

- root ``Y.Map`` ``tasks``: task id -> ``Y.Map`` with ``title`` (str), ``column`` (column id),
  ``position`` (fractional-index key, see :mod:`crdt.positions`), ``description`` (``Y.Text``),
  ``assignees`` and ``labels`` (``Y.Array`` of str), ``due`` (``YYYY-MM-DD`` or null) and
  ``created_at``/``updated_at`` (ISO-8601 UTC strings, as JavaScript's ``toISOString()``);
- root ``Y.Map`` ``columns``: column id -> ``Y.Map`` with ``name`` and ``position``;
- root ``Y.Map`` ``meta``: ``title`` and ``project``.

Reads are tolerant: a task written by a careless client (a missing field, a plain string where
a ``Y.Text`` belongs, even a plain object instead of a ``Y.Map``) still reads as a :class:`Task`
with defaults, never an exception. Only ``Y.Map`` entries can be edited.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypedDict, Unpack

from pycrdt import Array, Doc, Map, Text

from crdt.positions import is_valid_position, position_between

SCHEMA_VERSION = 1
TASK_FIELDS = (
    "title",
    "column",
    "position",
    "description",
    "assignees",
    "labels",
    "due",
    "created_at",
    "updated_at",
)
_EDITABLE_FIELDS = frozenset({"title", "description", "assignees", "labels", "due"})


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one task in plain Python values."""

    id: str
    title: str
    column: str
    position: str
    description: str
    assignees: tuple[str, ...]
    labels: tuple[str, ...]
    due: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Column:
    """A snapshot of one column."""

    id: str
    name: str
    position: str


@dataclass(frozen=True, slots=True)
class BoardMeta:
    """A snapshot of the board's metadata."""

    title: str
    project: str


class TaskChanges(TypedDict, total=False):
    """Fields :meth:`Board.update_task` can change (column and position move a task instead)."""

    title: str
    description: str
    assignees: Sequence[str]
    labels: Sequence[str]
    due: str | date | None


def utc_timestamp(moment: datetime | None = None) -> str:
    """Format ``moment`` (default: now) as JavaScript's ``Date.toISOString()`` does."""
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Board:
    """Typed access to a board document; every method is one Yjs transaction (one update).

    Args:
        doc: The document to wrap; a new empty one if omitted.
        clock: Returns the current time, for ``created_at``/``updated_at``.
    """

    def __init__(
        self, doc: Doc[Any] | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.doc: Doc[Any] = Doc() if doc is None else doc
        self._clock = clock
        # Each doc.get() builds a new wrapper, so look the roots up once.
        self._tasks: Map[Any] = self.doc.get("tasks", type=Map)
        self._columns: Map[Any] = self.doc.get("columns", type=Map)
        self._meta: Map[Any] = self.doc.get("meta", type=Map)

    # Tasks

    def add_task(
        self,
        title: str,
        column: str,
        *,
        description: str = "",
        assignees: Iterable[str] = (),
        labels: Iterable[str] = (),
        due: str | date | None = None,
        position: str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Create a task (at the end of ``column`` unless ``position`` is given); return its id."""
        task_id = str(uuid.uuid4()) if task_id is None else task_id
        with self.doc.transaction():
            if task_id in self._tasks:
                raise ValueError(f"task {task_id!r} already exists")
            self._require_column(column)
            if position is None:
                position = self._end_position(column)
            _check_position(position)
            now = self._now()
            fields = {"title": title, "column": column, "position": position, "due": due}
            self._tasks[task_id] = _new_task(fields, description, assignees, labels, now, now)
        return task_id

    def has_task(self, task_id: str) -> bool:
        """Tell whether a task with this id exists."""
        return isinstance(self._tasks.get(task_id), Map | dict)

    def get_task(self, task_id: str) -> Task:
        """Return a snapshot of the task; ``KeyError`` if there is none."""
        task = self._tasks.get(task_id)
        if not isinstance(task, Map | dict):
            raise KeyError(f"no task {task_id!r}")
        return task_from_value(task_id, plain_value(task) if isinstance(task, Map) else task)

    def tasks(self) -> list[Task]:
        """Return every task, ordered by id."""
        tasks = self._task_values()
        return [task_from_value(key, tasks[key]) for key in sorted(tasks)]

    def tasks_in_column(self, column: str) -> list[Task]:
        """Return the tasks of ``column`` in display order (position, then id for ties)."""
        found = [
            task_from_value(task_id, task)
            for task_id, task in self._task_values().items()
            if task.get("column") == column
        ]
        found.sort(key=lambda task: (task.position, task.id))
        return found

    def update_task(self, task_id: str, **changes: Unpack[TaskChanges]) -> None:
        """Change fields of a task; unchanged values are not written. Lists act as sets."""
        unknown = set(changes) - _EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)} (use move_task for placement)")
        with self.doc.transaction():
            task = self._task_map(task_id)
            changed = False
            if "title" in changes and task.get("title") != changes["title"]:
                task["title"] = changes["title"]
                changed = True
            if "due" in changes:
                due = _due_value(changes["due"])
                if task.get("due") != due:
                    task["due"] = due
                    changed = True
            if "description" in changes:
                changed |= _write_text(task, "description", changes["description"])
            if "assignees" in changes:
                changed |= _write_list(task, "assignees", _unique(changes["assignees"]))
            if "labels" in changes:
                changed |= _write_list(task, "labels", _unique(changes["labels"]))
            if changed:
                task["updated_at"] = self._now()

    def move_task(self, task_id: str, column: str, position: str | None = None) -> None:
        """Place a task in ``column`` at ``position`` (default: the end of that column)."""
        with self.doc.transaction():
            task = self._task_map(task_id)
            self._require_column(column)
            if position is None:
                last = self._last_position(column, excluding=task_id)
                current = task.get("position")
                if (
                    task.get("column") == column
                    and isinstance(current, str)
                    and is_valid_position(current)
                    and (last is None or current > last)
                ):
                    return
                position = position_between(last, None)
            _check_position(position)
            if task.get("column") == column and task.get("position") == position:
                return
            if task.get("column") != column:
                task["column"] = column
            task["position"] = position
            task["updated_at"] = self._now()

    def position_at(self, column: str, index: int, *, moving: str | None = None) -> str:
        """Return a position that puts a task at ``index`` among the tasks of ``column``.

        ``moving`` names a task already in that column, left out of the count. Where two tasks
        share a position (concurrent inserts), the key lands after both.
        """
        positions = [task.position for task in self.tasks_in_column(column) if task.id != moving]
        index = max(0, min(index, len(positions)))
        before = positions[index - 1] if index > 0 else None
        after = next((key for key in positions[index:] if before is None or key > before), None)
        return position_between(before, after)

    def assign(self, task_id: str, user: str) -> bool:
        """Add ``user`` to the task's assignees; return False if already assigned."""
        task = self.get_task(task_id)
        if user in task.assignees:
            return False
        self.update_task(task_id, assignees=(*task.assignees, user))
        return True

    def unassign(self, task_id: str, user: str) -> bool:
        """Remove ``user`` from the task's assignees; return False if not assigned."""
        task = self.get_task(task_id)
        if user not in task.assignees:
            return False
        self.update_task(task_id, assignees=[name for name in task.assignees if name != user])
        return True

    def delete_task(self, task_id: str) -> None:
        """Delete a task; ``KeyError`` if there is none."""
        with self.doc.transaction():
            if not self.has_task(task_id):
                raise KeyError(f"no task {task_id!r}")
            del self._tasks[task_id]

    # Columns

    def add_column(
        self, name: str, *, column_id: str | None = None, position: str | None = None
    ) -> str:
        """Create a column (last unless ``position`` is given); return its id."""
        column_id = str(uuid.uuid4()) if column_id is None else column_id
        with self.doc.transaction():
            if column_id in self._columns:
                raise ValueError(f"column {column_id!r} already exists")
            if position is None:
                last = max(
                    (c.position for c in self.columns() if is_valid_position(c.position)),
                    default=None,
                )
                position = position_between(last, None)
            _check_position(position)
            self._columns[column_id] = Map({"name": name, "position": position})
        return column_id

    def get_column(self, column_id: str) -> Column:
        """Return a snapshot of the column; ``KeyError`` if there is none."""
        column = self._columns.get(column_id)
        if not isinstance(column, Map | dict):
            raise KeyError(f"no column {column_id!r}")
        return column_from_value(
            column_id, plain_value(column) if isinstance(column, Map) else column
        )

    def columns(self) -> list[Column]:
        """Return every column in display order (position, then id for ties)."""
        columns = plain_value(self._columns)
        found = [
            column_from_value(key, value)
            for key, value in columns.items()
            if isinstance(value, dict)
        ]
        found.sort(key=lambda column: (column.position, column.id))
        return found

    def rename_column(self, column_id: str, name: str) -> None:
        """Rename a column."""
        with self.doc.transaction():
            column = self._column_map(column_id)
            if column.get("name") != name:
                column["name"] = name

    def move_column(self, column_id: str, position: str) -> None:
        """Move a column to ``position`` among the columns."""
        _check_position(position)
        with self.doc.transaction():
            column = self._column_map(column_id)
            if column.get("position") != position:
                column["position"] = position

    def delete_column(self, column_id: str, *, move_tasks_to: str | None = None) -> None:
        """Delete a column and its tasks, or move its tasks to the end of ``move_tasks_to``."""
        with self.doc.transaction():
            self._column_map(column_id)
            if move_tasks_to == column_id:
                raise ValueError("cannot move the tasks of a column into itself")
            if move_tasks_to is not None:
                self._require_column(move_tasks_to)
            for task in self.tasks_in_column(column_id):
                if move_tasks_to is None:
                    del self._tasks[task.id]
                else:
                    self.move_task(task.id, move_tasks_to)
            del self._columns[column_id]

    # Metadata

    def get_meta(self) -> BoardMeta:
        """Return the board's title and project."""
        meta = plain_value(self._meta)
        return BoardMeta(title=_text(meta.get("title")), project=_text(meta.get("project")))

    def set_meta(self, *, title: str | None = None, project: str | None = None) -> None:
        """Set the board's title and/or project; ``None`` leaves a value as it is."""
        with self.doc.transaction():
            for key, value in (("title", title), ("project", project)):
                if value is not None and self._meta.get(key) != value:
                    self._meta[key] = value

    # Export and import

    def to_dict(self) -> dict[str, Any]:
        """Export the board as plain JSON-able values (the format :meth:`from_dict` reads)."""
        meta = self.get_meta()
        return {
            "version": SCHEMA_VERSION,
            "meta": {"title": meta.title, "project": meta.project},
            "columns": {
                column.id: {"name": column.name, "position": column.position}
                for column in self.columns()
            },
            "tasks": {
                task.id: {
                    name: list(value) if isinstance(value, tuple) else value
                    for name in TASK_FIELDS
                    for value in [getattr(task, name)]
                }
                for task in self.tasks()
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        doc: Doc[Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Board:
        """Build a board from :meth:`to_dict` output, in one transaction; ``ValueError`` if bad."""
        if data.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(f"unsupported board export version {data.get('version')!r}")
        board = cls(doc, clock=clock)
        try:
            with board.doc.transaction():
                meta = data.get("meta", {})
                board.set_meta(title=meta.get("title"), project=meta.get("project"))
                for column_id, column in data.get("columns", {}).items():
                    board.add_column(
                        column["name"], column_id=column_id, position=column["position"]
                    )
                for task_id, task in data.get("tasks", {}).items():
                    board._import_task(task_id, task)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed board export: {exc!r}") from exc
        return board

    # Internals

    def _import_task(self, task_id: str, task: Mapping[str, Any]) -> None:
        _check_position(task["position"])
        fields = {key: task[key] for key in ("title", "column", "position")}
        fields["due"] = task.get("due")
        now = self._now()
        self._tasks[task_id] = _new_task(
            fields,
            str(task.get("description", "")),
            task.get("assignees", ()),
            task.get("labels", ()),
            str(task.get("created_at", now)),
            str(task.get("updated_at", now)),
        )

    def _now(self) -> str:
        return utc_timestamp(None if self._clock is None else self._clock())

    def _task_values(self) -> dict[str, dict[str, Any]]:
        tasks = plain_value(self._tasks)
        return {key: value for key, value in tasks.items() if isinstance(value, dict)}

    def _task_map(self, task_id: str) -> Map[Any]:
        return _editable(self._tasks, task_id, "task")

    def _column_map(self, column_id: str) -> Map[Any]:
        return _editable(self._columns, column_id, "column")

    def _require_column(self, column_id: str) -> None:
        if not isinstance(self._columns.get(column_id), Map | dict):
            raise KeyError(f"no column {column_id!r}")

    def _end_position(self, column: str) -> str:
        return position_between(self._last_position(column), None)

    def _last_position(self, column: str, *, excluding: str | None = None) -> str | None:
        """The greatest well-formed position in ``column``, if any."""
        # A malformed key written by another client must not make appending impossible.
        return max(
            (
                task.position
                for task in self.tasks_in_column(column)
                if task.id != excluding and is_valid_position(task.position)
            ),
            default=None,
        )


def plain_value(shared: Map[Any] | Array[Any]) -> Any:
    """The plain Python value of a shared map or array, built from its JSON in one call."""
    # pycrdt's to_py() fetches entries one by one: 4-8x slower on a task map.
    return json.loads(str(shared))


def _editable(root: Map[Any], key: str, what: str) -> Map[Any]:
    value = root.get(key)
    if isinstance(value, Map):
        return value
    if isinstance(value, dict):
        raise ValueError(f"{what} {key!r} is a plain object, not a Y.Map: it cannot be edited")
    raise KeyError(f"no {what} {key!r}")


def _new_task(
    fields: Mapping[str, Any],
    description: str,
    assignees: Iterable[str],
    labels: Iterable[str],
    created_at: str,
    updated_at: str,
) -> Map[Any]:
    """A prelim task map; nested types are integrated with it when it is stored."""
    return Map(
        {
            "title": str(fields["title"]),
            "column": str(fields["column"]),
            "position": str(fields["position"]),
            "description": Text(description),
            "assignees": Array(_unique(assignees)),
            "labels": Array(_unique(labels)),
            "due": _due_value(fields["due"]),
            "created_at": created_at,
            "updated_at": updated_at,
        }
    )


def task_from_value(task_id: str, value: object) -> Task:
    """Build a :class:`Task` from a task's plain value, with defaults for missing fields."""
    fields = value if isinstance(value, dict) else {}
    due = fields.get("due")
    return Task(
        id=task_id,
        title=_text(fields.get("title")),
        column=_text(fields.get("column")),
        position=_text(fields.get("position")),
        description=_text(fields.get("description")),
        assignees=_strings(fields.get("assignees")),
        labels=_strings(fields.get("labels")),
        due=due if isinstance(due, str) else None,
        created_at=_text(fields.get("created_at")),
        updated_at=_text(fields.get("updated_at")),
    )


def column_from_value(column_id: str, value: object) -> Column:
    """Build a :class:`Column` from a column's plain value."""
    fields = value if isinstance(value, dict) else {}
    return Column(column_id, _text(fields.get("name")), _text(fields.get("position")))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    # Concurrent adds of the same name leave duplicates in the array: read it as a set.
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(item for item in value if isinstance(item, str)))


def _unique(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError("expected a collection of strings, got one string")
    return list(dict.fromkeys(values))


def _check_position(position: str) -> None:
    if not is_valid_position(position):
        raise ValueError(f"invalid position {position!r}")


def _due_value(due: str | date | None) -> str | None:
    if due is None:
        return None
    if isinstance(due, datetime):
        return due.date().isoformat()
    if isinstance(due, date):
        return due.isoformat()
    return date.fromisoformat(due).isoformat()


def _write_text(task: Map[Any], key: str, wanted: str) -> bool:
    """Edit the ``Y.Text`` at ``key`` into ``wanted`` touching only the changed middle."""
    text = task.get(key)
    if not isinstance(text, Text):
        task[key] = Text(wanted)
        return True
    current = str(text)
    if current == wanted:
        return False
    # Deleting and re-inserting the whole text would clobber concurrent edits elsewhere in it.
    start = 0
    limit = min(len(current), len(wanted))
    while start < limit and current[start] == wanted[start]:
        start += 1
    end = 0
    while end < limit - start and current[-1 - end] == wanted[-1 - end]:
        end += 1
    # pycrdt indexes Text by UTF-8 byte offset.
    byte_start = len(current[:start].encode())
    removed = current[start : len(current) - end]
    if removed:
        del text[byte_start : byte_start + len(removed.encode())]
    inserted = wanted[start : len(wanted) - end]
    if inserted:
        text.insert(byte_start, inserted)
    return True


def _write_list(task: Map[Any], key: str, wanted: list[str]) -> bool:
    """Make the ``Y.Array`` at ``key`` hold ``wanted`` as a set: remove extras, append missing."""
    array = task.get(key)
    if not isinstance(array, Array):
        task[key] = Array(wanted)
        return True
    current = plain_value(array)
    keep = set(wanted)
    seen: set[str] = set()
    doomed = []
    for index, item in enumerate(current):
        if isinstance(item, str) and item in keep and item not in seen:
            seen.add(item)
        else:
            doomed.append(index)
    for index in reversed(doomed):
        del array[index]
    missing = [item for item in wanted if item not in seen]
    if missing:
        array.extend(missing)
    return bool(doomed or missing)
