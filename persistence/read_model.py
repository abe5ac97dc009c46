"""The read model: one denormalised document per task, across every board, for queries.

Writes go to board actors; queries that span boards ("everything due this week
assigned to me") must not wake every actor. So each board host keeps a
:class:`TaskIndex` current from the domain events of what it commits: after each
group commit it writes the tasks those events name, as they now are, in one batch.
The index lives beside the boards (:meth:`BoardStore.task_index`: a second SQLite
file, a MongoDB collection, or memory) and can always be rebuilt from them
(``boardcast reindex``).

Rows carry the board version they were read at and a write never replaces a row
read at a newer version, so a change delivered twice (at least once, after a
crash) or out of order across hosts changes nothing twice.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from persistence.sqlite_files import enable_wal

T = TypeVar("T")

#: How results may be ordered.
SORTS = ("due", "updated_at", "title", "board")


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task as the read model holds it."""

    board_id: str
    task_id: str
    project: str
    title: str
    column: str
    position: str
    description: str
    assignees: tuple[str, ...]
    labels: tuple[str, ...]
    due: str | None
    created_at: str
    updated_at: str
    version: int  # the board's version this row was read at

    def to_json(self) -> dict[str, Any]:
        """The row as the REST API shows it."""
        out = dataclasses.asdict(self)
        out["assignees"] = list(self.assignees)
        out["labels"] = list(self.labels)
        return out


@dataclass(frozen=True, slots=True)
class IndexWrite:
    """What one board's committed changes do to the index."""

    board_id: str
    version: int
    upserts: Sequence[TaskRow] = ()
    deletes: Sequence[str] = ()
    replace: bool = False  # the rows are the whole board: drop every other row of it


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """A query over every board's tasks; ``None`` fields do not filter."""

    project: str | None = None
    board: str | None = None
    column: str | None = None
    assignee: str | None = None
    label: str | None = None
    due_from: str | None = None  # inclusive, YYYY-MM-DD
    due_to: str | None = None  # inclusive
    text: str | None = None  # in the title or description, case-insensitive
    sort: str = "due"
    after: tuple[str, str, str] | None = None  # the sort key of the last row already given
    limit: int = 50


def sort_key(row: TaskRow, sort: str) -> tuple[str, str, str]:
    """The key rows are ordered by: the sort field, then board and task id (unique)."""
    if sort == "due":
        # Tasks without a due date come last.
        first = row.due if row.due is not None else "~"
    elif sort == "updated_at":
        first = row.updated_at
    elif sort == "title":
        first = row.title.casefold()
    else:
        first = ""
    return (first, row.board_id, row.task_id)


def matches(row: TaskRow, query: TaskFilter) -> bool:
    """Whether ``row`` passes every filter of ``query`` (the reference semantics)."""
    if query.project is not None and row.project != query.project:
        return False
    if query.board is not None and row.board_id != query.board:
        return False
    if query.column is not None and row.column != query.column:
        return False
    if query.assignee is not None and query.assignee not in row.assignees:
        return False
    if query.label is not None and query.label not in row.labels:
        return False
    if query.due_from is not None and (row.due is None or row.due < query.due_from):
        return False
    if query.due_to is not None and (row.due is None or row.due > query.due_to):
        return False
    if query.text is not None:
        needle = query.text.casefold()
        if needle not in row.title.casefold() and needle not in row.description.casefold():
            return False
    return True


class TaskIndex(abc.ABC):
    """Where the read model is kept; every method is a coroutine."""

    @abc.abstractmethod
    async def write(self, writes: Sequence[IndexWrite]) -> None:
        """Apply the writes of one group commit, in one batch (rows older than stored lose)."""

    @abc.abstractmethod
    async def rows(self, query: TaskFilter) -> list[TaskRow]:
        """Up to ``query.limit + 1`` matching rows after ``query.after``, in sort order."""

    @abc.abstractmethod
    async def board_version(self, board_id: str) -> int:
        """The newest board version written for ``board_id`` (0 if none)."""

    @abc.abstractmethod
    async def generation(self) -> int:
        """A number that changes with every write (a cached answer is good while it holds)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; idempotent."""

    async def query(self, query: TaskFilter) -> tuple[list[TaskRow], tuple[str, str, str] | None]:
        """One page of matching rows, and the cursor of the next page (None if none)."""
        found = await self.rows(query)
        page = found[: query.limit]
        more = len(found) > query.limit
        return page, sort_key(page[-1], query.sort) if more and page else None


class MemoryTaskIndex(TaskIndex):
    """The read model in a dict, for the memory store and tests."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], TaskRow] = {}
        self._versions: dict[str, int] = {}
        self._generation = 0

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        self._generation += 1
        for write in writes:
            _apply_in_memory(self._rows, write)
            self._versions[write.board_id] = max(
                self._versions.get(write.board_id, 0), write.version
            )

    async def rows(self, query: TaskFilter) -> list[TaskRow]:
        found = [row for row in self._rows.values() if matches(row, query)]
        found.sort(key=lambda row: sort_key(row, query.sort))
        if query.after is not None:
            after = query.after
            found = [row for row in found if sort_key(row, query.sort) > after]
        return found[: query.limit + 1]

    async def board_version(self, board_id: str) -> int:
        return self._versions.get(board_id, 0)

    async def generation(self) -> int:
        return self._generation

    async def close(self) -> None:
        return None


def _apply_in_memory(rows: dict[tuple[str, str], TaskRow], write: IndexWrite) -> None:
    if write.replace:
        for key in [key for key in rows if key[0] == write.board_id]:
            if rows[key].version <= write.version:
                del rows[key]
    for task_id in write.deletes:
        key = (write.board_id, task_id)
        current = rows.get(key)
        if current is None or current.version <= write.version:
            rows.pop(key, None)
    for row in write.upserts:
        key = (row.board_id, row.task_id)
        current = rows.get(key)
        if current is None or current.version <= row.version:
            rows[key] = row


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tasks (
        board_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        project TEXT NOT NULL,
        title TEXT NOT NULL,
        title_key TEXT NOT NULL,
        "column" TEXT NOT NULL,
        position TEXT NOT NULL,
        description TEXT NOT NULL,
        assignees TEXT NOT NULL,
        labels TEXT NOT NULL,
        due TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (board_id, task_id)
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_by_due ON tasks (due, board_id, task_id)",
    "CREATE INDEX IF NOT EXISTS tasks_by_project ON tasks (project, due)",
    """CREATE TABLE IF NOT EXISTS task_people (
        board_id TEXT NOT NULL, task_id TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (kind, value, board_id, task_id)
    )""",
    "CREATE INDEX IF NOT EXISTS task_people_by_task ON task_people (board_id, task_id)",
    """CREATE TABLE IF NOT EXISTS boards (
        board_id TEXT PRIMARY KEY, version INTEGER NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER)",
    "INSERT OR IGNORE INTO generation (id, value) VALUES (1, 0)",
)

_COLUMNS = (
    'board_id, task_id, project, title, "column", position, description, assignees, labels,'
    " due, created_at, updated_at, version"
)


class SqliteTaskIndex(TaskIndex):
    """The read model in a SQLite file of its own, beside the embedded store.

    It can always be rebuilt from the boards, so commits do not wait for the disk
    (``synchronous = NORMAL`` in WAL mode: a power cut may lose the last writes,
    which the next reindex or the next change of those tasks restores).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="boardcast-index")
        self._closed = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the task index is closed")
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
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            enable_wal(connection, self._busy_timeout)
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute("COMMIT")
            self._connection = connection
        return work(self._connection)

    async def write(self, writes: Sequence[IndexWrite]) -> None:
        if not writes:
            return
        writes = list(writes)

        def apply(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for write in writes:
                    _write_sqlite(connection, write)
                connection.execute("UPDATE generation SET value = value + 1 WHERE id = 1")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

        await self._run(apply)

    async def rows(self, query: TaskFilter) -> list[TaskRow]:
        where: list[str] = []
        args: list[Any] = []
        for field, value in (
            ("project", query.project),
            ("board_id", query.board),
            ('"column"', query.column),
        ):
            if value is not None:
                where.append(f"t.{field} = ?")
                args.append(value)
        for kind, value in (("assignee", query.assignee), ("label", query.label)):
            if value is not None:
                where.append(
                    "EXISTS (SELECT 1 FROM task_people p WHERE p.kind = ? AND p.value = ?"
                    " AND p.board_id = t.board_id AND p.task_id = t.task_id)"
                )
                args += [kind, value]
        if query.due_from is not None:
            where.append("t.due IS NOT NULL AND t.due >= ?")
            args.append(query.due_from)
        if query.due_to is not None:
            where.append("t.due IS NOT NULL AND t.due <= ?")
            args.append(query.due_to)
        if query.text is not None:
            where.append("(instr(t.title_key, ?) > 0 OR instr(lower(t.description), ?) > 0)")
            args += [query.text.casefold(), query.text.lower()]
        first = {
            "due": "COALESCE(t.due, '~')",
            "updated_at": "t.updated_at",
            "title": "t.title_key",
            "board": "''",
        }[query.sort]
        if query.after is not None:
            where.append(f"({first}, t.board_id, t.task_id) > (?, ?, ?)")
            args += list(query.after)
        sql = f"SELECT {_COLUMNS} FROM tasks t"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {first}, t.board_id, t.task_id LIMIT ?"
        args.append(query.limit + 1)

        def read(connection: sqlite3.Connection) -> list[TaskRow]:
            return [_row(values) for values in connection.execute(sql, args).fetchall()]

        found = await self._run(read)
        if query.text is not None:
            # SQLite's lower() knows ASCII only: the reference check decides.
            found = [row for row in found if matches(row, query)]
        return found

    async def board_version(self, board_id: str) -> int:
        def read(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                "SELECT version FROM boards WHERE board_id = ?", (board_id,)
            ).fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run(read)

    async def generation(self) -> int:
        def read(connection: sqlite3.Connection) -> int:
            row = connection.execute("SELECT value FROM generation WHERE id = 1").fetchone()
            return int(row[0]) if row is not None else 0

        return await self._run(read)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, close_connection)
        finally:
            self._executor.shutdown(wait=False)


def _write_sqlite(connection: sqlite3.Connection, write: IndexWrite) -> None:
    board = write.board_id
    if write.replace:
        connection.execute(
            "DELETE FROM task_people WHERE board_id = ? AND task_id IN"
            " (SELECT task_id FROM tasks WHERE board_id = ? AND version <= ?)",
            (board, board, write.version),
        )
        connection.execute(
            "DELETE FROM tasks WHERE board_id = ? AND version <= ?", (board, write.version)
        )
    for task_id in write.deletes:
        gone = connection.execute(
            "DELETE FROM tasks WHERE board_id = ? AND task_id = ? AND version <= ?",
            (board, task_id, write.version),
        ).rowcount
        if gone:
            connection.execute(
                "DELETE FROM task_people WHERE board_id = ? AND task_id = ?", (board, task_id)
            )
    for row in write.upserts:
        changed = connection.execute(
            f"INSERT INTO tasks ({_COLUMNS}, title_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (board_id, task_id) DO UPDATE SET"
            " project = excluded.project, title = excluded.title,"
            ' title_key = excluded.title_key, "column" = excluded."column",'
            " position = excluded.position, description = excluded.description,"
            " assignees = excluded.assignees, labels = excluded.labels, due = excluded.due,"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " version = excluded.version WHERE excluded.version >= tasks.version",
            (
                row.board_id,
                row.task_id,
                row.project,
                row.title,
                row.column,
                row.position,
                row.description,
                json.dumps(list(row.assignees)),
                json.dumps(list(row.labels)),
                row.due,
                row.created_at,
                row.updated_at,
                row.version,
                row.title.casefold(),
            ),
        ).rowcount
        if changed:
            connection.execute(
                "DELETE FROM task_people WHERE board_id = ? AND task_id = ?",
                (row.board_id, row.task_id),
            )
            connection.executemany(
                "INSERT OR IGNORE INTO task_people (board_id, task_id, kind, value)"
                " VALUES (?, ?, ?, ?)",
                [(row.board_id, row.task_id, "assignee", name) for name in row.assignees]
                + [(row.board_id, row.task_id, "label", name) for name in row.labels],
            )
    connection.execute(
        "INSERT INTO boards (board_id, version) VALUES (?, ?) ON CONFLICT (board_id)"
        " DO UPDATE SET version = MAX(version, excluded.version)",
        (board, write.version),
    )


def _row(values: Iterable[Any]) -> TaskRow:
    (
        board_id,
        task_id,
        project,
        title,
        column,
        position,
        description,
        assignees,
        labels,
        due,
        created_at,
        updated_at,
        version,
    ) = values
    return TaskRow(
        board_id,
        task_id,
        project,
        title,
        column,
        position,
        description,
        tuple(json.loads(assignees)),
        tuple(json.loads(labels)),
        due,
        created_at,
        updated_at,
        int(version),
    )
