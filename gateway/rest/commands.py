"""What REST requests do on a board's actor: plain functions of a :class:`Board`.

Each runs inside one Yjs transaction on the board's host (``Cluster.run``), so a
check and the change it guards are atomic: an ``If-Match`` is compared with the
resource as it is at that moment, on the only copy that decides. On Ray these
functions travel pickled by name: they stay module-level, and take and return
plain values only.

A function that finds the request cannot apply returns a :class:`Refusal`
*before* changing anything, so nothing is written; anything it raises rolls the
whole transaction back (``TransactionFailed``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Map

from auth.roles import ASSIGNABLE
from crdt.board import Board
from crdt.board_values import TASK_FIELDS, Column, Task
from crdt.positions import is_valid_position, position_between

_ID_NAMESPACE = uuid.UUID("6f1d5e0c-2b61-4f55-9a55-7c1b0c5d1e42")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request did not apply: a problem name (``gateway.rest.problems``) and detail."""

    problem: str
    detail: str
    etag: str | None = None  # the resource's current ETag, for precondition failures


def etag_of(value: Any) -> str:
    """A strong ETag for a JSON-able representation: a hash of its canonical form."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:24] + '"'


def derived_id(seed: str, index: int) -> str:
    """An id that the same request (same idempotency key) derives again on a retry."""
    return uuid.uuid5(_ID_NAMESPACE, f"{seed}/{index}").hex


def precondition(current: Any, if_match: str | None) -> Refusal | None:
    """A precondition-failed refusal if ``If-Match`` does not name ``current``'s ETag."""
    if if_match is None or if_match == "*":
        return None
    etag = etag_of(current)
    if etag not in {tag.strip() for tag in if_match.split(",")}:
        return Refusal("precondition-failed", "the resource changed since it was read", etag)
    return None


# -- representations -----------------------------------------------------------


def column_json(column: Column) -> dict[str, Any]:
    return {"id": column.id, "name": column.name, "position": column.position}


def task_json(task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {"id": task.id}
    for name in TASK_FIELDS:
        value = getattr(task, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# -- a board -------------------------------------------------------------------


#: The columns a new board starts with, as the board app creates them.
DEFAULT_COLUMNS = ("To do", "Doing", "Done")


def init_board(board: Board, title: str, project_id: str) -> None:
    """A new board's title and project, and the usual columns if it has none."""
    board.set_meta(title=title, project=project_id)
    if not board.columns():
        for name in DEFAULT_COLUMNS:
            board.add_column(name)


def board_json(board: Board) -> dict[str, Any]:
    meta = board.get_meta()
    return {
        "name": meta.title,
        "project_id": meta.project or None,
        "columns": [column_json(column) for column in board.columns()],
    }


def board_meta(board: Board, board_id: str) -> dict[str, Any] | Refusal:
    """The board's representation, or not-found for a board nobody ever wrote."""
    if board.doc.get_state() == b"\x00":  # nothing was ever written
        return Refusal("not-found", "no such board")
    return {"id": board_id, **board_json(board), "task_count": len(board.tasks())}


def rename_board(
    board: Board, board_id: str, name: str, if_match: str | None
) -> dict[str, Any] | Refusal:
    current = board_meta(board, board_id)
    if isinstance(current, Refusal):
        return current
    refused = precondition(current, if_match)
    if refused is not None:
        return refused
    board.set_meta(title=name)
    return board_meta(board, board_id)


def whole_board(board: Board) -> dict[str, Any]:
    """The board as JSON (``Board.to_dict``: the export format, which round-trips)."""
    return board.to_dict()


def board_update(board: Board) -> bytes:
    """The whole board as one Yjs update."""
    update: bytes = board.doc.get_update()
    return update


# -- columns -------------------------------------------------------------------


def list_columns(board: Board) -> list[dict[str, Any]]:
    return [column_json(column) for column in board.columns()]


def _find_column(board: Board, column_id: str) -> Column | None:
    return next((column for column in board.columns() if column.id == column_id), None)


def create_column(
    board: Board, column_id: str, name: str, position: str | None
) -> dict[str, Any] | Refusal:
    if _find_column(board, column_id) is not None:
        return Refusal("conflict", f"column {column_id!r} already exists")
    if position is not None and not is_valid_position(position):
        return Refusal("validation", f"position {position!r} is not a fractional-index key")
    board.add_column(name, column_id=column_id, position=position)
    found = _find_column(board, column_id)
    assert found is not None
    return column_json(found)


def update_column(
    board: Board, column_id: str, changes: Mapping[str, Any], if_match: str | None
) -> dict[str, Any] | Refusal:
    column = _find_column(board, column_id)
    if column is None:
        return Refusal("not-found", f"no column {column_id!r}")
    refused = precondition(column_json(column), if_match)
    if refused is not None:
        return refused
    position = changes.get("position")
    if position is not None and not is_valid_position(position):
        return Refusal("validation", f"position {position!r} is not a fractional-index key")
    if "name" in changes:
        board.rename_column(column_id, changes["name"])
    if position is not None:
        board.move_column(column_id, position)
    found = _find_column(board, column_id)
    assert found is not None
    return column_json(found)


def delete_column(
    board: Board, column_id: str, move_tasks_to: str | None, if_match: str | None
) -> Refusal | None:
    column = _find_column(board, column_id)
    if column is None:
        return Refusal("not-found", f"no column {column_id!r}")
    refused = precondition(column_json(column), if_match)
    if refused is not None:
        return refused
    if move_tasks_to is not None and _find_column(board, move_tasks_to) is None:
        return Refusal("validation", f"no column {move_tasks_to!r} to move the tasks to")
    board.delete_column(column_id, move_tasks_to=move_tasks_to)
    return None


# -- tasks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Which tasks of one board to list, and which page."""

    column: str | None = None
    assignee: str | None = None
    label: str | None = None
    after: tuple[str, str, str] | None = None  # the sort key of the last item already sent
    limit: int = 50


def _sort_key(task: Task) -> tuple[str, str, str]:
    return (task.column, task.position, task.id)


def list_tasks(board: Board, query: TaskQuery) -> dict[str, Any]:
    """One page of the board's tasks in (column, position, id) order, and the next cursor."""
    found = [
        task
        for task in board.tasks()
        if (query.column is None or task.column == query.column)
        and (query.assignee is None or query.assignee in task.assignees)
        and (query.label is None or query.label in task.labels)
    ]
    found.sort(key=_sort_key)
    if query.after is not None:
        after = query.after
        found = [task for task in found if _sort_key(task) > after]
    page = found[: query.limit]
    more = len(found) > query.limit
    return {
        "items": [task_json(task) for task in page],
        "after": list(_sort_key(page[-1])) if more and page else None,
    }


def get_task(board: Board, task_id: str) -> dict[str, Any] | Refusal:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    return task_json(board.get_task(task_id))


def _column_for(board: Board, wanted: str, made: dict[str, str]) -> str:
    """The id of the column ``wanted`` names (an id, else a name), created if none matches."""
    if wanted in made:
        return made[wanted]
    columns = board.columns()
    for column in columns:
        if column.id == wanted:
            made[wanted] = column.id
            return column.id
    for column in columns:
        if column.name == wanted:
            made[wanted] = column.id
            return column.id
    column_id = board.add_column(wanted)
    made[wanted] = column_id
    return column_id


def _task_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: spec[key] for key in ("description", "assignees", "labels", "due") if key in spec}


def create_task(board: Board, task_id: str, spec: Mapping[str, Any]) -> dict[str, Any] | Refusal:
    if board.has_task(task_id):
        return Refusal("conflict", f"task {task_id!r} already exists")
    column = _column_for(board, spec["column"], {})
    board.add_task(
        spec["title"],
        column,
        task_id=task_id,
        position=spec.get("position"),
        **_task_fields(spec),
    )
    return task_json(board.get_task(task_id))


def update_task(
    board: Board, task_id: str, changes: Mapping[str, Any], if_match: str | None
) -> dict[str, Any] | Refusal:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    refused = precondition(task_json(board.get_task(task_id)), if_match)
    if refused is not None:
        return refused
    fields = _task_fields(changes)
    if "title" in changes:
        fields["title"] = changes["title"]
    if fields:
        board.update_task(task_id, **fields)
    if "column" in changes or "position" in changes:
        current = board.get_task(task_id)
        column = _column_for(board, changes.get("column", current.column), {})
        board.move_task(task_id, column, changes.get("position"))
    return task_json(board.get_task(task_id))


def delete_task(board: Board, task_id: str, if_match: str | None) -> Refusal | None:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    refused = precondition(task_json(board.get_task(task_id)), if_match)
    if refused is not None:
        return refused
    board.delete_task(task_id)
    return None


@dataclass(frozen=True, slots=True)
class Bulk:
    """One bulk request: tasks to create, update, move and delete, in that order."""

    create: Sequence[Mapping[str, Any]] = ()
    update: Sequence[Mapping[str, Any]] = ()
    move: Sequence[Mapping[str, Any]] = ()
    delete: Sequence[str] = ()
    seed: str = ""  # new task ids derive from it (the idempotency key, or a fresh id)
    title: str | None = None  # the board's title, if the board is new


def bulk(board: Board, request: Bulk) -> dict[str, Any] | Refusal:
    """Apply a bulk request as one transaction: all of it, or (refused) none of it."""
    referenced = [*(item["id"] for item in request.update), *(item["id"] for item in request.move)]
    referenced += list(request.delete)
    missing = sorted({task_id for task_id in referenced if not board.has_task(task_id)})
    if missing:
        shown = ", ".join(repr(task_id) for task_id in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return Refusal("validation", f"no such tasks: {shown}{more}", None)
    for item in [*request.create, *request.update, *request.move]:
        position = item.get("position")
        if position is not None and not is_valid_position(position):
            return Refusal("validation", f"position {position!r} is not a fractional-index key")
    if request.title is not None and not board.get_meta().title:
        board.set_meta(title=request.title)
    made: dict[str, str] = {}
    ends: dict[str, str | None] = {}
    created: list[str] = []
    for index, spec in enumerate(request.create):
        column = _column_for(board, spec["column"], made)
        position = spec.get("position")
        if position is None:
            # Appending 10,000 tasks must not rescan the column each time.
            if column not in ends:
                ends[column] = max(
                    (
                        task.position
                        for task in board.tasks_in_column(column)
                        if is_valid_position(task.position)
                    ),
                    default=None,
                )
            position = position_between(ends[column], None)
            ends[column] = position
        task_id = derived_id(request.seed, index)
        board.add_task(
            spec["title"], column, task_id=task_id, position=position, **_task_fields(spec)
        )
        created.append(task_id)
    for item in request.update:
        fields = _task_fields(item)
        if "title" in item:
            fields["title"] = item["title"]
        board.update_task(item["id"], **fields)
    for item in request.move:
        column = _column_for(board, item["column"], made)
        board.move_task(item["id"], column, item.get("position"))
    for task_id in request.delete:
        if board.has_task(task_id):
            board.delete_task(task_id)
    return {
        "created": created,
        "updated": len(request.update),
        "moved": len(request.move),
        "deleted": len(request.delete),
    }


# -- imports -------------------------------------------------------------------


def import_plan(
    board: Board, plan: Mapping[str, Any], seed: str, project_id: str
) -> dict[str, int]:
    """Build a board from an import plan (``gateway.rest.trello``) in one transaction.

    Checklists and comments use the board app's shape: ``checklist`` and
    ``comments`` arrays of maps on the task (``{id, text, done}``, ``{id, author,
    text, created_at}``).
    """
    board.set_meta(title=plan["name"], project=project_id)
    columns: dict[str, str] = {}
    last: str | None = None
    for index, (source_id, name) in enumerate(plan["columns"]):
        last = position_between(last, None)
        columns[source_id] = board.add_column(
            name, column_id=derived_id(f"{seed}/column", index), position=last
        )
    ends: dict[str, str | None] = {}
    items = notes = 0
    for index, spec in enumerate(plan["tasks"]):
        column = columns[spec["column"]]
        position = position_between(ends.get(column), None)
        ends[column] = position
        task_id = derived_id(f"{seed}/task", index)
        board.add_task(
            spec["title"],
            column,
            task_id=task_id,
            position=position,
            description=spec["description"],
            due=spec["due"],
            labels=spec["labels"],
            assignees=spec["assignees"],
        )
        task = board.doc.get("tasks", type=Map)[task_id]
        if spec["checklist"]:
            task["checklist"] = Array(
                [
                    Map({"id": f"c{n}", "text": text, "done": "true" if done else "false"})
                    for n, (text, done) in enumerate(spec["checklist"])
                ]
            )
            items += len(spec["checklist"])
        if spec["comments"]:
            task["comments"] = Array(
                [
                    Map({"id": f"m{n}", "author": author, "text": text, "created_at": date})
                    for n, (author, text, date) in enumerate(spec["comments"])
                ]
            )
            notes += len(spec["comments"])
    return {
        "columns": len(columns),
        "tasks": len(plan["tasks"]),
        "checklist_items": items,
        "comments": notes,
    }


# -- members -------------------------------------------------------------------

#: What a project member may be (enforced by the security layer's policy).
ROLES = ASSIGNABLE


# -- comments (the board app's shape: a ``comments`` array of maps on the task) ----


def _comment_json(task_id: str, value: Any) -> dict[str, Any] | None:
    plain = value.to_py() if isinstance(value, Map) else value
    if not isinstance(plain, dict) or not isinstance(plain.get("id"), str):
        return None
    return {
        "id": plain["id"],
        "task_id": task_id,
        "author": str(plain.get("author", "")),
        "text": str(plain.get("text", "")),
        "created_at": str(plain.get("created_at", "")),
    }


def list_comments(board: Board, task_id: str) -> list[dict[str, Any]] | Refusal:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    task = board.doc.get("tasks", type=Map).get(task_id)
    comments = task.get("comments") if isinstance(task, Map) else None
    if not isinstance(comments, Array):
        return []
    found = [_comment_json(task_id, value) for value in comments]
    return [comment for comment in found if comment is not None]


def add_comment(
    board: Board, task_id: str, comment_id: str, author: str, text: str, now: str
) -> dict[str, Any] | Refusal:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    task = board.doc.get("tasks", type=Map).get(task_id)
    if not isinstance(task, Map):
        return Refusal("conflict", f"task {task_id!r} is a plain object: it cannot be edited")
    comments = task.get("comments")
    if not isinstance(comments, Array):
        comments = Array()
        task["comments"] = comments
    entry = {"id": comment_id, "author": author, "text": text, "created_at": now}
    comments.append(Map(entry))
    return {**entry, "task_id": task_id}


def delete_comment(board: Board, task_id: str, comment_id: str) -> Refusal | None:
    task = board.doc.get("tasks", type=Map).get(task_id)
    comments = task.get("comments") if isinstance(task, Map) else None
    if isinstance(comments, Array):
        for index, value in enumerate(comments):
            found = _comment_json(task_id, value)
            if found is not None and found["id"] == comment_id:
                del comments[index]
                return None
    return Refusal("not-found", f"no comment {comment_id!r} on task {task_id!r}")


def empty_board(board: Board, board_id: str, if_match: str | None) -> Refusal | None:
    """Delete every task and column of the board, in one transaction (its history stays)."""
    current = board_meta(board, board_id)
    if isinstance(current, Refusal):
        return current
    refused = precondition(current, if_match)
    if refused is not None:
        return refused
    for task in board.tasks():
        board.delete_task(task.id)
    for column in board.columns():
        board.delete_column(column.id)
    return None


def import_export(
    board: Board, data: Mapping[str, Any], project_id: str | None, title: str | None
) -> dict[str, int] | Refusal:
    """Fill an empty board from ``Board.to_dict`` output (the export format)."""
    if board.doc.get_state() != b"\x00":
        return Refusal("conflict", "the board is not empty")
    try:
        Board.from_dict(data, doc=board.doc)
    except (ValueError, KeyError, TypeError) as exc:
        return Refusal("validation", f"not a board export: {exc}"[:300])
    board.set_meta(title=title, project=project_id)
    return {"columns": len(board.columns()), "tasks": len(board.tasks())}
