"""A loaded board reads its tasks' assignees only when it is first changed, not at open.

The event recorder keeps every task's assignees to tell who was added or removed. Reading
them walks the whole board; a board that is only opened and read must not pay for that,
and a board that is changed must still report assignments exactly as if it had.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pycrdt
import pytest

from actors.board import BoardActor
from actors.messages import Send
from crdt.board import Board
from crdt.events import BoardEventRecorder, TaskAssigned
from crdt.protocol import sync_step1, sync_step2, sync_update
from persistence.store import StoredBoard

BOARD = "lazy-board"


@dataclass(eq=False)
class GatewayLink:
    """The board's view of a gateway (the Link protocol); the board does no I/O itself."""

    number: int = 1
    closed: bool = False

    @property
    def peer(self) -> str:
        return "test"

    def send(self, message: Any) -> None:
        raise AssertionError("a board returns its messages in its output, never sends")


def stored_board() -> tuple[bytes, str]:
    """A board with one task assigned to ann and bob, as one stored update."""
    board = Board()
    column = board.add_column("To do")
    task = board.add_task("Write the report", column, assignees=["ann", "bob"])
    return bytes(board.doc.get_update()), task


def loaded_actor(state: bytes) -> BoardActor:
    actor = BoardActor(BOARD, clock=time.monotonic, derive_events=True)
    actor.load(StoredBoard(BOARD, state, 1, []))
    return actor


def client_unassigns_bob(state: bytes, task: str) -> bytes:
    """A client's update (from the stored state) that removes bob from the task."""
    client = Board(pycrdt.Doc())
    client.doc.apply_update(state)
    before = client.doc.get_state()
    assignees = client.doc.get("tasks", type=pycrdt.Map)[task]["assignees"]
    del assignees[1]
    return bytes(client.doc.get_update(before))


def test_opening_and_syncing_a_loaded_board_does_not_read_its_tasks() -> None:
    state, _ = stored_board()
    actor = loaded_actor(state)
    link = GatewayLink()
    opened = actor.open(link, 1)
    answered = actor.receive(link, 1, sync_step1(b"\x00"))
    # The client got the server's step 1 and the whole board as step 2.
    assert opened.messages
    step2 = answered.messages[0][1]
    assert isinstance(step2, Send) and len(step2.data) > len(state) // 2
    # No recorder yet (it is made at the first change) or one that has read nothing.
    assert actor._recorder is None or not actor._recorder.primed


def test_a_client_update_on_a_loaded_board_reports_who_was_unassigned() -> None:
    state, task = stored_board()
    actor = loaded_actor(state)
    link = GatewayLink()
    actor.open(link, 1)
    out = actor.receive(link, 1, sync_update(client_unassigns_bob(state, task)))
    assert out.events == [TaskAssigned(BOARD, task, (), ("bob",))]


def test_a_server_side_change_on_a_loaded_board_reports_who_was_unassigned() -> None:
    state, task = stored_board()
    actor = loaded_actor(state)
    out = actor.transact(lambda board: board.update_task(task, assignees=["ann"]))
    assert out.error is None
    assert out.events == [TaskAssigned(BOARD, task, (), ("bob",))]


def test_an_unprimed_recorder_misreads_an_unassignment_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The guarantee's test: without the prime before the change, the removal is lost.
    state, task = stored_board()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    recorder = BoardEventRecorder(doc, BOARD, lazy=True)
    with caplog.at_level(logging.ERROR, logger="crdt.events"):
        doc.apply_update(client_unassigns_bob(state, task))
    assert recorder.drain() == []
    assert "before its event recorder was primed" in caplog.text
    primed_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    primed_doc.apply_update(state)
    primed = BoardEventRecorder(primed_doc, BOARD, lazy=True)
    primed.prime()
    primed_doc.apply_update(client_unassigns_bob(state, task))
    assert primed.drain() == [TaskAssigned(BOARD, task, (), ("bob",))]


def test_a_new_clients_empty_step2_does_not_read_the_tasks() -> None:
    # A stock client answers the server's step 1 with its own (empty) state as step 2.
    state, _ = stored_board()
    actor = loaded_actor(state)
    link = GatewayLink()
    actor.open(link, 1)
    actor.receive(link, 1, sync_step2(pycrdt.Doc().get_update()))
    actor.receive(link, 1, sync_step1(b"\x00"))
    # No recorder yet (it is made at the first change) or one that has read nothing.
    assert actor._recorder is None or not actor._recorder.primed


def test_a_board_released_twice_stays_released() -> None:
    # A passivation and a stop can both release the same board; the second used to raise
    # pycrdt's ValueError from unobserve, which ended the host's stop before the boards
    # after it were snapshotted.
    state, _ = stored_board()
    actor = loaded_actor(state)
    actor.release()
    actor.release()
    actor.room.document.close()
