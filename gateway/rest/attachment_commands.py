"""What attachments do on a board: the task's ``attachments`` entries, as collaborators see them.

A task's ``attachments`` is an array of maps ``{id, name, size, content_type, state,
version, added_by, added_at}``: a copy of what the attachment index says, kept current
so that everyone looking at the board sees a file arrive, get scanned and become
downloadable. The index (``persistence/attachments.py``) stays the authority: a board
edited by a client can show any state it likes, and no download follows from it.

These run inside one transaction on the board's host (``Cluster.run``); on Ray they travel
pickled by name, so they stay module-level and take and return plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycrdt import Array, Map

from crdt.board import Board
from gateway.rest.commands import Refusal

FIELDS = ("id", "name", "size", "content_type", "state", "version", "added_by", "added_at")


def _entries(board: Board, task_id: str, *, create: bool) -> Array[Any] | Refusal:
    if not board.has_task(task_id):
        return Refusal("not-found", f"no task {task_id!r}")
    task = board.doc.get("tasks", type=Map).get(task_id)
    if not isinstance(task, Map):
        return Refusal("conflict", f"task {task_id!r} is a plain object: it cannot be edited")
    entries = task.get("attachments")
    if not isinstance(entries, Array):
        if not create:
            return Refusal("not-found", f"task {task_id!r} has no attachments")
        entries = Array()
        task["attachments"] = entries
    return entries


def task_exists(board: Board, task_id: str) -> bool:
    """Whether the board has the task (a read)."""
    return board.has_task(task_id)


def show_attachment(board: Board, task_id: str, entry: Mapping[str, Any]) -> str | Refusal:
    """Add the attachment to the task, or bring its entry up to date; the board's project."""
    entries = _entries(board, task_id, create=True)
    if isinstance(entries, Refusal):
        return entries
    plain = {name: entry.get(name) for name in FIELDS}
    for value in entries:
        if isinstance(value, Map) and value.get("id") == plain["id"]:
            for name, field_value in plain.items():
                if value.get(name) != field_value:
                    value[name] = field_value
            return board.get_meta().project or ""
    entries.append(Map(plain))
    return board.get_meta().project or ""


def show_state(board: Board, task_id: str, attachment_id: str, state: str) -> None:
    """Set the state the task shows for one attachment (if the task still has it)."""
    entries = _entries(board, task_id, create=False)
    if isinstance(entries, Refusal):
        return
    for value in entries:
        if isinstance(value, Map) and value.get("id") == attachment_id:
            if value.get("state") != state:
                value["state"] = state
            return


def hide_attachment(board: Board, task_id: str, attachment_id: str) -> None:
    """Remove the attachment's entry from the task."""
    entries = _entries(board, task_id, create=False)
    if isinstance(entries, Refusal):
        return
    for index, value in enumerate(entries):
        if isinstance(value, Map) and value.get("id") == attachment_id:
            del entries[index]
            return


def shown_attachments(board: Board, task_id: str) -> list[dict[str, Any]]:
    """The task's attachment entries as plain values (a read, for tests and the app)."""
    entries = _entries(board, task_id, create=False)
    if isinstance(entries, Refusal):
        return []
    return [dict(value.to_py() or {}) for value in entries if isinstance(value, Map)]
