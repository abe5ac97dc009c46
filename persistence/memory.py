"""An in-memory board store: same contract as the durable ones, nothing survives the process."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from persistence.store import BoardStore, LogEntry, StoredBoard, check_snapshot_seq


@dataclass
class _Board:
    snapshot: bytes | None = None
    snapshot_seq: int = 0
    last_seq: int = 0
    log: list[LogEntry] = field(default_factory=list)


class MemoryStore(BoardStore):
    """Keeps every board in a dict; for tests and for benchmarks without durability."""

    def __init__(self) -> None:
        self._boards: dict[str, _Board] = {}
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
        # A copy, so a caller cannot change what the store holds.
        return StoredBoard(board_id, board.snapshot, board.snapshot_seq, list(board.log))

    async def append(self, batches: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        """Append the updates of several boards at once; returns each board's last seq."""
        self._check_open()
        # Copy everything first, so a bad item leaves every board as it was.
        copies = {board_id: [bytes(u) for u in updates] for board_id, updates in batches.items()}
        at = time.time()
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
        """Store a snapshot covering seq <= upto_seq and drop those log entries."""
        self._check_open()
        board = self._boards.get(board_id)
        if board is not None and board.snapshot is not None and upto_seq < board.snapshot_seq:
            return
        check_snapshot_seq(board_id, upto_seq, board.last_seq if board else 0)
        if board is None:
            board = self._boards[board_id] = _Board()
        board.snapshot = bytes(state)
        board.snapshot_seq = upto_seq
        board.log = [entry for entry in board.log if entry.seq > upto_seq]

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""
        self._check_open()
        return sorted(self._boards)

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot and log."""
        self._check_open()
        self._boards.pop(board_id, None)

    async def close(self) -> None:
        """Drop every board; further calls raise RuntimeError."""
        self._closed = True
        self._boards.clear()
