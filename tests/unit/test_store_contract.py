"""The contract every board store passes, run against each implementation.

To cover a new store, add a function returning a ``Backend`` to ``BACKENDS``. The MongoDB
store runs against SecantusDB (or ``BOARDCAST_TEST_MONGO_URL``); see
``tests/persistence_servers.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from persistence import BoardStore, LogEntry, MemoryStore, SqliteStore, open_store
from persistence.history import KEEP_EVERYTHING, HistoryPolicy
from persistence.mongo import MongoStore
from persistence.store import HistoryUnavailable, Version
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    """How to open a store under test."""

    url: str
    data_dir: Path
    # Whether stores from separate open() calls share storage, as separate processes would,
    # and whether data outlives close().
    shared: bool

    def open(self, **options: Any) -> BoardStore:
        return open_store(self.url, data_dir=str(self.data_dir), **options)


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("sqlite", tmp_path / "data", shared=True)


def memory_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("memory", tmp_path, shared=False)


def mongo_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.getfixturevalue("mongo_url"), tmp_path, shared=True)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "sqlite": sqlite_backend,
    "memory": memory_backend,
    "mongo": mongo_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[BoardStore]:
    async with backend.open() as opened:
        yield opened


@pytest.fixture
def shared_backend(backend: Backend) -> Backend:
    if not backend.shared:
        pytest.skip("this store keeps nothing beyond one instance")
    return backend


def seqs(entries: list[LogEntry]) -> list[int]:
    return [entry.seq for entry in entries]


async def test_unknown_board_loads_empty(store: BoardStore) -> None:
    board = await store.load("nope")
    assert (board.board_id, board.snapshot, board.snapshot_seq, board.updates) == (
        "nope",
        None,
        0,
        [],
    )
    assert board.last_seq == 0
    assert await store.list_boards() == []


async def test_appended_updates_load_back_in_order(store: BoardStore) -> None:
    before = time.time()
    assert await store.append({"b1": [b"\x01first", b"\x02second", b""]}) == {"b1": 3}
    after = time.time()

    board = await store.load("b1")
    assert board.snapshot is None and board.snapshot_seq == 0
    assert [(e.seq, e.update) for e in board.updates] == [
        (1, b"\x01first"),
        (2, b"\x02second"),
        (3, b""),
    ]
    assert all(before <= e.at <= after for e in board.updates)
    assert board.last_seq == 3


async def test_seqs_are_per_board_and_gap_free_across_appends(store: BoardStore) -> None:
    assert await store.append({"a": [b"a1", b"a2"], "b": [b"b1"]}) == {"a": 2, "b": 1}
    assert await store.append({"a": [b"a3"], "c": [b"c1", b"c2"]}) == {"a": 3, "c": 2}
    # An empty batch for a board reports where it stands and writes nothing.
    assert await store.append({"b": [], "new": []}) == {"b": 1, "new": 0}
    assert await store.append({}) == {}

    a, b, c = [await store.load(board_id) for board_id in ("a", "b", "c")]
    assert [(e.seq, e.update) for e in a.updates] == [(1, b"a1"), (2, b"a2"), (3, b"a3")]
    assert [(e.seq, e.update) for e in b.updates] == [(1, b"b1")]
    assert [(e.seq, e.update) for e in c.updates] == [(1, b"c1"), (2, b"c2")]
    assert await store.list_boards() == ["a", "b", "c"]


async def test_a_failing_append_writes_nothing(store: BoardStore) -> None:
    await store.append({"a": [b"a1"]})
    with pytest.raises(TypeError):
        await store.append({"a": [b"a2"], "b": [None]})  # type: ignore[list-item]
    assert seqs((await store.load("a")).updates) == [1]
    assert await store.list_boards() == ["a"]


async def test_snapshot_trims_the_log_and_load_returns_only_the_tail(store: BoardStore) -> None:
    await store.append({"b": [b"u1", b"u2", b"u3", b"u4", b"u5"], "other": [b"o1", b"o2"]})
    await store.write_snapshot("b", b"state-upto-3", 3)

    board = await store.load("b")
    assert board.snapshot == b"state-upto-3"
    assert board.snapshot_seq == 3
    assert [(e.seq, e.update) for e in board.updates] == [(4, b"u4"), (5, b"u5")]
    assert board.last_seq == 5
    assert seqs((await store.load("other")).updates) == [1, 2]

    assert await store.append({"b": [b"u6"]}) == {"b": 6}
    assert seqs((await store.load("b")).updates) == [4, 5, 6]


async def test_snapshot_of_the_whole_log_keeps_numbering(store: BoardStore) -> None:
    await store.append({"b": [b"u1", b"u2"]})
    await store.write_snapshot("b", b"all", 2)

    board = await store.load("b")
    assert (board.snapshot, board.snapshot_seq, board.updates, board.last_seq) == (
        b"all",
        2,
        [],
        2,
    )
    assert await store.list_boards() == ["b"]
    # The log is empty now, yet numbering must not restart.
    assert await store.append({"b": [b"u3"]}) == {"b": 3}


async def test_a_stale_snapshot_is_ignored(store: BoardStore) -> None:
    await store.append({"b": [b"u1", b"u2", b"u3", b"u4", b"u5"]})
    await store.write_snapshot("b", b"upto-4", 4)
    await store.write_snapshot("b", b"upto-2", 2)

    board = await store.load("b")
    assert (board.snapshot, board.snapshot_seq) == (b"upto-4", 4)
    assert [(e.seq, e.update) for e in board.updates] == [(5, b"u5")]


async def test_a_snapshot_outside_the_log_is_refused(store: BoardStore) -> None:
    await store.append({"b": [b"u1", b"u2"]})
    with pytest.raises(ValueError, match="beyond"):
        await store.write_snapshot("b", b"future", 3)
    with pytest.raises(ValueError, match="negative"):
        await store.write_snapshot("b", b"bad", -1)
    board = await store.load("b")
    assert board.snapshot is None and seqs(board.updates) == [1, 2]


async def test_delete_board_forgets_it_and_numbering_restarts(store: BoardStore) -> None:
    await store.append({"gone": [b"g1", b"g2", b"g3"], "kept": [b"k1"]})
    await store.write_snapshot("gone", b"snap", 2)
    await store.delete_board("gone")
    await store.delete_board("never-existed")

    assert await store.list_boards() == ["kept"]
    assert (await store.load("gone")).last_seq == 0
    assert await store.append({"gone": [b"again"]}) == {"gone": 1}
    assert seqs((await store.load("kept")).updates) == [1]


async def test_a_closed_store_refuses_calls(backend: Backend) -> None:
    store = backend.open()
    async with store:
        await store.append({"b": [b"u1"]})
    await store.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await store.load("b")
    with pytest.raises(RuntimeError, match="closed"):
        await store.append({"b": [b"u2"]})


async def test_a_yjs_board_rebuilds_from_snapshot_and_tail(store: BoardStore) -> None:
    doc: pycrdt.Doc[pycrdt.Map[object]] = pycrdt.Doc()
    tasks = doc.get("tasks", type=pycrdt.Map)
    by_id: dict[str, pycrdt.Map[object]] = {}
    pending: list[bytes] = []
    doc.observe(lambda event: pending.append(event.update))

    async def flush() -> int:
        last = (await store.append({"board": list(pending)}))["board"]
        pending.clear()
        return last

    def add_task(i: int) -> None:
        by_id[f"t{i}"] = tasks[f"t{i}"] = pycrdt.Map({"title": f"task {i}", "done": False})

    for i in range(20):
        add_task(i)
    by_id["t3"]["title"] = "renamed: ünïcødé"
    last = await flush()
    await store.write_snapshot("board", doc.get_update(), last)

    for i in range(20, 25):
        add_task(i)
    by_id["t0"]["done"] = True
    del tasks["t1"]
    await flush()

    stored = await store.load("board")
    assert stored.snapshot is not None and stored.updates, "both halves must be exercised"
    rebuilt: pycrdt.Doc[pycrdt.Map[object]] = pycrdt.Doc()
    rebuilt.apply_update(stored.snapshot)
    for entry in stored.updates:
        rebuilt.apply_update(entry.update)
    content: dict[str, Any] | None = rebuilt.get("tasks", type=pycrdt.Map).to_py()
    assert content is not None
    assert len(content) == 24 and "t1" not in content
    assert content["t3"]["title"] == "renamed: ünïcødé" and content["t0"]["done"] is True
    assert content == tasks.to_py()


async def test_everything_survives_close_and_reopen(shared_backend: Backend) -> None:
    async with shared_backend.open() as store:
        await store.append({"a": [b"a1", b"a2", b"a3"], "b": [b"b1"]})
        await store.write_snapshot("a", b"snap-a", 2)
        await store.write_snapshot("a", b"snap-a3", 3)
        await store.append({"a": [b"a4"]})
        before = await store.load("a")
        history = await store.versions("a")

    async with shared_backend.open() as reopened:
        assert await reopened.list_boards() == ["a", "b"]
        assert await reopened.load("a") == before
        assert await reopened.versions("a") == history
        assert [v.kind for v in history] == ["snapshot", "snapshot", "update"]
        assert [(e.seq, e.update) for e in (await reopened.load("b")).updates] == [(1, b"b1")]
        assert await reopened.append({"a": [b"a5"]}) == {"a": 5}


async def test_two_instances_append_to_different_boards(shared_backend: Backend) -> None:
    rounds = 30
    async with shared_backend.open() as first, shared_backend.open() as second:

        async def write(store: BoardStore, name: str) -> None:
            for i in range(rounds):
                await store.append({f"{name}-x": [f"{name}{i}".encode()], f"{name}-y": [b"y"]})

        await asyncio.gather(write(first, "first"), write(second, "second"))
        # Each instance sees what the other wrote.
        assert (await first.load("second-x")).last_seq == rounds
        assert (await second.load("first-x")).last_seq == rounds

    async with shared_backend.open() as store:
        assert await store.list_boards() == ["first-x", "first-y", "second-x", "second-y"]
        for name in ("first", "second"):
            board = await store.load(f"{name}-x")
            assert [(e.seq, e.update) for e in board.updates] == [
                (i + 1, f"{name}{i}".encode()) for i in range(rounds)
            ]


async def test_two_instances_writing_one_board_still_get_distinct_seqs(
    shared_backend: Backend,
) -> None:
    async with shared_backend.open() as first, shared_backend.open() as second:
        results = await asyncio.gather(
            *(store.append({"b": [b"p", b"q"]}) for store in [first, second] * 10)
        )
        assert sorted(r["b"] for r in results) == list(range(2, 41, 2))
        assert seqs((await first.load("b")).updates) == list(range(1, 41))


class FakeClock:
    """A clock the test moves by hand, so stamped times are exact."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TaskBoard:
    """A Yjs document of tasks whose edits are collected as updates, as a board's would be."""

    def __init__(self) -> None:
        self.doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
        self.tasks = self.doc.get("tasks", type=pycrdt.Map)
        self.pending: list[bytes] = []
        self.doc.observe(lambda event: self.pending.append(event.update))

    def add(self, task_id: str, title: str) -> None:
        self.tasks[task_id] = pycrdt.Map({"title": title})

    def rename(self, task_id: str, title: str) -> None:
        task: pycrdt.Map[Any] = self.tasks[task_id]
        task["title"] = title

    def content(self) -> dict[str, Any]:
        return dict(self.tasks.to_py() or {})

    async def flush(self, store: BoardStore, board_id: str = "board") -> int:
        last = (await store.append({board_id: list(self.pending)}))[board_id]
        self.pending.clear()
        return last


def content_of(state: bytes) -> dict[str, Any]:
    doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
    doc.apply_update(state)
    return dict(doc.get("tasks", type=pycrdt.Map).to_py() or {})


async def test_versions_list_retained_snapshots_and_updates_oldest_first(
    backend: Backend,
) -> None:
    clock = FakeClock(1000.0)
    async with backend.open(clock=clock) as store:
        assert await store.versions("b") == []
        await store.append({"b": [b"u1", b"u2"], "other": [b"o1"]})
        clock.now = 1010.0
        await store.write_snapshot("b", b"upto-2", 2)
        clock.now = 1020.0
        await store.append({"b": [b"u3"]})
        clock.now = 1030.0
        await store.write_snapshot("b", b"upto-3", 3)
        clock.now = 1040.0
        await store.append({"b": [b"u4"]})
        # A snapshot with the seq of the current one replaces it instead of joining history.
        clock.now = 1050.0
        await store.append({"b": [b"u5"]})
        await store.write_snapshot("b", b"upto-5", 5)
        await store.write_snapshot("b", b"upto-5-again", 5)

        assert await store.versions("b") == [
            Version(2, 1010.0, "snapshot"),
            Version(3, 1030.0, "snapshot"),
            Version(5, 1050.0, "snapshot"),
        ]
        await store.append({"b": [b"u6"]})
        assert (await store.versions("b"))[-1] == Version(6, 1050.0, "update")
        assert await store.versions("other") == [Version(1, 1000.0, "update")]


async def test_state_at_reads_the_past_of_a_compacted_board(backend: Backend) -> None:
    clock = FakeClock(100.0)
    board = TaskBoard()
    seen: dict[float, dict[str, Any]] = {}
    async with backend.open(clock=clock) as store:
        board.add("t1", "write spec")
        await board.flush(store)
        seen[100.0] = board.content()

        clock.now = 200.0
        board.add("t2", "review")
        await board.flush(store)
        seen[200.0] = board.content()
        clock.now = 250.0
        await store.write_snapshot("board", board.doc.get_update(), 2)

        clock.now = 300.0
        board.add("t3", "ship")
        await board.flush(store)
        clock.now = 400.0
        board.rename("t1", "write the spec ✓")
        last = await board.flush(store)
        seen[400.0] = board.content()
        clock.now = 450.0
        await store.write_snapshot("board", board.doc.get_update(), last)

        clock.now = 500.0
        board.add("t4", "celebrate")
        await board.flush(store)
        seen[500.0] = board.content()

        # Since the current snapshot (450), every update is kept.
        assert content_of(await store.state_at("board", 450.0)) == seen[400.0]
        assert content_of(await store.state_at("board", 499.0)) == seen[400.0]
        assert content_of(await store.state_at("board", 500.0)) == seen[500.0]
        assert content_of(await store.state_at("board", 9e9)) == seen[500.0]
        # Before it, the past is read from the snapshot written at 250: the edit at 300
        # was compacted away.
        assert content_of(await store.state_at("board", 250.0)) == seen[200.0]
        assert content_of(await store.state_at("board", 399.0)) == seen[200.0]
        # Before the oldest snapshot, the log it covered is gone.
        with pytest.raises(HistoryUnavailable, match="board"):
            await store.state_at("board", 249.0)


async def test_state_at_of_a_board_never_compacted_replays_its_log(backend: Backend) -> None:
    clock = FakeClock(100.0)
    board = TaskBoard()
    async with backend.open(clock=clock) as timed:
        board.add("t1", "one")
        await board.flush(timed)
        first = board.content()
        clock.now = 200.0
        board.add("t2", "two")
        await board.flush(timed)

        assert content_of(await timed.state_at("board", 99.0)) == {}
        assert content_of(await timed.state_at("board", 150.0)) == first
        assert content_of(await timed.state_at("board", 200.0)) == board.content()
        assert content_of(await timed.state_at("never-written", 200.0)) == {}
        # The merged state is the board's whole document, as a client would sync it.
        reloaded: pycrdt.Doc[Any] = pycrdt.Doc()
        reloaded.apply_update(board.doc.get_update())
        assert await timed.state_at("board", 200.0) == reloaded.get_update()


async def test_history_is_thinned_by_the_policy(backend: Backend) -> None:
    clock = FakeClock(1000.0)
    policy = HistoryPolicy(keep_last=2, hourly_for=0.0, daily_for=0.0)
    async with backend.open(clock=clock, history=policy) as store:
        for seq in range(1, 6):
            clock.now += 60
            await store.append({"b": [f"u{seq}".encode()]})
            await store.write_snapshot("b", f"upto-{seq}".encode(), seq)

        kept = [(v.seq, v.kind) for v in await store.versions("b")]
        # The current snapshot and the two newest past ones.
        assert kept == [(3, "snapshot"), (4, "snapshot"), (5, "snapshot")]
        assert (await store.load_at("b", 1000.0 + 3 * 60)).snapshot == b"upto-3"
        with pytest.raises(HistoryUnavailable):
            await store.load_at("b", 1000.0 + 2 * 60)


async def test_every_snapshot_is_kept_when_the_policy_says_so(backend: Backend) -> None:
    clock = FakeClock(1000.0)
    async with backend.open(clock=clock, history=KEEP_EVERYTHING) as store:
        for seq in range(1, 31):
            clock.now += 3600
            await store.append({"b": [f"u{seq}".encode()]})
            await store.write_snapshot("b", f"upto-{seq}".encode(), seq)
        assert [v.seq for v in await store.versions("b")] == list(range(1, 31))


async def test_delete_board_forgets_its_history(store: BoardStore) -> None:
    await store.append({"gone": [b"g1", b"g2"]})
    await store.write_snapshot("gone", b"s1", 1)
    await store.write_snapshot("gone", b"s2", 2)
    await store.delete_board("gone")
    assert await store.versions("gone") == []
    assert (await store.load_at("gone", 9e9)).snapshot is None


async def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", data_dir=str(tmp_path)), MemoryStore)
    default = open_store("sqlite", data_dir=str(tmp_path / "d"))
    assert isinstance(default, SqliteStore)
    assert default.path == str(tmp_path / "d" / "boardcast.sqlite3")
    absolute = open_store(f"sqlite://{tmp_path}/x/board.db", data_dir="/unused")
    assert isinstance(absolute, SqliteStore) and absolute.path == f"{tmp_path}/x/board.db"
    relative = open_store("sqlite://rel.db", data_dir=str(tmp_path))
    assert isinstance(relative, SqliteStore) and relative.path == str(tmp_path / "rel.db")

    # Opening connects to nothing yet.
    async with open_store("mongodb://127.0.0.1:1/boards?w=1", data_dir="/unused") as named:
        assert isinstance(named, MongoStore) and named.database_name == "boards"
    async with open_store("mongodb://127.0.0.1:1", data_dir="/unused") as unnamed:
        assert isinstance(unnamed, MongoStore) and unnamed.database_name == "boardcast"
    with pytest.raises(ValueError, match="BOARDCAST_STORE"):
        open_store("postgres://x", data_dir=str(tmp_path))


async def test_sqlite_append_survives_the_process_being_killed(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    script = (
        "import asyncio, os, signal, sys\n"
        "from persistence.sqlite import SqliteStore\n"
        "async def main():\n"
        "    store = SqliteStore(sys.argv[1])\n"
        "    seqs = await store.append({'b': [b'one', b'two']})\n"
        "    print(seqs['b'], flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "2"

    async with SqliteStore(path) as store:
        assert [(e.seq, e.update) for e in (await store.load("b")).updates] == [
            (1, b"one"),
            (2, b"two"),
        ]
