"""What the SQLite files of Boardcast (the embedded store, the read model, the small stores
beside them) share."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def enable_wal(connection: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch the file to WAL mode; return the journal mode it is in.

    Switching a fresh file to WAL takes a lock that SQLite does not wait for with the
    busy handler, so a second process opening the file at the same moment retries here,
    for at most ``busy_timeout`` seconds.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class SerialFile:
    """One SQLite file that one process writes through one connection, a transaction at a
    time, off the event loop: what the small stores beside the board store (webhooks,
    notifications, e-mail) share.

    The file is opened on first use, in WAL mode with ``synchronous=FULL`` (a committed
    transaction survives a power cut), and ``schema`` is run then. :meth:`run` runs ``work``
    in a worker thread inside ``BEGIN IMMEDIATE`` (``BEGIN`` for a read) and commits, or
    rolls back if it raises; the lock keeps one transaction at a time on the connection.
    Other processes may open the same file: SQLite's own locks (waited on for up to
    ``busy_timeout`` seconds) order their writes.
    """

    def __init__(self, path: str, schema: str, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._schema = schema
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            db = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            enable_wal(db, self._busy_timeout)
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(self._schema)
            self._db = db
        return self._db

    async def run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction, in a thread; its result."""

        def locked() -> T:
            with self._lock:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        """Close the connection (the next :meth:`run` opens it again)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
