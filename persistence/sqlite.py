"""The embedded board store: one SQLite file in WAL mode, fsynced on every commit.

sqlite3 blocks, so every statement runs on one dedicated worker thread that owns the
connection; the event loop only awaits. Several processes may open the same file: writes
take SQLite's write lock up front (``BEGIN IMMEDIATE``) and read the next seq from the table
inside that transaction, so seqs stay gap-free even if two processes wrote the same board.
Compaction moves the log entries it covers to ``update_history`` and the snapshot it replaces
to ``snapshot_history`` in one transaction; thinning them by the retention policy
(``persistence/history.py``) follows in short transactions of its own.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from persistence.coverage import Coverage
from persistence.history import DEFAULT_HISTORY, HistoryPolicy, Thinning
from persistence.read_model import SqliteTaskIndex, TaskIndex
from persistence.sqlite_files import enable_wal
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

T = TypeVar("T")

#: The read model's file, beside the store's.
READ_MODEL_FILENAME = "readmodel.sqlite3"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS updates (
        board_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        "update" BLOB NOT NULL,
        PRIMARY KEY (board_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        board_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        state BLOB NOT NULL,
        vector BLOB
    )""",
    """CREATE TABLE IF NOT EXISTS snapshot_history (
        board_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (board_id, seq)
    )""",
    # Log entries a snapshot covers, kept while the retention policy wants every version.
    """CREATE TABLE IF NOT EXISTS update_history (
        board_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        "update" BLOB NOT NULL,
        PRIMARY KEY (board_id, seq)
    )""",
    # What a log entry carries beside its update (who made it, the idempotency key of the
    # transaction that made it, its domain events), for the entries that carry any. Not
    # moved by compaction; dropped with the update by history thinning.
    """CREATE TABLE IF NOT EXISTS update_meta (
        board_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        origin TEXT,
        key TEXT,
        events BLOB,
        PRIMARY KEY (board_id, seq)
    )""",
    """CREATE INDEX IF NOT EXISTS update_meta_by_key ON update_meta (board_id, key)
        WHERE key IS NOT NULL""",
)

_ALL_SNAPSHOTS = """SELECT seq, at, state FROM snapshots WHERE board_id = ?1
    UNION ALL SELECT seq, at, state FROM snapshot_history WHERE board_id = ?1"""
_ALL_UPDATES = """SELECT seq, at, "update" FROM updates WHERE board_id = ?1
    UNION ALL SELECT seq, at, "update" FROM update_history WHERE board_id = ?1"""

# The snapshot's seq counts too: compaction may have emptied the log.
_LAST_SEQ = """SELECT MAX(
    COALESCE((SELECT MAX(seq) FROM updates WHERE board_id = ?1), 0),
    COALESCE((SELECT seq FROM snapshots WHERE board_id = ?1), 0))"""


class SqliteStore(BoardStore):
    """A board store in one SQLite file, safe to share between processes on one machine.

    Args:
        path: the database file; its directory is created if missing.
        busy_timeout: seconds to wait for another process's write lock before failing.
        history: which past versions to retain.
        clock: the source of the times stamped on updates and snapshots.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        history: HistoryPolicy = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._history = history
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="boardcast-sqlite")
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the board store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # Runs on the worker thread, the only thread that ever touches the connection.
        if self._connection is None:
            self._connection = self._connect()
        return work(self._connection)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # isolation_level=None: transactions are begun and ended explicitly below.
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = enable_wal(connection, self._busy_timeout)
            if mode != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            # FULL fsyncs the WAL on every commit: an acknowledged append survives power loss.
            connection.execute("PRAGMA synchronous = FULL")
            _in_transaction(connection, _create_schema)
        except BaseException:
            connection.close()
            raise
        return connection

    async def load(self, board_id: str) -> StoredBoard:
        """Return the board's snapshot and the log after it (an empty board if unknown)."""

        def read(connection: sqlite3.Connection) -> StoredBoard:
            row = connection.execute(
                "SELECT seq, state, vector FROM snapshots WHERE board_id = ?", (board_id,)
            ).fetchone()
            snapshot_seq, snapshot = (int(row[0]), bytes(row[1])) if row else (0, None)
            vector = bytes(row[2]) if row is not None and row[2] is not None else None
            rows = connection.execute(
                'SELECT u.seq, u."update", u.at, m.origin, m.key, m.events FROM updates u'
                " LEFT JOIN update_meta m ON m.board_id = u.board_id AND m.seq = u.seq"
                " WHERE u.board_id = ? AND u.seq > ? ORDER BY u.seq",
                (board_id, snapshot_seq),
            ).fetchall()
            updates = [
                LogEntry(
                    int(seq),
                    bytes(update),
                    float(at),
                    origin,
                    key,
                    bytes(events) if events is not None else None,
                )
                for seq, update, at, origin, key, events in rows
            ]
            return StoredBoard(board_id, snapshot, snapshot_seq, updates, vector)

        # One read transaction, so a compaction by another process cannot land between reads.
        return await self._run(lambda c: _in_transaction(c, read, begin="BEGIN"))

    async def append(self, batches: Batches) -> dict[str, int]:
        """Append several boards' updates in one transaction; returns each board's last seq."""
        if not batches:
            return {}
        # Copied on the caller's thread: the caller may reuse its buffers once we are awaiting.
        records_by_board = {
            board_id: [as_record(u) for u in updates] for board_id, updates in batches.items()
        }

        def write(connection: sqlite3.Connection) -> dict[str, int]:
            at = self._clock()
            last_seqs: dict[str, int] = {}
            rows: list[tuple[str, int, float, bytes]] = []
            metas: list[tuple[str, int, str | None, str | None, bytes | None]] = []
            for board_id, records in records_by_board.items():
                last = int(connection.execute(_LAST_SEQ, (board_id,)).fetchone()[0])
                for i, record in enumerate(records, start=1):
                    rows.append((board_id, last + i, at, record.update))
                    if record.has_meta:
                        metas.append((board_id, last + i, record.origin, record.key, record.events))
                last_seqs[board_id] = last + len(records)
            connection.executemany(
                'INSERT INTO updates (board_id, seq, at, "update") VALUES (?, ?, ?, ?)', rows
            )
            if metas:
                # A deleted board's seqs start again at 1: what was kept of the old ones goes.
                connection.executemany(
                    "INSERT OR REPLACE INTO update_meta (board_id, seq, origin, key, events)"
                    " VALUES (?, ?, ?, ?, ?)",
                    metas,
                )
            return last_seqs

        return await self._run(lambda c: _in_transaction(c, write))

    def task_index(self) -> TaskIndex:
        """The read model, in ``readmodel.sqlite3`` beside the store's file."""
        directory = os.path.dirname(os.path.abspath(self.path))
        return SqliteTaskIndex(os.path.join(directory, READ_MODEL_FILENAME))

    async def find_key(self, board_id: str, key: str) -> int | None:
        """The seq of the update appended with idempotency ``key``, if still retained."""

        def read(connection: sqlite3.Connection) -> int | None:
            row = connection.execute(
                "SELECT seq FROM update_meta WHERE board_id = ? AND key = ? ORDER BY seq LIMIT 1",
                (board_id, key),
            ).fetchone()
            return int(row[0]) if row is not None else None

        return await self._run(read)

    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        """Store a snapshot covering seq <= upto_seq and take those entries out of the log.

        The entries and the snapshot it replaces move to history in the same transaction
        (refused, False, if ``covers`` misses one of them); the history is then thinned by
        the policy.
        """
        state = bytes(state)
        now = self._clock()
        vector = bytes(covers.state_vector) if covers is not None else None

        def write(connection: sqlite3.Connection) -> str:
            row = connection.execute(
                "SELECT seq FROM snapshots WHERE board_id = ?", (board_id,)
            ).fetchone()
            if row is not None and upto_seq < int(row[0]):
                return "stale"
            check_snapshot_seq(
                board_id, upto_seq, int(connection.execute(_LAST_SEQ, (board_id,)).fetchone()[0])
            )
            if row is not None and int(row[0]) == upto_seq:
                # One with the same seq is the same version: it is replaced, not kept.
                connection.execute(
                    "UPDATE snapshots SET state = ?, vector = ? WHERE board_id = ?",
                    (state, vector, board_id),
                )
                return "replaced"
            if covers is not None:
                # Read inside the write transaction: no other host can append below
                # upto_seq between this check and the trim.
                trimmed = connection.execute(
                    'SELECT seq, "update" FROM updates WHERE board_id = ? AND seq <= ?'
                    " ORDER BY seq",
                    (board_id, upto_seq),
                )
                if covers.first_missing((int(s), bytes(u)) for s, u in trimmed) is not None:
                    return "refused"
            covered = connection.execute(
                "SELECT at FROM updates WHERE board_id = ? AND seq = ?", (board_id, upto_seq)
            ).fetchone()
            at = float(covered[0]) if covered is not None else now
            connection.execute(
                "INSERT OR REPLACE INTO snapshot_history (board_id, seq, at, state)"
                " SELECT board_id, seq, at, state FROM snapshots WHERE board_id = ?",
                (board_id,),
            )
            connection.execute(
                "INSERT INTO snapshots (board_id, seq, at, state, vector) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (board_id) DO UPDATE SET seq = excluded.seq, at = excluded.at,"
                " state = excluded.state, vector = excluded.vector",
                (board_id, upto_seq, at, state, vector),
            )
            connection.execute(
                'INSERT OR IGNORE INTO update_history (board_id, seq, at, "update")'
                ' SELECT board_id, seq, at, "update" FROM updates WHERE board_id = ? AND seq <= ?',
                (board_id, upto_seq),
            )
            connection.execute(
                "DELETE FROM updates WHERE board_id = ? AND seq <= ?", (board_id, upto_seq)
            )
            return "written"

        outcome = await self._run(lambda c: _in_transaction(c, write))
        if outcome == "written":
            await thin_history(self, board_id, self._history, now)
        return outcome != "refused"

    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board, oldest first."""

        def read(connection: sqlite3.Connection) -> list[Version]:
            snapshots = connection.execute(
                f"SELECT seq, at FROM ({_ALL_SNAPSHOTS})", (board_id,)
            ).fetchall()
            updates = connection.execute(
                f"SELECT seq, at FROM ({_ALL_UPDATES})", (board_id,)
            ).fetchall()
            return [Version(int(seq), float(at), "snapshot") for seq, at in snapshots] + [
                Version(int(seq), float(at), "update") for seq, at in updates
            ]

        return sorted_versions(await self._run(lambda c: _in_transaction(c, read, begin="BEGIN")))

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and updates that rebuild the board as it was at ``at``."""

        def read(connection: sqlite3.Connection) -> StoredBoard:
            newest = connection.execute(
                f"SELECT seq, state FROM ({_ALL_SNAPSHOTS}) WHERE at <= ?2"
                " ORDER BY seq DESC LIMIT 1",
                (board_id, at),
            ).fetchone()
            base = (int(newest[0]), bytes(newest[1])) if newest is not None else None
            rows = connection.execute(
                f'SELECT seq, "update", at FROM ({_ALL_UPDATES}) WHERE seq > ?2 AND at <= ?3'
                " ORDER BY seq",
                (board_id, base[0] if base else 0, at),
            ).fetchall()
            entries = [LogEntry(int(seq), bytes(update), float(t)) for seq, update, t in rows]
            rebuilt = rebuild_at(board_id, base, entries)
            if rebuilt is not None:
                return rebuilt
            oldest = connection.execute(
                f"SELECT seq, at, 'snapshot' FROM ({_ALL_SNAPSHOTS})"
                f" UNION ALL SELECT seq, at, 'update' FROM ({_ALL_UPDATES})"
                " ORDER BY 2, 1, 3 DESC LIMIT 1",
                (board_id,),
            ).fetchone()
            first = connection.execute(
                f"SELECT 1 FROM ({_ALL_UPDATES}) WHERE seq = 1", (board_id,)
            ).fetchone()
            return empty_or_unavailable(
                board_id,
                at,
                self._history,
                oldest=None
                if oldest is None
                else Version(
                    int(oldest[0]),
                    float(oldest[1]),
                    "snapshot" if oldest[2] == "snapshot" else "update",
                ),
                first_update_retained=first is not None,
            )

        return await self._run(lambda c: _in_transaction(c, read, begin="BEGIN"))

    # -- history thinning (persistence.store.HistoryStorage) ------------------------

    async def thinning_inputs(self, board_id: str, since: float, limit: int) -> ThinningInputs:
        """The board's snapshots and its retained updates older than ``since``."""

        def read(connection: sqlite3.Connection) -> ThinningInputs:
            current = connection.execute(
                "SELECT seq, at FROM snapshots WHERE board_id = ?", (board_id,)
            ).fetchone()
            past = connection.execute(
                "SELECT seq, at FROM snapshot_history WHERE board_id = ?", (board_id,)
            ).fetchall()
            aged = connection.execute(
                "SELECT seq, at FROM update_history WHERE board_id = ? AND at < ?"
                " ORDER BY seq LIMIT ?",
                (board_id, since, limit + 1),
            ).fetchall()
            newer = connection.execute(
                "SELECT MIN(seq) FROM update_history WHERE board_id = ? AND at >= ?",
                (board_id, since),
            ).fetchone()[0]
            return ThinningInputs(
                (int(current[0]), float(current[1])) if current is not None else None,
                [(int(seq), float(t)) for seq, t in past],
                [(int(seq), float(t)) for seq, t in aged[:limit]],
                len(aged) > limit,
                int(newer) if newer is not None else None,
            )

        return await self._run(lambda c: _in_transaction(c, read, begin="BEGIN"))

    async def materialise_inputs(
        self, board_id: str, seq: int
    ) -> tuple[bytes | None, list[bytes]] | None:
        """The newest snapshot at or below ``seq`` and the retained updates after it."""

        def read(connection: sqlite3.Connection) -> tuple[bytes | None, list[bytes]] | None:
            newest = connection.execute(
                f"SELECT seq, state FROM ({_ALL_SNAPSHOTS}) WHERE seq <= ?2"
                " ORDER BY seq DESC LIMIT 1",
                (board_id, seq),
            ).fetchone()
            after = int(newest[0]) if newest is not None else 0
            rows = connection.execute(
                f'SELECT DISTINCT seq, "update" FROM ({_ALL_UPDATES})'
                " WHERE seq > ?2 AND seq <= ?3 ORDER BY seq",
                (board_id, after, seq),
            ).fetchall()
            if [int(row[0]) for row in rows] != list(range(after + 1, seq + 1)):
                return None
            return (bytes(newest[1]) if newest is not None else None), [bytes(r[1]) for r in rows]

        return await self._run(lambda c: _in_transaction(c, read, begin="BEGIN"))

    async def add_history_snapshot(self, board_id: str, seq: int, at: float, state: bytes) -> None:
        """Keep a materialised version, unless the board is gone or has one at ``seq``."""
        await self._run(
            lambda c: _in_transaction(
                c,
                lambda c: c.execute(
                    "INSERT OR IGNORE INTO snapshot_history (board_id, seq, at, state)"
                    " SELECT ?1, ?2, ?3, ?4 WHERE EXISTS"
                    " (SELECT 1 FROM snapshots WHERE board_id = ?1 AND seq != ?2)",
                    (board_id, seq, at, state),
                ),
            )
        )

    async def drop_history(self, board_id: str, thinning: Thinning) -> None:
        """Delete what ``thinning`` names, in one transaction."""

        def write(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "DELETE FROM snapshot_history WHERE board_id = ? AND seq = ?",
                [(board_id, seq) for seq in thinning.drop_snapshots],
            )
            connection.execute(
                "DELETE FROM update_history WHERE board_id = ? AND seq <= ?",
                (board_id, thinning.drop_updates_upto),
            )
            # Only compacted seqs are this low: the live log lies above the snapshot.
            connection.execute(
                "DELETE FROM update_meta WHERE board_id = ? AND seq <= ?",
                (board_id, thinning.drop_updates_upto),
            )

        await self._run(lambda c: _in_transaction(c, write))

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""

        def read(connection: sqlite3.Connection) -> list[str]:
            rows = connection.execute(
                "SELECT board_id FROM snapshots UNION SELECT board_id FROM updates ORDER BY 1"
            ).fetchall()
            return [str(row[0]) for row in rows]

        return await self._run(read)

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log and history in one transaction."""

        def write(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM updates WHERE board_id = ?", (board_id,))
            connection.execute("DELETE FROM snapshots WHERE board_id = ?", (board_id,))
            connection.execute("DELETE FROM snapshot_history WHERE board_id = ?", (board_id,))
            connection.execute("DELETE FROM update_history WHERE board_id = ?", (board_id,))
            connection.execute("DELETE FROM update_meta WHERE board_id = ?", (board_id,))

        await self._run(lambda c: _in_transaction(c, write))

    @property
    def location(self) -> str:
        """The database file's absolute path."""
        return os.path.abspath(self.path)

    async def exists(self) -> bool:
        """Whether the database file is there (the first write creates it)."""
        return self._connection is not None or os.path.exists(self.path)

    async def close(self) -> None:
        """Close the connection after the calls already queued; further calls raise RuntimeError."""
        if self._closed:
            return
        self._closed = True

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close_connection)
        finally:
            self._executor.shutdown(wait=False)


def _create_schema(connection: sqlite3.Connection) -> None:
    for sql in _SCHEMA:
        connection.execute(sql)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(snapshots)")}
    if "vector" not in columns:
        # Files written before snapshots kept their state vector: theirs stay NULL (the
        # board is built at load) until the board's next snapshot.
        connection.execute("ALTER TABLE snapshots ADD COLUMN vector BLOB")


def _in_transaction(
    connection: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], T],
    *,
    begin: str = "BEGIN IMMEDIATE",
) -> T:
    """Run ``work`` in one transaction, rolled back if anything in it fails."""
    # IMMEDIATE takes the write lock before reading the next seq, so no other process can
    # assign the same seq between our read and our insert.
    connection.execute(begin)
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result
