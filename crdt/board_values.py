"""Board values: the snapshots :class:`crdt.board.Board` returns, and field codecs.

Reading is tolerant (a field a careless client wrote wrongly reads as its
default); writing touches only what changed, so concurrent edits survive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypedDict

from pycrdt import Array, Map, Text

from crdt.positions import is_valid_position

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
EDITABLE_FIELDS = frozenset({"title", "description", "assignees", "labels", "due"})


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


def plain_value(shared: Map[Any] | Array[Any]) -> Any:
    """The plain Python value of a shared map or array, built from its JSON in one call."""
    # pycrdt's to_py() fetches entries one by one: 4-8x slower on a task map.
    return json.loads(str(shared))


def editable_map(root: Map[Any], key: str, what: str) -> Map[Any]:
    value = root.get(key)
    if isinstance(value, Map):
        return value
    if isinstance(value, dict):
        raise ValueError(f"{what} {key!r} is a plain object, not a Y.Map: it cannot be edited")
    raise KeyError(f"no {what} {key!r}")


def new_task(
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
            "assignees": Array(unique_strings(assignees)),
            "labels": Array(unique_strings(labels)),
            "due": due_value(fields["due"]),
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
        title=text_value(fields.get("title")),
        column=text_value(fields.get("column")),
        position=text_value(fields.get("position")),
        description=text_value(fields.get("description")),
        assignees=_strings(fields.get("assignees")),
        labels=_strings(fields.get("labels")),
        due=due if isinstance(due, str) else None,
        created_at=text_value(fields.get("created_at")),
        updated_at=text_value(fields.get("updated_at")),
    )


def column_from_value(column_id: str, value: object) -> Column:
    """Build a :class:`Column` from a column's plain value."""
    fields = value if isinstance(value, dict) else {}
    return Column(column_id, text_value(fields.get("name")), text_value(fields.get("position")))


def text_value(value: object) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: object) -> tuple[str, ...]:
    # Concurrent adds of the same name leave duplicates in the array: read it as a set.
    if not isinstance(value, list):
        return ()
    return tuple(dict.fromkeys(item for item in value if isinstance(item, str)))


def unique_strings(values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError("expected a collection of strings, got one string")
    return list(dict.fromkeys(values))


def check_position(position: str) -> None:
    if not is_valid_position(position):
        raise ValueError(f"invalid position {position!r}")


def due_value(due: str | date | None) -> str | None:
    if due is None:
        return None
    if isinstance(due, datetime):
        return due.date().isoformat()
    if isinstance(due, date):
        return due.isoformat()
    return date.fromisoformat(due).isoformat()


def write_text(task: Map[Any], key: str, wanted: str) -> bool:
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


def write_list(task: Map[Any], key: str, wanted: list[str]) -> bool:
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
