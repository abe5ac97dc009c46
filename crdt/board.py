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

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any, Unpack

from pycrdt import Doc, Map

from crdt.board_values import (
    EDITABLE_FIELDS,
    SCHEMA_VERSION,
    TASK_FIELDS,
    BoardMeta,
    Column,
    Task,
    TaskChanges,
    check_position,
    column_from_value,
    due_value,
    editable_map,
    new_task,
    plain_value,
    task_from_value,
    text_value,
    unique_strings,
    utc_timestamp,
    write_list,
    write_text,
)
from crdt.positions import is_valid_position, position_between


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
            check_position(position)
            now = self._now()
            fields = {"title": title, "column": column, "position": position, "due": due}
            self._tasks[task_id] = new_task(fields, description, assignees, labels, now, now)
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
        unknown = set(changes) - EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)} (use move_task for placement)")
        with self.doc.transaction():
            task = self._task_map(task_id)
            changed = False
            if "title" in changes and task.get("title") != changes["title"]:
                task["title"] = changes["title"]
                changed = True
            if "due" in changes:
                due = due_value(changes["due"])
                if task.get("due") != due:
                    task["due"] = due
                    changed = True
            if "description" in changes:
                changed |= write_text(task, "description", changes["description"])
            if "assignees" in changes:
                changed |= write_list(task, "assignees", unique_strings(changes["assignees"]))
            if "labels" in changes:
                changed |= write_list(task, "labels", unique_strings(changes["labels"]))
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
            check_position(position)
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
            check_position(position)
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
        check_position(position)
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
        return BoardMeta(
            title=text_value(meta.get("title")), project=text_value(meta.get("project"))
        )

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
        check_position(task["position"])
        fields = {key: task[key] for key in ("title", "column", "position")}
        fields["due"] = task.get("due")
        now = self._now()
        self._tasks[task_id] = new_task(
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
        return editable_map(self._tasks, task_id, "task")

    def _column_map(self, column_id: str) -> Map[Any]:
        return editable_map(self._columns, column_id, "column")

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
