"""An in-memory board store: same contract as the durable ones, nothing survives the process."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from persistence.history import DEFAULT_HISTORY, HistoryPolicy, snapshots_to_drop
from persistence.store import (
    BoardStore,
    LogEntry,
    StoredBoard,
    Version,
    check_snapshot_seq,
    gap_free_tail,
    history_unavailable,
    sorted_versions,
)


@dataclass(frozen=True)
class _Snapshot:
    seq: int
    at: float
    state: bytes


@dataclass
class _Board:
    snapshot: _Snapshot | None = None
    last_seq: int = 0
    log: list[LogEntry] = field(default_factory=list)
    past: list[_Snapshot] = field(default_factory=list)


class MemoryStore(BoardStore):
    """Keeps every board in a dict; for tests and for benchmarks without durability.

    Args:
        history: which past snapshots to keep.
        clock: the source of the times stamped on updates and snapshots.
    """

    def __init__(
        self,
        *,
        history: HistoryPolicy = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._boards: dict[str, _Board] = {}
        self._history = history
        self._clock = clock
        self._closed = False

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
        return StoredBoard(board_id, snapshot.state, snapshot.seq, list(board.log))

    async def append(self, batches: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        """Append the updates of several boards at once; returns each board's last seq."""
        self._check_open()
        # Copy everything first, so a bad item leaves every board as it was.
        copies = {board_id: [bytes(u) for u in updates] for board_id, updates in batches.items()}
        at = self._clock()
        last_seqs: dict[str, int] = {}
        for board_id, updates in copies.items():
            board = self._boards.get(board_id)
            if board is None:
                if not updates:
                    last_seqs[board_id] = 0
                    continue
                board = self._boards[board_id] = _Board()
            for update in updates:
                board.last_seq += 1
                board.log.append(LogEntry(board.last_seq, update, at))
            last_seqs[board_id] = board.last_seq
        return last_seqs

    async def write_snapshot(self, board_id: str, state: bytes, upto_seq: int) -> None:
        """Store a snapshot covering seq <= upto_seq, drop those log entries, keep the old one."""
        self._check_open()
        board = self._boards.get(board_id)
        current = board.snapshot if board is not None else None
        if current is not None and upto_seq < current.seq:
            return
        check_snapshot_seq(board_id, upto_seq, board.last_seq if board else 0)
        if board is None:
            board = self._boards[board_id] = _Board()
        now = self._clock()
        board.snapshot = _Snapshot(upto_seq, now, bytes(state))
        board.log = [entry for entry in board.log if entry.seq > upto_seq]
        # One with the same seq covers the same log: it is replaced, not kept.
        if current is not None and current.seq < upto_seq:
            board.past.append(current)
            dropped = set(
                snapshots_to_drop(
                    [(s.seq, s.at) for s in board.past], now=now, policy=self._history
                )
            )
            board.past = [s for s in board.past if s.seq not in dropped]

    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board, oldest first."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return []
        snapshots = [*board.past, *([board.snapshot] if board.snapshot else [])]
        return sorted_versions(
            [Version(s.seq, s.at, "snapshot") for s in snapshots]
            + [Version(e.seq, e.at, "update") for e in board.log]
        )

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and log entries that rebuild the board as it was at ``at``."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is None:
            return StoredBoard(board_id, None, 0, [])
        current = board.snapshot
        if current is None or current.at <= at:
            base = current.seq if current else 0
            log = gap_free_tail([e for e in board.log if e.at <= at], base)
            return StoredBoard(board_id, current.state if current else None, base, log)
        past = [s for s in board.past if s.at <= at]
        if not past:
            raise history_unavailable(board_id, at)
        newest = max(past, key=lambda s: (s.at, s.seq))
        return StoredBoard(board_id, newest.state, newest.seq, [])

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""
        self._check_open()
        return sorted(self._boards)

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log and history."""
        self._check_open()
        self._boards.pop(board_id, None)

    async def close(self) -> None:
        """Drop every board; further calls raise RuntimeError."""
        self._closed = True
        self._boards.clear()
