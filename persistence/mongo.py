"""The MongoDB board store, on PyMongo's asyncio client.

Collections, in the database the URL names (``boardcast`` if it names none)::

    updates           {board_id, seq, at, update | chunks,   unique (board_id, seq)
                       [origin], [key], [events | events_chunks]}
    snapshots         {board_id, seq, at, state | chunks}    unique (board_id)
    snapshot_history  {board_id, seq, at, state | chunks}    unique (board_id, seq)
    update_history    (the same as updates)                  unique (board_id, seq)
    chunks            {set, n, board_id, at, data}           unique (set, n)

Writes wait for a majority of a replica set (one server when standalone) and the journal.

Seqs need no lock on the server: the store remembers each board's last seq (read from the
database on first use) and inserts every board's updates of an append in one ordered
``insert_many``. If another process took a seq first, the unique index refuses it; the
inserts before it stand, the board's last seq is read again and the rest is retried.

A document holds at most 16 MiB, so an update or a snapshot longer than ``chunk_size``
(8 MiB) is written as numbered ``chunks`` documents first, and the log entry or snapshot
that names them (``chunks: {set, count, size}``, no bytes of its own; a log entry's
encoded domain events likewise under ``events_chunks``) last: a crash in
between leaves unreferenced chunks, never half an entry. Deleting goes the other way (the
entry, then its chunks). Chunks that nothing references and that are older than
``orphan_grace`` are swept when the board is loaded or compacted.

Compaction runs in a transaction when the server has them (a replica set or a sharded
cluster). On a standalone server its writes are ordered so that a crash between any two
leaves a board that loads: the replaced snapshot is copied to history, then the new one
written (only over an older one), then the log entries it covers copied to
``update_history`` and deleted from the log; readers skip log entries that a snapshot
already covers and count an entry found in both collections once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from persistence.coverage import Coverage
from persistence.history import DEFAULT_HISTORY, HistoryPolicy, Thinning
from persistence.read_model import TaskIndex
from persistence.store import (
    Batches,
    BoardStore,
    LogEntry,
    Record,
    StoredBoard,
    ThinningInputs,
    Version,
    as_record,
    check_snapshot_seq,
    empty_or_unavailable,
    gap_free_tail,
    rebuild_at,
    sorted_versions,
    thin_history,
)

Document = dict[str, Any]
# Writes given a session inside a transaction, or None to run them one by one.
SessionWork = Callable[[AsyncClientSession | None], Awaitable[None]]

#: The database used when the URL names none.
DEFAULT_DATABASE = "boardcast"
#: Updates and snapshots longer than this are split across chunk documents.
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
#: Unreferenced chunks younger than this may belong to a write still in flight.
DEFAULT_ORPHAN_GRACE = 600.0

_DUPLICATE_KEY = 11000
# Boards whose last seq is remembered; past it the least recently written are forgotten.
_REMEMBERED_BOARDS = 100_000
_SEQ_AT = {"_id": 0, "seq": 1, "at": 1}
_CHUNK_REF = {"_id": 0, "chunks.set": 1}
# The field that holds the bytes of each kind of document when they are not chunked.
_UPDATE, _STATE, _EVENTS = "update", "state", "events"
_VECTOR = "vector"  # a snapshot's state vector (StoredBoard.snapshot_vector)


class MongoStore(BoardStore):
    """A board store in MongoDB, safe to share between processes and machines.

    Args:
        url: a ``mongodb://`` or ``mongodb+srv://`` URL; its path names the database.
        history: which past versions to retain.
        clock: the source of the times stamped on updates and snapshots.
        transactions: compact in a transaction; ``None`` uses them if the server has them.
        max_attempts: how many times an append retries seqs taken by another process.
        chunk_size: bytes above which an update or snapshot is split across chunk documents
            (at most 16 MiB minus room for the document's other fields).
        orphan_grace: seconds an unreferenced chunk is left alone before it is swept.
        server_selection_timeout: seconds to wait for a usable server; short, because the
            host retries a failed commit with its own backoff.
        connect_timeout: seconds to open a connection.
        socket_timeout: seconds to wait on a reply, so no store call hangs forever.
        client_options: extra keyword arguments for ``AsyncMongoClient``; they, and options
            in the URL, win over the timeouts above.
    """

    def __init__(
        self,
        url: str,
        *,
        history: HistoryPolicy = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
        transactions: bool | None = None,
        max_attempts: int = 100,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        orphan_grace: float = DEFAULT_ORPHAN_GRACE,
        server_selection_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 20.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0 < chunk_size <= 16 * 1024 * 1024 - 64 * 1024:
            raise ValueError(f"chunk_size {chunk_size} must be positive and under 16 MiB")
        self.url = url
        options = dict(client_options or {})
        in_url = url.lower()
        for name, seconds in (
            ("serverSelectionTimeoutMS", server_selection_timeout),
            ("connectTimeoutMS", connect_timeout),
            ("socketTimeoutMS", socket_timeout),
        ):
            if name.lower() not in in_url:
                options.setdefault(name, int(seconds * 1000))
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(url, connect=False, **options)
        self.database_name = self._client.get_default_database(DEFAULT_DATABASE).name
        self._history = history
        self._clock = clock
        self._transactions = transactions
        self._max_attempts = max_attempts
        self._chunk_size = chunk_size
        self._orphan_grace = orphan_grace
        self._last_seqs: dict[str, int] = {}
        self._append_lock = asyncio.Lock()
        self._setup_lock = asyncio.Lock()
        self._write_concern: WriteConcern | None = None
        self._closed = False

    # -- connection ------------------------------------------------------------

    async def _ready(self) -> None:
        if self._closed:
            raise RuntimeError("the board store is closed")
        if self._write_concern is not None:
            return
        async with self._setup_lock:
            if self._write_concern is None:
                await self._set_up()

    async def _set_up(self) -> None:
        hello: Document = await self._client.admin.command("hello")
        replicated = "setName" in hello or hello.get("msg") == "isdbgrid"
        if self._transactions is None:
            self._transactions = replicated and "logicalSessionTimeoutMinutes" in hello
        concern = WriteConcern(w="majority" if replicated else 1, j=True)
        database = self._client.get_database(self.database_name, write_concern=concern)
        self.updates: AsyncCollection[Document] = database["updates"]
        self.snapshots: AsyncCollection[Document] = database["snapshots"]
        self.history: AsyncCollection[Document] = database["snapshot_history"]
        self.update_history: AsyncCollection[Document] = database["update_history"]
        self.chunks: AsyncCollection[Document] = database["chunks"]
        by_seq = [("board_id", ASCENDING), ("seq", ASCENDING)]
        await self.updates.create_index(by_seq, unique=True)
        await self.snapshots.create_index([("board_id", ASCENDING)], unique=True)
        await self.history.create_index(by_seq, unique=True)
        await self.update_history.create_index(by_seq, unique=True)
        by_key = [("board_id", ASCENDING), ("key", ASCENDING)]
        await self.updates.create_index(by_key)
        await self.update_history.create_index(by_key)
        await self.chunks.create_index([("set", ASCENDING), ("n", ASCENDING)], unique=True)
        await self.chunks.create_index([("board_id", ASCENDING), ("at", ASCENDING)])
        self._write_concern = concern

    async def _atomically(self, work: SessionWork) -> None:
        """Run ``work`` in a transaction if the server has them, else as ordered writes."""
        if not self._transactions:
            await work(None)
            return
        async with self._client.start_session() as session:
            await session.with_transaction(work, write_concern=self._write_concern)

    # -- chunks ------------------------------------------------------------------

    async def _payload(
        self, board_id: str, field: str, data: bytes, chunk_field: str = "chunks"
    ) -> Document:
        """The document fields that hold ``data``: inline, or chunks written now."""
        if len(data) <= self._chunk_size:
            return {field: data}
        chunk_set = str(ObjectId())
        at = self._clock()
        pieces = [
            {"set": chunk_set, "n": n, "board_id": board_id, "at": at, "data": data[i : i + size]}
            for n, (i, size) in enumerate(
                (i, self._chunk_size) for i in range(0, len(data), self._chunk_size)
            )
        ]
        # One document per insert keeps every message well under the server's limit.
        for piece in pieces:
            await self.chunks.insert_one(piece)
        return {chunk_field: {"set": chunk_set, "count": len(pieces), "size": len(data)}}

    async def _bytes(self, document: Document, field: str, chunk_field: str = "chunks") -> bytes:
        """The bytes a document holds, read back from its chunks if it has them."""
        if field in document:
            return bytes(document[field])
        reference: Document = document[chunk_field]
        cursor = self.chunks.find({"set": reference["set"]}, {"_id": 0, "data": 1})
        pieces = [bytes(d["data"]) async for d in cursor.sort("n", ASCENDING)]
        data = b"".join(pieces)
        if len(pieces) != reference["count"] or len(data) != reference["size"]:
            raise RuntimeError(
                f"board {document.get('board_id')!r} seq {document.get('seq')}: chunk set"
                f" {reference['set']} is incomplete ({len(pieces)} of {reference['count']})"
            )
        return data

    async def _delete_chunks(self, chunk_sets: Sequence[str]) -> None:
        if chunk_sets:
            await self.chunks.delete_many({"set": {"$in": list(chunk_sets)}})

    async def _sweep_orphans(self, board_id: str) -> None:
        """Delete the board's chunks that no document references (a crash mid-write)."""
        cutoff = self._clock() - self._orphan_grace
        query = {"board_id": board_id, "at": {"$lt": cutoff}}
        if await self.chunks.find_one(query, {"_id": 1}) is None:
            return
        candidates = {str(s) for s in await self.chunks.distinct("set", query)}
        referenced: set[str] = set()
        for collection in (self.updates, self.snapshots, self.history, self.update_history):
            async for document in collection.find(
                {"board_id": board_id, "chunks.set": {"$in": sorted(candidates)}}, _CHUNK_REF
            ):
                referenced.add(str(document["chunks"]["set"]))
        for collection in (self.updates, self.update_history):
            async for document in collection.find(
                {"board_id": board_id, "events_chunks.set": {"$in": sorted(candidates)}},
                {"_id": 0, "events_chunks.set": 1},
            ):
                referenced.add(str(document["events_chunks"]["set"]))
        await self._delete_chunks(sorted(candidates - referenced))

    # -- seqs --------------------------------------------------------------------

    async def _read_last_seqs(self, board_ids: Sequence[str]) -> dict[str, int]:
        """Each board's last seq in the database: its newest log entry or snapshot."""
        last = dict.fromkeys(board_ids, 0)
        pipeline: list[Document] = [
            {"$match": {"board_id": {"$in": list(board_ids)}}},
            {"$group": {"_id": "$board_id", "last": {"$max": "$seq"}}},
        ]
        query = {"board_id": {"$in": list(board_ids)}}
        logs, snapshots = await asyncio.gather(
            self._aggregate(self.updates, pipeline),
            self.snapshots.find(query, {"board_id": 1, "seq": 1}).to_list(),
        )
        for row in logs:
            last[row["_id"]] = max(last[row["_id"]], int(row["last"]))
        for row in snapshots:
            last[row["board_id"]] = max(last[row["board_id"]], int(row["seq"]))
        return last

    @staticmethod
    async def _aggregate(
        collection: AsyncCollection[Document], pipeline: list[Document]
    ) -> list[Document]:
        return await (await collection.aggregate(pipeline)).to_list()

    def _remember(self, board_id: str, seq: int) -> None:
        # Re-inserted so the dict's order is least recently written first.
        self._last_seqs.pop(board_id, None)
        self._last_seqs[board_id] = seq
        if len(self._last_seqs) > _REMEMBERED_BOARDS:
            del self._last_seqs[next(iter(self._last_seqs))]

    # -- the store interface -----------------------------------------------------

    async def load(self, board_id: str) -> StoredBoard:
        """Return the board's snapshot and the log after it (an empty board if unknown)."""
        await self._ready()
        await self._sweep_orphans(board_id)
        # The log first: a compaction between the two reads then only makes the snapshot cover
        # more of it, whereas the other order could miss entries trimmed in between.
        cursor = self.updates.find({"board_id": board_id}, {"_id": 0}).sort("seq", ASCENDING)
        documents = await cursor.to_list()
        snapshot = await self.snapshots.find_one({"board_id": board_id}, {"_id": 0})
        base = int(snapshot["seq"]) if snapshot is not None else 0
        entries = [await self._log_entry(d) for d in documents if int(d["seq"]) > base]
        if snapshot is None:
            return StoredBoard(board_id, None, 0, gap_free_tail(entries, 0))
        state = await self._bytes(snapshot, _STATE)
        vector = snapshot.get(_VECTOR)
        return StoredBoard(
            board_id,
            state,
            base,
            gap_free_tail(entries, base),
            bytes(vector) if vector is not None else None,
        )

    async def _log_entry(self, document: Document) -> LogEntry:
        update = await self._bytes(document, _UPDATE)
        events = (
            await self._bytes(document, _EVENTS, "events_chunks")
            if _EVENTS in document or "events_chunks" in document
            else None
        )
        return LogEntry(
            int(document["seq"]),
            update,
            float(document["at"]),
            document.get("origin"),
            document.get("key"),
            events,
        )

    async def database(self) -> Any:
        """The database the store's collections live in (set up on first use)."""
        await self._ready()
        return self._client.get_database(self.database_name, write_concern=self._write_concern)

    def task_index(self) -> TaskIndex:
        """The read model, in the ``task_index`` collection of the same database."""
        from persistence.mongo_read_model import MongoTaskIndex

        return MongoTaskIndex(self)

    async def find_key(self, board_id: str, key: str) -> int | None:
        """The seq of the update appended with idempotency ``key``, in the log or history."""
        await self._ready()
        query = {"board_id": board_id, "key": key}
        for collection in (self.updates, self.update_history):
            found = await collection.find_one(query, {"_id": 0, "seq": 1})
            if found is not None:
                return int(found["seq"])
        return None

    async def append(self, batches: Batches) -> dict[str, int]:
        """Append several boards' updates in one ordered insert; returns each board's last seq."""
        await self._ready()
        # Copied first: a bad item raises before anything is written.
        copies = {board: [as_record(u) for u in updates] for board, updates in batches.items()}
        if not copies:
            return {}
        # One append at a time, so seqs taken from the cache are never handed out twice.
        async with self._append_lock:
            try:
                return await self._append(copies)
            except BaseException:
                # What reached the database is unknown: read the seqs again next time.
                for board_id in copies:
                    self._last_seqs.pop(board_id, None)
                raise

    async def _append(self, copies: dict[str, list[Record]]) -> dict[str, int]:
        # Boards with nothing to write report where they stand, read afresh.
        unknown = [b for b, ups in copies.items() if not ups or b not in self._last_seqs]
        if unknown:
            for board_id, seq in (await self._read_last_seqs(unknown)).items():
                self._remember(board_id, seq)
        at = self._clock()
        documents: list[Document] = []
        for board_id, updates in copies.items():
            last = self._last_seqs[board_id]
            for i, record in enumerate(updates, start=1):
                # Chunks of a long update are written before the entry that names them.
                payload = await self._payload(board_id, _UPDATE, record.update)
                document = {"board_id": board_id, "seq": last + i, "at": at, **payload}
                if record.origin is not None:
                    document["origin"] = record.origin
                if record.key is not None:
                    document["key"] = record.key
                if record.events:
                    document.update(
                        await self._payload(board_id, _EVENTS, record.events, "events_chunks")
                    )
                documents.append(document)
        pending = documents
        for _ in range(self._max_attempts):
            if not pending:
                break
            try:
                # Ordered: on a taken seq the server stops there, so what follows is unwritten.
                await self.updates.insert_many(pending, ordered=True)
                break
            except BulkWriteError as error:
                failed = _first_duplicate_seq(error)
                pending = pending[failed:]
                board_id = pending[0]["board_id"]
                last = (await self._read_last_seqs([board_id]))[board_id]
                for document in pending:
                    document.pop("_id", None)  # set by the failed insert; never stored
                    if document["board_id"] == board_id:
                        last += 1
                        document["seq"] = last
        else:
            raise RuntimeError(
                f"append gave up after {self._max_attempts} attempts: other writers kept"
                " taking the same seqs"
            )
        for document in documents:
            self._remember(document["board_id"], document["seq"])
        return {board_id: self._last_seqs[board_id] for board_id in copies}

    async def write_snapshot(
        self, board_id: str, state: bytes, upto_seq: int, *, covers: Coverage | None = None
    ) -> bool:
        """Store a snapshot covering seq <= upto_seq and take those entries out of the log.

        The entries and the snapshot it replaces move to history, which is then thinned.
        Refused (False) if ``covers`` misses one of the entries, checked in the transaction.
        """
        await self._ready()
        now = self._clock()
        payload = await self._payload(board_id, _STATE, bytes(state))
        if covers is not None:
            # Beside the snapshot, so a board with no log tail loads without being built.
            payload[_VECTOR] = bytes(covers.state_vector)
        outcome: list[tuple[str, str | None]] = []

        async def compact(session: AsyncClientSession | None) -> None:
            outcome.clear()  # a retried transaction starts again
            outcome.append(await self._compact(board_id, payload, upto_seq, now, session, covers))

        try:
            await self._atomically(compact)
        except BaseException:
            await self._delete_chunks(_chunk_sets([payload]))
            raise
        result, unneeded = outcome[0] if outcome else ("stale", None)
        if result in ("stale", "refused"):
            await self._delete_chunks(_chunk_sets([payload]))
        if result == "written":
            await thin_history(self, board_id, self._history, now)
        if unneeded is not None or result == "written":
            # A replaced snapshot's chunks are left to the sweep: a reader may be on them.
            await self._sweep_orphans(board_id)
        return result != "refused"

    async def _compact(
        self,
        board_id: str,
        payload: Document,
        upto_seq: int,
        now: float,
        session: AsyncClientSession | None,
        covers: Coverage | None = None,
    ) -> tuple[str, str | None]:
        """Write the snapshot and move the log it covers to history.

        Returns ``"written"`` (a new version), ``"replaced"`` (one of the same seq),
        ``"stale"`` or ``"refused"`` (nothing written: ``covers`` misses an entry), and
        the chunk set the old snapshot no longer needs.
        """
        current = await self.snapshots.find_one({"board_id": board_id}, session=session)
        if current is not None and upto_seq < current["seq"]:
            return "stale", None
        newest = await self.updates.find_one(
            {"board_id": board_id}, {"seq": 1}, sort=[("seq", DESCENDING)], session=session
        )
        last = max(int(current["seq"]) if current else 0, int(newest["seq"]) if newest else 0)
        check_snapshot_seq(board_id, upto_seq, last)
        if current is not None and current["seq"] == upto_seq:
            # One with the same seq is the same version: it is replaced, not kept.
            replaced = {"board_id": board_id, "seq": upto_seq, "at": current["at"], **payload}
            await self.snapshots.replace_one(
                {"board_id": board_id, "seq": upto_seq}, replaced, session=session
            )
            unneeded = _chunk_sets([current])
            return "replaced", unneeded[0] if unneeded else None
        if covers is not None:
            trimmed = await (
                self.updates.find(
                    {"board_id": board_id, "seq": {"$lte": upto_seq}}, {"_id": 0}, session=session
                )
                .sort("seq", ASCENDING)
                .to_list()
            )
            entries = [(int(d["seq"]), await self._bytes(d, _UPDATE)) for d in trimmed]
            if covers.first_missing(entries) is not None:
                return "refused", None
        covered = await self.updates.find_one(
            {"board_id": board_id, "seq": upto_seq}, {"at": 1}, session=session
        )
        at = float(covered["at"]) if covered is not None else now
        if current is not None:
            past = {k: v for k, v in current.items() if k != "_id"}
            await self.history.replace_one(
                {"board_id": board_id, "seq": past["seq"]}, past, upsert=True, session=session
            )
        try:
            # Only over an older snapshot: a newer one makes the upsert a duplicate key.
            await self.snapshots.replace_one(
                {"board_id": board_id, "seq": {"$lte": upto_seq}},
                {"board_id": board_id, "seq": upto_seq, "at": at, **payload},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError:
            if session is not None:
                raise
            return "stale", None  # another process wrote a newer snapshot meanwhile
        query = {"board_id": board_id, "seq": {"$lte": upto_seq}}
        moved = await self.updates.find(query, {"_id": 0}, session=session).to_list()
        if moved:
            await self.update_history.bulk_write(
                [
                    ReplaceOne({"board_id": board_id, "seq": d["seq"]}, d, upsert=True)
                    for d in moved
                ],
                ordered=False,
                session=session,
            )
        await self.updates.delete_many(query, session=session)
        return "written", None

    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board, oldest first."""
        await self._ready()
        query = {"board_id": board_id}
        current, past, log, retained = await asyncio.gather(
            self.snapshots.find_one(query, _SEQ_AT),
            self.history.find(query, _SEQ_AT).to_list(),
            self.updates.find(query, _SEQ_AT).to_list(),
            self.update_history.find(query, _SEQ_AT).to_list(),
        )
        snapshots = [*past, *([current] if current else [])]
        base = int(current["seq"]) if current else 0
        # An entry a crash left in both the log and history counts once.
        updates = {int(d["seq"]): float(d["at"]) for d in retained}
        updates.update({int(d["seq"]): float(d["at"]) for d in log if d["seq"] > base})
        return sorted_versions(
            [Version(int(d["seq"]), float(d["at"]), "snapshot") for d in snapshots]
            + [Version(seq, at, "update") for seq, at in updates.items()]
        )

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and updates that rebuild the board as it was at ``at``."""
        await self._ready()
        earlier = {"board_id": board_id, "at": {"$lte": at}}
        newest_first = [("seq", DESCENDING)]
        # The current snapshot before history, and the log before its history: a compaction
        # in between copies before it deletes, so each read finds what the other missed.
        bases = [
            await collection.find_one(earlier, {"_id": 0}, sort=newest_first)
            for collection in (self.snapshots, self.history)
        ]
        newest = max((b for b in bases if b is not None), key=lambda b: b["seq"], default=None)
        after = int(newest["seq"]) if newest is not None else 0
        query = {**earlier, "seq": {"$gt": after}}
        documents = [
            document
            for collection in (self.updates, self.update_history)
            for document in await collection.find(query, {"_id": 0}).to_list()
        ]
        entries = [await self._log_entry(d) for d in _unique_by_seq(documents)]
        base = None
        if newest is not None:
            base = (after, await self._bytes(newest, _STATE))
        rebuilt = rebuild_at(board_id, base, entries)
        if rebuilt is not None:
            return rebuilt
        versions = await self.versions(board_id)
        return empty_or_unavailable(
            board_id,
            at,
            self._history,
            oldest=versions[0] if versions else None,
            first_update_retained=any(v.seq == 1 and v.kind == "update" for v in versions),
        )

    # -- history thinning (persistence.store.HistoryStorage) ------------------------

    async def thinning_inputs(self, board_id: str, since: float, limit: int) -> ThinningInputs:
        """The board's snapshots and its retained updates older than ``since``."""
        query = {"board_id": board_id}
        current = await self.snapshots.find_one(query, _SEQ_AT)
        past = await self.history.find(query, _SEQ_AT).to_list()
        cursor = self.update_history.find({**query, "at": {"$lt": since}}, _SEQ_AT)
        aged = await cursor.sort("seq", ASCENDING).limit(limit + 1).to_list()
        newer = await self.update_history.find_one(
            {**query, "at": {"$gte": since}}, _SEQ_AT, sort=[("seq", ASCENDING)]
        )
        return ThinningInputs(
            (int(current["seq"]), float(current["at"])) if current is not None else None,
            [(int(d["seq"]), float(d["at"])) for d in past],
            [(int(d["seq"]), float(d["at"])) for d in aged[:limit]],
            len(aged) > limit,
            int(newer["seq"]) if newer is not None else None,
        )

    async def materialise_inputs(
        self, board_id: str, seq: int
    ) -> tuple[bytes | None, list[bytes]] | None:
        """The newest snapshot at or below ``seq`` and the retained updates after it."""
        below = {"board_id": board_id, "seq": {"$lte": seq}}
        bases = [
            await collection.find_one(below, {"_id": 0}, sort=[("seq", DESCENDING)])
            for collection in (self.snapshots, self.history)
        ]
        newest = max((b for b in bases if b is not None), key=lambda b: b["seq"], default=None)
        after = int(newest["seq"]) if newest is not None else 0
        query = {"board_id": board_id, "seq": {"$gt": after, "$lte": seq}}
        documents = [
            document
            for collection in (self.updates, self.update_history)
            for document in await collection.find(query, {"_id": 0}).to_list()
        ]
        unique = _unique_by_seq(documents)
        if [int(d["seq"]) for d in unique] != list(range(after + 1, seq + 1)):
            return None
        state = await self._bytes(newest, _STATE) if newest is not None else None
        return state, [await self._bytes(d, _UPDATE) for d in unique]

    async def add_history_snapshot(self, board_id: str, seq: int, at: float, state: bytes) -> None:
        """Keep a materialised version, unless the board is gone or has one at ``seq``."""
        if await self.snapshots.find_one({"board_id": board_id}, {"_id": 1}) is None:
            return
        payload = await self._payload(board_id, _STATE, state)
        try:
            await self.history.insert_one({"board_id": board_id, "seq": seq, "at": at, **payload})
        except DuplicateKeyError:
            await self._delete_chunks(_chunk_sets([payload]))

    async def drop_history(self, board_id: str, thinning: Thinning) -> None:
        """Delete what ``thinning`` names: the documents first, then the chunks they named."""
        snapshots = {"board_id": board_id, "seq": {"$in": thinning.drop_snapshots}}
        updates = {"board_id": board_id, "seq": {"$lte": thinning.drop_updates_upto}}
        chunked = {"chunks": {"$exists": True}}
        referenced = [
            *await self.history.find({**snapshots, **chunked}, _CHUNK_REF).to_list(),
            *await self.update_history.find({**updates, **chunked}, _CHUNK_REF).to_list(),
        ]
        if thinning.drop_snapshots:
            await self.history.delete_many(snapshots)
        if thinning.drop_updates_upto > 0:
            await self.update_history.delete_many(updates)
        await self._delete_chunks(_chunk_sets(referenced))

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""
        await self._ready()
        snapshotted, logged = await asyncio.gather(
            self.snapshots.distinct("board_id"), self.updates.distinct("board_id")
        )
        return sorted({str(b) for b in snapshotted} | {str(b) for b in logged})

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log, history and chunks."""
        await self._ready()

        async def delete(session: AsyncClientSession | None) -> None:
            # The log before the snapshot: a log without its snapshot would not load.
            query = {"board_id": board_id}
            await self.updates.delete_many(query, session=session)
            await self.snapshots.delete_many(query, session=session)
            await self.history.delete_many(query, session=session)
            await self.update_history.delete_many(query, session=session)

        async with self._append_lock:
            self._last_seqs.pop(board_id, None)
            await self._atomically(delete)
            # Last: until the documents are gone, their chunks are still needed.
            await self.chunks.delete_many({"board_id": board_id})

    @property
    def location(self) -> str:
        """The server URL with any password masked, and the database used."""
        return f"{_without_password(self.url)} (database {self.database_name!r})"

    async def exists(self) -> bool:
        """Whether the database holds this store's collections (the first write creates them)."""
        if self._closed:
            raise RuntimeError("the board store is closed")
        names = await self._client[self.database_name].list_collection_names()
        return bool({"updates", "snapshots"} & set(names))

    async def close(self) -> None:
        """Close the client's connections; further calls raise RuntimeError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()


def _without_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    user_info, at, hosts = authority.rpartition("@")
    if not at or ":" not in user_info:
        return url
    return f"{scheme}://{user_info.split(':', 1)[0]}:***@{hosts}{slash}{path}"


def _chunk_sets(documents: Sequence[Document]) -> list[str]:
    """The chunk sets the documents name (those whose bytes are chunked)."""
    return [str(d["chunks"]["set"]) for d in documents if "chunks" in d]


def _unique_by_seq(documents: Sequence[Document]) -> list[Document]:
    """The documents in seq order, one per seq (a crash can leave an entry in two places)."""
    return sorted({int(d["seq"]): d for d in documents}.values(), key=lambda d: int(d["seq"]))


def _first_duplicate_seq(error: BulkWriteError) -> int:
    """The index of the document an ordered insert stopped at, if a seq was already taken."""
    write_errors: list[Document] = error.details.get("writeErrors", [])
    first = write_errors[0] if write_errors else {}
    if first.get("code") != _DUPLICATE_KEY or "seq" not in first.get("keyPattern", {"seq": 1}):
        raise error
    return int(first["index"])
