"""What a room guarantees about untrusted updates: all or nothing, integrated before counted."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from crdt.awareness import AwarenessEntry, encode_awareness
from crdt.errors import BoardFull, InvalidUpdate, OutOfSync, UpdateTooLarge, WritesRefused
from crdt.protocol import (
    SyncStep1,
    SyncStep2,
    awareness_frame,
    decode_frame,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.room import BoardRoom, RoomLimits
from crdt.updates import missing_from, snapshot_loads


def recorded_updates(edit: Any) -> tuple[Doc[Any], list[bytes]]:
    """A writer's document and the incremental updates ``edit(doc)`` produced."""
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    edit(doc)
    return doc, updates


def three_writes(doc: Doc[Any]) -> None:
    tasks = doc.get("tasks", type=Map)
    tasks["k1"] = 1
    tasks["k2"] = 2
    tasks["k1"] = 3


def tasks_of(doc: Doc[Any]) -> dict[str, Any]:
    return dict(doc.get("tasks", type=Map).to_py() or {})


def resync_requests(frames: list[bytes]) -> list[SyncStep1]:
    return [m for f in frames for m in decode_frame(f) if isinstance(m, SyncStep1)]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_order_of_one_writers_updates_converges_and_counts_only_integrated(
    order: tuple[int, ...],
) -> None:
    _, updates = recorded_updates(three_writes)
    room = BoardRoom("b")
    counts: list[int] = []
    for index in order:
        output = room.receive("w", sync_update(updates[index]), now=0.0)
        assert output.error is None
        counts.append(output.integrated.get("w", counts[-1] if counts else 0))
    assert tasks_of(room.doc) == {"k1": 3, "k2": 2}
    assert room.held_updates("w") == 0
    # The count names a prefix of what "w" sent: it reaches 3 only once all are in.
    assert counts[-1] == 3
    assert all(count < 3 for count in counts[:-1])
    assert counts == sorted(counts)


def test_pycrdt_drop_is_repaired_by_the_held_copy() -> None:
    # Order (1, 2, 0) makes pycrdt 0.14.13 drop k1=3 (see tests/unit/test_pycrdt_bugs.py).
    _, updates = recorded_updates(three_writes)
    room = BoardRoom("b")
    first = room.receive("w", sync_update(updates[1]), now=0.0)
    assert resync_requests(first.reply), "a held update must ask its sender to resync"
    assert "w" not in first.integrated
    room.receive("w", sync_update(updates[2]), now=0.0)
    last = room.receive("w", sync_update(updates[0]), now=0.0)
    assert last.integrated == {"w": 3}
    assert tasks_of(room.doc) == {"k1": 3, "k2": 2}
    stored: Doc[Any] = Doc()
    for update in room.state(), *last.updates:
        stored.apply_update(update)
    assert tasks_of(stored) == {"k1": 3, "k2": 2}


def test_an_update_missing_its_dependency_is_held_until_the_resync_answer() -> None:
    writer, updates = recorded_updates(three_writes)
    room = BoardRoom("b")
    output = room.receive("w", sync_update(updates[2]), now=0.0)
    assert output.updates == [] or tasks_of(room.doc) != {"k1": 3, "k2": 2}
    assert "w" not in output.integrated
    [request] = resync_requests(output.reply)
    # The client answers the request as y-websocket does: everything we lack.
    answer = room.receive("w", sync_step2(writer.get_update(request.state_vector)), now=0.0)
    assert answer.integrated == {"w": 2}
    assert room.held_updates("w") == 0
    assert tasks_of(room.doc) == {"k1": 3, "k2": 2}


def test_another_connections_update_can_release_a_held_one() -> None:
    _, updates = recorded_updates(three_writes)
    room = BoardRoom("b")
    room.receive("late", sync_update(updates[1]), now=0.0)
    output = room.receive("early", sync_update(updates[0]), now=0.0)
    assert output.integrated == {"early": 1, "late": 1}


def test_too_many_held_updates_close_their_sender_only() -> None:
    limits = RoomLimits(max_held_updates=3)
    room = BoardRoom("b", limits=limits)

    def many(doc: Doc[Any]) -> None:
        for n in range(6):
            doc.get("tasks", type=Map)[f"k{n}"] = n

    _, updates = recorded_updates(many)
    errors = [room.receive("w", sync_update(u), now=0.0).error for u in updates[1:5]]
    assert errors[:3] == [None, None, None]
    assert isinstance(errors[3], OutOfSync)
    assert room.held_updates("w") == 0
    # The board keeps serving others.
    _, other = recorded_updates(lambda doc: doc.get("tasks", type=Map).__setitem__("x", 1))
    assert room.receive("o", sync_update(other[0]), now=0.0).integrated == {"o": 1}


def test_a_malformed_update_changes_nothing() -> None:
    _, good = recorded_updates(lambda doc: doc.get("t", type=Text).insert(0, "hello"))
    room = BoardRoom("b")
    room.receive("a", sync_update(good[0]), now=0.0)
    before = room.doc.get_state()
    output = room.receive("x", sync_update(good[0][:-3] + b"\xff\xff\xff\xff"), now=0.0)
    assert isinstance(output.error, InvalidUpdate)
    assert output.updates == [] and output.broadcast == []
    assert room.doc.get_state() == before
    assert snapshot_loads(room.state(), room.doc.get_state())


def test_an_update_over_the_size_limit_is_refused_and_the_board_stays_usable() -> None:
    room = BoardRoom("b", limits=RoomLimits(max_update_bytes=1000))
    _, big = recorded_updates(lambda doc: doc.get("t", type=Text).insert(0, "x" * 2000))
    output = room.receive("a", sync_update(big[0]), now=0.0)
    assert isinstance(output.error, UpdateTooLarge)
    assert str(room.doc.get("t", type=Text)) == ""
    _, small = recorded_updates(lambda doc: doc.get("t", type=Text).insert(0, "ok"))
    assert room.receive("b", sync_update(small[0]), now=0.0).error is None
    assert str(room.doc.get("t", type=Text)) == "ok"


def test_the_update_that_would_pass_the_board_size_is_refused() -> None:
    room = BoardRoom("b", limits=RoomLimits(max_board_bytes=5000))
    writer: Doc[Any] = Doc()
    text = writer.get("t", type=Text)
    accepted = 0
    refused = None
    for n in range(20):
        before = writer.get_state()
        text.insert(len(text), "y" * 400)
        output = room.receive("a", sync_update(writer.get_update(before)), now=0.0)
        if output.error is not None:
            refused = output.error
            break
        accepted = n + 1
    assert isinstance(refused, BoardFull)
    assert accepted >= 8, "the board must take updates up to its size, not stop early"
    assert len(room.state()) <= 5000
    # Still readable: a newcomer gets everything accepted.
    [reply] = room.receive("reader", sync_step1(b"\x00"), now=0.0).reply
    [step2] = decode_frame(reply)
    assert isinstance(step2, SyncStep2)
    reader: Doc[Any] = Doc()
    reader.apply_update(step2.update)
    assert len(str(reader.get("t", type=Text))) == accepted * 400


def test_while_writes_are_refused_reading_and_presence_still_work() -> None:
    room = BoardRoom("b")
    writer, updates = recorded_updates(three_writes)
    for update in updates:
        room.receive("w", sync_update(update), now=0.0)
    # A newcomer: step 1, an empty step 2 (its empty document), presence.
    newcomer: Doc[Any] = Doc()
    hello = awareness_frame(encode_awareness([AwarenessEntry(7, 1, '{"u":"n"}')]))
    output = room.receive("n", sync_step1(newcomer.get_state()), now=0.0, writable=False)
    assert output.error is None
    [answer] = decode_frame(output.reply[0])
    assert isinstance(answer, SyncStep2)
    newcomer.apply_update(answer.update)
    assert tasks_of(newcomer) == {"k1": 3, "k2": 2}
    empty = room.receive(
        "n", sync_step2(newcomer.get_update(room.doc.get_state())), 0.0, writable=False
    )
    assert empty.error is None
    assert room.receive("n", hello, now=0.0, writable=False).broadcast
    # The client that already holds everything may resync; a new edit is refused.
    resync = room.receive(
        "w", sync_step2(writer.get_update(room.doc.get_state())), 0.0, writable=False
    )
    assert resync.error is None
    writer.get("tasks", type=Map)["k9"] = 9
    refused = room.receive(
        "w", sync_update(writer.get_update(room.doc.get_state())), 0.0, writable=False
    )
    assert isinstance(refused.error, WritesRefused)
    assert "k9" not in tasks_of(room.doc)


def test_a_checkpoint_keeps_what_a_rebuild_needs() -> None:
    room = BoardRoom("b")
    _, updates = recorded_updates(three_writes)
    room.receive("w", sync_update(updates[0]), now=0.0)
    state, position = room.state(), room.journal_position
    room.receive("w", sync_update(updates[1]), now=0.0)
    room.checkpoint(state, position)
    room.receive("w", sync_update(updates[2]), now=0.0)
    room.rebuild()
    assert tasks_of(room.doc) == {"k1": 3, "k2": 2}
    # A stale checkpoint (older than the base) is ignored.
    room.checkpoint(b"\x00\x00", position)
    room.rebuild()
    assert tasks_of(room.doc) == {"k1": 3, "k2": 2}


def test_a_snapshot_that_does_not_match_the_live_state_vector_is_refused() -> None:
    writer, _ = recorded_updates(three_writes)
    assert snapshot_loads(writer.get_update(), writer.get_state())
    assert not snapshot_loads(Doc().get_update(), writer.get_state())
    assert not snapshot_loads(b"\xff\xff\xff", writer.get_state())


def test_in_every_delivery_order_acks_cover_only_what_is_stored() -> None:
    from tests.unit.test_causal_order import causal_chain

    chain = causal_chain()
    for order in itertools.permutations(range(len(chain))):
        room = BoardRoom("b")
        stored: list[bytes] = []
        acked: set[int] = set()
        for index in order:
            frame = sync_update(chain[index].update)
            for _ in range(5):
                output = room.receive(index, frame, now=0.0)
                assert output.error is None
                stored += output.updates
                acked |= {conn for conn, count in output.integrated.items() if count >= 1}
                asks = resync_requests(output.reply)
                if not asks:
                    break
                sender = chain[index].sender
                frame = b"".join(sync_step2(sender.get_update(a.state_vector)) for a in asks)
            # Whatever is acknowledged so far replays from what was handed out to store.
            replayed: Doc[Any] = Doc()
            for update in stored:
                replayed.apply_update(update)
            for conn in acked:
                assert missing_from(replayed, chain[conn].update) is None, (order, conn)
        assert acked == set(range(len(chain)))


def test_an_update_held_too_long_closes_its_sender_and_the_board_leaves_the_careful_path() -> None:
    room = BoardRoom("b", limits=RoomLimits(max_held_seconds=30.0))
    _, updates = recorded_updates(three_writes)
    room.receive("w", sync_update(updates[2]), now=0.0)
    assert room.held_updates("w") == 1
    _, other = recorded_updates(lambda doc: doc.get("tasks", type=Map).__setitem__("x", 1))
    later = room.receive("o", sync_update(other[0]), now=31.0)
    assert isinstance(later.closed.get("w"), OutOfSync)
    assert later.integrated == {"o": 1}
    assert room.held_updates("w") == 0
    # A frame from the expired sender itself is refused, not processed.
    _, third = recorded_updates(lambda doc: doc.get("tasks", type=Map).__setitem__("z", 1))
    room2 = BoardRoom("b2")
    room2.receive("w", sync_update(updates[2]), now=0.0)
    own = room2.receive("w", sync_update(third[0]), now=31.0)
    assert isinstance(own.error, OutOfSync)
    assert "z" not in tasks_of(room2.doc)


def test_whole_board_checks_are_charged_to_the_holder_not_to_its_victim() -> None:
    # The victim's client id is public (presence). A hostile connection holds an
    # update under that id, so each of the victim's edits touches what is pending.
    victim: Doc[Any] = Doc(client_id=77)
    updates: list[bytes] = []
    victim.observe(lambda event: updates.append(event.update))
    tasks = victim.get("tasks", type=Map)
    for n in range(12):
        tasks[f"k{n}"] = n
    room = BoardRoom("b", limits=RoomLimits(max_consistency_checks=3))
    room.receive("hostile", sync_update(updates[11]), now=0.0)
    assert room.held_updates("hostile") == 1
    closed: dict[Any, Any] = {}
    for n in range(10):
        output = room.receive("victim", sync_update(updates[n]), now=0.0)
        assert output.error is None, f"the victim was refused at edit {n}: {output.error!r}"
        assert output.integrated.get("victim") == n + 1
        closed.update(output.closed)
    assert isinstance(closed.get("hostile"), OutOfSync)
    assert {f"k{n}": n for n in range(10)}.items() <= tasks_of(room.doc).items()


def test_a_frame_of_repeated_questions_is_answered_once() -> None:
    room = BoardRoom("b")
    _, updates = recorded_updates(three_writes)
    for update in updates:
        room.receive("w", sync_update(update), now=0.0)
    room.receive("w", awareness_frame(encode_awareness([AwarenessEntry(5, 1, "{}")])), now=0.0)
    flood = sync_step1(b"\x00") * 400 + bytes([3]) * 1000
    output = room.receive("attacker", flood, now=0.0)
    assert output.error is None
    assert len(output.reply) == 2, "one step 2 and one presence answer, not 1,400"


def test_the_room_says_it_is_holding_until_the_held_update_integrates() -> None:
    room = BoardRoom("b")
    _, updates = recorded_updates(three_writes)
    room.receive("w", sync_update(updates[2]), now=0.0)
    assert room.holding
    room.receive("w", sync_update(updates[0]), now=0.0)
    room.receive("w", sync_update(updates[1]), now=0.0)
    assert not room.holding
