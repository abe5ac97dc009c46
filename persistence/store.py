"""The store interface that board actors persist Yjs updates through.

A board's durable form is a snapshot (one full Yjs update covering every seq up to
``snapshot_seq``) plus a log of the updates appended after it, each numbered by a per-board
sequence that starts at 1 and has no gaps. A compacted snapshot is kept in the board's
history, so the board can also be read as it was at a past time (``persistence/history.py``).
Every store passes the same contract suite (``tests/unit/test_store_contract.py``).
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from persistence.history import DEFAULT_HISTORY, HistoryPolicy, merge_state

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


@dataclass(frozen=True)
class Version:
    """One retained point of a board's past: a snapshot (covering seq <= ``seq``) or an update."""

    seq: int
    at: float
    kind: Literal["snapshot", "update"]


class HistoryUnavailable(LookupError):
    """The board's state at the asked time is no longer retained: compaction dropped it."""


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

        The snapshot it replaces moves to the board's history, thinned by the store's
        ``HistoryPolicy``. A snapshot older than the stored one is ignored. Raises ValueError
        if ``upto_seq`` is negative or beyond the board's last seq.
        """

    @abc.abstractmethod
    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board (snapshots and log entries), oldest first."""

    @abc.abstractmethod
    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and log entries that rebuild the board as it was at ``at``.

        That is the newest snapshot written at or before ``at`` and, if it is the current one,
        the log entries after it appended at or before ``at``; before any snapshot, the log
        entries up to ``at``. Raises HistoryUnavailable if compaction dropped that past.
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


def history_unavailable(board_id: str, at: float) -> HistoryUnavailable:
    """The error for a time older than everything the board's history retains."""
    return HistoryUnavailable(
        f"board {board_id!r}: its state at {at} is no longer retained (compacted away);"
        " see versions() for what is"
    )


def open_store(
    url: str,
    *,
    data_dir: str,
    history: HistoryPolicy | None = None,
    clock: Callable[[], float] = time.time,
) -> BoardStore:
    """Open the store a URL names.

    Args:
        url: ``"sqlite"`` (``<data_dir>/boardcast.sqlite3``), ``"sqlite:///abs/file.sqlite3"``,
            ``"sqlite://relative/file.sqlite3"`` (under ``data_dir``), ``"memory"``, or a
            MongoDB URL ``"mongodb://host:port/database"`` (database ``boardcast`` if omitted).
        data_dir: directory for the embedded store's file; created if missing.
        history: which past snapshots to keep (see ``persistence/history.py``).
        clock: the source of the times stamped on updates and snapshots.
    """
    # Imported here because the implementations import this module.
    from persistence.memory import MemoryStore
    from persistence.sqlite import SqliteStore

    policy = history if history is not None else DEFAULT_HISTORY
    url = url.strip()
    if url == "memory":
        return MemoryStore(history=policy, clock=clock)
    if url == "sqlite":
        return SqliteStore(os.path.join(data_dir, SQLITE_FILENAME), history=policy, clock=clock)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ValueError(f"{STORE_SETTING}={url!r}: the sqlite URL names no file")
        # An absolute path ignores data_dir.
        return SqliteStore(os.path.join(data_dir, path), history=policy, clock=clock)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from persistence.mongo import MongoStore

        return MongoStore(url, history=policy, clock=clock)
    raise ValueError(
        f"{STORE_SETTING}={url!r} is not a store URL;"
        " expected 'sqlite', 'sqlite:///path', 'memory' or 'mongodb://host/database'"
    )
