"""Notifications in MongoDB, beside the boards (``notifications`` and ``notification_*``).

The ``seq`` is the document's ``_id``, taken as one more than the highest there, as the event
log takes its offsets (``persistence/event_log_mongo.py``): the unique ``_id`` decides
between writers, and the loser takes the next free seqs again, so seq *n* is only ever
inserted by a writer that saw *n - 1* committed. A server may still let a query see *n + 1*
before *n*, so :meth:`since` returns only the run of seqs with none missing; a gap at or
below what :meth:`trim` removed is passed at once, any other after ``gap_seconds`` with a
warning. The notification id has a unique index too, which makes ``add`` idempotent across
processes. Writes are journaled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from persistence.notification_state import ReminderStage, TaskState
from persistence.notification_store import Notification
from persistence.notification_store_sqlite import (
    notification_document,
    notification_from,
    task_document,
    task_from,
)
from persistence.webhook_store import Sealer

Document = dict[str, Any]
DEFAULT_DATABASE = "boardcast"
_DUPLICATE_KEY = 11000
_log = logging.getLogger(__name__)


class MongoNotificationStore:
    """The notification store on MongoDB (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        sealer: Sealer | None = None,
        timeout_seconds: float = 10.0,
        gap_seconds: float = 10.0,
        max_attempts: int = 1000,
    ) -> None:
        self.url = url
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
        self._notes: AsyncCollection[Document] = database["notifications"]
        self._tasks: AsyncCollection[Document] = database["notification_tasks"]
        self._roles: AsyncCollection[Document] = database["notification_roles"]
        self._meta: AsyncCollection[Document] = database["notification_meta"]
        self._sealer = sealer or Sealer()
        self._gap_seconds = gap_seconds
        self._max_attempts = max_attempts
        self._gaps: dict[int, float] = {}  # first time a read found each missing seq
        self._indexed = False

    async def _ready(self) -> None:
        if self._indexed:
            return
        await self._notes.create_index([("id", ASCENDING)], unique=True)
        await self._notes.create_index([("user", ASCENDING), ("_id", DESCENDING)])
        await self._notes.create_index([("created_at", ASCENDING)])
        await self._tasks.create_index([("due_at", ASCENDING)])
        await self._roles.create_index([("project", ASCENDING), ("role", ASCENDING)])
        self._indexed = True

    def _note(self, doc: Document) -> Notification:
        return notification_from(doc, self._sealer, seq=int(doc["_id"]), read_at=doc.get("read_at"))

    async def add(self, notifications: Sequence[Notification]) -> list[Notification]:
        """See :meth:`NotificationStore.add`."""
        await self._ready()
        firsts: dict[str, Notification] = {}
        for notification in notifications:
            firsts.setdefault(notification.id, notification)
        unique = list(firsts.values())
        if not unique:
            return []
        seqs: dict[str, int] = {}  # the ones this call inserted
        known: set[str] = set()  # and those found there already
        for _attempt in range(self._max_attempts):
            wanted = [n for n in unique if n.id not in seqs and n.id not in known]
            if not wanted:
                break
            async for found in self._notes.find(
                {"id": {"$in": [n.id for n in wanted]}}, {"_id": 1, "id": 1}
            ):
                known.add(str(found["id"]))
            wanted = [n for n in wanted if n.id not in known]
            if not wanted:
                break
            first = await self.last_seq() + 1
            documents = []
            for number, notification in enumerate(wanted):
                doc = notification_document(notification, self._sealer)
                doc.update(_id=first + number, read_at=notification.read_at)
                documents.append(doc)
            try:
                await self._notes.insert_many(documents, ordered=True)
            except BulkWriteError as error:
                # Those before the refused one are in; the rest try again at fresh seqs.
                stopped = _refused_index(error)
                for number, notification in enumerate(wanted[:stopped]):
                    seqs[notification.id] = first + number
                continue
            for number, notification in enumerate(wanted):
                seqs[notification.id] = first + number
        else:
            raise RuntimeError(f"notification add gave up after {self._max_attempts} attempts")
        added = [n.replace(seq=seqs[n.id]) for n in unique if n.id in seqs]
        return sorted(added, key=lambda n: n.seq)

    async def since(self, seq: int, *, limit: int) -> list[Notification]:
        """See :meth:`NotificationStore.since`."""
        if limit <= 0:
            return []
        cursor = self._notes.find({"_id": {"$gt": seq}}).sort("_id", ASCENDING).limit(limit)
        found = [self._note(doc) async for doc in cursor]
        kept: list[Notification] = []
        expected = seq + 1
        trimmed: int | None = None
        for notification in found:
            if notification.seq != expected:
                if trimmed is None:
                    trimmed = await self._trimmed_upto()
                # Trim removes seqs anywhere (a user's old ones): those gaps pass at once.
                if notification.seq - 1 > trimmed and (
                    kept or not self._waited_out(expected, notification.seq)
                ):
                    break
            kept.append(notification)
            expected = notification.seq + 1
        return kept

    async def _trimmed_upto(self) -> int:
        """The highest seq trim has removed (0 if it never did)."""
        found = await self._meta.find_one({"_id": "trimmed"})
        return int(found["upto"]) if found is not None else 0

    def _waited_out(self, missing: int, next_seq: int) -> bool:
        """Whether a read has waited ``gap_seconds`` on ``missing`` and may pass it."""
        now = time.monotonic()
        seen = self._gaps.setdefault(missing, now)
        if len(self._gaps) > 1024:
            self._gaps = {missing: seen}
        if now - seen < self._gap_seconds:
            return False
        _log.warning(
            "notifications: seqs %d to %d missing for %.0f s; passed over",
            missing,
            next_seq - 1,
            now - seen,
        )
        self._gaps.pop(missing, None)
        return True

    async def last_seq(self) -> int:
        """See :meth:`NotificationStore.last_seq`."""
        newest = await self._notes.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        # A trimmed seq is never given again: readers may have passed it.
        return max(int(newest["_id"]) if newest is not None else 0, await self._trimmed_upto())

    async def inbox(
        self, user: str, *, limit: int, before: int | None = None, unread_only: bool = False
    ) -> list[Notification]:
        """See :meth:`NotificationStore.inbox`."""
        if limit <= 0:
            return []
        query: Document = {"user": str(user)}
        if before is not None:
            query["_id"] = {"$lt": int(before)}
        if unread_only:
            query["read_at"] = None
        cursor = self._notes.find(query).sort("_id", DESCENDING).limit(limit)
        return [self._note(doc) async for doc in cursor]

    async def unread(self, user: str) -> int:
        """See :meth:`NotificationStore.unread`."""
        return await self._notes.count_documents({"user": str(user), "read_at": None})

    async def mark_read(self, user: str, ids: Sequence[str] | None, *, at: float) -> int:
        """See :meth:`NotificationStore.mark_read`."""
        query: Document = {"user": str(user), "read_at": None}
        if ids is not None:
            wanted = list(dict.fromkeys(str(i) for i in ids))
            if not wanted:
                return 0
            query["id"] = {"$in": wanted}
        result = await self._notes.update_many(query, {"$set": {"read_at": at}})
        return int(result.modified_count)

    async def get(self, ids: Sequence[str]) -> list[Notification]:
        """See :meth:`NotificationStore.get`."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            return []
        cursor = self._notes.find({"id": {"$in": wanted}}).sort("_id", ASCENDING)
        return [self._note(doc) async for doc in cursor]

    async def trim(self, *, older_than: float, keep_per_user: int) -> int:
        """Drop notifications created before ``older_than``, and each user's beyond their
        newest ``keep_per_user``."""
        await self._ready()
        keep = max(0, keep_per_user)
        doomed: list[int] = [
            int(doc["_id"])
            async for doc in self._notes.find({"created_at": {"$lt": older_than}}, {"_id": 1})
        ]
        crowded = await self._notes.aggregate(
            [
                {"$group": {"_id": "$user", "count": {"$sum": 1}}},
                {"$match": {"count": {"$gt": keep}}},
            ]
        )
        async for group in crowded:
            cursor = self._notes.find({"user": group["_id"]}, {"_id": 1}).sort("_id", DESCENDING)
            doomed += [int(doc["_id"]) async for doc in cursor.skip(keep)]
        if not doomed:
            return 0
        # Readers pass over a gap below this at once (see since); noted first, so a
        # reader never waits on a seq that is gone.
        upto = max(doomed)
        await self._meta.update_one({"_id": "trimmed"}, {"$max": {"upto": upto}}, upsert=True)
        gone = 0
        unique = sorted(set(doomed))
        for start in range(0, len(unique), 1000):
            result = await self._notes.delete_many({"_id": {"$in": unique[start : start + 1000]}})
            gone += int(result.deleted_count)
        return gone

    # -- the worker's tables ----------------------------------------------------------------

    async def tasks(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TaskState]:
        """See :meth:`NotificationStateStore.tasks`."""
        wanted = [_task_key(board, task) for board, task in dict.fromkeys(keys)]
        if not wanted:
            return {}
        found = [
            task_from(doc, self._sealer) async for doc in self._tasks.find({"_id": {"$in": wanted}})
        ]
        return {task.key: task for task in found}

    async def save_tasks(self, states: Sequence[TaskState]) -> None:
        """See :meth:`NotificationStateStore.save_tasks`."""
        if not states:
            return
        await self._ready()
        writes = []
        for state in states:
            key = _task_key(state.board_id, state.task_id)
            writes.append(
                ReplaceOne(
                    {"_id": key}, {"_id": key, **task_document(state, self._sealer)}, upsert=True
                )
            )
        await self._tasks.bulk_write(writes, ordered=True)

    async def forget_tasks(self, keys: Sequence[tuple[str, str]]) -> None:
        """See :meth:`NotificationStateStore.forget_tasks`."""
        wanted = [_task_key(board, task) for board, task in keys]
        if wanted:
            await self._tasks.delete_many({"_id": {"$in": wanted}})

    async def tasks_to_remind(self, *, now: float, horizon: float, limit: int) -> list[TaskState]:
        """See :meth:`NotificationStateStore.tasks_to_remind`."""
        if limit <= 0:
            return []
        cursor = (
            self._tasks.find(
                {
                    "due_at": {"$ne": None, "$lte": horizon},
                    "reminded": {"$ne": "overdue"},
                    "$or": [{"reminded": ""}, {"due_at": {"$lte": now}}],
                }
            )
            .sort([("due_at", ASCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [task_from(doc, self._sealer) async for doc in cursor]

    async def mark_reminded(
        self, board_id: str, task_id: str, *, due_at: float, stage: ReminderStage
    ) -> None:
        """See :meth:`NotificationStateStore.mark_reminded`."""
        await self._tasks.update_one(
            {"_id": _task_key(board_id, task_id), "due_at": due_at}, {"$set": {"reminded": stage}}
        )

    async def set_roles(self, changes: Sequence[tuple[str, str, str | None]]) -> None:
        """See :meth:`NotificationStateStore.set_roles`."""
        for project, user, role in changes:
            key = _task_key(project, user)
            if role is None:
                await self._roles.delete_one({"_id": key})
            else:
                await self._roles.replace_one(
                    {"_id": key},
                    {"_id": key, "project": project, "user": user, "role": role},
                    upsert=True,
                )

    async def people_with_roles(self, project: str, roles: Sequence[str]) -> list[str]:
        """See :meth:`NotificationStateStore.people_with_roles`."""
        wanted = [str(role) for role in roles]
        if not wanted:
            return []
        cursor = self._roles.find({"project": str(project), "role": {"$in": wanted}})
        return sorted([str(doc["user"]) async for doc in cursor])

    async def close(self) -> None:
        """Close the client."""
        await self._client.close()


def _task_key(first: str, second: str) -> str:
    # The length prefix keeps a "/" inside either part from making two keys one.
    return f"{len(first)}:{first}/{second}"


def _refused_index(error: BulkWriteError) -> int:
    """Where an ordered insert stopped because another writer took a seq or an id."""
    write_errors: list[Document] = error.details.get("writeErrors", [])
    first = write_errors[0] if write_errors else {}
    if first.get("code") != _DUPLICATE_KEY:
        raise error
    return int(first.get("index", 0))
