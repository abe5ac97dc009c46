"""A board stored as one snapshot is served from its bytes until something needs its document.

What a client sees must not depend on whether the board was built: a new client gets the
whole board, a returning one what it lacks, an edit reaches everyone and the store, and
the events of the first change are those of a built board. The equivalence property at
the end runs random sessions against a board built at load and one built on demand, and
a test of it shows it catches a board served with the wrong state vector.
"""

from __future__ import annotations

import time
from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.board import BoardActor
from actors.messages import Send
from crdt.awareness import AwarenessEntry, encode_awareness
from crdt.board import Board
from crdt.encoding import var_uint
from crdt.errors import BoardCorrupted
from crdt.events import TaskAssigned
from crdt.protocol import (
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    decode_frame,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.room import BoardRoom
from crdt.updates import EMPTY_UPDATE, decode_state_vector
from persistence.store import StoredBoard

BOARD = "on-demand"
TASKS = 12


def stored_board() -> tuple[list[bytes], list[str]]:
    """A board built in steps (a column, then one task per step); the updates and task ids."""
    board = Board()
    updates: list[bytes] = []
    before = board.doc.get_state()
    column = board.add_column("To do")
    updates.append(bytes(board.doc.get_update(before)))
    tasks = []
    for index in range(TASKS):
        before = board.doc.get_state()
        tasks.append(board.add_task(f"task {index}", column, assignees=["ann", "bob"]))
        updates.append(bytes(board.doc.get_update(before)))
    return updates, tasks


UPDATES, TASK_IDS = stored_board()


def whole(updates: list[bytes]) -> tuple[bytes, bytes]:
    """The snapshot of ``updates`` applied in order, and its state vector."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return bytes(doc.get_update()), bytes(doc.get_state())


SNAPSHOT, VECTOR = whole(UPDATES)


def rooms(vector: bytes = VECTOR) -> tuple[BoardRoom, BoardRoom]:
    """The stored board loaded on demand (with ``vector``) and built at load."""
    lazy, eager = BoardRoom(BOARD), BoardRoom(BOARD)
    lazy.load(SNAPSHOT, (), state_vector=vector)
    eager.load(SNAPSHOT)
    return lazy, eager


def content(*updates: bytes) -> dict[str, Any]:
    """What a client holds after applying ``updates``: the board's plain values."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return {name: doc.get(name, type=pycrdt.Map).to_py() for name in ("tasks", "columns", "meta")}


def clocks(state_vector: bytes) -> dict[int, int]:
    return {client: clock for client, clock in decode_state_vector(state_vector).items() if clock}


def sync_of(frames: list[bytes]) -> list[bytes]:
    """The updates (step 2 or update messages) in ``frames``, in order."""
    found = []
    for frame in frames:
        for message in decode_frame(frame):
            if isinstance(message, SyncStep2 | SyncUpdate):
                found.append(message.update)
    return found


def step1_of(frames: list[bytes]) -> bytes:
    [message] = decode_frame(frames[0])
    assert isinstance(message, SyncStep1)
    return message.state_vector


def test_a_new_client_gets_the_whole_board_and_the_board_is_not_built() -> None:
    lazy, eager = rooms()
    assert not lazy.document.built
    assert clocks(step1_of(lazy.join())) == clocks(step1_of(eager.join())) == clocks(VECTOR)
    reply = lazy.receive("new", sync_step1(b"\x00"), 0.0).reply
    assert sync_of(reply) == [SNAPSHOT]
    assert content(*sync_of(reply)) == content(*UPDATES)
    # The client's answer (its empty state) and its presence change nothing of the board.
    answered = lazy.receive("new", sync_step2(EMPTY_UPDATE), 0.0)
    assert answered.error is None and answered.updates == [] and answered.integrated == {"new": 1}
    presence = awareness_frame(encode_awareness([AwarenessEntry(7, 1, '{"user":"ann"}')]))
    assert lazy.receive("new", presence, 0.0).broadcast
    assert lazy.state() == SNAPSHOT
    assert not lazy.document.built


def test_a_returning_client_gets_what_it_lacks() -> None:
    lazy, _ = rooms()
    held = UPDATES[: TASKS // 2]
    _, client_vector = whole(held)
    reply = lazy.receive("back", sync_step1(client_vector), 0.0)
    assert reply.error is None
    [diff] = sync_of(reply.reply)
    assert len(diff) < len(SNAPSHOT)
    assert content(*held, diff) == content(*UPDATES)


def test_a_viewer_resending_what_the_board_has_keeps_it_unbuilt() -> None:
    lazy, _ = rooms()
    out = lazy.receive("viewer", sync_step2(SNAPSHOT), 0.0, read_only=True)
    assert out.error is None and out.reply == [] and out.integrated == {"viewer": 1}
    assert not lazy.document.built


def edit(holding: list[bytes], task: int, title: str) -> bytes:
    """A client holding ``holding`` renames a task: its update."""
    client = Board(pycrdt.Doc())
    for update in holding:
        client.doc.apply_update(update)
    before = client.doc.get_state()
    client.update_task(TASK_IDS[task], title=title)
    return bytes(client.doc.get_update(before))


def test_an_edit_builds_the_board_and_reaches_everyone_and_the_store() -> None:
    lazy, eager = rooms()
    change = edit(UPDATES, 3, "renamed")
    out_lazy = lazy.receive("writer", sync_update(change), 0.0)
    out_eager = eager.receive("writer", sync_update(change), 0.0)
    assert out_lazy.error is None and lazy.document.built
    assert out_lazy.integrated == out_eager.integrated == {"writer": 1}
    assert content(SNAPSHOT, *out_lazy.updates) == content(SNAPSHOT, *out_eager.updates)
    assert content(SNAPSHOT, *sync_of(out_lazy.broadcast))["tasks"][TASK_IDS[3]]["title"] == (
        "renamed"
    )
    assert content(lazy.state()) == content(eager.state())


def test_a_snapshot_that_does_not_load_fails_at_the_first_change_as_corrupted() -> None:
    # The host treats BoardCorrupted by reloading the board; a new client is still
    # served the stored bytes, as a board built at load would have refused to load.
    room = BoardRoom(BOARD)
    room.load(b"\x05\x01garbage", (), state_vector=VECTOR)
    out = room.receive("writer", sync_update(edit(UPDATES, 0, "x")), 0.0)
    assert isinstance(out.error, BoardCorrupted)
    assert out.updates == []


# -- board actors: the event recorder is made at the first change ----------------------


class Gateway:
    number = 1
    closed = False
    peer = "test"

    def send(self, message: Any) -> None:
        raise AssertionError("a board returns its messages, never sends")


def test_the_first_change_of_an_unbuilt_board_reports_its_events() -> None:
    actor = BoardActor(BOARD, clock=time.monotonic, derive_events=True)
    actor.load(StoredBoard(BOARD, SNAPSHOT, TASKS + 1, [], VECTOR))
    link = Gateway()
    actor.open(link, 1)
    answered = actor.receive(link, 1, sync_step1(b"\x00"))
    [(_, step2)] = answered.messages
    assert isinstance(step2, Send) and sync_of([step2.data]) == [SNAPSHOT]
    assert not actor.room.document.built
    client = Board(pycrdt.Doc())
    client.doc.apply_update(SNAPSHOT)
    before = client.doc.get_state()
    client.update_task(TASK_IDS[5], assignees=["ann"])
    out = actor.receive(link, 1, sync_update(bytes(client.doc.get_update(before))))
    assert out.events == [TaskAssigned(BOARD, TASK_IDS[5], (), ("bob",))]


def test_a_board_built_on_demand_can_be_switched_off() -> None:
    actor = BoardActor(BOARD, clock=time.monotonic, build_on_demand=False)
    actor.load(StoredBoard(BOARD, SNAPSHOT, TASKS + 1, [], VECTOR))
    assert actor.room.document.built


# -- the equivalence property ------------------------------------------------------------

# One step of a session: a new client syncs; a client holding the first k stored updates
# comes back; a client renames task i; a client sends a stored update again.
steps = st.one_of(
    st.tuples(st.just("new")),
    st.tuples(st.just("back"), st.integers(0, len(UPDATES))),
    st.tuples(st.just("edit"), st.integers(0, TASKS - 1), st.text(max_size=8)),
    st.tuples(st.just("again"), st.integers(0, len(UPDATES) - 1)),
)


def run_session(lazy: BoardRoom, eager: BoardRoom, session: list[tuple[Any, ...]]) -> None:
    """Feed both rooms the same session; assert every client and the store see the same."""
    assert clocks(step1_of(lazy.join())) == clocks(step1_of(eager.join()))
    applied: list[bytes] = []  # what the board got beyond its snapshot
    for number, step in enumerate(session):
        connection = f"c{number}"
        if step[0] == "new":
            frames = [sync_step1(b"\x00"), sync_step2(EMPTY_UPDATE)]
            holding: list[bytes] = []
        elif step[0] == "back":
            holding = UPDATES[: step[1]]
            frames = [sync_step1(whole(holding)[1])]
        elif step[0] == "edit":
            holding = [SNAPSHOT, *applied]
            frames = [sync_update(edit(holding, step[1], step[2]))]
        else:
            holding = []
            frames = [sync_update(UPDATES[step[1]])]
        for frame in frames:
            out_lazy = lazy.receive(connection, frame, 0.0)
            out_eager = eager.receive(connection, frame, 0.0)
            assert out_lazy.error is None and out_eager.error is None
            assert out_lazy.integrated == out_eager.integrated
            replies_lazy, replies_eager = sync_of(out_lazy.reply), sync_of(out_eager.reply)
            assert len(replies_lazy) == len(replies_eager)
            if replies_lazy:
                assert content(*holding, *replies_lazy) == content(*holding, *replies_eager)
            assert content(SNAPSHOT, *applied, *out_lazy.updates) == content(
                SNAPSHOT, *applied, *out_eager.updates
            )
            applied += out_eager.updates
    assert content(lazy.state()) == content(eager.state())
    assert clocks(lazy.document.state_vector()) == clocks(eager.document.state_vector())


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, max_size=6))
def test_a_board_built_on_demand_serves_every_session_as_a_built_one(
    session: list[tuple[Any, ...]],
) -> None:
    run_session(*rooms(), session)


def test_the_property_catches_a_board_served_with_the_wrong_state_vector() -> None:
    # The guarantee's test: a vector from an older snapshot makes the board claim less
    # than it holds, and the property says so before any session step.
    _, older = whole(UPDATES[:-1])
    with pytest.raises(AssertionError):
        run_session(*rooms(vector=older), [("new",)])


# -- hostile frames at a board not built yet -----------------------------------------------


def encoded_vector(clocks: dict[int, int]) -> bytes:
    """A state vector (possibly claiming clocks the board does not have)."""
    out = bytearray(var_uint(len(clocks)))
    for client, clock in clocks.items():
        out += var_uint(client) + var_uint(clock)
    return bytes(out)


hostile_frames = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(sync_step1),
    st.binary(max_size=64).map(sync_step2),
    st.binary(max_size=64).map(sync_update),
    st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**20), max_size=3)
    .map(encoded_vector)
    .map(sync_step1),
    st.sampled_from([sync_step2(EMPTY_UPDATE), sync_step2(SNAPSHOT), sync_update(UPDATES[0])]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(hostile_frames, min_size=1, max_size=4))
def test_hostile_frames_at_an_unbuilt_board_leave_it_whole(frames: list[bytes]) -> None:
    # Whatever a connection sends first, to a board served from its snapshot: the board
    # keeps every stored task, and a new client still gets all of it.
    room, _ = rooms()
    for frame in frames:
        if room.receive("hostile", frame, 0.0).error is not None:
            break  # the gateway closes a connection at its first error
    assert holds_the_stored_board(content(room.state()))
    reply = room.receive("new", sync_step1(b"\x00"), 0.0)
    assert reply.error is None
    assert holds_the_stored_board(content(*sync_of(reply.reply)))


def holds_the_stored_board(found: dict[str, Any]) -> bool:
    """Every stored task, column and field is there as stored (a valid update may add)."""
    stored = content(*UPDATES)
    return all(
        found[root].get(key) == value
        for root, entries in stored.items()
        for key, value in entries.items()
    )
