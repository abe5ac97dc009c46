"""Room-level fuzzer: hostile, reordering and innocent connections against one BoardRoom.

    python -m tests.fuzz.room_fuzz --seconds 300 --seed 1 --out tests/corpus-candidates
    python -m tests.fuzz.room_fuzz --replay tests/corpus-candidates/<case>.json
    python -m tests.fuzz.room_fuzz --cost          # CPU per hostile frame, 1,000-task board

:mod:`tests.fuzz.mutate` judges raw pycrdt documents; this drives
:class:`crdt.room.BoardRoom` itself through ``receive``, as the board actor does:

- innocent clients (pycrdt :class:`~tests.fuzz.board_updates.Writer` documents) join
  with the y-websocket handshake, edit the shared roots and a map of their own, apply
  every broadcast, answer the room's sync step 1 with a step 2, and reconnect after
  they were closed (a store outage refuses their writes);
- a reordering client relays a valid multi-client history in shuffled order and
  answers resync requests honestly: once its answer is in, all of it must be;
- a hostile client syncs like a real one, then sends its edits mutated
  (:mod:`tests.fuzz.mutations`), withheld or reordered, replays broadcasts, merges
  histories with gaps, forges state vectors, predicts other clients' next clocks,
  packs several messages in one frame, and reconnects after being closed;
- the host's side: ``now`` advances (held updates expire after 30 s), the store goes
  down for a while (``writable=False``), snapshots are taken and checkpointed as
  ``actors/host.py`` does (``state``, ``journal_position``, ``snapshot_loads``, then
  ``checkpoint`` a few frames later, or ``rebuild``), and ``rebuild`` is called.

A connection is fed no more frames once it got an error or appeared in
``output.closed``. After every step the invariants of tests/unit/test_room_fuzz.py
are checked (see :class:`Judge`), plus: acknowledged updates are in what was
persisted, the store's snapshot and log reload to the live document, and honest
clients that answered a resync hold nothing the room lacks.

Every scenario runs in a forked child (:mod:`tests.fuzz.sandbox`: memory bound,
timeout, panics); each executed step is written to a trace file first, so a crash
or hang still leaves its input. Findings are minimised over the trace (steps, then
message bytes) and saved as corpus JSON: ``frames`` are the hostile connection's
frames (as in tests/corpus), ``room_trace`` the whole minimised run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import select
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pycrdt
from pycrdt import Doc, Map

from crdt.encoding import var_uint
from crdt.errors import (
    AwarenessLimit,
    BoardcastError,
    InvalidUpdate,
    OutOfSync,
    ProtocolError,
    WritesRefused,
)
from crdt.protocol import (
    AwarenessUpdate,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_message,
    iter_frame,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.room import BoardRoom, RoomLimits, RoomOutput
from crdt.update_format import read_ranges
from crdt.updates import snapshot_loads
from tests.fuzz.board_updates import Writer, _random_edit, causal_history
from tests.fuzz.corpus import case_name
from tests.fuzz.mutations import Mutator
from tests.fuzz.sandbox import (
    _HEADER,
    MEMORY_LIMIT,
    _capture_panic_messages,
    _last_panic_location,
    _read_exactly,
    _warm_up,
    _write_message,
)

# --- findings ------------------------------------------------------------------------------

OK = "ok"
DRIVER_ERROR = "driver-error"  # a bug of this module, not of the room
HANG = "hang"
CRASH = "crash"
# The four invariants of tests/unit/test_room_fuzz.py, split by what broke.
STATE_FAILED = "room-state-fails"  # room.state() raises (the board must be reloaded)
SNAPSHOT_UNLOADABLE = "room-snapshot-unloadable"
SNAPSHOT_DIFFERS = "room-snapshot-differs"  # loads, to another state vector or delete set
INNOCENT_MISSING = "innocent-edit-missing"  # an accepted innocent edit is not in the board
INNOCENT_REFUSED = "innocent-edit-refused"  # a frame of an innocent client errored
INNOCENT_HELD = "innocent-edit-held"  # accepted without error, yet not integrated
INNOCENT_CLOSED = "innocent-closed"  # an innocent connection in output.closed
LOG_UNLOADABLE = "persisted-log-unloadable"  # output.updates do not replay
LOG_DIFFERS = "persisted-log-differs"  # they replay, to another state
ERROR_EMITTED = "error-frame-emitted"  # the bad message's own inserts went out
ERROR_OUTPUT = "error-frame-output"  # a one-message erroring frame had updates/broadcast
MODEL_EXCEEDED = "room-beyond-accepted"  # clocks no accepted frame could bring
STEP1_UNANSWERED = "step1-unanswered"  # a well-formed step 1 errors or its step 2 is wrong
# Further checks of this driver.
ACKED_NOT_PERSISTED = "acked-not-persisted"  # integrated count covers an update not in the log
ACK_BACKWARDS = "ack-backwards"  # an integrated count went down or past what was received
REORDERED_LOST = "reordered-not-integrated"  # an honest resync answer in, its history not
REORDERED_REFUSED = "reordered-refused"  # valid reordered updates earned an error
RELOAD_FAILED = "reload-fails"  # the store's snapshot + log do not load
RELOAD_DIFFERS = "reload-differs"  # they load, to another state than the live room
REBUILD_FAILED = "rebuild-fails"  # room.rebuild() raises
CHECKPOINT_REFUSED = "snapshot-refused"  # the host's snapshot_loads check failed
CLIENT_BROKEN = "broadcast-breaks-client"  # a client's pycrdt refuses a broadcast or step 2
CLIENT_BEHIND = "client-behind-after-resync"  # a step 2 from the room leaves the client behind
JOURNAL_MISMATCH = "journal-position-mismatch"  # journal_position != updates handed out
PENDING_LEAK = "state-beyond-log"  # nothing held, yet the state encodes what the log lacks
FORGED = "forged-client-id"  # innocent edit lost to a non-innocent update claiming its ids

SEVERITY = [
    CRASH,
    HANG,
    STATE_FAILED,
    SNAPSHOT_UNLOADABLE,
    SNAPSHOT_DIFFERS,
    LOG_UNLOADABLE,
    LOG_DIFFERS,
    PENDING_LEAK,
    RELOAD_FAILED,
    RELOAD_DIFFERS,
    REBUILD_FAILED,
    INNOCENT_MISSING,
    ACKED_NOT_PERSISTED,
    ERROR_EMITTED,
    MODEL_EXCEEDED,
    INNOCENT_REFUSED,
    INNOCENT_CLOSED,
    INNOCENT_HELD,
    STEP1_UNANSWERED,
    REORDERED_LOST,
    REORDERED_REFUSED,
    ERROR_OUTPUT,
    ACK_BACKWARDS,
    CHECKPOINT_REFUSED,
    JOURNAL_MISMATCH,
    CLIENT_BEHIND,
    CLIENT_BROKEN,
    FORGED,
    OK,
]

INNOCENT, REORDERER, HOSTILE, OBSERVER = "innocent", "reorderer", "hostile", "observer"
INNOCENT_BASE = 4_000_000_001  # innocent writers' client ids; nothing else makes these
HOSTILE_CLIENT = 3_000_000_001
OBSERVER_CONN = 999
EMPTY_STEP1 = sync_step1(b"\x00")
MINIMISE_SECONDS = 90.0


class Finding(Exception):
    """An invariant broke; raised out of :class:`Judge` to end the run."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail[:400]


# --- small helpers -------------------------------------------------------------------------


def quietly(action: Callable[[], Any]) -> Any:
    """``action()``, or None if pycrdt raises or panics."""
    try:
        return action()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return None


def clocks_of(state_vector: bytes) -> dict[int, int]:
    """A state vector as {client: clock}, clients at 0 left out."""
    from crdt.encoding import Decoder

    decoder = Decoder(state_vector)
    out = {}
    for _ in range(decoder.read_var_uint()):
        client = decoder.read_var_uint()
        clock = decoder.read_var_uint()
        if clock:
            out[client] = clock
    return out


def covers(have: dict[int, int], want: dict[int, int]) -> bool:
    return all(have.get(c, 0) >= k for c, k in want.items())


def short(clocks: dict[int, int]) -> str:
    return "{" + ", ".join(f"{c}:{k}" for c, k in sorted(clocks.items())) + "}"


def delete_set(
    update: bytes, within: dict[int, int] | None = None
) -> dict[int, list[tuple[int, int]]] | None:
    """The delete set of a full-state update, merged into sorted disjoint ranges.

    With ``within``, only deletes of clocks below it: deletes of items a document
    does not have are pending in pycrdt, and a reload may keep them or not.
    """
    try:
        ranges = read_ranges(update)
    except ProtocolError:
        return None
    out: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in ranges.deletes:
        end = clock + length
        if within is not None:
            end = min(end, within.get(client, 0))
        if end > clock:
            out.setdefault(client, []).append((clock, end))
    for client, spans in out.items():
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        out[client] = merged
    return out


def frame_messages(frame: bytes) -> tuple[list[Any], bool]:
    """The messages of ``frame`` up to the first that does not decode; True if all did."""
    out: list[Any] = []
    try:
        for message in iter_frame(frame):
            out.append(message)
    except BoardcastError:
        return out, False
    return out, True


def inserts_of(update: bytes) -> dict[int, list[tuple[int, int]]] | None:
    try:
        return read_ranges(update).spans
    except ProtocolError:
        return None


def apply_remote(writer: Writer, update: bytes) -> bool:
    """Apply bytes from the room to a client's document; False if pycrdt refused them."""
    before = len(writer.updates)
    ok = quietly(lambda: writer.doc.apply_update(update) or True) is not None
    del writer.updates[before:]
    return ok


# --- the trace -----------------------------------------------------------------------------


@dataclass
class Step:
    """One thing done to the room. ``frame`` steps are fed to ``receive``."""

    op: str  # load | join | frame | observe | take | commit | rebuild | leave
    conn: int = 0
    role: str = ""
    frame: bytes = b""
    now: float = 0.0
    writable: bool = True
    # innocent frames: {"client", "clock", "deps": {client: clock}, "keys": {k: v}}
    expect: dict[str, Any] | None = None
    resync_answer: bool = False  # a reorderer's honest answer to the room's step 1
    ref: int = 0  # take/commit pair id
    owned: list[bytes] = field(default_factory=list)  # join of a reorderer: its history
    snapshot: bytes | None = None  # load
    note: str = ""  # what the generator meant (for people reading the trace)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op}
        for name in ("conn", "role", "now", "ref", "note"):
            value = getattr(self, name)
            if value:
                data[name] = value
        if self.frame:
            data["frame"] = self.frame.hex()
        if not self.writable:
            data["writable"] = False
        if self.expect is not None:
            data["expect"] = {
                **self.expect,
                "deps": {str(c): k for c, k in self.expect["deps"].items()},
            }
        if self.resync_answer:
            data["resync_answer"] = True
        if self.owned:
            data["owned"] = [u.hex() for u in self.owned]
        if self.snapshot is not None:
            data["snapshot"] = self.snapshot.hex()
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> Step:
        expect = data.get("expect")
        if expect is not None:
            expect = {**expect, "deps": {int(c): k for c, k in expect["deps"].items()}}
        snapshot = data.get("snapshot")
        return Step(
            op=data["op"],
            conn=data.get("conn", 0),
            role=data.get("role", ""),
            frame=bytes.fromhex(data.get("frame", "")),
            now=data.get("now", 0.0),
            writable=data.get("writable", True),
            expect=expect,
            resync_answer=data.get("resync_answer", False),
            ref=data.get("ref", 0),
            owned=[bytes.fromhex(u) for u in data.get("owned", [])],
            snapshot=bytes.fromhex(snapshot) if snapshot is not None else None,
            note=data.get("note", ""),
        )


def limits_from(data: dict[str, Any] | None) -> RoomLimits:
    return RoomLimits(**data) if data else RoomLimits()


def limits_json(limits: RoomLimits) -> dict[str, Any]:
    data = asdict(limits)
    data.pop("awareness", None)
    return data


# --- the judge -----------------------------------------------------------------------------


@dataclass
class _Conn:
    role: str
    closed: bool = False
    received: list[bytes] = field(default_factory=list)  # update messages, in order
    acked: int = 0
    owned: list[bytes] = field(default_factory=list)
    unanswered: bool = False  # the room asked it to resync and it never answered any
    answers: int = 0


class Judge:
    """Feeds steps to a fresh room and checks the invariants after each one.

    Invariants (a :class:`Finding` names the first that breaks):

    - ``room.state()`` loads into a fresh Doc at ``room.doc``'s state vector and delete
      set; ``room.doc`` and the snapshot hold every accepted innocent edit;
    - the updates handed out (``output.updates``, in order) replay to that state;
    - nothing an erroring frame carried went out, and the room holds no clock beyond
      what frames that did not error could bring;
    - a well-formed step 1 (observer steps) is answered with a step 2 of the board;
    - an innocent edit whose dependencies the room holds is integrated at once, never
      refused (but for a store outage) nor its connection closed;
    - what ``output.integrated`` acknowledges is in the persisted log;
    - the store's view (last checkpointed state, then the log after it) loads, through
      ``BoardRoom.load``, to the live state;
    - a reordering client's honest resync answer leaves all its history in the room.
    """

    def __init__(
        self,
        limits: RoomLimits | None = None,
        ignore: frozenset[str] = frozenset(),
        safe_checkpoints: bool = False,
    ) -> None:
        self.limits = limits or RoomLimits()
        self.ignore = ignore
        self.safe_checkpoints = safe_checkpoints
        self.room = BoardRoom("fuzz", limits=self.limits)
        self.conns: dict[int, _Conn] = {}
        self.persisted: list[bytes] = []
        self.replay: Doc[Any] = Doc()
        self.accepted: list[bytes] = []
        self.model: Doc[Any] = Doc()
        self.required: dict[int, int] = {}  # innocent client -> clock the room must hold
        self.keys: dict[str, int] = {}  # innocent map entries the room must hold
        self.tainted = False  # a non-innocent accepted update touched innocent items
        self.forged = False  # ... and inserted for an innocent client id
        self.stored: tuple[bytes | None, int] = (None, 0)  # checkpointed state, position
        self.taken: dict[int, tuple[bytes, bytes, int]] = {}
        self.loaded: tuple[bytes | None, int] = (None, 0)
        self.steps = 0
        self.frames = 0
        self.cpu: list[tuple[float, str]] = []
        self.last_output: RoomOutput | None = None
        self.info: Counter[str] = Counter()

    def fail(self, kind: str, detail: str) -> None:
        """Raise the finding, or count it if this run ignores its kind."""
        if kind in self.ignore:
            self.info[kind] += 1
            return
        raise Finding(kind, detail)

    # -- driving --

    def run(self, step: Step) -> RoomOutput | None:
        """Do ``step``; raise :class:`Finding` if an invariant broke. None if skipped."""
        self.steps += 1
        output = None
        op = step.op
        if op == "load":
            self._load(step)
        elif op == "join":
            self.conns[step.conn] = _Conn(step.role, owned=list(step.owned))
        elif op == "frame":
            conn = self.conns.setdefault(step.conn, _Conn(step.role))
            if conn.closed:
                return None
            output = self._frame(step, conn)
        elif op == "observe":
            self._observe(step)
        elif op == "take":
            if self.safe_checkpoints and (self._holding() or self.room.document.rebuild_due):
                return None  # this host snapshots only while nothing is held
            state = self.room.state()
            self.taken[step.ref] = (state, self.room.doc.get_state(), self.room.journal_position)
        elif op == "commit":
            taken = self.taken.pop(step.ref, None)
            if taken is None:
                return None
            state, state_vector, position = taken
            if snapshot_loads(state, state_vector):
                self.room.checkpoint(state, position)
                if position > self.stored[1]:
                    self.stored = (state, position)
            else:
                self.info[CHECKPOINT_REFUSED] += 1
                self._rebuild()
        elif op == "rebuild":
            self._rebuild()
        elif op == "leave":
            self.room.leave(step.conn)
            if step.conn in self.conns:
                self.conns[step.conn].closed = True
        self.check()
        return output

    def _load(self, step: Step) -> None:
        self.room.load(step.snapshot)
        self.stored = (step.snapshot, 0)
        self.loaded = (step.snapshot, 0)
        if step.snapshot is not None:
            for doc in (self.replay, self.model):
                doc.apply_update(step.snapshot)

    def _rebuild(self) -> None:
        try:
            self.room.rebuild()
        except BoardcastError as exc:
            raise Finding(REBUILD_FAILED, repr(exc)) from exc

    def _frame(self, step: Step, conn: _Conn) -> RoomOutput:
        self.frames += 1
        room = self.room
        before = clocks_of(room.doc.get_state())
        messages, _ = frame_messages(step.frame)
        updates = [m.update for m in messages if isinstance(m, SyncStep2 | SyncUpdate)]
        started = time.process_time()
        output = room.receive(step.conn, step.frame, step.now, writable=step.writable)
        self.cpu.append((time.process_time() - started, step.note))
        self.last_output = output
        if step.resync_answer:
            conn.answers += 1
            conn.unanswered = False
        asked = any(isinstance(m, SyncStep1) for f in output.reply for m in frame_messages(f)[0])
        if asked and not conn.answers:
            conn.unanswered = True
        expired = isinstance(output.error, OutOfSync) and "waited more than" in str(output.error)
        if expired and conn.unanswered:
            conn.role = HOSTILE  # it never answered the resync: closing it is right
        read = updates[: output.update_messages]
        conn.received += read
        error = output.error
        self._persist(output)
        # Which update message errored, if one did.
        bad: bytes | None = None
        if error is not None and read and _from_update(error):
            bad = read[-1]
            accepted = read[:-1]
        else:
            accepted = read
        outage = isinstance(error, WritesRefused) and not step.writable
        if step.expect is not None and not covers(before, step.expect["deps"]):
            # Builds on what the room never had (a minimised trace): not innocent.
            conn.role = HOSTILE
        if error is not None and conn.role == INNOCENT and not outage:
            self.fail(INNOCENT_REFUSED, f"{error!r} ({step.note})")
        if error is not None:
            self._check_error_frame(step, output, messages, bad, accepted, before)
        for update in accepted:
            self._accept(step, update)
        self._check_acks(output)
        for key, exc in output.closed.items():
            other = self.conns.setdefault(key, _Conn(HOSTILE))
            if other.role in (INNOCENT, REORDERER) and not other.unanswered:
                self.fail(INNOCENT_CLOSED, f"{other.role} {key} closed: {exc!r} ({step.note})")
            other.closed = True
        if error is not None:
            conn.closed = True
            if conn.role == REORDERER and not isinstance(error, WritesRefused):
                self.fail(REORDERED_REFUSED, f"{error!r} ({step.note})")
        elif conn.role == INNOCENT and step.expect is not None:
            self._expect_innocent(step, before)
        if error is None and conn.role == REORDERER and step.resync_answer:
            now_clocks = clocks_of(room.doc.get_state())
            for update in conn.owned:
                spans = inserts_of(update) or {}
                for client, ranges in spans.items():
                    end = max(e for _, e in ranges)
                    if now_clocks.get(client, 0) < end:
                        self.fail(
                            REORDERED_LOST,
                            f"after the resync answer the room has {client}:"
                            f"{now_clocks.get(client, 0)}, the reordered history {end}",
                        )
        return output

    def _persist(self, output: RoomOutput) -> None:
        for update in output.updates:
            self.persisted.append(update)
            try:
                self.replay.apply_update(update)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                raise Finding(LOG_UNLOADABLE, f"{type(exc).__name__}: {exc}") from exc

    def _accept(self, step: Step, update: bytes) -> None:
        self.accepted.append(update)
        quietly(lambda: self.model.apply_update(update))
        if step.role == INNOCENT:
            return
        try:
            ranges = read_ranges(update)
        except ProtocolError:
            # pycrdt reads some bytes read_ranges refuses (trailing bytes, say): what
            # they delete is unknown, so innocent content may legitimately change.
            self.tainted = True
            return
        innocent = {c for c in self.required} | {INNOCENT_BASE + i for i in range(4)}
        if innocent & set(ranges.inserts):
            self.forged = self.tainted = True
        if b"innocent" in update or innocent & set(ranges.references):
            self.tainted = True
        if any(client in innocent for client, _, _ in ranges.deletes):
            self.tainted = True

    def _check_error_frame(
        self,
        step: Step,
        output: RoomOutput,
        messages: list[Any],
        bad: bytes | None,
        accepted: list[bytes],
        before: dict[int, int],
    ) -> None:
        if bad is not None:
            # The bad message's own inserts, beyond what the room and the earlier
            # messages of the frame had, must not have gone out.
            own = inserts_of(bad) or {}
            earlier: dict[int, list[tuple[int, int]]] = {}
            for update in accepted:
                for client, spans in (inserts_of(update) or {}).items():
                    earlier.setdefault(client, []).extend(spans)
            for change in output.updates:
                for client, spans in (inserts_of(change) or {}).items():
                    for start, end in spans:
                        for s, e in own.get(client, []):
                            lo, hi = max(start, s, before.get(client, 0)), min(end, e)
                            if lo >= hi:
                                continue
                            if any(a <= lo and hi <= b for a, b in earlier.get(client, [])):
                                continue
                            self.fail(
                                ERROR_EMITTED,
                                f"{output.error!r}: the erroring message's {client}:{lo}..{hi}"
                                f" went out ({step.note})",
                            )
        if len(messages) == 1 and bad is not None and (output.updates or output.broadcast):
            self.fail(
                ERROR_OUTPUT,
                f"{output.error!r}: {len(output.updates)} updates, {len(output.broadcast)}"
                f" broadcast frames ({step.note})",
            )

    def _check_acks(self, output: RoomOutput) -> None:
        for key, count in output.integrated.items():
            conn = self.conns.setdefault(key, _Conn(HOSTILE))
            if count < conn.acked or count > len(conn.received):
                self.fail(
                    ACK_BACKWARDS,
                    f"{key}: integrated {count} after {conn.acked}, {len(conn.received)} received",
                )
            replay_state = self.replay.get_state()
            for update in conn.received[conn.acked : count]:
                rest = quietly(lambda u=update, s=replay_state: pycrdt.get_update(u, s))
                if rest is None or rest[:1] != b"\x00":
                    missing = inserts_of(rest) if rest else None
                    self.fail(
                        ACKED_NOT_PERSISTED,
                        f"{conn.role} {key}: message acknowledged, log lacks {missing}",
                    )
            conn.acked = count

    def _expect_innocent(self, step: Step, before: dict[int, int]) -> None:
        expect = step.expect
        assert expect is not None
        if not covers(before, expect["deps"]):
            return  # the room never had what this edit builds on (a minimised trace)
        client = expect["client"]
        if expect["clock"] > clocks_of(self.room.doc.get_state()).get(client, 0):
            self.fail(
                INNOCENT_HELD,
                f"innocent {client} at {expect['clock']}, room"
                f" {clocks_of(self.room.doc.get_state()).get(client, 0)} ({step.note})",
            )
        self.required[client] = max(self.required.get(client, 0), expect["clock"])
        self.keys.update(expect["keys"])

    def _observe(self, step: Step) -> None:
        output = self.room.receive(OBSERVER_CONN, EMPTY_STEP1, step.now)
        self.room.leave(OBSERVER_CONN)
        if output.error is not None:
            raise Finding(STEP1_UNANSWERED, f"refused: {output.error!r}")
        replies = [m for frame in output.reply for m in frame_messages(frame)[0]]
        if len(replies) != 1 or not isinstance(replies[0], SyncStep2):
            raise Finding(STEP1_UNANSWERED, f"answered with {replies!r}"[:200])
        fresh: Doc[Any] = Doc()
        if quietly(lambda: fresh.apply_update(replies[0].update) or True) is None:
            raise Finding(STEP1_UNANSWERED, "its step 2 does not load")
        got, want = clocks_of(fresh.get_state()), clocks_of(self.room.doc.get_state())
        if got != want:
            raise Finding(STEP1_UNANSWERED, f"step 2 loads to {short(got)}, room {short(want)}")

    # -- the invariants --

    def check(self) -> None:
        room = self.room
        try:
            state = room.state()
        except BoardcastError as exc:
            raise Finding(STATE_FAILED, repr(exc)) from exc
        room_sv = clocks_of(room.doc.get_state())
        snapshot: Doc[Any] = Doc()
        try:
            snapshot.apply_update(state)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise Finding(SNAPSHOT_UNLOADABLE, f"{type(exc).__name__}: {exc}") from exc
        snap_sv = clocks_of(snapshot.get_state())
        if snap_sv != room_sv:
            self.fail(SNAPSHOT_DIFFERS, f"room {short(room_sv)}, snapshot {short(snap_sv)}")
        room_ds = delete_set(state, room_sv)
        snap_ds = delete_set(quietly(snapshot.get_update) or b"", room_sv)
        if room_ds is not None and snap_ds is not None and room_ds != snap_ds:
            self.fail(SNAPSHOT_DIFFERS, f"delete sets: room {room_ds}, snapshot {snap_ds}")
        # Innocent edits.
        for client, clock in self.required.items():
            for name, clocks in (("room", room_sv), ("snapshot", snap_sv)):
                if clocks.get(client, 0) < clock:
                    kind = FORGED if self.forged else INNOCENT_MISSING
                    raise Finding(kind, f"{name} has {client}:{clocks.get(client, 0)} < {clock}")
        if self.keys and not self.tainted:
            for doc, name in ((room.doc, "room"), (snapshot, "snapshot")):
                held = quietly(lambda d=doc: d.get("innocent", type=Map).to_py()) or {}
                missing = {k: v for k, v in self.keys.items() if held.get(k) != v}
                if missing:
                    self.fail(INNOCENT_MISSING, f"{name} lacks {sorted(missing)[:5]}")
        # The persisted log.
        replay_sv = clocks_of(self.replay.get_state())
        if replay_sv != room_sv:
            self.fail(LOG_DIFFERS, f"room {short(room_sv)}, log {short(replay_sv)}")
        replay_ds = delete_set(quietly(self.replay.get_update) or b"", room_sv)
        if room.journal_position != len(self.persisted):
            self.info[JOURNAL_MISMATCH] += 1
        if not self._holding() and not room.document.rebuild_due:
            # Nothing is held: the document keeps nothing pending, and its encoding
            # holds no struct the log lacks (a snapshot of it becomes the store's base).
            extra = quietly(lambda: pycrdt.get_update(state, self.replay.get_state()))
            if extra is None or extra[:1] != b"\x00":
                spans = inserts_of(extra) if extra else None
                # Pending in the log's own replay too: a change in the journal that
                # never integrates; else only the room (a base holding held bytes).
                logged = quietly(self.replay.get_update) or b""
                also = quietly(lambda: pycrdt.get_update(logged, self.replay.get_state()))
                where = (
                    "the log replays it pending too"
                    if also and also[:1] != b"\x00"
                    else ("the log lacks")
                )
                self.fail(PENDING_LEAK, f"room state holds {spans} pending; {where}")
            if room_ds is not None and replay_ds is not None and replay_ds != room_ds:
                self.fail(PENDING_LEAK, f"delete sets: room {room_ds}, log {replay_ds}")
        # What accepted frames could bring at most.
        possible = clocks_of(self.model.get_state())
        if not covers(possible, room_sv):
            # As tests/unit/test_room_fuzz.py: the accepted updates twice (a held one
            # may integrate later), then pycrdt's repair.
            for update in self.accepted:
                quietly(lambda u=update: self.model.apply_update(u))
            merged = (
                quietly(lambda: pycrdt.merge_updates(*self.accepted)) if self.accepted else None
            )
            if merged is not None:
                rest = quietly(lambda: pycrdt.get_update(merged, self.model.get_state()))
                if rest is not None:
                    quietly(lambda: self.model.apply_update(rest))
            possible = clocks_of(self.model.get_state())
            loose = dict(possible)
            for update in self.accepted:
                for client, spans in (inserts_of(update) or {}).items():
                    loose[client] = max(loose.get(client, 0), max(e for _, e in spans))
            if not covers(loose, room_sv):
                extra = {c: k for c, k in room_sv.items() if loose.get(c, 0) < k}
                self.fail(MODEL_EXCEEDED, f"room holds {short(extra)}, accepted {short(loose)}")
        # The store's view reloads to the live room.
        base, position = self.stored
        reloaded = BoardRoom("reload", limits=self.limits)
        try:
            reloaded.load(base, self.persisted[position:])
        except BoardcastError as exc:
            raise Finding(RELOAD_FAILED, repr(exc)) from exc
        reload_sv = clocks_of(reloaded.doc.get_state())
        if reload_sv != room_sv:
            self.fail(RELOAD_DIFFERS, f"room {short(room_sv)}, reloaded {short(reload_sv)}")
        reloaded.close()

    def _holding(self) -> bool:
        return any(self.room.held_updates(key) for key in self.conns)


def _from_update(error: BaseException) -> bool:
    """True if ``error`` was raised by an update message (not a step 1 or awareness)."""
    if isinstance(error, InvalidUpdate) and str(error).startswith("invalid state vector"):
        return False
    return not isinstance(error, ProtocolError | AwarenessLimit)


# --- the scenario generator ----------------------------------------------------------------


class Client:
    """A connection's client side: a pycrdt document and what the room told it."""

    def __init__(self, role: str, conn: int, writer: Writer) -> None:
        self.role = role
        self.conn = conn
        self.writer = writer
        self.closed = False
        self.keys: dict[str, int] = {}
        self.edits = 0
        self.asked: list[bytes] = []  # state vectors of the room's step 1s to answer
        self.withheld: list[bytes] = []  # hostile: honest edits not sent yet

    @property
    def client_id(self) -> int:
        return int(self.writer.doc.client_id)

    def own_clock(self) -> int:
        return clocks_of(self.writer.doc.get_state()).get(self.client_id, 0)

    def deps(self) -> dict[int, int]:
        clocks = clocks_of(self.writer.doc.get_state())
        clocks.pop(self.client_id, None)
        return clocks


class Scenario:
    """Generates one run: steps chosen from the room's answers, judged as they go."""

    def __init__(
        self,
        seed: int,
        trace_file: Any = None,
        ignore: frozenset[str] = frozenset(),
        *,
        safe_checkpoints: bool = False,
    ) -> None:
        self.rng = rng = random.Random(seed)
        # Only snapshot while nothing is held (works around state() encoding held bytes).
        self.safe_checkpoints = safe_checkpoints
        self.seed = seed
        self.mutator = Mutator(rng)
        small = rng.random() < 0.4
        if small:
            # Limits are settings; small ones make their paths reachable in a short run.
            self.limits = RoomLimits(
                max_held_updates=rng.randint(1, 8),
                max_held_bytes=rng.choice([256, 1024, 4096]),
                max_consistency_checks=rng.randint(1, 8),
            )
        else:
            self.limits = RoomLimits()
        self.judge = Judge(self.limits, ignore, safe_checkpoints)
        self.trace: list[Step] = []
        self.trace_file = trace_file
        self.now = 1000.0
        self.store_down = 0
        self.next_conn = 10
        self.next_ref = 1
        self.pending_commits: list[tuple[int, int]] = []  # (ref, steps left)
        self.clients: list[Client] = []
        self.pool: list[bytes] = []  # update bytes for mutations and replays
        self.histories = [
            causal_history(rng, writers=rng.randint(1, 3), edits=rng.randint(3, 10))
            for _ in range(2)
        ]
        for history in self.histories:
            self.pool += history

    # -- recording --

    def do(self, step: Step) -> RoomOutput | None:
        step.now = step.now or self.now
        self.trace.append(step)
        if self.trace_file is not None:
            self.trace_file.write(json.dumps(step.to_json()) + "\n")
            self.trace_file.flush()
        output = self.judge.run(step)
        if output is not None:
            self._deliver(step, output)
        return output

    def _deliver(self, step: Step, output: RoomOutput) -> None:
        sender = next((c for c in self.clients if c.conn == step.conn), None)
        for frame in output.broadcast:
            for message in frame_messages(frame)[0]:
                if isinstance(message, SyncUpdate | SyncStep2):
                    self.pool.append(message.update)
            for client in self.clients:
                if client is not sender and not client.closed:
                    self._to_client(client, frame)
        if sender is not None:
            for frame in output.reply:
                self._to_client(sender, frame)
            if output.error is not None or sender.conn in output.closed:
                self._close(sender)
            elif sender.role in (INNOCENT, REORDERER) and sender.asked:
                self._answer(sender)  # honest clients answer a step 1 at once
        for key in output.closed:
            for client in self.clients:
                if client.conn == key and not client.closed:
                    self._close(client)

    def _to_client(self, client: Client, frame: bytes) -> None:
        for message in frame_messages(frame)[0]:
            if isinstance(message, SyncStep1):
                client.asked.append(message.state_vector)
            elif isinstance(message, SyncStep2 | SyncUpdate):
                applied = apply_remote(client.writer, message.update)
                if not applied and client.role == INNOCENT:
                    self.judge.info[CLIENT_BROKEN] += 1
                    client.writer = _fresh_writer(client.writer)

    def _close(self, client: Client) -> None:
        client.closed = True
        client.asked.clear()
        self.do(Step("leave", conn=client.conn, role=client.role))

    # -- the run --

    def run(self, max_steps: int) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            seed_history = causal_history(rng, writers=2, edits=rng.randint(2, 12))
            snapshot = pycrdt.merge_updates(*seed_history)
            self.do(Step("load", snapshot=snapshot, note="board loaded from the store"))
        for index in range(rng.randint(1, 3)):
            writer = Writer(INNOCENT_BASE + index)
            self.clients.append(Client(INNOCENT, self._conn(), writer))
        if rng.random() < 0.5:
            self._add_reorderer()
        self.clients.append(Client(HOSTILE, self._conn(), Writer(HOSTILE_CLIENT)))
        for client in self.clients:
            self._join(client)
        for _ in range(max_steps):
            self._tick()
            weights = [(self._innocent_turn, 4), (self._hostile_turn, 5), (self._host_turn, 1)]
            turn = rng.choices([w[0] for w in weights], [w[1] for w in weights])[0]
            turn()
        self.store_down = 0
        for client in self.clients:
            if client.role == INNOCENT:
                if client.closed:
                    self._reconnect(client)
                self._answer(client)
        self.do(Step("observe", conn=OBSERVER_CONN, role=OBSERVER))
        for client in self.clients:
            if client.role == INNOCENT and not client.closed:
                self._resync(client)

    def _tick(self) -> None:
        rng = self.rng
        self.now += rng.choice([0.01, 0.05, 0.2, 0.5, 1.5])
        if rng.random() < 0.02:
            self.now += rng.choice([29.0, 30.5, 31.0, 45.0])
        if self.store_down:
            self.store_down -= 1
        elif rng.random() < 0.01:
            self.store_down = rng.randint(2, 10)
        due = [ref for ref, left in self.pending_commits if left <= 0]
        self.pending_commits = [(ref, left - 1) for ref, left in self.pending_commits if left > 0]
        for ref in due:
            self.do(Step("commit", ref=ref, note="host checkpoints its snapshot"))

    def _conn(self) -> int:
        self.next_conn += 1
        return self.next_conn

    def _frame(self, client: Client, frame: bytes, note: str, **extra: Any) -> RoomOutput | None:
        if client.closed:
            return None
        return self.do(
            Step(
                "frame",
                conn=client.conn,
                role=client.role,
                frame=frame,
                writable=not self.store_down,
                note=note,
                **extra,
            )
        )

    def _innocent_expect(
        self, client: Client, keys: dict[str, int], sent: list[bytes] = ()
    ) -> dict[str, Any]:
        deps = client.deps()
        # What the updates refer to: a pycrdt document can hold items its state
        # vector does not count (its out-of-order drop), and edit next to them.
        for update in sent:
            ranges = read_ranges(update)
            for other, clock in ranges.references.items():
                if other != client.client_id:
                    deps[other] = max(deps.get(other, 0), clock + 1)
            # Its own earlier edits too (a minimised trace may lack them).
            start = ranges.inserts.get(client.client_id, (0, 0))[0]
            if start:
                own = client.client_id
                deps[own] = min(deps.get(own, start), start) if own in deps else start
        return {"client": client.client_id, "clock": client.own_clock(), "deps": deps, "keys": keys}

    def _join(self, client: Client) -> None:
        """The y-websocket handshake: the room's step 1 and ours, each answered."""
        if client.role == REORDERER:
            # It sends its shuffled history first; the room's resync asks come later.
            self.do(Step("join", conn=client.conn, role=REORDERER, owned=client.writer.updates))
        else:
            # The room's join frames: its step 1 (answered below), then presence.
            client.asked.append(self.judge.room.doc.get_state())
        self._frame(client, sync_step1(client.writer.doc.get_state()), "handshake step 1")
        self._answer(client)

    def _answer(self, client: Client) -> None:
        while client.asked and not client.closed:
            state_vector = client.asked.pop(0)
            if client.role == REORDERER:
                # Relays the full history (it holds all of it) past the room's state.
                diff = pycrdt.get_update(self._reorder_full, state_vector)
                self._frame(client, sync_step2(diff), "resync answer", resync_answer=True)
            elif client.role == INNOCENT:
                diff = client.writer.doc.get_update(state_vector)
                expect = self._innocent_expect(client, dict(client.keys), [diff])
                self._frame(
                    client, sync_step2(diff), "step 2 answer", expect=expect, resync_answer=True
                )
            else:
                self._hostile_answer(client, state_vector)

    def _resync(self, client: Client) -> None:
        """A client's step 1: after the room's step 2 it must hold all the room has."""
        output = self._frame(client, sync_step1(client.writer.doc.get_state()), "final resync")
        if output is None or output.error is not None:
            return
        have = clocks_of(client.writer.doc.get_state())
        room = clocks_of(self.judge.room.doc.get_state())
        if not covers(have, room):
            self.judge.info[CLIENT_BEHIND] += 1

    def _reconnect(self, client: Client) -> None:
        client.conn = self._conn()
        client.closed = False
        client.asked.clear()
        self._join(client)

    # -- innocent clients --

    def _innocent_turn(self) -> None:
        rng = self.rng
        innocents = [c for c in self.clients if c.role in (INNOCENT, REORDERER)]
        client = rng.choice(innocents)
        if client.role == REORDERER:
            self._reorderer_turn(client)
            return
        if client.closed:
            if not self.store_down:
                self._reconnect(client)
            return
        if client.asked:
            self._answer(client)
            return
        frames = []
        sent = []
        keys: dict[str, int] = {}
        for _ in range(rng.choice([1, 1, 1, 2])):
            update, key = self._innocent_edit(client)
            if update is not None:
                frames.append(sync_update(update))
                sent.append(update)
                if key is not None:
                    keys[key] = client.keys[key]
        if frames:
            expect = self._innocent_expect(client, keys, sent)
            self._frame(client, b"".join(frames), "innocent edit", expect=expect)

    def _innocent_edit(self, client: Client) -> tuple[bytes | None, str | None]:
        rng = self.rng
        client.edits += 1
        if rng.random() < 0.6:
            key = f"e{client.client_id % 100}-{client.edits}"
            client.keys[key] = client.edits

            def edit(doc: Doc[Any]) -> None:
                doc.get("innocent", type=Map)[key] = client.edits

            return client.writer.edit(edit), key
        return client.writer.edit(lambda doc: _random_edit(rng, doc)), None

    # -- the reordering client --

    def _add_reorderer(self) -> None:
        rng = self.rng
        history = causal_history(rng, writers=rng.randint(1, 3), edits=rng.randint(3, 12))
        writer = Writer(rng.randrange(1, 2**31))
        writer.updates = list(history)
        self._reorder_full = pycrdt.merge_updates(*history)
        order = list(history)
        rng.shuffle(order)
        client = Client(REORDERER, self._conn(), writer)
        client.withheld = order
        self.clients.append(client)

    def _reorderer_turn(self, client: Client) -> None:
        if client.closed:
            return
        if client.asked:
            self._answer(client)
            return
        if client.withheld:
            update = client.withheld.pop(0)
            framer = sync_update if self.rng.random() < 0.8 else sync_step2
            self._frame(client, framer(update), "reordered update")

    # -- the hostile client --

    def _hostile(self) -> Client:
        return next(c for c in self.clients if c.role == HOSTILE)

    def _hostile_turn(self) -> None:
        rng = self.rng
        client = self._hostile()
        if client.closed:
            # A new connection of the same client (its document kept).
            self.clients.remove(client)
            fresh = Client(HOSTILE, self._conn(), client.writer)
            fresh.withheld = client.withheld
            self.clients.append(fresh)
            if rng.random() < 0.7:
                self._join(fresh)
            return
        if client.asked and rng.random() < 0.7:
            self._answer(client)
            return
        count = 1 if rng.random() < 0.75 else rng.randint(2, 4)
        messages = [self._hostile_message(client) for _ in range(count)]
        frame = b"".join(m for m, _ in messages)
        if rng.random() < 0.1:
            frame = self.mutator.mutate(frame, rng.choice(self.pool or [frame]))
        note = "+".join(n for _, n in messages)
        self._frame(client, frame or b"\x00", f"hostile {note}")

    def _hostile_answer(self, client: Client, state_vector: bytes) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            diff = client.writer.doc.get_update(state_vector)
            self._frame(client, sync_step2(diff), "hostile honest answer")
        elif roll < 0.8:
            diff = client.writer.doc.get_update(state_vector)
            donor = rng.choice(self.pool) if self.pool else diff
            mutated = self.mutator.mutate(diff, donor, rounds=rng.randint(1, 3))
            self._frame(client, sync_step2(mutated), "hostile mutated answer")
        # else: never answers

    def _hostile_message(self, client: Client) -> tuple[bytes, str]:
        rng = self.rng
        writer = client.writer
        kinds = [
            ("edit", 4),
            ("mutated-edit", 6),
            ("withhold", 2),
            ("release", 2),
            ("replay", 2),
            ("history", 3),
            ("merged", 2),
            ("predict", 2),
            ("step1", 2),
            ("awareness", 1),
        ]
        kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        framer = sync_update if rng.random() < 0.7 else sync_step2
        if kind in ("edit", "mutated-edit", "withhold"):
            update = writer.edit(lambda doc: _random_edit(rng, doc))
            if update is None:
                return framer(b"\x00\x00"), "noop"
            self.pool.append(update)
            if kind == "withhold":
                client.withheld.append(update)
                update = writer.edit(lambda doc: _random_edit(rng, doc)) or update
                return framer(update), "edit-after-withheld"
            if kind == "mutated-edit":
                donor = rng.choice(self.pool)
                return framer(self.mutator.mutate(update, donor, rounds=rng.randint(1, 3))), kind
            return framer(update), kind
        if kind == "release":
            if not client.withheld:
                return EMPTY_STEP1, "step1-empty"
            update = client.withheld.pop(rng.randrange(len(client.withheld)))
            return framer(update), kind
        if kind == "replay":
            update = rng.choice(self.pool)
            if rng.random() < 0.5:
                update = self.mutator.mutate(update, rng.choice(self.pool))
            return framer(update), kind
        if kind == "history":
            history = rng.choice(self.histories)
            update = rng.choice(history)
            if rng.random() < 0.5:
                update = self.mutator.mutate(
                    update, rng.choice(self.pool), rounds=rng.randint(1, 2)
                )
            return framer(update), kind
        if kind == "merged":
            history = rng.choice(self.histories)
            picked = rng.sample(history, rng.randint(1, len(history)))
            update = pycrdt.merge_updates(*picked) if len(picked) > 1 else picked[0]
            if rng.random() < 0.4:
                update = self.mutator.mutate(update, rng.choice(self.pool))
            return sync_step2(update), kind
        if kind == "predict":
            return framer(self._predicted(client)), kind
        if kind == "step1":
            return self._hostile_step1(client), kind
        return self._hostile_awareness(), kind

    def _predicted(self, client: Client) -> bytes:
        """Edits that build on the next clocks an innocent client will use.

        A hostile client sees every innocent client's clock in the broadcasts: it can
        write items whose origins are that client's *future* items. They are held, and
        each later innocent edit lets one more of them integrate.
        """
        rng = self.rng
        innocents = [c for c in self.clients if c.role == INNOCENT]
        target = rng.choice(innocents)
        base = client.writer.doc.get_update()
        fork: Doc[Any] = Doc(client_id=target.client_id)
        fork.apply_update(base)
        pieces = rng.randint(1, 48)
        for index in range(pieces):
            with fork.transaction():
                fork.get("innocent", type=Map)[f"p{index}"] = index
        forged_id = HOSTILE_CLIENT + rng.choice([0, 1 + rng.randrange(1000)])
        side: Doc[Any] = Doc(client_id=forged_id)
        side.apply_update(base)
        side.apply_update(fork.get_update())
        before = side.get_state()
        for index in range(pieces):
            with side.transaction():
                side.get("innocent", type=Map)[f"p{index}"] = -index
        return side.get_update(before)

    def _hostile_step1(self, client: Client) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return EMPTY_STEP1
        state_vector = client.writer.doc.get_state()
        if roll < 0.5:
            return sync_step1(state_vector)
        if roll < 0.7:
            # Claims clocks nobody has.
            clocks = clocks_of(state_vector)
            clocks[rng.choice([*clocks, HOSTILE_CLIENT + 7])] = rng.choice([1, 10**6, 2**53 - 1])
            body = var_uint(len(clocks)) + b"".join(
                var_uint(c) + var_uint(k) for c, k in clocks.items()
            )
            return sync_step1(body)
        return sync_step1(self.mutator.mutate(state_vector, rng.choice(self.pool or [b""])))

    def _hostile_awareness(self) -> bytes:
        rng = self.rng
        entry = json.dumps({"user": {"name": "mallory"}, "n": rng.randrange(9)}).encode()
        payload = (
            var_uint(1)
            + var_uint(rng.choice([77, HOSTILE_CLIENT, 2**32]))
            + var_uint(rng.randrange(5))
            + var_uint(len(entry))
            + entry
        )
        if rng.random() < 0.3:
            payload = self.mutator.mutate(payload, payload)
        return encode_message(AwarenessUpdate(payload))

    # -- the host --

    def _host_turn(self) -> None:
        rng = self.rng
        roll = rng.random()
        room = self.judge.room
        holding = self.judge._holding() or room.document.rebuild_due
        if roll < 0.6 and self.safe_checkpoints and holding:
            return
        if roll < 0.6:
            ref = self.next_ref
            self.next_ref += 1
            self.do(Step("take", ref=ref, note="host takes a snapshot"))
            # The store write is awaited: frames arrive before the checkpoint.
            self.pending_commits.append((ref, rng.choice([0, 0, 1, 3, 6])))
        elif roll < 0.8:
            self.do(Step("rebuild", note="host rebuilds"))
        else:
            self.do(Step("observe", conn=OBSERVER_CONN, role=OBSERVER))


def _fresh_writer(writer: Writer) -> Writer:
    """A client whose document pycrdt broke reloads from scratch (same client id)."""
    fresh = Writer(int(writer.doc.client_id) + 10_000)
    return fresh


# --- replay --------------------------------------------------------------------------------


def replay(
    trace: list[Step],
    limits: RoomLimits,
    ignore: frozenset[str] = frozenset(),
    safe_checkpoints: bool = False,
) -> tuple[str, str, int | None, Judge]:
    """Run ``trace`` against a fresh room: (kind, detail, failing step index, judge)."""
    judge = Judge(limits, ignore, safe_checkpoints)
    for index, step in enumerate(trace):
        try:
            judge.run(step)
        except Finding as finding:
            return finding.kind, finding.detail, index, judge
    return OK, "", None, judge


# --- the sandbox ---------------------------------------------------------------------------


def _serve_one(request: dict[str, Any], trace_path: str | None) -> dict[str, Any]:
    limits = limits_from(request.get("limits"))
    ignore = frozenset(request.get("ignore", ()))
    if request["op"] == "scenario":
        with open(trace_path or os.devnull, "w") as trace_file:
            scenario = Scenario(
                request["seed"],
                trace_file,
                ignore,
                safe_checkpoints=request.get("safe_checkpoints", False),
            )
            started = time.monotonic()
            try:
                scenario.run(request["steps"])
                kind, detail = OK, ""
            except Finding as finding:
                kind, detail = finding.kind, finding.detail
            judge = scenario.judge
            worst = max(judge.cpu, default=(0.0, ""))
            return {
                "kind": kind,
                "detail": detail,
                "limits": limits_json(scenario.limits),
                "trace": [s.to_json() for s in scenario.trace] if kind != OK else None,
                "frames": judge.frames,
                "seconds": time.monotonic() - started,
                "worst_cpu": worst[0],
                "worst_note": worst[1],
                "info": dict(judge.info),
            }
    trace = [Step.from_json(s) for s in request["trace"]]
    safe = request.get("safe_checkpoints", False)
    kind, detail, index, judge = replay(trace, limits, ignore, safe)
    return {"kind": kind, "detail": detail, "index": index, "info": dict(judge.info)}


class RoomSandbox:
    """One forked child per request (as ``Sandbox(fresh=True)``), with a trace file."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        _warm_up()

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        fd, trace_path = tempfile.mkstemp(prefix="room-fuzz-trace-", suffix=".jsonl")
        os.close(fd)
        request_read, request_write = os.pipe()
        verdict_read, verdict_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(request_write)
            os.close(verdict_read)
            status = 0
            try:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
                log = _capture_panic_messages()
                header = _read_exactly(request_read, _HEADER.size)
                assert header is not None
                body = _read_exactly(request_read, _HEADER.unpack(header)[0])
                assert body is not None
                try:
                    result = _serve_one(json.loads(body), trace_path)
                except BaseException:  # a pycrdt panic in the driver's own clients too
                    import traceback

                    result = {"kind": DRIVER_ERROR, "detail": traceback.format_exc()[-1500:]}
                result["panic_at"] = _last_panic_location(log.fileno())
                _write_message(verdict_write, result)
            except BaseException:
                status = 3
            finally:
                os._exit(status)
        os.close(request_read)
        os.close(verdict_write)
        try:
            _write_message(request_write, request)
            result = self._read(verdict_read, pid)
        finally:
            os.close(request_write)
            os.close(verdict_read)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if result["kind"] in (CRASH, HANG):
            with open(trace_path) as lines:
                result["trace"] = [json.loads(line) for line in lines if line.strip()]
        os.unlink(trace_path)
        return result

    def _read(self, fd: int, pid: int) -> dict[str, Any]:
        ready, _, _ = select.select([fd], [], [], self.timeout)
        if not ready:
            return {"kind": HANG, "detail": f"no verdict within {self.timeout:g} s"}
        header = _read_exactly(fd, _HEADER.size)
        body = _read_exactly(fd, _HEADER.unpack(header)[0]) if header is not None else None
        if body is None:
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                detail = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            else:
                detail = f"exit status {os.waitstatus_to_exitcode(status)}"
            return {"kind": CRASH, "detail": detail}
        result: dict[str, Any] = json.loads(body)
        return result


# --- minimising ----------------------------------------------------------------------------


class Minimiser:
    """Shrinks a trace while replaying it still ends in the same kind of finding."""

    def __init__(
        self,
        sandbox: RoomSandbox,
        kind: str,
        limits: dict[str, Any],
        ignore: list[str],
        safe_checkpoints: bool = False,
    ) -> None:
        self.ignore = ignore
        self.safe_checkpoints = safe_checkpoints
        self.sandbox = sandbox
        self.kind = kind
        self.limits = limits
        self.deadline = time.monotonic() + MINIMISE_SECONDS
        self.probes = 0

    def still(self, trace: list[Step]) -> bool:
        self.probes += 1
        request = {
            "op": "replay",
            "trace": [s.to_json() for s in trace],
            "limits": self.limits,
            "ignore": self.ignore,
            "safe_checkpoints": self.safe_checkpoints,
        }
        return self.sandbox.run(request)["kind"] == self.kind

    def minimise(self, trace: list[Step]) -> list[Step]:
        trace = self._cut_after_failure(trace)
        trace = self._drop_steps(trace)
        trace = self._shrink_frames(trace)
        return self._drop_steps(trace)

    def _cut_after_failure(self, trace: list[Step]) -> list[Step]:
        request = {
            "op": "replay",
            "trace": [s.to_json() for s in trace],
            "limits": self.limits,
            "ignore": self.ignore,
            "safe_checkpoints": self.safe_checkpoints,
        }
        result = self.sandbox.run(request)
        index = result.get("index")
        if result["kind"] == self.kind and index is not None:
            return trace[: index + 1]
        return trace

    def _drop_steps(self, trace: list[Step]) -> list[Step]:
        chunk = max(len(trace) // 2, 1)
        while chunk >= 1 and time.monotonic() < self.deadline:
            index = len(trace) - chunk
            while index >= 0 and time.monotonic() < self.deadline:
                candidate = trace[:index] + trace[index + chunk :]
                if candidate and self.still(candidate):
                    trace = candidate
                index -= chunk
            chunk //= 2
        return trace

    def _shrink_frames(self, trace: list[Step]) -> list[Step]:
        for index in range(len(trace)):
            step = trace[index]
            if step.op != "frame" or step.role != HOSTILE or time.monotonic() > self.deadline:
                continue
            messages, whole = frame_messages(step.frame)
            if whole and len(messages) > 1:
                for drop in reversed(range(len(messages))):
                    if len(messages) == 1:
                        break
                    rest = messages[:drop] + messages[drop + 1 :]
                    frame = b"".join(encode_message(m) for m in rest)
                    if self.still(self._with_frame(trace, index, frame)):
                        messages = rest
                        trace = self._with_frame(trace, index, frame)
            if not whole:
                continue
            for position, message in enumerate(messages):
                payload_name = _payload_field(message)
                if payload_name is None:
                    continue
                data = getattr(message, payload_name)
                data = self._shrink_bytes(trace, index, messages, position, payload_name, data)
                messages[position] = type(message)(data)
                trace = self._with_frame(trace, index, _encode(messages))
        return trace

    def _shrink_bytes(
        self,
        trace: list[Step],
        index: int,
        messages: list[Any],
        position: int,
        name: str,
        data: bytes,
    ) -> bytes:
        chunk = max(len(data) // 2, 1)
        while chunk >= 1 and time.monotonic() < self.deadline:
            start = 0
            while start < len(data) and time.monotonic() < self.deadline:
                candidate = data[:start] + data[start + chunk :]
                trial = list(messages)
                trial[position] = type(messages[position])(candidate)
                if self.still(self._with_frame(trace, index, _encode(trial))):
                    data = candidate
                else:
                    start += chunk
            chunk //= 2
        return data

    @staticmethod
    def _with_frame(trace: list[Step], index: int, frame: bytes) -> list[Step]:
        step = trace[index]
        copy = Step(**{**step.__dict__, "frame": frame})
        return [*trace[:index], copy, *trace[index + 1 :]]


def _payload_field(message: Any) -> str | None:
    for name in ("update", "state_vector", "payload"):
        if hasattr(message, name):
            return name
    return None


def _encode(messages: list[Any]) -> bytes:
    return b"".join(encode_message(m) for m in messages)


# --- saving --------------------------------------------------------------------------------


def signature(kind: str, detail: str) -> str:
    """Findings of one kind with the same message shape count as one."""
    detail = re.sub(r"\b\d+\b", "N", detail)
    detail = re.sub(r"\{[^}]*\}", "{...}", detail)
    detail = re.sub(r"\([^)]*\)$", "", detail)
    return f"{kind}|{detail[:80]}"


def reproduces_in_unit_harness(frames: list[bytes]) -> bool | None:
    """Does tests/unit/test_room_fuzz.py's corpus replay (one hostile connection, an
    innocent edit after each frame) fail on the hostile frames alone?"""
    try:
        from tests.unit.test_room_fuzz import Board
    except Exception:  # hypothesis missing
        return None
    board = Board()
    try:
        board.innocent_edit()
        for frame in frames:
            board.hostile_frame(frame)
            board.innocent_edit()
        board.check()
        board.check_still_answers_step1()
    except AssertionError:
        return True
    except BaseException:
        return True
    return False


def save_finding(
    out: Path,
    kind: str,
    detail: str,
    trace: list[Step],
    limits: dict[str, Any],
    found: dict[str, Any],
) -> Path:
    hostile = [s.frame for s in trace if s.op == "frame" and s.role == HOSTILE]
    everything = [s.frame for s in trace if s.op == "frame"] or [b""]
    name = case_name(kind, everything)
    found = {**found, "reproduces_in_test_room_fuzz": _isolated_unit_check(hostile)}
    data = {
        "kind": kind,
        "detail": detail,
        "pycrdt": version("pycrdt"),
        "frames": [f.hex() for f in hostile],
        "found": found,
        "limits": limits,
        "room_trace": [s.to_json() for s in trace],
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _isolated_unit_check(frames: list[bytes]) -> bool | None:
    """:func:`reproduces_in_unit_harness` in a forked child (it may panic)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            result = reproduces_in_unit_harness(frames)
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    data = os.read(read, 100) if ready else b""
    os.close(read)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return json.loads(data) if data else None


# --- the fuzz loop -------------------------------------------------------------------------


def fuzz(
    *,
    seconds: float,
    seed: int,
    out: Path,
    steps: int,
    timeout: float,
    per_kind: int,
    ignore: list[str],
    safe_checkpoints: bool = False,
) -> None:
    sandbox = RoomSandbox(timeout)
    started = time.monotonic()
    master = random.Random(seed)
    seen: set[str] = set()
    for path in sorted(out.glob("*.json")) if out.is_dir() else []:
        data = json.loads(path.read_text())
        if data.get("found", {}).get("by") == "tests.fuzz.room_fuzz":
            seen.add(signature(data["kind"], data["detail"]))
    saved: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    info: Counter[str] = Counter()
    cases = frames = 0
    worst = (0.0, "")
    next_report = started + 30
    while time.monotonic() - started < seconds:
        case_seed = master.randrange(2**63)
        result = sandbox.run(
            {
                "op": "scenario",
                "seed": case_seed,
                "steps": steps,
                "ignore": ignore,
                "safe_checkpoints": safe_checkpoints,
            }
        )
        cases += 1
        frames += result.get("frames", 0)
        kinds[result["kind"]] += 1
        info.update(result.get("info", {}))
        if result.get("worst_cpu", 0) > worst[0]:
            worst = (result["worst_cpu"], result.get("worst_note", ""))
        if result["kind"] == DRIVER_ERROR:
            print(f"driver error: {result['detail']}", file=sys.stderr, flush=True)
            continue
        if result["kind"] != OK:
            key = signature(result["kind"], result["detail"])
            elapsed = time.monotonic() - started
            print(
                f"[{elapsed:6.0f} s, case {cases}] {result['kind']}: {result['detail'][:200]}",
                flush=True,
            )
            if key not in seen and saved[result["kind"]] < per_kind and result.get("trace"):
                seen.add(key)
                saved[result["kind"]] += 1
                _minimise_and_save(
                    sandbox, result, out, seed, case_seed, elapsed, cases, ignore, safe_checkpoints
                )
        if time.monotonic() > next_report:
            next_report += 30
            rate = cases / (time.monotonic() - started)
            print(
                f"{cases} cases ({rate:.1f}/s, {frames} frames): {dict(kinds)} info {dict(info)}",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.monotonic() - started
    print(
        f"done: seed {seed}, {cases} cases, {frames} frames in {elapsed:.0f} s"
        f" ({cases / elapsed:.2f} cases/s, {frames / elapsed:.0f} frames/s): {dict(kinds)};"
        f" info {dict(info)}; worst frame CPU {worst[0] * 1000:.1f} ms ({worst[1]})",
        flush=True,
    )


def _minimise_and_save(
    sandbox: RoomSandbox,
    result: dict[str, Any],
    out: Path,
    seed: int,
    case_seed: int,
    elapsed: float,
    cases: int,
    ignore: list[str],
    safe_checkpoints: bool,
) -> None:
    kind = result["kind"]
    trace = [Step.from_json(s) for s in result["trace"]]
    limits = result.get("limits") or {}
    if kind in (CRASH, HANG):
        small, probes, final = trace, 0, result
    else:
        minimiser = Minimiser(sandbox, kind, limits, ignore, safe_checkpoints)
        small = minimiser.minimise(trace)
        probes = minimiser.probes
        final = sandbox.run(
            {
                "op": "replay",
                "trace": [s.to_json() for s in small],
                "limits": limits,
                "ignore": ignore,
                "safe_checkpoints": safe_checkpoints,
            }
        )
        if final["kind"] != kind:
            small, final = trace, result
    found = {
        "by": "tests.fuzz.room_fuzz",
        "seed": seed,
        "case_seed": case_seed,
        "after_seconds": round(elapsed, 1),
        "after_cases": cases,
        "original_steps": len(trace),
        "minimised_steps": len(small),
        "minimise_probes": probes,
        "ignored_kinds": ignore,
        "safe_checkpoints": safe_checkpoints,
    }
    path = save_finding(out, kind, final["detail"], small, limits, found)
    print(f"    minimised {len(trace)} -> {len(small)} steps -> {path}", flush=True)


def replay_file(path: Path) -> int:
    data = json.loads(path.read_text())
    trace = [Step.from_json(s) for s in data["room_trace"]]
    ignore = frozenset(data.get("found", {}).get("ignored_kinds", ()))
    safe = data.get("found", {}).get("safe_checkpoints", False)
    kind, detail, index, _ = replay(trace, limits_from(data.get("limits")), ignore, safe)
    print(f"{path.name}: {kind} at step {index}: {detail}")
    for number, step in enumerate(trace):
        output = "" if step.op != "frame" else step.frame.hex()[:80]
        print(f"  {number:3d} {step.op:7s} {step.role:9s} {step.note:28s} {output}")
    return 0 if kind == data["kind"] else 1


# --- CPU per hostile frame -------------------------------------------------------------------


def thousand_task_board() -> tuple[list[bytes], list[bytes], Doc[Any]]:
    """A 1,000-task board (8 string fields a task), then 500 title edits, from one writer."""
    writer: Doc[Any] = Doc(client_id=11)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    tasks = writer.get("tasks", type=Map)
    fields = ("title", "status", "owner", "column", "due", "points", "tags", "body")
    for n in range(1000):
        tasks[f"t{n}"] = Map({name: f"{name} {n} lorem ipsum dolor" for name in fields})
    created = list(updates)
    updates.clear()
    for n in range(500):
        tasks[f"t{n}"]["title"] = f"edited {n}"
    return created, list(updates), writer


def cost(repeats: int = 3) -> None:
    """Measure the CPU one frame of one connection costs on a 1,000-task board."""
    created, edits, writer = thousand_task_board()
    snapshot = pycrdt.merge_updates(*created)
    full = writer.get_update()

    def fresh_room(*, holding: bool = False) -> BoardRoom:
        room = BoardRoom("cost")
        room.load(snapshot, edits)  # a snapshot and a journal of 500 changes
        if holding:
            other: Doc[Any] = Doc(client_id=77)
            ups: list[bytes] = []
            other.observe(lambda e: ups.append(e.update))
            other.get("x", type=Map)["a"] = 1
            other.get("x", type=Map)["b"] = 2
            room.receive(5, sync_update(ups[1]), 0.0)  # held: its dependency never comes
            assert room.held_updates(5) == 1
        return room

    def measure(name: str, frame: bytes, *, holding: bool = False, conn: int = 1) -> None:
        samples = []
        outcome = ""
        for _ in range(repeats):
            room = fresh_room(holding=holding)
            started = time.process_time()
            output = room.receive(conn, frame, 1.0)
            samples.append(time.process_time() - started)
            reply = sum(len(f) for f in output.reply)
            outcome = f"error={type(output.error).__name__ if output.error else None} reply={reply}"
            room.close()
        print(
            json.dumps(
                {
                    "frame": name,
                    "frame_bytes": len(frame),
                    "cpu_ms_median": round(statistics.median(samples) * 1000, 2),
                    "cpu_ms_max": round(max(samples) * 1000, 2),
                    "outcome": outcome,
                }
            ),
            flush=True,
        )

    print(f"board: {len(full)} bytes encoded, journal {len(edits)} changes", flush=True)
    measure("one empty step 1", EMPTY_STEP1)
    for count in (10, 100, 400):
        measure(f"{count} empty step 1s in one frame", EMPTY_STEP1 * count)
    measure("malformed step 1 (rebuild)", sync_step1(b"\x05\x01"))
    measure("malformed update (rebuild)", sync_update(full[:-3] + b"\xff\xff\xff"))
    measure("full-state step 2 (duplicate)", sync_step2(full))
    distinct = []
    for n in range(60):
        extra: Doc[Any] = Doc(client_id=9000 + n)
        extra.get("pad", type=Map)["k"] = n
        distinct.append(sync_step2(pycrdt.merge_updates(full, extra.get_update())))
    measure("60 distinct full-state step 2s (29 MiB frame)", b"".join(distinct))
    measure("60 distinct full-state step 2s, board holding", b"".join(distinct), holding=True)
    # Updates touching what is pending, while this connection holds one: whole-board checks.
    gap: Doc[Any] = Doc(client_id=4242)
    gap_updates: list[bytes] = []
    gap.observe(lambda e: gap_updates.append(e.update))
    for n in range(40):
        gap.get("g", type=Map)[f"k{n}"] = n
    held_then_touching = b"".join(sync_update(u) for u in gap_updates[1:])
    measure("39 updates after a gap (held, checks)", held_then_touching)
    awareness_entry = json.dumps({"user": {"name": "x" * 100}}).encode()
    aw = [
        encode_message(
            AwarenessUpdate(
                var_uint(1)
                + var_uint(555)
                + var_uint(n)
                + var_uint(len(awareness_entry))
                + awareness_entry
            )
        )
        for n in range(1, 20001)
    ]
    measure("20,000 awareness renewals in one frame", b"".join(aw))

    def with_presence(room: BoardRoom) -> None:
        # 64 present clients (8 connections x 8 ids), as on a busy board.
        for connection in range(100, 108):
            for index in range(8):
                client = connection * 100 + index
                entry = var_uint(1) + var_uint(client) + var_uint(1)
                entry += var_uint(len(awareness_entry)) + awareness_entry
                room.receive(connection, encode_message(AwarenessUpdate(entry)), 0.5)

    original = fresh_room

    def fresh_room(*, holding: bool = False) -> BoardRoom:
        room = original(holding=holding)
        with_presence(room)
        return room

    measure("100,000 query-awareness in one frame (64 present)", b"\x03" * 100_000)
    fresh_room = original
    # An innocent edit while a hostile update waits on that innocent's next clocks:
    # each innocent frame integrates one piece and runs a whole-board check.
    samples = []
    for _ in range(repeats):
        room = fresh_room()
        innocent: Doc[Any] = Doc(client_id=INNOCENT_BASE)
        innocent.apply_update(room.state())
        fork: Doc[Any] = Doc(client_id=INNOCENT_BASE)
        fork.apply_update(room.state())
        for n in range(40):
            with fork.transaction():
                fork.get("innocent", type=Map)[f"p{n}"] = n
        side: Doc[Any] = Doc(client_id=HOSTILE_CLIENT)
        side.apply_update(fork.get_update())
        before = side.get_state()
        for n in range(40):
            with side.transaction():
                side.get("innocent", type=Map)[f"p{n}"] = -n
        room.receive(2, sync_update(side.get_update(before)), 1.0)
        edits_out: list[bytes] = []
        innocent.observe(lambda e, out=edits_out: out.append(e.update))
        for n in range(10):
            innocent.get("innocent", type=Map)[f"e{n}"] = n
        for update in edits_out:
            started = time.process_time()
            output = room.receive(3, sync_update(update), 2.0)
            samples.append(time.process_time() - started)
            assert output.error is None, output.error
        room.close()
    print(
        json.dumps(
            {
                "frame": "innocent edit while a hostile update waits on its next clocks",
                "cpu_ms_median": round(statistics.median(samples) * 1000, 2),
                "cpu_ms_max": round(max(samples) * 1000, 2),
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.room_fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("tests/corpus-candidates"))
    parser.add_argument("--steps", type=int, default=80, help="steps per scenario")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per scenario")
    parser.add_argument("--per-kind", type=int, default=3)
    parser.add_argument("--replay", type=Path, default=None)
    parser.add_argument(
        "--safe-checkpoints",
        action="store_true",
        help="the host snapshots only while nothing is held (past the state-beyond-log finding)",
    )
    parser.add_argument("--cost", action="store_true")
    parser.add_argument(
        "--ignore", default="", help="comma-separated kinds counted instead of ending a case"
    )
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay_file(args.replay)
    if args.cost:
        cost()
        return 0
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    fuzz(
        seconds=args.seconds,
        seed=seed,
        out=args.out,
        steps=args.steps,
        timeout=args.timeout,
        per_kind=args.per_kind,
        ignore=[k for k in args.ignore.split(",") if k],
        safe_checkpoints=args.safe_checkpoints,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
