"""The event log in MongoDB: ``events`` and ``event_consumers`` in the store's database.

Offsets are the events' ``_id``, taken as one more than the highest ``_id`` there, and the
unique ``_id`` decides between writers: two hosts that read the same highest offset both try
to insert the next one, one of them is refused (duplicate key) and takes the next free
offsets again. So an offset n is only ever inserted by a writer that saw n - 1 committed,
and offsets are gap-free. A server may still let a query see n + 1 before n, so a read
returns only the run of offsets with none missing: a reader that has read up to n is never
passed by an offset below n that shows up later. The event id has a unique index too,
which makes appends idempotent across hosts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from persistence.event_log import DataCodec, LoggedEvent, NewEvent, PlainCodec, Retention

Document = dict[str, Any]
_log = logging.getLogger(__name__)
_DUPLICATE_KEY = 11000


class MongoEventLog:
    """The event log in a MongoDB database, shared by every host of a deployment.

    Args:
        url: ``mongodb://host:port/database`` (database ``boardcast`` if omitted).
        codec: how ``data`` is stored (sealed when encryption at rest is on).
        max_attempts: how many times an append retries offsets another writer took.
        gap_seconds: how long a read waits on a missing offset before passing it over.
        clock: the source of ``at``.
        client_options: extra keyword arguments for ``AsyncMongoClient``.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: DataCodec | None = None,
        max_attempts: int = 1000,
        gap_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        options: dict[str, Any] = {"serverSelectionTimeoutMS": 5000, "socketTimeoutMS": 20000}
        options.update(client_options or {})
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(url, connect=False, **options)
        self._database_name = self._client.get_default_database("boardcast").name
        self._codec = codec or PlainCodec()
        self._max_attempts = max_attempts
        self._gap_seconds = gap_seconds
        # First time a read found each missing offset (monotonic seconds).
        self._gaps: dict[int, float] = {}
        self._clock = clock
        self._setup = asyncio.Lock()
        self._ready = False

    async def _collections(self) -> tuple[AsyncCollection[Document], AsyncCollection[Document]]:
        database = self._client.get_database(
            self._database_name, write_concern=WriteConcern(w=1, j=True)
        )
        events, consumers = database["events"], database["event_consumers"]
        if not self._ready:
            async with self._setup:
                if not self._ready:
                    await events.create_index([("id", ASCENDING)], unique=True)
                    await events.create_index([("at", ASCENDING)])
                    self._ready = True
        return events, consumers

    async def append(self, events: Sequence[NewEvent]) -> int:
        """See :meth:`EventLog.append`."""
        log, _ = await self._collections()
        if not events:
            return await self.last_offset()
        at = self._clock()
        offsets: dict[str, int] = {}
        for _attempt in range(self._max_attempts):
            wanted = [event for event in events if event.id not in offsets]
            if not wanted:
                return offsets[events[-1].id]
            async for found in log.find(
                {"id": {"$in": [event.id for event in wanted]}}, {"_id": 1, "id": 1}
            ):
                offsets[str(found["id"])] = int(found["_id"])
            wanted = [event for event in wanted if event.id not in offsets]
            if not wanted:
                continue
            first = await self.last_offset() + 1
            documents = [
                {
                    "_id": first + n,
                    "id": event.id,
                    "board_id": event.board_id,
                    "project": event.project,
                    "type": event.type,
                    "data": Binary(self._codec.encode(event)),
                    "actor": event.actor,
                    "at": at,
                }
                for n, event in enumerate(wanted)
            ]
            try:
                await log.insert_many(documents, ordered=True)
            except BulkWriteError as error:
                # Those before the refused one are in; the rest try again at fresh offsets.
                stopped = _refused_index(error)
                for n, event in enumerate(wanted[:stopped]):
                    offsets[event.id] = first + n
                continue
            for n, event in enumerate(wanted):
                offsets[event.id] = first + n
        else:
            raise RuntimeError(f"event log append gave up after {self._max_attempts} attempts")
        return offsets[events[-1].id]

    async def read(self, after: int, limit: int) -> list[LoggedEvent]:
        """See :meth:`EventLog.read`."""
        log, _ = await self._collections()
        if limit <= 0:
            return []
        cursor = log.find({"_id": {"$gt": after}}).sort("_id", ASCENDING).limit(limit)
        found = [
            LoggedEvent(
                int(doc["_id"]),
                str(doc["id"]),
                str(doc["board_id"]),
                str(doc["project"]),
                str(doc["type"]),
                self._codec.decode(bytes(doc["data"]), str(doc["board_id"]), str(doc["id"])),
                doc.get("actor"),
                float(doc["at"]),
            )
            async for doc in cursor
        ]
        return await self._gap_free(after, found)

    async def _gap_free(self, after: int, found: list[LoggedEvent]) -> list[LoggedEvent]:
        """The run of ``found`` that follows ``after`` with no offset missing.

        Offsets are gap-free once written, but a server may let a query see offset n + 1
        before n (an insert still being applied, or a scan that is no snapshot), and a
        reader that moved past n would then never see it. So a read stops at a missing
        offset and the caller asks again. A gap at or below what retention trimmed is
        passed at once; one that lasts ``gap_seconds`` (nothing should, short of a
        document deleted by hand) is passed over with a warning rather than stalling
        every consumer.
        """
        kept: list[LoggedEvent] = []
        expected = after + 1
        for event in found:
            if event.offset != expected:
                if kept:
                    break
                if not await self._passable_gap(expected, event.offset):
                    return []
            kept.append(event)
            expected = event.offset + 1
        return kept

    async def _passable_gap(self, missing: int, next_offset: int) -> bool:
        """Whether a read may jump from ``missing`` to ``next_offset``."""
        if next_offset - 1 <= await self._trimmed_upto():
            self._gaps.pop(missing, None)
            return True  # retention removed what is missing
        now = time.monotonic()
        seen = self._gaps.setdefault(missing, now)
        if len(self._gaps) > 1024:
            self._gaps = {missing: seen}
        if now - seen < self._gap_seconds:
            return False
        _log.warning(
            "event log: offsets %d to %d missing for %.0f s; passed over",
            missing,
            next_offset - 1,
            now - seen,
        )
        self._gaps.pop(missing, None)
        return True

    async def last_offset(self) -> int:
        """See :meth:`EventLog.last_offset`."""
        log, _ = await self._collections()
        newest = await log.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        return int(newest["_id"]) if newest else 0

    async def first_offset(self) -> int:
        """See :meth:`ManagedEventLog.first_offset`."""
        log, _ = await self._collections()
        oldest = await log.find_one({}, {"_id": 1}, sort=[("_id", ASCENDING)])
        return int(oldest["_id"]) if oldest else 0

    async def committed(self, consumer: str) -> int:
        """See :meth:`EventLog.committed`."""
        _, consumers = await self._collections()
        found = await consumers.find_one({"_id": consumer})
        return int(found["offset"]) if found else 0

    async def commit(self, consumer: str, offset: int) -> None:
        """See :meth:`EventLog.commit`."""
        _, consumers = await self._collections()
        try:
            await consumers.update_one({"_id": consumer}, {"$max": {"offset": offset}}, upsert=True)
        except DuplicateKeyError:
            # Two first commits raced on the upsert: the document exists now.
            await consumers.update_one({"_id": consumer}, {"$max": {"offset": offset}})

    async def rewind(self, consumer: str, offset: int) -> None:
        """See :meth:`ManagedEventLog.rewind`."""
        _, consumers = await self._collections()
        await consumers.update_one({"_id": consumer}, {"$set": {"offset": offset}}, upsert=True)

    async def consumers(self) -> dict[str, int]:
        """See :meth:`ManagedEventLog.consumers`."""
        _, consumers = await self._collections()
        return {str(doc["_id"]): int(doc["offset"]) async for doc in consumers.find({})}

    async def trim(self, retention: Retention, *, now: float) -> int:
        """See :meth:`ManagedEventLog.trim`."""
        log, _ = await self._collections()
        committed = await self.consumers()
        if not committed:
            return 0
        floor = min(committed.values())
        last = await self.last_offset()
        upto = min(floor, last - 1)
        result = await log.delete_many(
            {
                "_id": {"$lte": upto},
                "$or": [
                    {"at": {"$lt": now - retention.max_age_seconds}},
                    {"_id": {"$lte": last - retention.max_count}},
                ],
            }
        )
        if result.deleted_count:
            # Readers pass over a gap below this at once (see _passable_gap).
            await self._meta().update_one({"_id": "trimmed"}, {"$max": {"upto": upto}}, upsert=True)
        return int(result.deleted_count)

    def _meta(self) -> AsyncCollection[Document]:
        database = self._client.get_database(
            self._database_name, write_concern=WriteConcern(w=1, j=True)
        )
        return database["event_log_meta"]

    async def _trimmed_upto(self) -> int:
        """The highest offset retention may have removed (0 if it never ran)."""
        found = await self._meta().find_one({"_id": "trimmed"})
        return int(found["upto"]) if found else 0

    async def close(self) -> None:
        """See :meth:`ManagedEventLog.close`."""
        await self._client.close()


def _refused_index(error: BulkWriteError) -> int:
    """Where an ordered insert stopped because another writer took an offset or an id."""
    write_errors: list[Document] = error.details.get("writeErrors", [])
    first = write_errors[0] if write_errors else {}
    if first.get("code") != _DUPLICATE_KEY:
        raise error
    return int(first.get("index", 0))
