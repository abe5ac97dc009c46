"""The record of every attachment and every version: who uploaded what, and its scan state.

This is the authority on whether a version may be downloaded (only ``clean`` ones), and
the scan queue: a version waiting for its scan is a row in ``pending`` or ``error``, so a
restarted gateway finds every scan that was not finished and runs it. Scans are claimed
with a lease, so gateways sharing the file never scan one version at the same time for
long. It lives in SQLite beside the boards (``<data_dir>/attachments.sqlite3``); the task
on the board shows a copy of each attachment's state for the people looking at it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from persistence.files import UNSCANNED, FileRefused, FileState, attachment_id, new_upload_id
from persistence.sqlite_files import SerialFile

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attachments (
    id TEXT PRIMARY KEY,
    board_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_by TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_by_task ON attachments (board_id, task_id);
CREATE TABLE IF NOT EXISTS versions (
    attachment_id TEXT NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    upload_id TEXT NOT NULL,
    version TEXT,                 -- the store's version id, once the upload is complete
    size INTEGER NOT NULL,        -- the size the uploader declared (and the URL allows)
    content_type TEXT NOT NULL,
    state TEXT NOT NULL,
    uploaded_by TEXT,
    created_at REAL NOT NULL,
    completed_at REAL,
    scanned_at REAL,
    scan_attempts INTEGER NOT NULL DEFAULT 0,
    next_scan_at REAL,
    lease_until REAL,
    finding TEXT,                 -- the signature clamd found, or why the scan failed
    PRIMARY KEY (attachment_id, upload_id)
);
CREATE INDEX IF NOT EXISTS versions_to_scan ON versions (state, next_scan_at);
"""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One upload of an attachment and what became of it."""

    attachment_id: str
    upload_id: str
    version: str | None
    size: int
    content_type: str
    state: FileState
    uploaded_by: str | None
    created_at: float
    completed_at: float | None
    scanned_at: float | None
    scan_attempts: int
    finding: str | None

    def to_json(self) -> dict[str, Any]:
        """The version as the REST API shows it."""
        return {
            "upload_id": self.upload_id,
            "version": self.version,
            "size": self.size,
            "content_type": self.content_type,
            "state": self.state.value,
            "uploaded_by": self.uploaded_by,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "scanned_at": self.scanned_at,
            "scan_attempts": self.scan_attempts,
        }


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """An attachment: a name on a task, and its versions (oldest first)."""

    id: str
    board_id: str
    task_id: str
    name: str
    created_by: str | None
    created_at: float
    versions: tuple[VersionRecord, ...] = field(default=())

    @property
    def current(self) -> VersionRecord | None:
        """The newest completed version: the one a download serves."""
        done = [v for v in self.versions if v.completed_at is not None]
        return max(done, key=lambda v: v.completed_at or 0.0) if done else None

    @property
    def state(self) -> FileState:
        """The current version's state (``uploading`` until one is complete)."""
        current = self.current
        return current.state if current is not None else FileState.UPLOADING

    def to_json(self) -> dict[str, Any]:
        """The attachment as the REST API shows it (without URLs)."""
        current = self.current
        return {
            "id": self.id,
            "board_id": self.board_id,
            "task_id": self.task_id,
            "name": self.name,
            "state": self.state.value,
            "size": current.size if current is not None else None,
            "content_type": current.content_type if current is not None else None,
            "version": current.version if current is not None else None,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "versions": len([v for v in self.versions if v.completed_at is not None]),
        }


@dataclass(frozen=True, slots=True)
class ScanJob:
    """A version the scanner has claimed."""

    attachment_id: str
    upload_id: str
    version: str
    board_id: str
    task_id: str
    attempts: int


class AttachmentIndex:
    """Attachments and versions in one SQLite file; every call runs in a thread."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        # Foreign keys are a per-connection setting: the schema script turns them on.
        self._file = SerialFile(
            str(path), "PRAGMA foreign_keys = ON;\n" + _SCHEMA, busy_timeout=busy_timeout
        )

    async def _run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(function)

    async def close(self) -> None:
        """Close the file (after any call in flight: closing under one could crash)."""
        await asyncio.to_thread(self._file.close)

    async def begin_upload(
        self,
        *,
        board_id: str,
        task_id: str,
        name: str,
        content_type: str,
        size: int,
        by: str | None,
        now: float,
        max_per_task: int,
        upload_expired_before: float,
    ) -> tuple[str, str]:
        """Record a new upload of ``name`` on the task; its (attachment id, upload id).

        A name the task already has gets a new version; a new name counts against
        ``max_per_task``. Uploads whose URL expired before they arrived are forgotten.
        """
        found_id = attachment_id(board_id, task_id, name)
        upload = new_upload_id()

        def begin(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM versions WHERE state = ? AND created_at < ?",
                (FileState.UPLOADING.value, upload_expired_before),
            )
            exists = db.execute("SELECT 1 FROM attachments WHERE id = ?", (found_id,)).fetchone()
            if exists is None:
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM attachments WHERE board_id = ? AND task_id = ?",
                    (board_id, task_id),
                ).fetchone()
                if count >= max_per_task:
                    raise FileRefused(
                        "too-many-attachments", f"a task may hold {max_per_task} attachments"
                    )
                db.execute(
                    "INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (found_id, board_id, task_id, name, content_type, by, now),
                )
            db.execute(
                "INSERT INTO versions (attachment_id, upload_id, size, content_type, state,"
                " uploaded_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (found_id, upload, size, content_type, FileState.UPLOADING.value, by, now),
            )

        await self._run(begin)
        return found_id, upload

    async def upload_state(self, attachment: str, upload: str) -> VersionRecord | None:
        """One version, by its upload id."""

        def read(db: sqlite3.Connection) -> VersionRecord | None:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions"
                " WHERE attachment_id = ? AND upload_id = ?",
                (attachment, upload),
            ).fetchone()
            return _version(row) if row is not None else None

        return await self._run(read)

    async def complete(
        self, attachment: str, upload: str, *, version: str, now: float
    ) -> VersionRecord:
        """The upload arrived as store version ``version``: it now waits for its scan."""

        def complete(db: sqlite3.Connection) -> VersionRecord:
            row = db.execute(
                f"SELECT {_VERSION_COLUMNS} FROM versions"
                " WHERE attachment_id = ? AND upload_id = ?",
                (attachment, upload),
            ).fetchone()
            if row is None:
                raise FileRefused("not-found", "no such upload (or it expired before it arrived)")
            found = _version(row)
            if found.state is not FileState.UPLOADING:
                return found  # completed before: a retry changes nothing
            db.execute(
                "UPDATE versions SET state = ?, version = ?, completed_at = ?, next_scan_at = ?"
                " WHERE attachment_id = ? AND upload_id = ?",
                (FileState.PENDING.value, version, now, now, attachment, upload),
            )
            return _version(
                db.execute(
                    f"SELECT {_VERSION_COLUMNS} FROM versions"
                    " WHERE attachment_id = ? AND upload_id = ?",
                    (attachment, upload),
                ).fetchone()
            )

        return await self._run(complete)

    async def drop_upload(self, attachment: str, upload: str) -> None:
        """Forget an upload that will never complete (its bytes were refused)."""
        await self._run(
            lambda db: db.execute(
                "DELETE FROM versions WHERE attachment_id = ? AND upload_id = ? AND state = ?",
                (attachment, upload, FileState.UPLOADING.value),
            )
        )

    async def get(self, attachment: str) -> AttachmentRecord | None:
        """An attachment with its versions."""
        return await self._run(lambda db: _attachment(db, attachment))

    async def of_task(self, board_id: str, task_id: str) -> list[AttachmentRecord]:
        """The task's attachments, oldest first."""

        def read(db: sqlite3.Connection) -> list[AttachmentRecord]:
            ids = db.execute(
                "SELECT id FROM attachments WHERE board_id = ? AND task_id = ?"
                " ORDER BY created_at, id",
                (board_id, task_id),
            ).fetchall()
            found = [_attachment(db, row[0]) for row in ids]
            return [record for record in found if record is not None]

        return await self._run(read)

    async def delete(self, attachment: str) -> None:
        """Forget the attachment and its versions."""
        await self._run(
            lambda db: db.execute("DELETE FROM attachments WHERE id = ?", (attachment,))
        )

    async def claim_scans(self, *, now: float, lease_seconds: float, limit: int) -> list[ScanJob]:
        """Up to ``limit`` versions due for a scan, leased to this caller for a while."""
        states = tuple(state.value for state in UNSCANNED)

        def claim(db: sqlite3.Connection) -> list[ScanJob]:
            rows = db.execute(
                "SELECT v.attachment_id, v.upload_id, v.version, a.board_id, a.task_id,"
                " v.scan_attempts FROM versions v JOIN attachments a ON a.id = v.attachment_id"
                " WHERE v.state IN (?, ?) AND v.next_scan_at <= ?"
                " AND (v.lease_until IS NULL OR v.lease_until < ?)"
                " ORDER BY v.next_scan_at LIMIT ?",
                (*states, now, now, limit),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE versions SET lease_until = ? WHERE attachment_id = ? AND upload_id = ?",
                    (now + lease_seconds, row[0], row[1]),
                )
            return [ScanJob(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

        return await self._run(claim)

    async def finish_scan(
        self,
        job: ScanJob,
        *,
        state: FileState,
        finding: str | None,
        now: float,
        retry_at: float | None = None,
    ) -> None:
        """Record a scan's outcome; an ``error`` is tried again at ``retry_at``."""
        await self._run(
            lambda db: db.execute(
                "UPDATE versions SET state = ?, finding = ?, scanned_at = ?,"
                " scan_attempts = scan_attempts + 1, next_scan_at = ?, lease_until = NULL"
                " WHERE attachment_id = ? AND upload_id = ? AND state IN (?, ?)",
                (
                    state.value,
                    finding,
                    now,
                    retry_at,
                    job.attachment_id,
                    job.upload_id,
                    *(s.value for s in UNSCANNED),
                ),
            )
        )

    async def retry_now(self, now: float) -> None:
        """Make every waiting scan due (at start: a restart retries failed scans at once)."""
        states = tuple(state.value for state in UNSCANNED)
        await self._run(
            lambda db: db.execute(
                "UPDATE versions SET next_scan_at = ? WHERE state IN (?, ?) AND next_scan_at > ?",
                (now, *states, now),
            )
        )

    async def next_scan_at(self) -> float | None:
        """When the soonest waiting scan is due (None: nothing waits)."""
        states = tuple(state.value for state in UNSCANNED)
        row = await self._run(
            lambda db: db.execute(
                "SELECT MIN(next_scan_at) FROM versions WHERE state IN (?, ?)", states
            ).fetchone()
        )
        return float(row[0]) if row is not None and row[0] is not None else None


_VERSION_COLUMNS = (
    "attachment_id, upload_id, version, size, content_type, state, uploaded_by, created_at,"
    " completed_at, scanned_at, scan_attempts, finding"
)


def _version(row: Any) -> VersionRecord:
    return VersionRecord(row[0], row[1], row[2], row[3], row[4], FileState(row[5]), *row[6:12])


def _attachment(db: sqlite3.Connection, attachment: str) -> AttachmentRecord | None:
    row = db.execute(
        "SELECT id, board_id, task_id, name, created_by, created_at FROM attachments WHERE id = ?",
        (attachment,),
    ).fetchone()
    if row is None:
        return None
    versions = db.execute(
        f"SELECT {_VERSION_COLUMNS} FROM versions WHERE attachment_id = ?"
        " ORDER BY created_at, upload_id",
        (attachment,),
    ).fetchall()
    return AttachmentRecord(
        row[0], row[1], row[2], row[3], row[4], row[5], tuple(_version(v) for v in versions)
    )
