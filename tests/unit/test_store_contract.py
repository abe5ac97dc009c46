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

from persistence import BoardStore, LogEntry, MemoryStore, SqliteStore
from persistence.coverage import Coverage
from persistence.factory import open_store
from persistence.history import KEEP_EVERYTHING, KEEP_NOTHING, parse_history_policy
from persistence.keyring import PLAINTEXT
from persistence.mongo import MongoStore
from persistence.store import HistoryUnavailable, Record, Version
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


def set_key(doc: pycrdt.Doc[Any], key: str) -> bytes:
    """Set task ``key`` on ``doc``; the update that makes."""
    before = doc.get_state()
    doc.get("tasks", type=pycrdt.Map)[key] = key
    return doc.get_update(before)


async def two_hosts_wrote(store: BoardStore) -> pycrdt.Doc[Any]:
    """Host A writes a1, host B (holding the board too for a moment) b1, then A a2.

    Returns host A's document, which never saw b1.
    """
    host_a: pycrdt.Doc[Any] = pycrdt.Doc()
    host_b: pycrdt.Doc[Any] = pycrdt.Doc()
    await store.append({"b": [set_key(host_a, "a1")]})
    await store.append({"b": [set_key(host_b, "b1")]})
    await store.append({"b": [set_key(host_a, "a2")]})
    return host_a


def stored_keys(board: Any) -> set[str]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if board.snapshot is not None:
        doc.apply_update(board.snapshot)
    for entry in board.updates:
        doc.apply_update(entry.update)
    return set(doc.get("tasks", type=pycrdt.Map).keys())


async def test_a_snapshot_missing_an_entry_it_would_trim_is_refused(store: BoardStore) -> None:
    host_a = await two_hosts_wrote(store)
    covers = Coverage(host_a.get_state())
    assert await store.write_snapshot("b", host_a.get_update(), 3, covers=covers) is False

    board = await store.load("b")
    assert board.snapshot is None and seqs(board.updates) == [1, 2, 3]
    assert stored_keys(board) == {"a1", "b1", "a2"}


async def test_a_snapshot_holding_every_entry_it_trims_is_written(store: BoardStore) -> None:
    host_a = await two_hosts_wrote(store)
    # Up to seq 1 only A's own entry is trimmed; b1 (seq 2) stays in the log.
    covers = Coverage(host_a.get_state())
    assert await store.write_snapshot("b", host_a.get_update(), 1, covers=covers) is True
    board = await store.load("b")
    assert board.snapshot_seq == 1 and seqs(board.updates) == [2, 3]
    assert stored_keys(board) == {"a1", "b1", "a2"}

    # Once A has b1 too, a snapshot of everything is written and the log is empty.
    whole = await store.load("b")
    for entry in whole.updates:
        host_a.apply_update(entry.update)
    covers = Coverage(host_a.get_state())
    assert await store.write_snapshot("b", host_a.get_update(), 3, covers=covers) is True
    board = await store.load("b")
    assert (board.snapshot_seq, board.updates) == (3, [])
    assert stored_keys(board) == {"a1", "b1", "a2"}


async def test_a_snapshot_keeps_the_state_vector_it_was_written_with(store: BoardStore) -> None:
    # A board loaded with its snapshot's state vector is served without being built, so
    # the vector must be the one of the state beside it, never an older snapshot's.
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    await store.append({"b": [set_key(doc, "a1"), set_key(doc, "a2")]})
    vector = doc.get_state()
    assert await store.write_snapshot("b", doc.get_update(), 2, covers=Coverage(vector))
    board = await store.load("b")
    assert (board.snapshot, board.snapshot_vector) == (doc.get_update(), vector)

    # The same version written again without a vector: none is kept with it.
    assert await store.write_snapshot("b", doc.get_update(), 2)
    assert (await store.load("b")).snapshot_vector is None

    # A newer snapshot with its own vector, then one without: each load has its own.
    await store.append({"b": [set_key(doc, "a3")]})
    newer = doc.get_state()
    assert await store.write_snapshot("b", doc.get_update(), 3, covers=Coverage(newer))
    assert (await store.load("b")).snapshot_vector == newer
    await store.append({"b": [set_key(doc, "a4")]})
    assert await store.write_snapshot("b", doc.get_update(), 4)
    board = await store.load("b")
    assert (board.snapshot_seq, board.snapshot_vector) == (4, None)


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
        # Compaction kept the updates it covered: every version is there.
        assert [(v.seq, v.kind) for v in history] == [
            (1, "update"),
            (2, "update"),
            (2, "snapshot"),
            (3, "update"),
            (3, "snapshot"),
            (4, "update"),
        ]
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

        # A snapshot carries the time of the newest update it covers: the same version.
        assert await store.versions("b") == [
            Version(1, 1000.0, "update"),
            Version(2, 1000.0, "update"),
            Version(2, 1000.0, "snapshot"),
            Version(3, 1020.0, "update"),
            Version(3, 1020.0, "snapshot"),
            Version(4, 1040.0, "update"),
            Version(5, 1050.0, "update"),
            Version(5, 1050.0, "snapshot"),
        ]
        assert (await store.load("b")).snapshot == b"upto-5-again"
        await store.append({"b": [b"u6"]})
        assert (await store.versions("b"))[-1] == Version(6, 1050.0, "update")
        assert await store.versions("other") == [Version(1, 1000.0, "update")]


async def test_state_at_reads_every_version_of_a_compacted_board(backend: Backend) -> None:
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
        seen[300.0] = board.content()
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

        # Everything is younger than the default every-version window (1 hour): exact reads,
        # although both compactions took those updates out of the log.
        assert content_of(await store.state_at("board", 99.0)) == {}
        for t, expected in [(100, 100), (199, 100), (250, 200), (300, 300), (399, 300)]:
            assert content_of(await store.state_at("board", float(t))) == seen[expected], t
        for t, expected in [(450, 400), (499, 400), (500, 500), (9e9, 500)]:
            assert content_of(await store.state_at("board", float(t))) == seen[expected], t


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


# Divisible by a day: 10-minute and hour steps start at T0.
T0 = 20_833 * 86400.0
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
TIERED = "1h:all,1d:10m,30d:1h"


async def edit_every_minute(
    store: BoardStore, clock: FakeClock, board: TaskBoard, minutes: range, compact_every: int
) -> dict[int, dict[str, Any]]:
    """One task added per minute from T0, compacted every few edits; content by minute."""
    seen: dict[int, dict[str, Any]] = {}
    for minute in minutes:
        clock.now = T0 + minute * MINUTE
        board.add(f"t{minute}", f"task {minute}")
        last = await board.flush(store)
        if last % compact_every == 0:
            await store.write_snapshot("board", board.doc.get_update(), last)
        seen[minute] = board.content()
    return seen


def tasks_upto(minute: int) -> set[str]:
    return {f"t{m}" for m in range(minute + 1)}


async def test_older_than_the_every_version_window_a_board_reads_per_step(
    backend: Backend,
) -> None:
    clock = FakeClock(T0)
    board = TaskBoard()
    async with backend.open(clock=clock, history=parse_history_policy(TIERED)) as store:
        # Minutes 0-29: three 10-minute steps, compacted every 7 edits (mid-step).
        await edit_every_minute(store, clock, board, range(30), compact_every=7)
        # Three hours later one more edit and a compaction thin what is now over an hour old.
        await edit_every_minute(store, clock, board, range(180, 181), compact_every=1)

        async def tasks_at(t: float) -> set[str]:
            return set(content_of(await store.state_at("board", t)))

        # A time inside a step reads the newest version kept at or before it: the end of
        # the step before (minute 9 ends the first step, 19 the second, 29 the third).
        assert await tasks_at(T0 + 9 * MINUTE) == tasks_upto(9)
        assert await tasks_at(T0 + 18 * MINUTE) == tasks_upto(9)
        assert await tasks_at(T0 + 19 * MINUTE) == tasks_upto(19)
        assert await tasks_at(T0 + 25 * MINUTE) == tasks_upto(19)
        assert await tasks_at(T0 + 179 * MINUTE) == tasks_upto(29)
        assert await tasks_at(T0 + 180 * MINUTE) == tasks_upto(29) | {"t180"}
        with pytest.raises(HistoryUnavailable) as raised:
            await store.state_at("board", T0 + 5 * MINUTE)
        message = str(raised.value)
        assert "retention keeps 1h of every version, 10m steps for 1d, 1h steps for 30d" in (
            message
        )
        assert "oldest retained: " in message and "seq 10" in message

        old = [v for v in await store.versions("board") if v.at < clock.now - HOUR]
        # One snapshot per step, materialised where no compaction fell on the step's end.
        assert [(v.seq, v.kind) for v in old] == [
            (10, "snapshot"),
            (20, "snapshot"),
            (30, "snapshot"),
        ]

        # Forty days on, everything older than 30 days is gone; the present is not.
        await edit_every_minute(store, clock, board, range(40 * 1440, 40 * 1440 + 1), 1)
        with pytest.raises(HistoryUnavailable, match="oldest retained"):
            await store.state_at("board", T0 + 180 * MINUTE)
        assert await tasks_at(clock.now) == set(board.content())
        assert all(v.at >= clock.now - 30 * DAY for v in await store.versions("board"))


async def test_an_hourly_tier_keeps_the_last_version_of_each_hour(backend: Backend) -> None:
    clock = FakeClock(T0)
    board = TaskBoard()
    async with backend.open(clock=clock, history=parse_history_policy(TIERED)) as store:
        # One edit every 20 minutes for 5 hours, compacted at each.
        seen = await edit_every_minute(store, clock, board, range(0, 300, 20), 1)
        # Two days later, those are in the hourly tier.
        await edit_every_minute(store, clock, board, range(2 * 1440, 2 * 1440 + 1), 1)
        for hour in range(5):
            last_of_hour = hour * 60 + 40
            t = T0 + (hour * 60 + 59) * MINUTE
            assert content_of(await store.state_at("board", t)) == seen[last_of_hour]
        old = [v.seq for v in await store.versions("board") if v.at < clock.now - DAY]
        assert old == [3, 6, 9, 12, 15]


async def test_keep_nothing_reads_back_only_to_the_current_snapshot(backend: Backend) -> None:
    clock = FakeClock(1000.0)
    async with backend.open(clock=clock, history=KEEP_NOTHING) as store:
        for seq in range(1, 6):
            clock.now += 60
            await store.append({"b": [f"u{seq}".encode()]})
            await store.write_snapshot("b", f"upto-{seq}".encode(), seq)
        await store.append({"b": [b"u6"]})

        assert [(v.seq, v.kind) for v in await store.versions("b")] == [
            (5, "snapshot"),
            (6, "update"),
        ]
        assert (await store.load_at("b", 1000.0 + 5 * 60)).snapshot == b"upto-5"
        with pytest.raises(HistoryUnavailable, match="retention keeps no past versions"):
            await store.load_at("b", 1000.0 + 4 * 60)


async def test_every_version_is_kept_when_the_policy_says_so(backend: Backend) -> None:
    clock = FakeClock(1000.0)
    async with backend.open(clock=clock, history=KEEP_EVERYTHING) as store:
        for seq in range(1, 31):
            clock.now += 3600
            await store.append({"b": [f"u{seq}".encode()]})
            await store.write_snapshot("b", f"upto-{seq}".encode(), seq)
        versions = await store.versions("b")
        assert [v.seq for v in versions if v.kind == "snapshot"] == list(range(1, 31))
        assert [v.seq for v in versions if v.kind == "update"] == list(range(1, 31))
        assert (await store.load_at("b", 1000.0 + 3600)).snapshot == b"upto-1"


async def test_delete_board_forgets_its_history(store: BoardStore) -> None:
    await store.append({"gone": [b"g1", b"g2"]})
    await store.write_snapshot("gone", b"s1", 1)
    await store.write_snapshot("gone", b"s2", 2)
    await store.delete_board("gone")
    assert await store.versions("gone") == []
    assert (await store.load_at("gone", 9e9)).snapshot is None


async def test_a_store_exists_once_written_and_asking_creates_nothing(backend: Backend) -> None:
    async with backend.open() as fresh:
        assert not await fresh.exists()
        assert not await fresh.exists()
        await fresh.append({"b": [b"u"]})
        assert await fresh.exists()
    if backend.shared:
        async with backend.open() as reopened:
            assert await reopened.exists()


async def test_a_store_names_its_location_without_secrets(tmp_path: Path) -> None:
    sqlite = open_store("sqlite://rel.db", data_dir=str(tmp_path))
    assert sqlite.location == str(tmp_path / "rel.db")
    assert open_store("memory", data_dir=str(tmp_path)).location == "memory"
    async with open_store("mongodb://ops:s3cret@127.0.0.1:1/boards", data_dir="/x") as mongo:
        assert mongo.location == "mongodb://ops:***@127.0.0.1:1/boards (database 'boards')"


async def test_open_store_urls(tmp_path: Path) -> None:
    # Unwrapped: tests/engine/test_encryption_at_rest.py covers the encrypting default.
    assert isinstance(open_store("memory", data_dir=str(tmp_path)), MemoryStore)
    default = open_store("sqlite", data_dir=str(tmp_path / "d"), encryption=PLAINTEXT)
    assert isinstance(default, SqliteStore)
    assert default.path == str(tmp_path / "d" / "boardcast.sqlite3")
    absolute = open_store(
        f"sqlite://{tmp_path}/x/board.db", data_dir="/unused", encryption=PLAINTEXT
    )
    assert isinstance(absolute, SqliteStore) and absolute.path == f"{tmp_path}/x/board.db"
    relative = open_store("sqlite://rel.db", data_dir=str(tmp_path), encryption=PLAINTEXT)
    assert isinstance(relative, SqliteStore) and relative.path == str(tmp_path / "rel.db")

    # Opening connects to nothing yet.
    async with open_store(
        "mongodb://127.0.0.1:1/boards?w=1", data_dir="/unused", encryption=PLAINTEXT
    ) as named:
        assert isinstance(named, MongoStore) and named.database_name == "boards"
    async with open_store(
        "mongodb://127.0.0.1:1", data_dir="/unused", encryption=PLAINTEXT
    ) as unnamed:
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


# -- what a log entry carries beside its update -------------------------------------------


async def test_origin_key_and_events_load_back_with_their_updates(store: BoardStore) -> None:
    await store.append(
        {
            "b": [
                Record(b"u1", origin="alice"),
                b"u2",
                Record(b"u3", origin="service:import", key="import-7", events=b"\x91\x80"),
            ],
            "c": [Record(b"c1", key="other")],
        }
    )
    entries = (await store.load("b")).updates
    assert [(e.seq, e.update, e.origin, e.key, e.events) for e in entries] == [
        (1, b"u1", "alice", None, None),
        (2, b"u2", None, None, None),
        (3, b"u3", "service:import", "import-7", b"\x91\x80"),
    ]


async def test_what_entries_carry_survives_close_and_reopen(shared_backend: Backend) -> None:
    async with shared_backend.open() as store:
        await store.append({"b": [Record(b"u1", origin="alice", events=b"e1"), b"u2"]})
        before = await store.load("b")
    async with shared_backend.open() as reopened:
        assert await reopened.load("b") == before
        assert before.updates[0].origin == "alice" and before.updates[0].events == b"e1"


async def test_find_key_finds_a_transaction_in_the_log_and_after_compaction(
    store: BoardStore,
) -> None:
    await store.append({"b": [b"u1", Record(b"u2", key="k-2"), Record(b"u3", key="k-3")]})
    await store.append({"other": [Record(b"o1", key="k-9")]})
    assert await store.find_key("b", "k-2") == 2
    assert await store.find_key("b", "k-3") == 3
    assert await store.find_key("b", "k-9") is None  # keys are per board
    assert await store.find_key("b", "never") is None
    assert await store.find_key("unknown-board", "k-2") is None

    # Compaction keeps the updates it covers in history, and their keys with them.
    await store.write_snapshot("b", b"snap", 3)
    assert (await store.load("b")).updates == []
    assert await store.find_key("b", "k-2") == 2

    await store.delete_board("b")
    assert await store.find_key("b", "k-2") is None
    # Numbering starts again; nothing of the deleted board's entries is carried over.
    await store.append({"b": [Record(b"n1"), Record(b"n2", origin="bob")]})
    assert [(e.origin, e.key) for e in (await store.load("b")).updates] == [
        (None, None),
        ("bob", None),
    ]


async def test_a_key_is_forgotten_when_retention_drops_its_update(backend: Backend) -> None:
    async with backend.open(history=KEEP_NOTHING) as store:
        await store.append({"b": [Record(b"u1", key="k-1"), b"u2"]})
        assert await store.find_key("b", "k-1") == 1
        await store.write_snapshot("b", b"snap", 2)
        assert await store.find_key("b", "k-1") is None
