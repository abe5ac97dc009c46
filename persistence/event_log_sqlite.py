"""The embedded event log: one SQLite file in WAL mode beside the board store.

Offsets are SQLite row ids (``INTEGER PRIMARY KEY AUTOINCREMENT``), assigned inside the write
transaction, which takes the file's one write lock up front (``BEGIN IMMEDIATE``): writers
from several processes of one machine append one after another, so an offset is visible only
once every lower one is, and a reader never skips one that commits later. ``AUTOINCREMENT``
never hands out an offset again, even after retention removed the newest rows' neighbours.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from persistence.event_log import DataCodec, LoggedEvent, NewEvent, PlainCodec, Retention
from persistence.sqlite_files import enable_wal

T = TypeVar("T")

#: The log's file, beside the store's.
EVENT_LOG_FILENAME = "events.sqlite3"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        offset INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        board_id TEXT NOT NULL,
        project TEXT NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        actor TEXT,
        at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS consumers (
        name TEXT PRIMARY KEY,
        offset INTEGER NOT NULL
    )""",
)


class SqliteEventLog:
    """The event log in one SQLite file, safe to share between the processes of one machine.

    Args:
        path: the database file; its directory is created if missing.
        codec: how ``data`` is stored (sealed when encryption at rest is on).
        busy_timeout: seconds to wait for another process's write lock.
        clock: the source of ``at``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: DataCodec | None = None,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self._codec = codec or PlainCodec()
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._connection: sqlite3.Connection | None = None
        # sqlite3 blocks: every statement runs on the one thread that owns the connection.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="boardcast-events")
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the event log is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._connect()
        return work(self._connection)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            if enable_wal(connection, self._busy_timeout) != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode")
            connection.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        return connection

    async def append(self, events: Sequence[NewEvent]) -> int:
        """See :meth:`EventLog.append`."""
        rows = [
            (e.id, e.board_id, e.project, e.type, self._codec.encode(e), e.actor) for e in events
        ]

        def write(connection: sqlite3.Connection) -> int:
            at = self._clock()
            connection.execute("BEGIN IMMEDIATE")
            try:
                last = 0
                for row in rows:
                    # Looked up first: a refused insert would still use up an offset.
                    found = connection.execute(
                        "SELECT offset FROM events WHERE id = ?", (row[0],)
                    ).fetchone()
                    if found is not None:
                        last = int(found[0])
                        continue
                    cursor = connection.execute(
                        "INSERT INTO events (id, board_id, project, type, data, actor, at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*row, at),
                    )
                    last = int(cursor.lastrowid or 0)
                if not rows:
                    last = _last_offset(connection)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return last

        return await self._run(write)

    async def read(self, after: int, limit: int) -> list[LoggedEvent]:
        """See :meth:`EventLog.read`."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT offset, id, board_id, project, type, data, actor, at FROM events"
                " WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, max(0, limit)),
            ).fetchall()
        )
        return [
            LoggedEvent(
                int(offset),
                event_id,
                board_id,
                project,
                kind,
                self._codec.decode(bytes(data), board_id, event_id),
                actor,
                float(at),
            )
            for offset, event_id, board_id, project, kind, data, actor, at in rows
        ]

    async def last_offset(self) -> int:
        """See :meth:`EventLog.last_offset`."""
        return await self._run(_last_offset)

    async def first_offset(self) -> int:
        """See :meth:`ManagedEventLog.first_offset`."""
        row = await self._run(lambda c: c.execute("SELECT MIN(offset) FROM events").fetchone())
        return int(row[0] or 0)

    async def committed(self, consumer: str) -> int:
        """See :meth:`EventLog.committed`."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT offset FROM consumers WHERE name = ?", (consumer,)
            ).fetchone()
        )
        return int(row[0]) if row else 0

    async def commit(self, consumer: str, offset: int) -> None:
        """See :meth:`EventLog.commit`."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO consumers (name, offset) VALUES (?1, ?2) ON CONFLICT (name)"
                " DO UPDATE SET offset = MAX(offset, ?2)",
                (consumer, offset),
            )
        )

    async def rewind(self, consumer: str, offset: int) -> None:
        """See :meth:`ManagedEventLog.rewind`."""
        await self._run(
            lambda c: c.execute(
                "INSERT INTO consumers (name, offset) VALUES (?1, ?2) ON CONFLICT (name)"
                " DO UPDATE SET offset = ?2",
                (consumer, offset),
            )
        )

    async def consumers(self) -> dict[str, int]:
        """See :meth:`ManagedEventLog.consumers`."""
        rows = await self._run(lambda c: c.execute("SELECT name, offset FROM consumers").fetchall())
        return {str(name): int(offset) for name, offset in rows}

    async def trim(self, retention: Retention, *, now: float) -> int:
        """See :meth:`ManagedEventLog.trim`."""

        def delete(connection: sqlite3.Connection) -> int:
            floor = connection.execute("SELECT MIN(offset) FROM consumers").fetchone()[0]
            if floor is None:
                return 0
            last = _last_offset(connection)
            cursor = connection.execute(
                "DELETE FROM events WHERE offset <= ? AND offset < ? AND (at < ? OR offset <= ?)",
                (int(floor), last, now - retention.max_age_seconds, last - retention.max_count),
            )
            return int(cursor.rowcount)

        return await self._run(delete)

    async def close(self) -> None:
        """See :meth:`ManagedEventLog.close`."""
        if self._closed:
            return

        def shut(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            await self._run(shut)
            self._connection = None
        self._closed = True
        self._executor.shutdown(wait=False)


def _last_offset(connection: sqlite3.Connection) -> int:
    # The sequence counts offsets even when retention emptied the table.
    row = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0
