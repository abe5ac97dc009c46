"""An in-memory board store: same contract as the durable ones, nothing survives the process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from persistence.coverage import Coverage
from persistence.history import DEFAULT_HISTORY, HistoryPolicy, Thinning
from persistence.read_model import MemoryTaskIndex, TaskIndex
from persistence.store import (
    Batches,
    BoardStore,
    LogEntry,
    StoredBoard,
    ThinningInputs,
    Version,
    as_record,
    check_snapshot_seq,
    empty_or_unavailable,
    rebuild_at,
    sorted_versions,
    thin_history,
)


@dataclass(frozen=True)
class _Snapshot:
    seq: int
    at: float
    state: bytes
    vector: bytes | None = None  # its state vector (StoredBoard.snapshot_vector)


@dataclass
class _Board:
    snapshot: _Snapshot | None = None
    last_seq: int = 0
    log: list[LogEntry] = field(default_factory=list)
    # History: replaced and materialised snapshots, and the updates compaction took out of
    # the log, both thinned by the policy.
    past: list[_Snapshot] = field(default_factory=list)
    retained: list[LogEntry] = field(default_factory=list)

    def snapshots(self) -> list[_Snapshot]:
        return [*self.past, *([self.snapshot] if self.snapshot else [])]


class MemoryStore(BoardStore):
    """Keeps every board in a dict; for tests and for benchmarks without durability.

    Args:
        history: which past versions to retain.
        clock: the source of the times stamped on updates and snapshots.
    """

    def __init__(
        self,
        *,
        history: HistoryPolicy = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
        read_model: MemoryTaskIndex | None = None,
    ) -> None:
        self._boards: dict[str, _Board] = {}
        self._history = history
        self._clock = clock
        self._closed = False
        self._index = read_model if read_model is not None else MemoryTaskIndex()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the board store is closed")

    async def load(self, board_id: str) -> StoredBoard:
        """Return the board's snapshot and the log after it (an empty board if unknown)."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return StoredBoard(board_id, None, 0, [])
        snapshot = board.snapshot
        # A copy, so a caller cannot change what the store holds.
        if snapshot is None:
            return StoredBoard(board_id, None, 0, list(board.log))
        return StoredBoard(board_id, snapshot.state, snapshot.seq, list(board.log), snapshot.vector)

    async def append(self, batches: Batches) -> dict[str, int]:
        """Append the updates of several boards at once; returns each board's last seq."""
        self._check_open()
        # Copy everything first, so a bad item leaves every board as it was.
        copies = {
            board_id: [as_record(u) for u in updates] for board_id, updates in batches.items()
        }
        at = self._clock()
        last_seqs: dict[str, int] = {}
        for board_id, updates in copies.items():
            board = self._boards.get(board_id)
            if board is None:
                if not updates:
                    last_seqs[board_id] = 0
                    continue
                board = self._boards[board_id] = _Board()
            for record in updates:
                board.last_seq += 1
                board.log.append(
                    LogEntry(
                        board.last_seq, record.update, at, record.origin, record.key, record.events
                    )
                )
            last_seqs[board_id] = board.last_seq
        return last_seqs

    def task_index(self) -> TaskIndex:
        """The read model, in memory like the boards (``read_model`` if one was given)."""
        return self._index

    async def find_key(self, board_id: str, key: str) -> int | None:
        """The seq of the update appended with idempotency ``key``, in the log or history."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return None
        for entry in (*board.log, *board.retained):
            if entry.key == key:
                return entry.seq
        return None

    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        """Store a snapshot covering seq <= upto_seq; the log it covers and the old one go to
        history, which is then thinned. Refused (False) if ``covers`` misses an entry."""
        self._check_open()
        board = self._boards.get(board_id)
        current = board.snapshot if board is not None else None
        if current is not None and upto_seq < current.seq:
            return True
        check_snapshot_seq(board_id, upto_seq, board.last_seq if board else 0)
        if board is None:
            board = self._boards[board_id] = _Board()
        now = self._clock()
        vector = bytes(covers.state_vector) if covers is not None else None
        if current is not None and current.seq == upto_seq:
            # One with the same seq is the same version: it is replaced, not kept.
            board.snapshot = _Snapshot(upto_seq, current.at, bytes(state), vector)
            return True
        covered = [entry for entry in board.log if entry.seq <= upto_seq]
        missing = covers.first_missing((e.seq, e.update) for e in covered) if covers else None
        if missing is not None:
            return False
        at = covered[-1].at if covered and covered[-1].seq == upto_seq else now
        board.snapshot = _Snapshot(upto_seq, at, bytes(state), vector)
        board.log = [entry for entry in board.log if entry.seq > upto_seq]
        board.retained.extend(covered)
        if current is not None:
            board.past.append(current)
        await thin_history(self, board_id, self._history, now)
        return True

    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board, oldest first."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return []
        return sorted_versions(
            [Version(s.seq, s.at, "snapshot") for s in board.snapshots()]
            + [Version(e.seq, e.at, "update") for e in [*board.retained, *board.log]]
        )

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and updates that rebuild the board as it was at ``at``."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return StoredBoard(board_id, None, 0, [])
        earlier = [s for s in board.snapshots() if s.at <= at]
        newest = max(earlier, key=lambda s: s.seq) if earlier else None
        base = (newest.seq, newest.state) if newest is not None else None
        after = newest.seq if newest is not None else 0
        entries = [e for e in [*board.retained, *board.log] if e.seq > after and e.at <= at]
        rebuilt = rebuild_at(board_id, base, entries)
        if rebuilt is not None:
            return rebuilt
        versions = await self.versions(board_id)
        return empty_or_unavailable(
            board_id,
            at,
            self._history,
            oldest=versions[0] if versions else None,
            first_update_retained=any(v.seq == 1 and v.kind == "update" for v in versions),
        )

    # -- history thinning (persistence.store.HistoryStorage) ------------------------

    async def thinning_inputs(self, board_id: str, since: float, limit: int) -> ThinningInputs:
        """The board's snapshots and its retained updates older than ``since``."""
        board = self._boards.get(board_id)
        if board is None:
            return ThinningInputs(None, [], [], False, False)
        current = board.snapshot
        aged = sorted((e.seq, e.at) for e in board.retained if e.at < since)
        return ThinningInputs(
            (current.seq, current.at) if current is not None else None,
            [(s.seq, s.at) for s in board.past],
            aged[:limit],
            len(aged) > limit,
            min((e.seq for e in board.retained if e.at >= since), default=None),
        )

    async def materialise_inputs(
        self, board_id: str, seq: int
    ) -> tuple[bytes | None, list[bytes]] | None:
        """The newest snapshot at or below ``seq`` and the retained updates after it."""
        board = self._boards.get(board_id)
        if board is None:
            return None
        below = [s for s in board.snapshots() if s.seq <= seq]
        base = max(below, key=lambda s: s.seq) if below else None
        after = base.seq if base is not None else 0
        entries = {e.seq: e for e in [*board.retained, *board.log] if after < e.seq <= seq}
        if sorted(entries) != list(range(after + 1, seq + 1)):
            return None
        updates = [entries[k].update for k in sorted(entries)]
        return (base.state if base is not None else None), updates

    async def add_history_snapshot(self, board_id: str, seq: int, at: float, state: bytes) -> None:
        """Keep a materialised version, unless the board is gone or has one at ``seq``."""
        board = self._boards.get(board_id)
        if board is None or any(s.seq == seq for s in board.snapshots()):
            return
        board.past.append(_Snapshot(seq, at, state))

    async def drop_history(self, board_id: str, thinning: Thinning) -> None:
        """Delete what ``thinning`` names."""
        board = self._boards.get(board_id)
        if board is None:
            return
        dropped = set(thinning.drop_snapshots)
        board.past = [s for s in board.past if s.seq not in dropped]
        board.retained = [e for e in board.retained if e.seq > thinning.drop_updates_upto]

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""
        self._check_open()
        return sorted(self._boards)

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log and history."""
        self._check_open()
        self._boards.pop(board_id, None)

    @property
    def location(self) -> str:
        """``memory``: the boards live in this process only."""
        return "memory"

    async def exists(self) -> bool:
        """Whether a board was written: another process's memory store is never visible."""
        return bool(self._boards)

    async def close(self) -> None:
        """Drop every board; further calls raise RuntimeError."""
        self._closed = True
        self._boards.clear()
