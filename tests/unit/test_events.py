"""Domain events from updates made by other clients and applied to the server's document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pycrdt
import pytest
from pycrdt import Array, Doc, Map, Text

from crdt import events as events_module
from crdt.board import Board
from crdt.events import (
    BoardEventRecorder,
    ColumnCreated,
    ColumnDeleted,
    ColumnUpdated,
    DomainEvent,
    MetaUpdated,
    TaskAssigned,
    TaskCreated,
    TaskDeleted,
    TaskMoved,
    TaskUpdated,
    event_from_dict,
)

BOARD = "board-1"


class Server:
    """The server's replica: applies client updates and records what they did."""

    def __init__(self, doc: Doc[Any] | None = None) -> None:
        self.doc: Doc[Any] = Doc() if doc is None else doc
        self.recorder = BoardEventRecorder(self.doc, BOARD)

    def receive(self, client: Doc[Any]) -> list[DomainEvent]:
        self.doc.apply_update(client.get_update(self.doc.get_state()))
        return self.recorder.drain()


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    server.recorder.close()


@pytest.fixture
def client(server: Server) -> Board:
    """A client board with two columns, already known to the server."""
    board = Board()
    board.add_column("To do", column_id="todo")
    board.add_column("Done", column_id="done")
    server.receive(board.doc)
    return board


def raw_task(client: Board, task_id: str) -> Map[Any]:
    """The client's task map, for edits made the way any Yjs client would make them."""
    task = client.doc.get("tasks", type=Map)[task_id]
    assert isinstance(task, Map)
    return task


def test_a_task_created_with_its_fields_is_only_created(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo", description="d", assignees=["ann"], labels=["x"])
    (created,) = server.receive(client.doc)
    assert created == TaskCreated(BOARD, task_id)
    # Who it was created assigned to rides along, so they can be told (docs/notifications.md).
    assert isinstance(created, TaskCreated) and created.assignees == ("ann",)


def test_field_changes_are_one_update_naming_the_fields(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    client.update_task(task_id, title="new", due="2026-05-01", labels=["x"])
    # updated_at changed too, but it is bookkeeping.
    assert server.receive(client.doc) == [TaskUpdated(BOARD, task_id, ("title", "labels", "due"))]


def test_touching_only_updated_at_reports_nothing(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    raw_task(client, task_id)["updated_at"] = "2030-01-01T00:00:00.000Z"
    assert server.receive(client.doc) == []


def test_typing_in_the_description_is_an_update(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo", description="hello")
    server.receive(client.doc)
    description = raw_task(client, task_id)["description"]
    assert isinstance(description, Text)
    description.insert(5, " world")
    assert server.receive(client.doc) == [TaskUpdated(BOARD, task_id, ("description",))]


def test_moving_to_another_column(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    client.move_task(task_id, "done", "a5")
    assert server.receive(client.doc) == [TaskMoved(BOARD, task_id, "todo", "done", "a5")]


def test_reordering_within_a_column_is_a_move(server: Server, client: Board) -> None:
    first = client.add_task("first", "todo")
    client.add_task("second", "todo")
    server.receive(client.doc)
    raw_task(client, first)["position"] = "a5"
    assert server.receive(client.doc) == [TaskMoved(BOARD, first, "todo", "todo", "a5")]


def test_assignment_changes_name_the_users(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo", assignees=["ann", "bob"])
    server.receive(client.doc)
    assignees = raw_task(client, task_id)["assignees"]
    assert isinstance(assignees, Array)
    with client.doc.transaction():
        del assignees[0]
        assignees.append("cid")
    assert server.receive(client.doc) == [TaskAssigned(BOARD, task_id, ("cid",), ("ann",))]
    client.unassign(task_id, "bob")
    assert server.receive(client.doc) == [TaskAssigned(BOARD, task_id, (), ("bob",))]


def test_replacing_the_assignees_array_is_an_assignment(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo", assignees=["ann"])
    server.receive(client.doc)
    raw_task(client, task_id)["assignees"] = Array(["bob"])
    assert server.receive(client.doc) == [TaskAssigned(BOARD, task_id, ("bob",), ("ann",))]


def test_users_assigned_before_the_recorder_started_are_named_when_removed() -> None:
    client = Board()
    client.add_column("To do", column_id="todo")
    task_id = client.add_task("t", "todo", assignees=["ann"])
    loaded: Doc[Any] = Doc()
    loaded.apply_update(client.doc.get_update())
    server = Server(loaded)
    client.unassign(task_id, "ann")
    assert server.receive(client.doc) == [TaskAssigned(BOARD, task_id, (), ("ann",))]


def test_one_transaction_changing_everything(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    with client.doc.transaction():
        client.move_task(task_id, "done")
        client.update_task(task_id, title="moved")
        client.assign(task_id, "ann")
    assert server.receive(client.doc) == [
        TaskMoved(BOARD, task_id, "todo", "done", "a0"),
        TaskUpdated(BOARD, task_id, ("title",)),
        TaskAssigned(BOARD, task_id, ("ann",), ()),
    ]


def test_a_task_edited_then_deleted_is_only_deleted(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    with client.doc.transaction():
        client.update_task(task_id, title="last words")
        client.delete_task(task_id)
    assert server.receive(client.doc) == [TaskDeleted(BOARD, task_id)]


def test_a_task_created_and_deleted_between_syncs_leaves_no_trace(
    server: Server, client: Board
) -> None:
    task_id = client.add_task("t", "todo")
    client.delete_task(task_id)
    assert server.receive(client.doc) == []


def test_a_task_map_replaced_wholesale_is_deleted_then_created(
    server: Server, client: Board
) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)
    client.doc.get("tasks", type=Map)[task_id] = Map({"title": "other", "column": "todo"})
    assert server.receive(client.doc) == [TaskDeleted(BOARD, task_id), TaskCreated(BOARD, task_id)]


def test_column_and_meta_events(server: Server, client: Board) -> None:
    client.add_column("Doing", column_id="doing")
    assert server.receive(client.doc) == [ColumnCreated(BOARD, "doing")]
    with client.doc.transaction():
        client.rename_column("doing", "In progress")
        client.move_column("doing", "a0V")
    assert server.receive(client.doc) == [ColumnUpdated(BOARD, "doing", ("name", "position"))]
    client.set_meta(title="Launch", project="apollo")
    assert server.receive(client.doc) == [MetaUpdated(BOARD, ("title", "project"))]
    client.delete_column("doing")
    assert server.receive(client.doc) == [ColumnDeleted(BOARD, "doing")]


def test_deleting_a_column_with_tasks_reports_both(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "done")
    server.receive(client.doc)
    client.delete_column("done")
    events = server.receive(client.doc)
    assert sorted(events, key=lambda event: event.kind) == [
        ColumnDeleted(BOARD, "done"),
        TaskDeleted(BOARD, task_id),
    ]


def test_events_accumulate_in_order_until_drained(server: Server, client: Board) -> None:
    task_id = client.add_task("t", "todo")
    server.doc.apply_update(client.doc.get_update(server.doc.get_state()))
    client.update_task(task_id, title="u")
    server.doc.apply_update(client.doc.get_update(server.doc.get_state()))
    assert server.recorder.drain() == [
        TaskCreated(BOARD, task_id),
        TaskUpdated(BOARD, task_id, ("title",)),
    ]
    assert server.recorder.drain() == []


def test_a_merged_update_from_two_clients(server: Server, client: Board) -> None:
    other = Board()
    other.doc.apply_update(client.doc.get_update())
    before = server.doc.get_state()
    mine = client.add_task("mine", "todo")
    theirs = other.add_task("theirs", "done")
    merged = pycrdt.merge_updates(client.doc.get_update(before), other.doc.get_update(before))
    server.doc.apply_update(merged)
    assert set(server.recorder.drain()) == {TaskCreated(BOARD, mine), TaskCreated(BOARD, theirs)}


def test_malformed_entries_from_a_client_raise_nothing_and_report_nothing(
    server: Server, client: Board
) -> None:
    tasks = client.doc.get("tasks", type=Map)
    tasks["junk"] = "not a map"
    client.doc.get("columns", type=Map)["junk"] = 42
    assert server.receive(client.doc) == []
    del tasks["junk"]
    assert server.receive(client.doc) == []


def test_plain_object_tasks_from_a_careless_client_are_reported(
    server: Server, client: Board
) -> None:
    tasks = client.doc.get("tasks", type=Map)
    tasks["plain"] = {"title": "t", "column": "todo", "position": "a0", "assignees": ["ann"]}
    assert server.receive(client.doc) == [TaskCreated(BOARD, "plain")]
    del tasks["plain"]
    assert server.receive(client.doc) == [TaskDeleted(BOARD, "plain")]


def test_a_failure_while_deriving_events_never_breaks_applying_updates(
    server: Server, client: Board, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = client.add_task("t", "todo")
    server.receive(client.doc)

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(events_module, "_note_task_key", broken)
    client.update_task(task_id, title="applied anyway")
    assert server.receive(client.doc) == []
    assert "cannot derive domain events for board board-1" in caplog.text
    assert Board(server.doc).get_task(task_id).title == "applied anyway"
    monkeypatch.undo()
    client.update_task(task_id, title="again")
    assert server.receive(client.doc) == [TaskUpdated(BOARD, task_id, ("title",))]


def test_a_closed_recorder_records_nothing(server: Server, client: Board) -> None:
    server.recorder.close()
    client.add_task("t", "todo")
    assert server.receive(client.doc) == []
    server.recorder.close()


def test_events_serialize_to_json_and_msgpack_and_back() -> None:
    events: list[DomainEvent] = [
        TaskCreated(BOARD, "t"),
        TaskUpdated(BOARD, "t", ("title", "description")),
        TaskMoved(BOARD, "t", "todo", "done", "a1"),
        TaskAssigned(BOARD, "t", ("ann",), ("bob",)),
        TaskDeleted(BOARD, "t"),
        ColumnCreated(BOARD, "c"),
        ColumnUpdated(BOARD, "c", ("name",)),
        ColumnDeleted(BOARD, "c"),
        MetaUpdated(BOARD, ("title",)),
    ]
    assert TaskMoved(BOARD, "t", "todo", "done", "a1").to_dict() == {
        "kind": "task.moved",
        "board_id": BOARD,
        "task_id": "t",
        "from_column": "todo",
        "to_column": "done",
        "position": "a1",
    }
    for event in events:
        via_json = json.loads(json.dumps(event.to_dict()))
        via_msgpack = msgpack.unpackb(msgpack.packb(event.to_dict()))
        assert event_from_dict(via_json) == event
        assert event_from_dict(via_msgpack) == event


@pytest.mark.parametrize(
    "data", [{"kind": "task.exploded"}, {"kind": "task.moved", "board_id": "b"}, {}]
)
def test_unknown_or_incomplete_events_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        event_from_dict(data)
