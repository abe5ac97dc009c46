"""What a change's domain events make the read model write (actors/indexing.py)."""

from __future__ import annotations

from actors.indexing import index_write
from crdt.board import Board
from crdt.events import MetaUpdated, TaskCreated, TaskDeleted, TaskMoved


def board_with_tasks() -> Board:
    board = Board()
    board.set_meta(title="b", project="p1")
    board.add_column("To do", column_id="todo")
    board.add_task("one", "todo", task_id="t1", assignees=["ann"])
    board.add_task("two", "todo", task_id="t2")
    return board


def test_the_tasks_an_event_names_are_written_as_the_board_holds_them() -> None:
    board = board_with_tasks()
    write = index_write(
        "b", board, 7, [TaskCreated("b", "t1"), TaskMoved("b", "t1", "x", "todo", "a0")]
    )
    assert write is not None and not write.replace
    assert [(row.task_id, row.project, row.assignees, row.version) for row in write.upserts] == [
        ("t1", "p1", ("ann",), 7)
    ]
    board.delete_task("t2")
    write = index_write("b", board, 8, [TaskDeleted("b", "t2")])
    assert write is not None and write.deletes == ["t2"] and not write.upserts


def test_only_a_project_change_rewrites_the_whole_board() -> None:
    board = board_with_tasks()
    assert index_write("b", board, 3, [MetaUpdated("b", ("title",))]) is None
    write = index_write("b", board, 4, [MetaUpdated("b", ("project",))])
    assert write is not None and write.replace
    assert sorted(row.task_id for row in write.upserts) == ["t1", "t2"]
