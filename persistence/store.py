"""The store interface that board actors persist Yjs updates through.

A board's durable form is a snapshot (one full Yjs update covering every seq up to
``snapshot_seq``) plus a log of the updates appended after it, each numbered by a per-board
sequence that starts at 1 and has no gaps. Compaction keeps the updates and the snapshot it
replaces in the board's history, thinned by a retention policy, so the board can also be
read as it was at a past time (``persistence/history.py``). Every store passes the same
contract suite (``tests/unit/test_store_contract.py``).
"""

from __future__ import annotations

import abc
import asyncio
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

from persistence.coverage import Coverage
from persistence.history import (
    HistoryPolicy,
    Thinning,
    merge_state,
    plan_thinning,
)
from persistence.read_model import TaskIndex


@dataclass(frozen=True, slots=True)
class Record:
    """An update to append, and what the log keeps beside it.

    Attributes:
        update: the Yjs update.
        origin: who made it (a user or service name from ``on_connect`` or ``transact``).
        key: the idempotency key of the server-side transaction that made it; a retry
            finds it with :meth:`BoardStore.find_key`.
        events: the domain events derived from it, encoded (``crdt.events.encode_events``);
            kept so that events whose delivery a crash interrupted are delivered again.
    """

    update: bytes
    origin: str | None = None
    key: str | None = None
    events: bytes | None = None

    @property
    def has_meta(self) -> bool:
        """Whether anything beside the update is to be kept."""
        return self.origin is not None or self.key is not None or bool(self.events)


def as_record(item: bytes | Record) -> Record:
    """``item`` as a :class:`Record`, copied (a caller may reuse its buffers)."""
    if isinstance(item, Record):
        return Record(bytes(item.update), item.origin, item.key, item.events)
    return Record(bytes(item))


Batches = Mapping[str, Sequence[bytes | Record]]
"""What one append writes: per board, updates (bare or with what is kept beside them)."""


@dataclass(frozen=True)
class LogEntry:
    """One stored Yjs update, with its per-board sequence number and append time (unix seconds).

    ``origin``, ``key`` and ``events`` are what its :class:`Record` carried (None if nothing).
    """

    seq: int
    update: bytes
    at: float
    origin: str | None = None
    key: str | None = None
    events: bytes | None = None


@dataclass(frozen=True)
class StoredBoard:
    """Everything needed to rebuild a board: a snapshot and the log entries after it, in order."""

    board_id: str
    snapshot: bytes | None
    snapshot_seq: int
    updates: list[LogEntry]
    # The snapshot's state vector, as written with it (``Coverage.state_vector``): with
    # it, a board with no log tail is served without building its document. None for a
    # snapshot written without one (or by an older version).
    snapshot_vector: bytes | None = None

    @property
    def last_seq(self) -> int:
        """The highest seq the board holds (0 for a board that has never been written)."""
        return self.updates[-1].seq if self.updates else self.snapshot_seq


@dataclass(frozen=True)
class Version:
    """One retained point of a board's past: a snapshot (covering seq <= ``seq``) or an update.

    ``at`` is when the board reached that state: an update's append time; for a snapshot, the
    append time of the newest update it covers (so a snapshot and its update share a time).
    """

    seq: int
    at: float
    kind: Literal["snapshot", "update"]


class HistoryUnavailable(LookupError):
    """The board's state at the asked time is no longer retained: retention dropped it."""


class BoardStore(abc.ABC):
    """Durable storage of board snapshots and update logs; all methods are coroutines."""

    @abc.abstractmethod
    async def load(self, board_id: str) -> StoredBoard:
        """Return the board's snapshot and the log after it (an empty board if unknown)."""

    @abc.abstractmethod
    async def append(self, batches: Batches) -> dict[str, int]:
        """Append the updates of several boards in one durable write.

        Returns each board's last seq after the write. Seqs are per board, start at 1 and are
        strictly increasing with no gaps. The updates, and what their records carry beside
        them, are durable when this returns; ``load`` gives them back on the log entries.
        """

    @abc.abstractmethod
    async def find_key(self, board_id: str, key: str) -> int | None:
        """The seq of the board's update appended with idempotency ``key``, if retained.

        Searches the log and the retained history: a key is found for as long as its update
        is retained (every update for the policy's first tier; an hour by default).
        """

    @abc.abstractmethod
    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        """Store a snapshot covering seq <= upto_seq and take those entries out of the log.

        Atomically for readers of ``load``. The entries it covers and the snapshot it replaces
        move to the board's history, which is then thinned by the store's ``HistoryPolicy``
        (a bounded amount of work per call). A snapshot older than the stored one is ignored.
        Given ``covers`` (the state vector the snapshot was encoded from), a snapshot that
        does not hold every entry it would trim (another host appended one meanwhile) is
        refused in the same transaction: nothing is written and False is returned
        (``persistence/coverage.py``). Returns True otherwise.
        Raises ValueError if ``upto_seq`` is negative or beyond the board's last seq.
        """

    @abc.abstractmethod
    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board (snapshots and updates), oldest first."""

    @abc.abstractmethod
    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and updates that rebuild the board as it was at ``at``.

        That is the newest retained version at or before ``at``: the snapshot with the highest
        seq among those at or before ``at``, then the retained updates after it up to ``at``
        (to the first one missing). A board not yet written at ``at`` loads empty. Raises
        HistoryUnavailable if retention dropped that past; its message says what is retained.
        """

    async def state_at(self, board_id: str, at: float) -> bytes:
        """Return the board as it was at ``at`` (unix seconds) as one full Yjs update."""
        past = await self.load_at(board_id, at)
        updates = [entry.update for entry in past.updates]
        return await asyncio.to_thread(merge_state, past.snapshot, updates)

    @abc.abstractmethod
    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""

    @abc.abstractmethod
    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log and history; a later append starts again at seq 1."""

    def task_index(self) -> TaskIndex:
        """A new handle on the read model kept beside these boards (persistence/read_model.py).

        The caller closes it. Stores without one raise NotImplementedError.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no read model")

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the boards are kept, for messages: an absolute file path, a URL, ``memory``."""

    @abc.abstractmethod
    async def exists(self) -> bool:
        """Whether this store has been created where it points; asking creates nothing.

        Any other call may create it, reads included. Offline readers ask first, so that a
        mistyped location fails instead of reading as an empty store.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's resources; further calls raise RuntimeError. Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def check_snapshot_seq(board_id: str, upto_seq: int, last_seq: int) -> None:
    """Raise ValueError unless ``upto_seq`` lies within the board's log (0..last_seq)."""
    if upto_seq < 0:
        raise ValueError(f"snapshot of board {board_id!r}: upto_seq {upto_seq} is negative")
    if upto_seq > last_seq:
        # A snapshot claiming seqs that were never stored would make the next append reuse them.
        raise ValueError(
            f"snapshot of board {board_id!r}: upto_seq {upto_seq} is beyond last seq {last_seq}"
        )


def sorted_versions(versions: Sequence[Version]) -> list[Version]:
    """Order versions oldest first; at equal times by seq, an update before its snapshot."""
    return sorted(versions, key=lambda v: (v.at, v.seq, v.kind == "snapshot"))


def gap_free_tail(entries: Sequence[LogEntry], after_seq: int) -> list[LogEntry]:
    """Return the entries numbered after_seq + 1, after_seq + 2, ... up to the first gap.

    ``entries`` are in seq order. Entries at or below ``after_seq`` are already in the snapshot;
    a gap means an entry was filtered out, and what follows it may depend on it.
    """
    tail: list[LogEntry] = []
    for entry in entries:
        if entry.seq <= after_seq:
            continue
        if entry.seq != after_seq + len(tail) + 1:
            break
        tail.append(entry)
    return tail


def format_time(at: float) -> str:
    """A store time (unix seconds) as ISO 8601 UTC, for messages."""
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def history_unavailable(
    board_id: str, at: float, policy: HistoryPolicy, oldest: Version | None
) -> HistoryUnavailable:
    """The error for a time older than everything the board's history retains."""
    retained = (
        f"oldest retained: {format_time(oldest.at)} ({oldest.kind} seq {oldest.seq})"
        if oldest is not None
        else "nothing older is retained"
    )
    return HistoryUnavailable(
        f"board {board_id!r}: its state at {format_time(at)} is no longer retained;"
        f" retention keeps {policy.describe()}; {retained}"
    )


def rebuild_at(
    board_id: str, base: tuple[int, bytes] | None, entries: Sequence[LogEntry]
) -> StoredBoard | None:
    """The board from its newest snapshot at or before a time and the updates up to it.

    ``entries`` are the retained updates (live or compacted, in any order, duplicates
    allowed) with seq above the base's and time at or before the asked one. Returns None if
    there is no base and the updates do not start at seq 1: the caller then decides between
    an empty board and HistoryUnavailable (:func:`empty_or_unavailable`).
    """
    unique = sorted({entry.seq: entry for entry in entries}.values(), key=lambda e: e.seq)
    base_seq = base[0] if base is not None else 0
    tail = gap_free_tail(unique, base_seq)
    if base is None and not tail:
        return None
    return StoredBoard(board_id, base[1] if base is not None else None, base_seq, tail)


def empty_or_unavailable(
    board_id: str,
    at: float,
    policy: HistoryPolicy,
    *,
    oldest: Version | None,
    first_update_retained: bool,
) -> StoredBoard:
    """An empty board if nothing had been written at ``at``, else raise HistoryUnavailable.

    Args:
        oldest: the board's oldest retained version (None for a board never written).
        first_update_retained: seq 1 is still stored as an update, so the board provably
            started empty after ``at``.
    """
    if oldest is None or (first_update_retained and oldest.at > at):
        return StoredBoard(board_id, None, 0, [])
    raise history_unavailable(board_id, at, policy, oldest)


#: How many aged retained updates one thinning pass reads; the rest waits for the next pass.
AGED_UPDATES_PER_THINNING = 20_000


@dataclass(frozen=True)
class ThinningInputs:
    """What a store reads to plan a thinning pass (see ``history.plan_thinning``)."""

    current: tuple[int, float] | None
    snapshots: list[tuple[int, float]]
    aged_updates: list[tuple[int, float]]
    more_aged_updates: bool
    first_newer_update: int | None


class HistoryStorage(Protocol):
    """The reads and writes a store gives :func:`thin_history`; each is one short store call."""

    async def thinning_inputs(self, board_id: str, since: float, limit: int) -> ThinningInputs:
        """Read the current snapshot, history snapshots and retained updates older than
        ``since`` (at most ``limit``, oldest first) of one board."""

    async def materialise_inputs(
        self, board_id: str, seq: int
    ) -> tuple[bytes | None, list[bytes]] | None:
        """The newest snapshot at or below ``seq`` and the updates after it up to ``seq``;
        None if an update in between is missing."""

    async def add_history_snapshot(self, board_id: str, seq: int, at: float, state: bytes) -> None:
        """Store a materialised version; one already stored at ``seq`` is left as it is."""

    async def drop_history(self, board_id: str, thinning: Thinning) -> None:
        """Delete the history snapshots and retained updates ``thinning`` names."""


async def thin_history(
    storage: HistoryStorage, board_id: str, policy: HistoryPolicy, now: float
) -> Thinning:
    """Thin one board's history by ``policy``: materialise, then drop. Returns what was done.

    Bounded: at most ``AGED_UPDATES_PER_THINNING`` updates read and a few snapshots built
    (pycrdt in a worker thread), so a compaction never stalls the event loop for long.
    Materialised snapshots are written before anything is dropped, so a crash in between
    leaves extra history, never a hole.
    """
    if policy.every_version_for == float("inf"):
        return Thinning([], [], 0)
    since = policy.every_version_since(now)
    inputs = await storage.thinning_inputs(board_id, since, AGED_UPDATES_PER_THINNING)
    plan = plan_thinning(
        policy=policy,
        now=now,
        current=inputs.current,
        snapshots=inputs.snapshots,
        aged_updates=inputs.aged_updates,
        more_aged_updates=inputs.more_aged_updates,
        first_newer_update=inputs.first_newer_update,
    )
    if plan.is_empty:
        return plan
    for seq, at in plan.build:
        parts = await storage.materialise_inputs(board_id, seq)
        if parts is None:
            continue  # already unreadable: nothing to preserve
        state = await asyncio.to_thread(merge_state, *parts)
        await storage.add_history_snapshot(board_id, seq, at, state)
    await storage.drop_history(board_id, plan)
    return plan
