"""Mail preferences, jobs and the e-mail worker's cursor in SQLite: ``mail.sqlite3``.

The file lies beside the board store's. WAL with ``synchronous=FULL``: a job recorded is on
disk before the cursor moves past its notification. Calls run in a thread, one at a time per
process, each in one ``BEGIN IMMEDIATE`` transaction, so several processes may share the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from persistence.mail_store import (
    MAX_NOTIFICATIONS_PER_JOB,
    STATUSES,
    MailJob,
    Preferences,
)
from persistence.sqlite_files import SerialFile

FILENAME = "mail.sqlite3"

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mail_preferences (user TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mail_jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, next_attempt_at REAL, claimed_until REAL,
    updated_at REAL NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_jobs_due ON mail_jobs (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS mail_jobs_listed ON mail_jobs (status, updated_at, id);
CREATE TABLE IF NOT EXISTS mail_cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


def merged_ids(stored: Sequence[str], new: Sequence[str]) -> tuple[str, ...] | None:
    """The stored ids with the new ones after them, or None if that is over the bound."""
    ids = list(stored)
    ids += [n for n in dict.fromkeys(new) if n not in set(stored)]
    return tuple(ids) if len(ids) <= MAX_NOTIFICATIONS_PER_JOB else None


class SqliteMailStore:
    """The embedded mail store (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = SerialFile(path, _SCHEMA)

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._file.run(work)

    # -- preferences -----------------------------------------------------------------------

    async def get_preferences(self, user: str) -> Preferences | None:
        """A person's stored preferences, or None."""
        found = await self.preferences_for([user])
        return found.get(user)

    async def preferences_for(self, users: Sequence[str]) -> dict[str, Preferences]:
        """The stored preferences of these people."""
        wanted = sorted(set(users))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT user, doc FROM mail_preferences WHERE user IN ({marks})", wanted
            ).fetchall()
        )
        return {user: Preferences.from_json(user, json.loads(doc)) for user, doc in rows}

    async def save_preferences(self, preferences: Preferences) -> None:
        """Store them, replacing any."""
        doc = json.dumps(preferences.to_json())
        await self._run(
            lambda db: db.execute(
                "INSERT INTO mail_preferences (user, doc) VALUES (?, ?)"
                " ON CONFLICT (user) DO UPDATE SET doc = excluded.doc",
                (preferences.user, doc),
            )
        )

    # -- jobs ------------------------------------------------------------------------------

    async def merge_jobs(self, jobs: Sequence[MailJob], *, now: float) -> list[str]:
        """Record the jobs or add to the open ones; the ids of those that were closed."""

        def merge(db: sqlite3.Connection) -> list[str]:
            closed: list[str] = []
            for job in jobs:
                rows = db.execute(
                    "SELECT status, claimed_until, doc FROM mail_jobs WHERE id = ?", (job.id,)
                ).fetchall()
                if not rows:
                    _insert(db, job)
                    continue
                status, claimed_until, doc = rows[0]
                if status != "pending" or (claimed_until is not None and claimed_until > now):
                    closed.append(job.id)
                    continue
                stored = MailJob.from_dict(json.loads(doc))
                ids = merged_ids(stored.notification_ids, job.notification_ids)
                if ids is None:
                    closed.append(job.id)
                elif ids != stored.notification_ids:
                    db.execute(
                        "UPDATE mail_jobs SET doc = ? WHERE id = ?",
                        (json.dumps(stored.replace(notification_ids=ids).to_dict()), job.id),
                    )
            return closed

        return await self._run(merge) if jobs else []

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[MailJob]:
        """Take due pending jobs, each claimed for ``lease``."""

        def claim(db: sqlite3.Connection) -> list[str]:
            found = db.execute(
                "UPDATE mail_jobs SET next_attempt_at = ?, claimed_until = ? WHERE id IN ("
                " SELECT id FROM mail_jobs WHERE status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at, id LIMIT ?) RETURNING doc",
                (now + lease, now + lease, now, limit),
            ).fetchall()
            return [doc for (doc,) in found]

        docs = await self._run(claim)
        claimed = [MailJob.from_dict(json.loads(doc)) for doc in docs]
        return sorted(claimed, key=lambda job: (job.next_attempt_at or 0.0, job.id))

    async def save_jobs(self, jobs: Sequence[MailJob]) -> None:
        """Replace the jobs, releasing their claims, in one transaction."""
        rows = [
            (job.status, job.next_attempt_at, job.updated_at, json.dumps(job.to_dict()), job.id)
            for job in jobs
        ]
        if rows:
            await self._run(
                lambda db: db.executemany(
                    # The notification ids stay as stored: the claim kept others from adding.
                    "UPDATE mail_jobs SET status = ?, next_attempt_at = ?, claimed_until = NULL,"
                    " updated_at = ?, doc = json_set(?, '$.notification_ids',"
                    " json_extract(doc, '$.notification_ids')) WHERE id = ?",
                    rows,
                )
            )

    async def get_job(self, job_id: str) -> MailJob | None:
        """One job, or None."""
        rows = await self._run(
            lambda db: db.execute("SELECT doc FROM mail_jobs WHERE id = ?", (job_id,)).fetchall()
        )
        return MailJob.from_dict(json.loads(rows[0][0])) if rows else None

    async def list_jobs(
        self, status: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[MailJob]:
        """Jobs of one status, most recently updated first."""
        at, last = before if before is not None else (float("inf"), "")
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc FROM mail_jobs WHERE status = ?"
                " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
                " ORDER BY updated_at DESC, id DESC LIMIT ?",
                (status, at, at, last, limit),
            ).fetchall()
        )
        return [MailJob.from_dict(json.loads(doc)) for (doc,) in rows]

    async def retry_job(self, job_id: str, *, now: float) -> MailJob | None:
        """A dead job pending again, due now."""

        def retry(db: sqlite3.Connection) -> MailJob | None:
            rows = db.execute(
                "SELECT doc FROM mail_jobs WHERE id = ? AND status = 'dead'", (job_id,)
            ).fetchall()
            if not rows:
                return None
            job = MailJob.from_dict(json.loads(rows[0][0])).replace(
                status="pending", next_attempt_at=now, attempts_made=0, updated_at=now
            )
            db.execute(
                "UPDATE mail_jobs SET status = 'pending', next_attempt_at = ?,"
                " claimed_until = NULL, updated_at = ?, doc = ? WHERE id = ?",
                (now, now, json.dumps(job.to_dict()), job_id),
            )
            return job

        return await self._run(retry)

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT status, COUNT(*) FROM mail_jobs GROUP BY status"
            ).fetchall()
        )
        found = {status: 0 for status in STATUSES}
        found.update({status: int(count) for status, count in rows})
        return found

    # -- cursor ----------------------------------------------------------------------------

    async def cursor(self) -> int:
        """The e-mail worker's cursor."""
        rows = await self._run(
            lambda db: db.execute("SELECT seq FROM mail_cursor WHERE name = 'mail'").fetchall()
        )
        return int(rows[0][0]) if rows else 0

    async def set_cursor(self, seq: int) -> None:
        """Move the cursor forward."""
        await self._run(
            lambda db: db.execute(
                "INSERT INTO mail_cursor (name, seq) VALUES ('mail', ?) ON CONFLICT (name)"
                " DO UPDATE SET seq = MAX(seq, excluded.seq)",
                (int(seq),),
            )
        )

    async def close(self) -> None:
        """Close the connection."""
        self._file.close()


def _insert(db: sqlite3.Connection, job: MailJob) -> None:
    db.execute(
        "INSERT INTO mail_jobs (id, status, next_attempt_at, claimed_until, updated_at, doc)"
        " VALUES (?, ?, ?, NULL, ?, ?)",
        (job.id, job.status, job.next_attempt_at, job.updated_at, json.dumps(job.to_dict())),
    )
