"""The store interface that board actors persist Yjs updates through.

A board's durable form is a snapshot (one full Yjs update covering every seq up to
``snapshot_seq``) plus a log of the updates appended after it, each numbered by a per-board
sequence that starts at 1 and has no gaps. Every store passes the same contract suite
(``tests/unit/test_store_contract.py``).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

#: The setting that carries the store URL given to :func:`open_store`.
STORE_SETTING = "BOARDCAST_STORE"

#: The file the embedded store uses inside the data directory.
SQLITE_FILENAME = "boardcast.sqlite3"


@dataclass(frozen=True)
class LogEntry:
    """One stored Yjs update, with its per-board sequence number and append time (unix seconds)."""

    seq: int
    update: bytes
    at: float


@dataclass(frozen=True)
class StoredBoard:
    """Everything needed to rebuild a board: a snapshot and the log entries after it, in order."""

    board_id: str
    snapshot: bytes | None
    snapshot_seq: int
    updates: list[LogEntry]

    @property
    def last_seq(self) -> int:
        """The highest seq the board holds (0 for a board that has never been written)."""
        return self.updates[-1].seq if self.updates else self.snapshot_seq


class BoardStore(abc.ABC):
    """Durable storage of board snapshots and update logs; all methods are coroutines."""

    @abc.abstractmethod
    async def load(self, board_id: str) -> StoredBoard:
        """Return the board's snapshot and the log after it (an empty board if unknown)."""

    @abc.abstractmethod
    async def append(self, batches: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        """Append the updates of several boards in one durable write.

        Returns each board's last seq after the write. Seqs are per board, start at 1 and are
        strictly increasing with no gaps. The updates are durable when this returns.
        """

    @abc.abstractmethod
    async def write_snapshot(self, board_id: str, state: bytes, upto_seq: int) -> None:
        """Store a snapshot covering seq <= upto_seq and drop those log entries, atomically.

        A snapshot older than the stored one is ignored. Raises ValueError if ``upto_seq`` is
        negative or beyond the board's last seq.
        """

    @abc.abstractmethod
    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""

    @abc.abstractmethod
    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot and log; a later append starts again at seq 1."""

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


def open_store(url: str, *, data_dir: str) -> BoardStore:
    """Open the store a URL names.

    Args:
        url: ``"sqlite"`` (``<data_dir>/boardcast.sqlite3``), ``"sqlite:///abs/file.sqlite3"``,
            ``"sqlite://relative/file.sqlite3"`` (under ``data_dir``) or ``"memory"``.
        data_dir: directory for the embedded store's file; created if missing.
    """
    # Imported here because both implementations import this module.
    from persistence.memory import MemoryStore
    from persistence.sqlite import SqliteStore

    url = url.strip()
    if url == "memory":
        return MemoryStore()
    if url == "sqlite":
        return SqliteStore(os.path.join(data_dir, SQLITE_FILENAME))
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ValueError(f"{STORE_SETTING}={url!r}: the sqlite URL names no file")
        return SqliteStore(os.path.join(data_dir, path))  # an absolute path ignores data_dir
    if url.startswith(("mongodb://", "mongodb+srv://")):
        raise NotImplementedError(
            f"{STORE_SETTING}: the MongoDB store is not available yet; use 'sqlite' or 'memory'"
        )
    raise ValueError(
        f"{STORE_SETTING}={url!r} is not a store URL;"
        " expected 'sqlite', 'sqlite:///path' or 'memory'"
    )
