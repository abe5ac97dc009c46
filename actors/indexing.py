"""What committed changes do to the read model: sans-I/O, from a board's live document.

The host calls :func:`index_write` after each group commit with the domain events
of what it committed. The rows are read from the document as it is now (it may be
ahead of the commit; a row read later is never older), labelled with the version
of the change, so the index converges on the board and a change delivered again
writes the same rows again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from pycrdt import Doc

from crdt.board import Board
from crdt.board_values import Task
from crdt.events import DomainEvent, MetaUpdated
from persistence.history import merge_state
from persistence.read_model import IndexWrite, TaskRow
from persistence.store import BoardStore


def task_row(board_id: str, project: str, task: Task, version: int) -> TaskRow:
    """The read model's row for one task."""
    return TaskRow(
        board_id,
        task.id,
        project,
        task.title,
        task.column,
        task.position,
        task.description,
        task.assignees,
        task.labels,
        task.due,
        task.created_at,
        task.updated_at,
        version,
    )


def whole_board(board_id: str, board: Board, version: int) -> IndexWrite:
    """Every task of the board, replacing whatever the index held for it."""
    project = board.get_meta().project
    rows = [task_row(board_id, project, task, version) for task in board.tasks()]
    return IndexWrite(board_id, version, upserts=rows, replace=True)


def index_write(
    board_id: str, board: Board, version: int, events: Iterable[DomainEvent]
) -> IndexWrite | None:
    """The rows the events of one change touch, as the board holds them now."""
    touched: set[str] = set()
    for event in events:
        if isinstance(event, MetaUpdated) and "project" in event.fields:
            # The project moved: every row says so.
            return whole_board(board_id, board, version)
        task_id = getattr(event, "task_id", None)
        if isinstance(task_id, str):
            touched.add(task_id)
    if not touched:
        return None
    project = board.get_meta().project
    upserts: list[TaskRow] = []
    deletes: list[str] = []
    for task_id in sorted(touched):
        if board.has_task(task_id):
            upserts.append(task_row(board_id, project, board.get_task(task_id), version))
        else:
            deletes.append(task_id)
    return IndexWrite(board_id, version, upserts=upserts, deletes=deletes)


async def reindex(
    store: BoardStore, *, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Rebuild the read model from the stored boards (``boardcast reindex``).

    Each board is read (snapshot and log) and its tasks written as one replacing
    batch at the board's current version. Live hosts may write meanwhile: their
    rows carry versions too, so whichever is newer stays. Returns each board's
    task count.
    """
    index = store.task_index()
    counts: dict[str, int] = {}
    try:
        for board_id in await store.list_boards():
            stored = await store.load(board_id)
            state = await asyncio.to_thread(
                merge_state, stored.snapshot, [entry.update for entry in stored.updates]
            )
            doc: Doc[Any] = Doc()
            doc.apply_update(state)
            write = whole_board(board_id, Board(doc), stored.last_seq)
            await index.write([write])
            counts[board_id] = len(write.upserts)
            if progress is not None:
                progress(board_id, len(write.upserts))
    finally:
        await index.close()
    return counts
