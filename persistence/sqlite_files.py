"""What the SQLite files of Boardcast (the embedded store, the read model) share."""

from __future__ import annotations

import sqlite3
import time


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
