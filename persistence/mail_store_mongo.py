"""Mail preferences, jobs and the e-mail worker's cursor in MongoDB (``mail_*`` collections).

Writes are journaled (``j: true``). Adding notifications to an open job and claiming a due
one are each one atomic ``find_one_and_update`` on the server, so a notification never
joins a job that a loop is sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from persistence.mail_store import MAX_NOTIFICATIONS_PER_JOB, STATUSES, MailJob, Preferences

Document = dict[str, Any]
DEFAULT_DATABASE = "boardcast"


class MongoMailStore:
    """The mail store on MongoDB (see the module docstring)."""

    def __init__(self, url: str, *, timeout_seconds: float = 10.0) -> None:
        milliseconds = int(timeout_seconds * 1000)
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            connect=False,
            serverSelectionTimeoutMS=milliseconds,
            connectTimeoutMS=milliseconds,
            socketTimeoutMS=milliseconds,
        )
        database = self._client.get_default_database(DEFAULT_DATABASE).with_options(
            write_concern=WriteConcern(j=True)
        )
        self._preferences: AsyncCollection[Document] = database["mail_preferences"]
        self._jobs: AsyncCollection[Document] = database["mail_jobs"]
        self._cursors: AsyncCollection[Document] = database["mail_cursor"]
        self._indexed = False

    async def _ready(self) -> None:
        if self._indexed:
            return
        await self._jobs.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self._jobs.create_index(
            [("status", ASCENDING), ("updated_at", DESCENDING), ("_id", DESCENDING)]
        )
        self._indexed = True

    @staticmethod
    def _job_doc(job: MailJob) -> Document:
        doc = job.to_dict()
        doc["_id"] = job.id
        doc["claimed_until"] = None
        return doc

    # -- preferences -----------------------------------------------------------------------

    async def get_preferences(self, user: str) -> Preferences | None:
        """A person's stored preferences, or None."""
        doc = await self._preferences.find_one({"_id": str(user)})
        return Preferences.from_json(str(user), doc["doc"]) if doc else None

    async def preferences_for(self, users: Sequence[str]) -> dict[str, Preferences]:
        """The stored preferences of these people."""
        wanted = sorted({str(user) for user in users})
        if not wanted:
            return {}
        cursor = self._preferences.find({"_id": {"$in": wanted}})
        return {doc["_id"]: Preferences.from_json(doc["_id"], doc["doc"]) async for doc in cursor}

    async def save_preferences(self, preferences: Preferences) -> None:
        """Store them, replacing any."""
        await self._preferences.replace_one(
            {"_id": preferences.user},
            {"_id": preferences.user, "doc": preferences.to_json()},
            upsert=True,
        )

    # -- jobs ------------------------------------------------------------------------------

    async def merge_jobs(self, jobs: Sequence[MailJob], *, now: float) -> list[str]:
        """Record the jobs or add to the open ones; the ids of those that were closed."""
        await self._ready()
        closed: list[str] = []
        for job in jobs:
            try:
                await self._jobs.insert_one(self._job_doc(job))
                continue
            except DuplicateKeyError:
                pass
            ids = list(dict.fromkeys(job.notification_ids))
            open_job = {
                "_id": job.id,
                "status": "pending",
                "$or": [{"claimed_until": None}, {"claimed_until": {"$lte": now}}],
            }
            # Already all there: nothing to add (a re-read after a crash).
            if await self._jobs.find_one({**open_job, "notification_ids": {"$all": ids}}):
                continue
            added = await self._jobs.find_one_and_update(
                {
                    **open_job,
                    f"notification_ids.{MAX_NOTIFICATIONS_PER_JOB - len(ids)}": {"$exists": False},
                },
                {"$addToSet": {"notification_ids": {"$each": ids}}},
            )
            if added is None:
                closed.append(job.id)
        return closed

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[MailJob]:
        """Take due pending jobs, each claimed for ``lease``."""
        claimed: list[MailJob] = []
        for _ in range(limit):
            doc = await self._jobs.find_one_and_update(
                {"status": "pending", "next_attempt_at": {"$lte": now}},
                {"$set": {"next_attempt_at": now + lease, "claimed_until": now + lease}},
                sort=[("next_attempt_at", ASCENDING), ("_id", ASCENDING)],
                return_document=ReturnDocument.BEFORE,
            )
            if doc is None:
                break
            claimed.append(MailJob.from_dict(doc))
        return claimed

    async def save_jobs(self, jobs: Sequence[MailJob]) -> None:
        """Replace the jobs (their notification ids as stored), releasing their claims."""
        if not jobs:
            return
        updates = []
        for job in jobs:
            fields = self._job_doc(job)
            for kept in ("_id", "id", "notification_ids", "created_at", "user", "kind"):
                fields.pop(kept)
            updates.append(UpdateOne({"_id": job.id}, {"$set": fields}))
        await self._jobs.bulk_write(updates, ordered=False)

    async def get_job(self, job_id: str) -> MailJob | None:
        """One job, or None."""
        doc = await self._jobs.find_one({"_id": str(job_id)})
        return MailJob.from_dict(doc) if doc else None

    async def list_jobs(
        self, status: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[MailJob]:
        """Jobs of one status, most recently updated first."""
        query: Document = {"status": str(status)}
        if before is not None:
            at, last = float(before[0]), str(before[1])
            query["$or"] = [{"updated_at": {"$lt": at}}, {"updated_at": at, "_id": {"$lt": last}}]
        cursor = (
            self._jobs.find(query)
            .sort([("updated_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit)
        )
        return [MailJob.from_dict(doc) async for doc in cursor]

    async def retry_job(self, job_id: str, *, now: float) -> MailJob | None:
        """A dead job pending again, due now."""
        doc = await self._jobs.find_one_and_update(
            {"_id": str(job_id), "status": "dead"},
            {
                "$set": {
                    "status": "pending",
                    "next_attempt_at": now,
                    "attempts_made": 0,
                    "updated_at": now,
                    "claimed_until": None,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        return MailJob.from_dict(doc) if doc else None

    async def counts(self) -> dict[str, int]:
        """Jobs per status."""
        found = {status: 0 for status in STATUSES}
        async for row in await self._jobs.aggregate(
            [{"$group": {"_id": "$status", "count": {"$sum": 1}}}]
        ):
            found[str(row["_id"])] = int(row["count"])
        return found

    # -- cursor ----------------------------------------------------------------------------

    async def cursor(self) -> int:
        """The e-mail worker's cursor."""
        doc = await self._cursors.find_one({"_id": "mail"})
        return int(doc["seq"]) if doc else 0

    async def set_cursor(self, seq: int) -> None:
        """Move the cursor forward."""
        await self._cursors.update_one({"_id": "mail"}, {"$max": {"seq": int(seq)}}, upsert=True)

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()
