"""The board document: typed edits, ordering, concurrent edits, and the shape other clients see."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from itertools import count
from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text

from crdt.board import Board
from crdt.board_values import BoardMeta, Column, Task, utc_timestamp
from crdt.positions import position_between


def ticking_clock() -> Callable[[], datetime]:
    """A clock that advances one second per reading, so updated_at visibly moves."""
    ticks = count()
    return lambda: datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC).replace(
        second=next(ticks) % 60
    )


@pytest.fixture
def board() -> Board:
    board = Board(clock=ticking_clock())
    board.add_column("To do", column_id="todo")
    board.add_column("Done", column_id="done")
    return board


def sync(*boards: Board) -> None:
    """Exchange every missing update between the boards, both ways."""
    for source in boards:
        for target in boards:
            if source is not target:
                target.doc.apply_update(source.doc.get_update(target.doc.get_state()))


def fork(board: Board) -> Board:
    """A second replica of the same board, as another client would hold it."""
    replica = Board(clock=ticking_clock())
    replica.doc.apply_update(board.doc.get_update())
    return replica


def test_a_new_task_reads_back_with_every_field(board: Board) -> None:
    task_id = board.add_task(
        "Write docs",
        "todo",
        description="Schema page",
        assignees=["ann", "bob", "ann"],
        labels=["docs"],
        due=datetime(2026, 2, 1, 23, 30, tzinfo=UTC),
    )
    task = board.get_task(task_id)
    assert task == Task(
        id=task_id,
        title="Write docs",
        column="todo",
        position=task.position,
        description="Schema page",
        assignees=("ann", "bob"),
        labels=("docs",),
        due="2026-02-01",
        created_at="2026-01-02T03:04:00.678Z",
        updated_at="2026-01-02T03:04:00.678Z",
    )


def test_timestamps_have_the_javascript_iso_format() -> None:
    moment = datetime(2026, 11, 26, 17, 5, 9, 123_456, tzinfo=UTC)
    assert utc_timestamp(moment) == "2026-11-26T17:05:09.123Z"


def test_tasks_appear_in_the_order_they_were_added(board: Board) -> None:
    ids = [board.add_task(f"task {n}", "todo") for n in range(5)]
    board.add_task("elsewhere", "done")
    assert [task.id for task in board.tasks_in_column("todo")] == ids


def test_position_at_inserts_at_an_index(board: Board) -> None:
    first = board.add_task("first", "todo")
    last = board.add_task("last", "todo")
    middle = board.add_task("middle", "todo", position=board.position_at("todo", 1))
    top = board.add_task("top", "todo", position=board.position_at("todo", 0))
    assert [task.id for task in board.tasks_in_column("todo")] == [top, first, middle, last]


def test_tasks_sharing_a_position_are_ordered_by_id_and_can_be_followed(board: Board) -> None:
    # Two clients appending at once compute the same key.
    board.add_task("b", "todo", task_id="b", position="a5")
    board.add_task("a", "todo", task_id="a", position="a5")
    board.add_task("c", "todo", task_id="c", position="a7")
    after_both = board.add_task("x", "todo", task_id="x", position=board.position_at("todo", 1))
    assert [task.id for task in board.tasks_in_column("todo")] == ["a", "b", after_both, "c"]


def test_invalid_arguments_are_refused(board: Board) -> None:
    with pytest.raises(KeyError):
        board.add_task("t", "no-such-column")
    with pytest.raises(ValueError, match="position"):
        board.add_task("t", "todo", position="not a key")
    with pytest.raises(ValueError):
        board.add_task("t", "todo", due="next tuesday")
    board.add_task("t", "todo", task_id="same")
    with pytest.raises(ValueError, match="already exists"):
        board.add_task("t", "todo", task_id="same")
    with pytest.raises(KeyError):
        board.get_task("missing")
    with pytest.raises(TypeError, match="move_task"):
        board.update_task("same", column="done")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        board.update_task("same", labels="urgent")


def test_update_task_changes_fields_and_bumps_updated_at(board: Board) -> None:
    task_id = board.add_task("Old", "todo", labels=["a", "b"])
    before = board.get_task(task_id)
    board.update_task(task_id, title="New", description="text", labels=["b", "c"], due=None)
    after = board.get_task(task_id)
    assert (after.title, after.description, after.labels, after.due) == (
        "New",
        "text",
        ("b", "c"),
        None,
    )
    assert after.updated_at > before.updated_at
    assert after.created_at == before.created_at


def test_an_update_that_changes_nothing_writes_nothing(board: Board) -> None:
    task_id = board.add_task("Same", "todo", description="d", labels=["x"])
    state = board.doc.get_state()
    board.update_task(task_id, title="Same", description="d", labels=["x"])
    board.move_task(task_id, "todo")
    assert board.doc.get_state() == state


def test_concurrent_description_edits_both_survive(board: Board) -> None:
    task_id = board.add_task("t", "todo", description="Plan 🚀 the launch")
    other = fork(board)
    board.update_task(task_id, description="Plan 🚀 the big launch")
    other.update_task(task_id, description="Plan 🚀 the launch today")
    sync(board, other)
    expected = "Plan 🚀 the big launch today"
    assert board.get_task(task_id).description == expected
    assert other.get_task(task_id).description == expected


def test_concurrent_label_and_assignee_changes_merge_as_sets(board: Board) -> None:
    task_id = board.add_task("t", "todo", labels=["bug"], assignees=["ann"])
    other = fork(board)
    board.update_task(task_id, labels=["bug", "ui"])
    board.assign(task_id, "bob")
    other.update_task(task_id, labels=["bug", "backend"])
    other.unassign(task_id, "ann")
    sync(board, other)
    for replica in (board, other):
        task = replica.get_task(task_id)
        assert set(task.labels) == {"bug", "ui", "backend"}
        assert task.assignees == ("bob",)


def test_the_same_user_assigned_twice_concurrently_is_listed_once(board: Board) -> None:
    task_id = board.add_task("t", "todo")
    other = fork(board)
    board.assign(task_id, "ann")
    other.assign(task_id, "ann")
    sync(board, other)
    assert board.get_task(task_id).assignees == ("ann",)
    board.unassign(task_id, "ann")
    sync(board, other)
    assert other.get_task(task_id).assignees == ()


def test_assign_and_unassign_report_whether_anything_changed(board: Board) -> None:
    task_id = board.add_task("t", "todo")
    assert board.assign(task_id, "ann") is True
    assert board.assign(task_id, "ann") is False
    assert board.assign(task_id, "bob") is True
    assert board.get_task(task_id).assignees == ("ann", "bob")
    assert board.unassign(task_id, "ann") is True
    assert board.unassign(task_id, "ann") is False
    assert board.get_task(task_id).assignees == ("bob",)


def test_move_task_to_another_column_and_back_into_place(board: Board) -> None:
    first = board.add_task("first", "todo")
    second = board.add_task("second", "todo")
    board.add_task("existing", "done")
    board.move_task(first, "done")
    assert [task.title for task in board.tasks_in_column("done")] == ["existing", "first"]
    assert [task.id for task in board.tasks_in_column("todo")] == [second]
    board.move_task(first, "todo", board.position_at("todo", 0, moving=first))
    assert [task.id for task in board.tasks_in_column("todo")] == [first, second]
    with pytest.raises(KeyError):
        board.move_task(first, "no-such-column")


def test_delete_task(board: Board) -> None:
    task_id = board.add_task("t", "todo")
    board.delete_task(task_id)
    assert not board.has_task(task_id)
    assert board.tasks_in_column("todo") == []
    with pytest.raises(KeyError):
        board.delete_task(task_id)


def test_columns_are_ordered_renamed_moved_and_deleted(board: Board) -> None:
    doing = board.add_column("Doing")
    assert [column.name for column in board.columns()] == ["To do", "Done", "Doing"]
    todo, done = board.columns()[:2]
    board.move_column(doing, position_between(todo.position, done.position))
    board.rename_column("done", "Shipped")
    assert [column.name for column in board.columns()] == ["To do", "Doing", "Shipped"]
    assert board.get_column("done") == Column("done", "Shipped", "a1")
    board.delete_column(doing)
    assert [column.id for column in board.columns()] == ["todo", "done"]
    with pytest.raises(KeyError):
        board.rename_column(doing, "again")


def test_deleting_a_column_deletes_its_tasks_or_moves_them_in_order(board: Board) -> None:
    kept = [board.add_task(f"kept {n}", "todo") for n in range(3)]
    board.add_task("gone", "done")
    doing = board.add_column("Doing", column_id="doing")
    board.delete_column("done")
    assert {task.id for task in board.tasks()} == set(kept)
    board.delete_column("todo", move_tasks_to=doing)
    assert [task.id for task in board.tasks_in_column(doing)] == kept


def test_meta(board: Board) -> None:
    assert board.get_meta() == BoardMeta(title="", project="")
    board.set_meta(title="Launch", project="apollo")
    board.set_meta(title="Launch plan")
    assert board.get_meta() == BoardMeta(title="Launch plan", project="apollo")


def test_export_is_json_and_imports_into_an_equal_board(board: Board) -> None:
    board.set_meta(title="Launch", project="apollo")
    board.add_task(
        "a", "todo", description="é🚀", assignees=["ann"], labels=["x"], due=date(2026, 3, 4)
    )
    board.add_task("b", "done")
    exported = json.loads(json.dumps(board.to_dict()))
    copy = Board.from_dict(exported)
    assert copy.to_dict() == board.to_dict()
    assert copy.tasks() == board.tasks()


@pytest.mark.parametrize(
    "data",
    [
        {"version": 99},
        {"columns": {"c": {"name": "no position"}}},
        {"tasks": {"t": {"title": "no column or position"}}},
        {"tasks": {"t": {"title": "t", "column": "c", "position": "bad key"}}},
        {"meta": "not a mapping"},
    ],
)
def test_malformed_exports_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Board.from_dict(data)


def test_replicas_converge_on_the_same_board(board: Board) -> None:
    other = fork(board)
    mine = board.add_task("mine", "todo")
    theirs = other.add_task("theirs", "todo")
    other.move_task(theirs, "done")
    sync(board, other)
    assert board.to_dict() == other.to_dict()
    assert {task.id for task in board.tasks()} == {mine, theirs}


def test_the_document_uses_plain_yjs_types_any_client_can_read(board: Board) -> None:
    task_id = board.add_task("t", "todo", description="d", assignees=["ann"], labels=["x"])
    board.set_meta(title="Board")
    plain: Doc[Any] = Doc()
    plain.apply_update(board.doc.get_update())
    task = plain.get("tasks", type=Map)[task_id]
    assert isinstance(task, Map)
    assert isinstance(task["description"], Text)
    assert isinstance(task["assignees"], Array)
    assert isinstance(task["labels"], Array)
    assert task["due"] is None
    assert all(isinstance(task[key], str) for key in ("title", "column", "position"))
    column = plain.get("columns", type=Map)["todo"]
    assert column.to_py() == {"name": "To do", "position": "a0"}
    assert plain.get("meta", type=Map).to_py() == {"title": "Board"}


def test_tasks_written_carelessly_by_another_client_still_read(board: Board) -> None:
    other: Doc[Any] = Doc()
    other.apply_update(board.doc.get_update())
    tasks = other.get("tasks", type=Map)
    tasks["sloppy"] = Map(
        {"title": "t", "column": "todo", "position": "a0", "description": "plain str"}
    )
    tasks["not-a-task"] = "garbage"
    tasks["plain"] = {"title": "plain object", "column": "todo", "position": "a1"}
    board.doc.apply_update(other.get_update(board.doc.get_state()))
    sloppy = board.get_task("sloppy")
    assert (sloppy.description, sloppy.assignees, sloppy.due, sloppy.created_at) == (
        "plain str",
        (),
        None,
        "",
    )
    assert not board.has_task("not-a-task")
    assert board.get_task("plain").title == "plain object"
    with pytest.raises(ValueError, match="plain object"):
        board.update_task("plain", title="edit")
    # Editing a field that was missing or of the wrong type repairs it.
    board.update_task("sloppy", description="now text", assignees=["ann"])
    assert board.get_task("sloppy").assignees == ("ann",)
    assert [task.id for task in board.tasks_in_column("todo")] == ["sloppy", "plain"]
