"""Every delivery order of a causal chain of updates converges to what yjs makes of it.

Three clients edit one board and sync with each other between edits, so later updates
depend on earlier ones of other clients. Each update reaches the room on a connection of
its own, in every possible order; when the room asks a connection to resync (its reply
holds a sync step 1), the test answers as that client would, from its document as it was
when it sent the update. The room must end with the content yjs computes for the same
bytes: pycrdt 0.14.13 alone drops some out-of-order updates (tests/unit/test_pycrdt_bugs.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from pycrdt import Doc, Map, Text, get_state

from crdt.protocol import SyncStep1, decode_frame, sync_step2, sync_update
from crdt.room import BoardRoom, RoomOutput
from tests.fuzz.board_updates import Writer
from tests.fuzz.oracle import decode_state_vector
from tests.fuzz.yjs_reference import running_in_ci, yjs_converge, yjs_unavailable_reason

ROOTS = {"tasks": "map", "meta": "map", "notes": "text"}
# A resync answer may itself be held and asked about again; never more than this per frame.
MAX_RESYNC_ROUNDS = 8


@dataclass(frozen=True)
class Sent:
    """One update as a client sent it, and that client's document at that moment."""

    update: bytes
    sender: Doc[Any]


def _frozen_copy(writer: Writer) -> Doc[Any]:
    copy: Doc[Any] = Doc()
    copy.apply_update(writer.doc.get_update())
    return copy


def causal_chain() -> list[Sent]:
    """Seven updates from three clients: sets, overwrites, nested maps, text inserts, deletes."""
    alice, bob, carol = Writer(101), Writer(202), Writer(303)
    chain: list[Sent] = []

    def edit(writer: Writer, action: Any) -> None:
        update = writer.edit(action)
        assert update is not None
        chain.append(Sent(update, _frozen_copy(writer)))

    def tasks(doc: Doc[Any]) -> Map[Any]:
        return doc.get("tasks", type=Map)

    def meta(doc: Doc[Any]) -> Map[Any]:
        return doc.get("meta", type=Map)

    def notes(doc: Doc[Any]) -> Text:
        return doc.get("notes", type=Text)

    # Alice alone: the one-writer pattern pycrdt drops when reordered (k1=1, k2=2, k1=3).
    edit(alice, lambda d: (tasks(d).__setitem__("t1", "todo"), meta(d).__setitem__("k1", 1)))
    edit(alice, lambda d: meta(d).__setitem__("k2", 2))
    edit(alice, lambda d: meta(d).__setitem__("k1", 3))
    bob.pull(alice)
    edit(bob, lambda d: (notes(d).insert(0, "hello world"), tasks(d).__setitem__("t1", "doing")))
    carol.pull(bob)

    def carol_edit(d: Doc[Any]) -> None:
        del notes(d)[0:6]
        tasks(d)["t2"] = Map({"title": "Fix bug"})

    edit(carol, carol_edit)
    alice.pull(carol)

    def alice_edit(d: Doc[Any]) -> None:
        notes(d).insert(len(notes(d)), "!")
        tasks(d)["t2"]["status"] = "done"

    edit(alice, alice_edit)
    bob.pull(alice)

    def bob_edit(d: Doc[Any]) -> None:
        del tasks(d)["t1"]
        notes(d).insert(0, "Hi ")

    edit(bob, bob_edit)
    return chain


def room_content(room: BoardRoom) -> dict[str, Any]:
    """The room document's roots as plain Python, shaped like yjs ``toJSON``."""
    return {
        "tasks": room.doc.get("tasks", type=Map).to_py() or {},
        "meta": room.doc.get("meta", type=Map).to_py() or {},
        "notes": str(room.doc.get("notes", type=Text)),
    }


def _answer_resyncs(room: BoardRoom, connection: int, sent: Sent, output: RoomOutput) -> None:
    """Answer every sync step 1 the room sent back, as the client would (its diff, step 2)."""
    for _ in range(MAX_RESYNC_ROUNDS):
        assert output.error is None, f"connection {connection}: {output.error!r}"
        asks = [
            message
            for frame in output.reply
            for message in decode_frame(frame)
            if isinstance(message, SyncStep1)
        ]
        if not asks:
            return
        answer = b"".join(sync_step2(sent.sender.get_update(ask.state_vector)) for ask in asks)
        output = room.receive(connection, answer, 0.0)
    raise AssertionError(f"connection {connection} still asked to resync after {MAX_RESYNC_ROUNDS}")


def deliver(chain: list[Sent], order: tuple[int, ...]) -> BoardRoom:
    """A fresh room fed the chain's updates in ``order``, one connection per update."""
    room = BoardRoom("causal")
    for index in order:
        output = room.receive(index, sync_update(chain[index].update), 0.0)
        _answer_resyncs(room, index, chain[index], output)
    return room


@pytest.fixture(scope="module")
def chain() -> list[Sent]:
    return causal_chain()


@pytest.fixture(scope="module")
def yjs_result(chain: list[Sent]) -> dict[str, Any]:
    reason = yjs_unavailable_reason()
    if reason is not None:
        if running_in_ci():
            pytest.fail(f"CI=true but yjs cannot run: {reason}")
        pytest.skip(reason)
    return yjs_converge([sent.update for sent in chain], ROOTS)


def test_the_chain_is_causal_and_yjs_agrees_with_pycrdt_in_causal_order(
    chain: list[Sent], yjs_result: dict[str, Any]
) -> None:
    assert 5 <= len(chain) <= 7
    writers = {client for sent in chain for client in decode_state_vector(get_state(sent.update))}
    assert writers == {101, 202, 303}
    in_order = deliver(chain, tuple(range(len(chain))))
    assert room_content(in_order) == yjs_result["content"]
    assert decode_state_vector(in_order.doc.get_state()) == yjs_result["state"]
    assert not yjs_result["pending"]
    # The chain is worth permuting: some updates really depend on others.
    dependent = Doc()
    dependent.apply_update(chain[-1].update)
    assert decode_state_vector(dependent.get_state()) == {}


def test_every_delivery_order_converges_to_the_yjs_result(
    chain: list[Sent], yjs_result: dict[str, Any]
) -> None:
    diverged: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    orders = list(itertools.permutations(range(len(chain))))
    assert len(orders) <= 5040
    for order in orders:
        room = deliver(chain, order)
        content = room_content(room)
        state = decode_state_vector(room.doc.get_state())
        if content != yjs_result["content"] or state != yjs_result["state"]:
            diverged.append((order, content))
        room.close()
    assert not diverged, (
        f"{len(diverged)} of {len(orders)} delivery orders diverge from yjs "
        f"{yjs_result['content']}; first: order {diverged[0][0]} gave {diverged[0][1]}"
    )
