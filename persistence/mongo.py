"""The MongoDB board store, on PyMongo's asyncio client.

Collections, in the database the URL names (``boardcast`` if it names none)::

    updates           {board_id, seq, at, update}   unique (board_id, seq)
    snapshots         {board_id, seq, at, state}    unique (board_id)
    snapshot_history  {board_id, seq, at, state}    unique (board_id, seq)

Writes wait for a majority of a replica set (one server when standalone) and the journal.

Seqs need no lock on the server: the store remembers each board's last seq (read from the
database on first use) and inserts every board's updates of an append in one ordered
``insert_many``. If another process took a seq first, the unique index refuses it; the
inserts before it stand, the board's last seq is read again and the rest is retried.

Compaction runs in a transaction when the server has them (a replica set or a sharded
cluster). On a standalone server its writes are ordered so that a crash between any two
leaves a board that loads: the replaced snapshot is copied to history, then the new one
written (only over an older one), then the log it covers trimmed; readers skip log entries
that a snapshot already covers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from persistence.history import DEFAULT_HISTORY, HistoryPolicy, snapshots_to_drop
from persistence.store import (
    BoardStore,
    LogEntry,
    StoredBoard,
    Version,
    check_snapshot_seq,
    gap_free_tail,
    history_unavailable,
    sorted_versions,
)

Document = dict[str, Any]
# Writes given a session inside a transaction, or None to run them one by one.
SessionWork = Callable[[AsyncClientSession | None], Awaitable[None]]

#: The database used when the URL names none.
DEFAULT_DATABASE = "boardcast"

_DUPLICATE_KEY = 11000
# Boards whose last seq is remembered; past it the least recently written are forgotten.
_REMEMBERED_BOARDS = 100_000
_SEQ_AT = {"_id": 0, "seq": 1, "at": 1}


class MongoStore(BoardStore):
    """A board store in MongoDB, safe to share between processes and machines.

    Args:
        url: a ``mongodb://`` or ``mongodb+srv://`` URL; its path names the database.
        history: which past snapshots to keep.
        clock: the source of the times stamped on updates and snapshots.
        transactions: compact in a transaction; ``None`` uses them if the server has them.
        max_attempts: how many times an append retries seqs taken by another process.
        client_options: extra keyword arguments for ``AsyncMongoClient``.
    """

    def __init__(
        self,
        url: str,
        *,
        history: HistoryPolicy = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
        transactions: bool | None = None,
        max_attempts: int = 100,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        options = dict(client_options or {})
        if "serverselectiontimeoutms" not in url.lower():
            # The driver's 30 s default would stall the group commit that long per
            # attempt while the server is down; the host retries with its own backoff.
            options.setdefault("serverSelectionTimeoutMS", 3000)
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(url, connect=False, **options)
        self.database_name = self._client.get_default_database(DEFAULT_DATABASE).name
        self._history = history
        self._clock = clock
        self._transactions = transactions
        self._max_attempts = max_attempts
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
        await self.updates.create_index([("board_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self.snapshots.create_index([("board_id", ASCENDING)], unique=True)
        await self.history.create_index([("board_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        self._write_concern = concern

    async def _atomically(self, work: SessionWork) -> None:
        """Run ``work`` in a transaction if the server has them, else as ordered writes."""
        if not self._transactions:
            await work(None)
            return
        async with self._client.start_session() as session:
            await session.with_transaction(work, write_concern=self._write_concern)

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
        # The log first: a compaction between the two reads then only makes the snapshot cover
        # more of it, whereas the other order could miss entries trimmed in between.
        cursor = self.updates.find({"board_id": board_id}, {"_id": 0}).sort("seq", ASCENDING)
        entries = [_log_entry(d) async for d in cursor]
        snapshot = await self.snapshots.find_one({"board_id": board_id}, {"_id": 0})
        if snapshot is None:
            return StoredBoard(board_id, None, 0, gap_free_tail(entries, 0))
        base = int(snapshot["seq"])
        return StoredBoard(board_id, bytes(snapshot["state"]), base, gap_free_tail(entries, base))

    async def append(self, batches: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        """Append several boards' updates in one ordered insert; returns each board's last seq."""
        await self._ready()
        # Copied first: a bad item raises before anything is written.
        copies = {board_id: [bytes(u) for u in updates] for board_id, updates in batches.items()}
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

    async def _append(self, copies: dict[str, list[bytes]]) -> dict[str, int]:
        # Boards with nothing to write report where they stand, read afresh.
        unknown = [b for b, ups in copies.items() if not ups or b not in self._last_seqs]
        if unknown:
            for board_id, seq in (await self._read_last_seqs(unknown)).items():
                self._remember(board_id, seq)
        at = self._clock()
        documents: list[Document] = []
        for board_id, updates in copies.items():
            last = self._last_seqs[board_id]
            documents.extend(
                {"board_id": board_id, "seq": last + i, "at": at, "update": update}
                for i, update in enumerate(updates, start=1)
            )
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

    async def write_snapshot(self, board_id: str, state: bytes, upto_seq: int) -> None:
        """Store a snapshot covering seq <= upto_seq and drop those log entries.

        The snapshot it replaces moves to the board's history, which is then thinned.
        """
        await self._ready()
        state = bytes(state)
        now = self._clock()
        kept: list[bool] = []

        async def compact(session: AsyncClientSession | None) -> None:
            kept.clear()  # a retried transaction starts again
            kept.append(await self._compact(board_id, state, upto_seq, now, session))

        await self._atomically(compact)
        if kept and kept[0]:
            await self._thin_history(board_id, now)

    async def _compact(
        self,
        board_id: str,
        state: bytes,
        upto_seq: int,
        now: float,
        session: AsyncClientSession | None,
    ) -> bool:
        """Write the snapshot and trim the log; True if a replaced snapshot went to history."""
        current = await self.snapshots.find_one({"board_id": board_id}, session=session)
        if current is not None and upto_seq < current["seq"]:
            return False
        newest = await self.updates.find_one(
            {"board_id": board_id}, {"seq": 1}, sort=[("seq", DESCENDING)], session=session
        )
        last = max(int(current["seq"]) if current else 0, int(newest["seq"]) if newest else 0)
        check_snapshot_seq(board_id, upto_seq, last)
        # One with the same seq covers the same log: it is replaced, not kept.
        keep_replaced = current is not None and current["seq"] < upto_seq
        if current is not None and keep_replaced:
            past = {key: current[key] for key in ("board_id", "seq", "at", "state")}
            await self.history.replace_one(
                {"board_id": board_id, "seq": past["seq"]}, past, upsert=True, session=session
            )
        try:
            # Only over an older snapshot: a newer one makes the upsert a duplicate key.
            await self.snapshots.update_one(
                {"board_id": board_id, "seq": {"$lte": upto_seq}},
                {"$set": {"seq": upto_seq, "at": now, "state": state}},
                upsert=True,
                session=session,
            )
        except DuplicateKeyError:
            if session is not None:
                raise
            return False  # another process wrote a newer snapshot meanwhile
        await self.updates.delete_many(
            {"board_id": board_id, "seq": {"$lte": upto_seq}}, session=session
        )
        return keep_replaced

    async def _thin_history(self, board_id: str, now: float) -> None:
        past = [
            (int(d["seq"]), float(d["at"]))
            async for d in self.history.find({"board_id": board_id}, _SEQ_AT)
        ]
        dropped = snapshots_to_drop(past, now=now, policy=self._history)
        if dropped:
            await self.history.delete_many({"board_id": board_id, "seq": {"$in": dropped}})

    async def versions(self, board_id: str) -> list[Version]:
        """Return every retained version of the board, oldest first."""
        await self._ready()
        query = {"board_id": board_id}
        past, current, log = await asyncio.gather(
            self.history.find(query, _SEQ_AT).to_list(),
            self.snapshots.find_one(query, _SEQ_AT),
            self.updates.find(query, _SEQ_AT).to_list(),
        )
        snapshots = [*past, *([current] if current else [])]
        base = int(current["seq"]) if current else 0
        return sorted_versions(
            [Version(int(d["seq"]), float(d["at"]), "snapshot") for d in snapshots]
            + [Version(int(d["seq"]), float(d["at"]), "update") for d in log if d["seq"] > base]
        )

    async def load_at(self, board_id: str, at: float) -> StoredBoard:
        """Return the snapshot and log entries that rebuild the board as it was at ``at``."""
        await self._ready()
        # As in load(): the log before the snapshot, so a compaction in between loses nothing.
        cursor = self.updates.find({"board_id": board_id, "at": {"$lte": at}}, {"_id": 0})
        entries = [_log_entry(d) async for d in cursor.sort("seq", ASCENDING)]
        current = await self.snapshots.find_one({"board_id": board_id}, {"_id": 0})
        if current is None:
            return StoredBoard(board_id, None, 0, gap_free_tail(entries, 0))
        if float(current["at"]) <= at:
            base, state = int(current["seq"]), bytes(current["state"])
            return StoredBoard(board_id, state, base, gap_free_tail(entries, base))
        past = await self.history.find_one(
            {"board_id": board_id, "at": {"$lte": at}},
            {"_id": 0, "seq": 1, "state": 1},
            sort=[("at", DESCENDING), ("seq", DESCENDING)],
        )
        if past is None:
            raise history_unavailable(board_id, at)
        return StoredBoard(board_id, bytes(past["state"]), int(past["seq"]), [])

    async def list_boards(self) -> list[str]:
        """Return the ids of every stored board, sorted."""
        await self._ready()
        snapshotted, logged = await asyncio.gather(
            self.snapshots.distinct("board_id"), self.updates.distinct("board_id")
        )
        return sorted({str(b) for b in snapshotted} | {str(b) for b in logged})

    async def delete_board(self, board_id: str) -> None:
        """Forget the board's snapshot, log and history."""
        await self._ready()

        async def delete(session: AsyncClientSession | None) -> None:
            # The log before the snapshot: a log without its snapshot would not load.
            query = {"board_id": board_id}
            await self.updates.delete_many(query, session=session)
            await self.snapshots.delete_many(query, session=session)
            await self.history.delete_many(query, session=session)

        async with self._append_lock:
            self._last_seqs.pop(board_id, None)
            await self._atomically(delete)

    async def close(self) -> None:
        """Close the client's connections; further calls raise RuntimeError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()


def _log_entry(document: Document) -> LogEntry:
    return LogEntry(int(document["seq"]), bytes(document["update"]), float(document["at"]))


def _first_duplicate_seq(error: BulkWriteError) -> int:
    """The index of the document an ordered insert stopped at, if a seq was already taken."""
    write_errors: list[Document] = error.details.get("writeErrors", [])
    first = write_errors[0] if write_errors else {}
    if first.get("code") != _DUPLICATE_KEY or "seq" not in first.get("keyPattern", {"seq": 1}):
        raise error
    return int(first["index"])
