"""Hostile frames against BoardRoom: the board stays loadable and innocent edits survive.

One connection sends the corpus findings (tests/corpus/) or hypothesis-mutated updates,
sync steps and awareness frames; other connections keep editing. The caller stops
feeding a connection once one of its outputs had an error, as the gateway closes it.
Afterwards:

- ``room.state()`` loads into a fresh Doc at the room's own state vector, and holds
  every innocent edit;
- what was persisted (every ``output.updates``) replays into a fresh Doc, to that state;
- nothing an erroring frame carried went out: its own output has no updates nor
  broadcast, and the room holds no clock beyond what the frames that did not error
  could bring (a model Doc fed only those, the pycrdt repair applied);
- a well-formed step 1 from another connection is still answered with a loadable step 2.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, get_update, merge_updates

from crdt.encoding import var_uint
from crdt.protocol import (
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    decode_frame,
    encode_message,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.room import BoardRoom, RoomOutput
from tests.fuzz.board_updates import Writer, causal_history
from tests.fuzz.corpus import CorpusCase, load_corpus
from tests.fuzz.oracle import covers, decode_state_vector

HOSTILE = "hostile"
OBSERVER = "observer"
INNOCENT_CLIENTS = (4_000_000_001, 4_000_000_002)
CORPUS = load_corpus()


def _quietly(action: Any) -> Any:
    """Run ``action``; None if pycrdt raises or panics (the model tolerates bad bytes)."""
    try:
        return action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return None


def _update_messages(frame: bytes) -> list[bytes] | None:
    """The updates a frame carries, or None if it does not decode as exactly one message."""
    messages = _quietly(lambda: decode_frame(frame))
    if messages is None or len(messages) != 1:
        return None
    return [m.update for m in messages if isinstance(m, SyncUpdate | SyncStep2)]


@dataclass
class Board:
    """A room, one hostile connection, two innocent writers, and what came out of the room."""

    room: BoardRoom = field(default_factory=lambda: BoardRoom("fuzz"))
    writers: list[Writer] = field(default_factory=lambda: [Writer(c) for c in INNOCENT_CLIENTS])
    edits: dict[str, int] = field(default_factory=dict)
    persisted: list[bytes] = field(default_factory=list)
    # Updates of frames that did not error, innocent or hostile, in the order received.
    accepted: list[bytes] = field(default_factory=list)
    hostile_closed: bool = False
    now: float = 0.0

    def receive(self, connection: Hashable, frame: bytes) -> RoomOutput:
        self.now += 0.01
        output = self.room.receive(connection, frame, self.now)
        self.persisted += output.updates
        return output

    def innocent_edit(self) -> None:
        index = len(self.edits)
        writer = self.writers[index % len(self.writers)]
        key = f"edit-{index}"
        update = writer.edit(lambda doc: doc.get("innocent", type=Map).__setitem__(key, index))
        assert update is not None
        output = self.receive(("innocent", index % len(self.writers)), sync_update(update))
        assert output.error is None, f"an innocent edit was refused: {output.error!r}"
        self.edits[key] = index
        self.accepted.append(update)

    def hostile_frame(self, frame: bytes) -> None:
        if self.hostile_closed:
            return  # the gateway closed this connection at its first error
        output = self.receive(HOSTILE, frame)
        carried = _update_messages(frame)
        if output.error is None:
            self.accepted += carried or []
            return
        self.hostile_closed = True
        if carried is not None:
            assert not output.updates, f"an erroring frame was persisted ({output.error!r})"
            assert not output.broadcast, f"an erroring frame was broadcast ({output.error!r})"

    def check(self) -> None:
        room_state = decode_state_vector(self.room.doc.get_state())
        snapshot: Doc[Any] = Doc()
        snapshot.apply_update(self.room.state())
        assert decode_state_vector(snapshot.get_state()) == room_state, "snapshot state differs"
        for doc, name in ((self.room.doc, "room"), (snapshot, "snapshot")):
            innocent = doc.get("innocent", type=Map).to_py() or {}
            missing = {k: v for k, v in self.edits.items() if innocent.get(k) != v}
            assert not missing, f"innocent edits missing from the {name}: {missing}"

        replayed: Doc[Any] = Doc()
        for update in self.persisted:
            replayed.apply_update(update)
        assert decode_state_vector(replayed.get_state()) == room_state, "persisted log differs"

        possible = decode_state_vector(self._model().get_state())
        assert covers(possible, room_state), (
            f"the room holds clocks no accepted frame brought: room {room_state}, "
            f"accepted frames at most {possible}"
        )

    def _model(self) -> Doc[Any]:
        # What a room that refuses bad frames whole can reach at most: the accepted
        # updates applied (twice: a held update may integrate later), then repaired.
        model: Doc[Any] = Doc()
        for update in self.accepted + self.accepted:
            _quietly(lambda u=update: model.apply_update(u))
        merged = _quietly(lambda: merge_updates(*self.accepted)) if self.accepted else None
        if merged is not None:
            missing = _quietly(lambda: get_update(merged, model.get_state()))
            if missing is not None:
                _quietly(lambda: model.apply_update(missing))
        return model

    def check_still_answers_step1(self) -> None:
        output = self.room.receive(OBSERVER, sync_step1(Doc().get_state()), self.now)
        assert output.error is None, f"a well-formed step 1 was refused: {output.error!r}"
        [reply] = [m for frame in output.reply for m in decode_frame(frame)]
        assert isinstance(reply, SyncStep2)
        fresh: Doc[Any] = Doc()
        fresh.apply_update(reply.update)
        assert decode_state_vector(fresh.get_state()) == decode_state_vector(
            self.room.doc.get_state()
        )


# --- (a) the corpus, interleaved with innocent edits ---------------------------------------


def test_the_corpus_is_not_empty() -> None:
    assert CORPUS, "tests/corpus/ is empty: run python -m tests.fuzz.mutate"


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_a_corpus_sequence_leaves_the_board_loadable_and_innocent_edits_intact(
    case: CorpusCase,
) -> None:
    board = Board()
    board.innocent_edit()
    for frame in case.frames:
        board.hostile_frame(frame)
        board.innocent_edit()
    board.check()
    board.check_still_answers_step1()


# --- (b) hypothesis-mutated frames -----------------------------------------------------------


def _frame_pool() -> dict[str, list[bytes]]:
    """Valid payloads to mutate, from three seeded board histories."""
    rng = random.Random(2026)
    histories = [causal_history(rng, writers=3, edits=6) for _ in range(3)]
    updates = [u for history in histories for u in history]
    merged = [merge_updates(*history[: i + 2]) for history in histories for i in range(0, 4, 2)]
    states = []
    for history in histories:
        doc: Doc[Any] = Doc()
        for update in history[:3]:
            doc.apply_update(update)
        states.append(doc.get_state())
    entry = b'{"user":{"name":"mallory","color":"#f00"}}'
    awareness = [
        var_uint(1) + var_uint(client) + var_uint(clock) + var_uint(len(entry)) + entry
        for client, clock in ((77, 1), (77, 2), (2**32, 0))
    ]
    return {"update": updates, "step2": merged, "step1": states, "awareness": awareness}


POOL = _frame_pool()
FRAMERS = {
    "update": sync_update,
    "step2": sync_step2,
    "step1": sync_step1,
    "awareness": awareness_frame,
}
EDITS = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "varint"]),
    st.integers(0, 4095),
    st.integers(0, 2**40),
)


def _edit(data: bytes, edit: tuple[str, int, int]) -> bytes:
    operation, position, value = edit
    pos = position % (len(data) + 1)
    if operation == "insert":
        return data[:pos] + bytes([value & 0xFF])
    if not data:
        return data
    pos = position % len(data)
    if operation == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << (value % 8))]) + data[pos + 1 :]
    if operation == "set":
        return data[:pos] + bytes([value & 0xFF]) + data[pos + 1 :]
    if operation == "delete":
        return data[:pos] + data[pos + 1 + value % 8 :]
    end = pos
    while end < len(data) and data[end] & 0x80 and end - pos < 9:
        end += 1
    return data[:pos] + var_uint(value % (2**53)) + data[end + 1 :]


@st.composite
def hostile_frames(draw: st.DrawFn) -> bytes:
    """A valid update, step 1, step 2 or awareness frame, mutated in its payload or framing."""
    kind = draw(st.sampled_from(sorted(POOL)))
    payload = draw(st.sampled_from(POOL[kind]))
    edits = draw(st.lists(EDITS, max_size=4))
    if draw(st.booleans()):
        for edit in edits:
            payload = _edit(payload, edit)
        return FRAMERS[kind](payload)
    frame = FRAMERS[kind](payload)
    for edit in edits:
        frame = _edit(frame, edit)
    return frame or b"\x00"


# Found by this test: a string that is not UTF-8, in an update held for a missing parent.
INVALID_UTF8_STRING = [
    b"\x00\x02!\x01\x02\xae\xdf\xc9\x82\x04\x03'\x00\xae\xdf\xc9\x82\x04\x00\x04body"
    b"\x02\x04\x00\xae\xdf\xc9\x82\x04\x03\x01a\x00",
    b"\x00\x020\x01\x02\xae\xdf\xc9\x82\x04\x05\xa7\xae\xdf\xc9\x82\x04\x03\x02\x04\x00"
    b"\xae\xdf\xc9\x82\x04\x05\x0e\xecong body text\x01\xae\xdf\xc9\x82\x04\x01\x03\x02",
]


# A fixed seed: the same 300 cases on every run and in every checkout, so the suite is
# reproducible (derandomize alone seeds from where the file is). Random
# exploration is tests/fuzz/room_fuzz.py's job; what it finds and what is still open
# is in tests/corpus-candidates/README.md.
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@seed(20261201)
@given(frames=st.lists(hostile_frames(), min_size=1, max_size=6), edit_after=st.integers(0, 63))
@example(frames=INVALID_UTF8_STRING, edit_after=0)
def test_mutated_frames_leave_the_board_loadable_and_innocent_edits_intact(
    frames: list[bytes], edit_after: int
) -> None:
    board = Board()
    board.innocent_edit()
    for index, frame in enumerate(frames):
        board.hostile_frame(frame)
        if edit_after & (1 << index):
            board.innocent_edit()
    board.innocent_edit()
    board.check()
    board.check_still_answers_step1()
    board.room.close()


def test_encode_message_round_trips_the_pool() -> None:
    # The strategy's starting points are valid: any failure above comes from a mutation.
    for kind, payloads in POOL.items():
        for payload in payloads:
            [message] = decode_frame(FRAMERS[kind](payload))
            assert encode_message(message) == FRAMERS[kind](payload)
