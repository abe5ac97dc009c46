"""Where analytics keep each board's metrics: beside the event log, in the same store.

One record per board (its :class:`~workers.analytics_model.BoardMetrics` as JSON), written
only if it carries a higher ``applied_offset`` than the stored one: two writers, or a batch
written again after a crash, can never move a board's metrics back. The embedded file is
``analytics.sqlite3`` beside the log; MongoDB's is the ``analytics_boards`` collection.
Metrics hold ids, positions, times, due dates and counts, never what people typed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from persistence.encrypted import EncryptedStore
from persistence.memory import MemoryStore
from persistence.sqlite import SqliteStore
from persistence.sqlite_files import enable_wal
from persistence.store import BoardStore
from workers.analytics_model import BoardMetrics

T = TypeVar("T")

#: The embedded analytics file, beside the store's.
ANALYTICS_FILENAME = "analytics.sqlite3"


class AnalyticsStore(Protocol):
    """Each board's metrics, kept by the analytics worker and read by the REST API."""

    async def load(self, board_ids: Iterable[str]) -> dict[str, BoardMetrics]:
        """The stored metrics of those boards that have any."""
        ...

    async def save(self, boards: Sequence[BoardMetrics]) -> None:
        """Store each board's metrics unless a record with a higher offset is there."""
        ...

    async def of_project(self, project: str) -> list[BoardMetrics]:
        """Every board of ``project`` with metrics."""
        ...

    async def reset(self) -> None:
        """Forget every board's metrics (before a replay from the start)."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


class MemoryAnalyticsStore:
    """Metrics in this process (with the memory store)."""

    def __init__(self) -> None:
        self._boards: dict[str, dict[str, Any]] = {}

    async def load(self, board_ids: Iterable[str]) -> dict[str, BoardMetrics]:
        """See :meth:`AnalyticsStore.load`."""
        found = (self._boards.get(board_id) for board_id in board_ids)
        return {doc["board_id"]: BoardMetrics.from_json(doc) for doc in found if doc is not None}

    async def save(self, boards: Sequence[BoardMetrics]) -> None:
        """See :meth:`AnalyticsStore.save`."""
        for board in boards:
            stored = self._boards.get(board.board_id)
            if stored is None or stored["applied_offset"] < board.applied_offset:
                self._boards[board.board_id] = json.loads(json.dumps(board.to_json()))

    async def of_project(self, project: str) -> list[BoardMetrics]:
        """See :meth:`AnalyticsStore.of_project`."""
        docs = [doc for doc in self._boards.values() if doc["project"] == project]
        return [BoardMetrics.from_json(doc) for doc in docs]

    async def reset(self) -> None:
        """See :meth:`AnalyticsStore.reset`."""
        self._boards.clear()

    async def close(self) -> None:
        """Nothing to release."""


class SqliteAnalyticsStore:
    """Metrics in one SQLite file (WAL), one row per board."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="boardcast-metrics")

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None
            )
            enable_wal(connection, self._busy_timeout)
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS analytics_boards (board_id TEXT PRIMARY KEY,"
                " project TEXT NOT NULL, applied_offset INTEGER NOT NULL, doc TEXT NOT NULL)"
            )
            connection.execute(
                "CREATE INDEX IF NOT EXISTS analytics_by_project ON analytics_boards (project)"
            )
            self._connection = connection
        return work(self._connection)

    async def load(self, board_ids: Iterable[str]) -> dict[str, BoardMetrics]:
        """See :meth:`AnalyticsStore.load`."""
        wanted = list(board_ids)

        def read(connection: sqlite3.Connection) -> list[str]:
            docs: list[str] = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                docs += [
                    row[0]
                    for row in connection.execute(
                        f"SELECT doc FROM analytics_boards WHERE board_id IN ({marks})", chunk
                    )
                ]
            return docs

        found = [BoardMetrics.from_json(json.loads(doc)) for doc in await self._run(read)]
        return {board.board_id: board for board in found}

    async def save(self, boards: Sequence[BoardMetrics]) -> None:
        """See :meth:`AnalyticsStore.save`: every board of a batch in one transaction."""
        rows = [
            (
                b.board_id,
                b.project,
                b.applied_offset,
                json.dumps(b.to_json(), separators=(",", ":")),
            )
            for b in boards
        ]

        def write(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    "INSERT INTO analytics_boards (board_id, project, applied_offset, doc)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (board_id) DO UPDATE SET"
                    " project = excluded.project, applied_offset = excluded.applied_offset,"
                    " doc = excluded.doc"
                    " WHERE excluded.applied_offset > analytics_boards.applied_offset",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._run(write)

    async def of_project(self, project: str) -> list[BoardMetrics]:
        """See :meth:`AnalyticsStore.of_project`."""
        docs = await self._run(
            lambda c: [
                row[0]
                for row in c.execute(
                    "SELECT doc FROM analytics_boards WHERE project = ? ORDER BY board_id",
                    (project,),
                )
            ]
        )
        return [BoardMetrics.from_json(json.loads(doc)) for doc in docs]

    async def reset(self) -> None:
        """See :meth:`AnalyticsStore.reset`."""
        await self._run(lambda c: c.execute("DELETE FROM analytics_boards"))

    async def close(self) -> None:
        """See :meth:`AnalyticsStore.close`."""

        def shut(connection: sqlite3.Connection) -> None:
            connection.close()

        if self._connection is not None:
            await self._run(shut)
            self._connection = None
        self._executor.shutdown(wait=False)


class MongoAnalyticsStore:
    """Metrics in the ``analytics_boards`` collection of the store's database."""

    def __init__(self, url: str) -> None:
        from pymongo import AsyncMongoClient

        self._client: Any = AsyncMongoClient(url, connect=False, serverSelectionTimeoutMS=5000)
        self._boards: Any = self._client.get_default_database("boardcast")["analytics_boards"]
        self._indexed = False

    async def _ready(self) -> None:
        if not self._indexed:
            await self._boards.create_index("project")
            self._indexed = True

    async def load(self, board_ids: Iterable[str]) -> dict[str, BoardMetrics]:
        """See :meth:`AnalyticsStore.load`."""
        await self._ready()
        cursor = self._boards.find({"_id": {"$in": list(board_ids)}})
        found = [BoardMetrics.from_json(json.loads(doc["doc"])) async for doc in cursor]
        return {board.board_id: board for board in found}

    async def save(self, boards: Sequence[BoardMetrics]) -> None:
        """See :meth:`AnalyticsStore.save`: one conditional write per board."""
        from pymongo.errors import DuplicateKeyError

        await self._ready()
        for board in boards:
            record = {
                "project": board.project,
                "applied_offset": board.applied_offset,
                "doc": _encoded(board),
            }
            # A record with a higher offset makes the upsert collide on _id: it wins.
            with contextlib.suppress(DuplicateKeyError):
                await self._boards.update_one(
                    {"_id": board.board_id, "applied_offset": {"$lt": board.applied_offset}},
                    {"$set": record},
                    upsert=True,
                )

    async def of_project(self, project: str) -> list[BoardMetrics]:
        """See :meth:`AnalyticsStore.of_project`."""
        await self._ready()
        cursor = self._boards.find({"project": project}).sort("_id", 1)
        return [BoardMetrics.from_json(json.loads(doc["doc"])) async for doc in cursor]

    async def reset(self) -> None:
        """See :meth:`AnalyticsStore.reset`."""
        await self._boards.delete_many({})

    async def close(self) -> None:
        """See :meth:`AnalyticsStore.close`."""
        await self._client.close()


def _encoded(board: BoardMetrics) -> str:
    return json.dumps(board.to_json(), separators=(",", ":"))


_MEMORY_STORES: dict[int, MemoryAnalyticsStore] = {}


def analytics_store_for(store: BoardStore) -> AnalyticsStore:
    """The analytics store beside ``store`` (and its event log)."""
    inner = store.inner if isinstance(store, EncryptedStore) else store
    if isinstance(inner, SqliteStore):
        directory = os.path.dirname(os.path.abspath(inner.path))
        return SqliteAnalyticsStore(os.path.join(directory, ANALYTICS_FILENAME))
    if isinstance(inner, MemoryStore):
        return _MEMORY_STORES.setdefault(id(inner.task_index()), MemoryAnalyticsStore())
    from persistence.mongo import MongoStore

    if isinstance(inner, MongoStore):
        return MongoAnalyticsStore(inner.url)
    raise NotImplementedError(f"no analytics store goes with {type(inner).__name__}")
