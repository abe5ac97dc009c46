"""Board files: export from one store, import into another, and refuse what is not a board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest

from persistence import BoardStore, MemoryStore, SqliteStore
from persistence.transfer import (
    FORMAT,
    SUFFIX,
    BoardFile,
    NotABoardFile,
    board_state,
    export_all,
    export_board,
    file_name,
    import_all,
    import_board,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tasks_of(state: bytes) -> dict[str, Any]:
    doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
    doc.apply_update(state)
    return dict(doc.get("tasks", type=pycrdt.Map).to_py() or {})


async def write_board(store: BoardStore, board_id: str, titles: dict[str, str]) -> bytes:
    """Store a board holding ``titles`` as a snapshot and a log tail; return its state."""
    doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
    tasks = doc.get("tasks", type=pycrdt.Map)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    items = list(titles.items())
    half = len(items) // 2
    for task_id, title in items[:half]:
        tasks[task_id] = pycrdt.Map({"title": title})
    last = (await store.append({board_id: list(updates)}))[board_id]
    await store.write_snapshot(board_id, doc.get_update(), last)
    updates.clear()
    for task_id, title in items[half:]:
        tasks[task_id] = pycrdt.Map({"title": title})
    await store.append({board_id: list(updates)})
    state: bytes = doc.get_update()
    return state


def titles_of(state: bytes) -> dict[str, str]:
    return {task_id: task["title"] for task_id, task in tasks_of(state).items()}


async def test_a_board_file_recreates_the_board_in_another_store(tmp_path: Path) -> None:
    titles = {f"t{i}": f"task {i} ✓" for i in range(10)}
    async with SqliteStore(tmp_path / "a.sqlite3") as source, MemoryStore() as target:
        original = await write_board(source, "roadmap", titles)
        data = await export_board(source, "roadmap")

        assert await import_board(target, data) == "roadmap"
        assert await import_board(target, data, board_id="copy") == "copy"
        for board_id in ("roadmap", "copy"):
            state = await board_state(target, board_id)
            assert titles_of(state) == titles
            assert state == original

    board = BoardFile.decode(data)
    assert (board.board_id, board.at, board.state) == ("roadmap", None, original)


async def test_a_board_can_be_exported_as_it_was(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    async with SqliteStore(tmp_path / "a.sqlite3", clock=clock) as store:
        state = await write_board(store, "b", {"t1": "one", "t2": "two"})
        clock.now = 2000.0
        doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
        doc.apply_update(state)
        before = doc.get_state()
        doc.get("tasks", type=pycrdt.Map)["t3"] = pycrdt.Map({"title": "three"})
        await store.append({"b": [doc.get_update(before)]})

        past = BoardFile.decode(await export_board(store, "b", at=1500.0))
        assert past.at == 1500.0
        assert titles_of(past.state) == {"t1": "one", "t2": "two"}
        now = BoardFile.decode(await export_board(store, "b"))
        assert titles_of(now.state) == {"t1": "one", "t2": "two", "t3": "three"}


async def test_importing_into_an_existing_board_merges(tmp_path: Path) -> None:
    async with MemoryStore() as source, MemoryStore() as target:
        await write_board(source, "b", {"new": "from the file"})
        await write_board(target, "b", {"old": "already there"})
        await import_board(target, await export_board(source, "b"))
        assert titles_of(await board_state(target, "b")) == {
            "old": "already there",
            "new": "from the file",
        }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xc1 not msgpack", "not msgpack"),
        (msgpack.packb([1, 2]), "not a 'boardcast-board' file"),
        (msgpack.packb({"format": "something-else", "version": 1}), "not a"),
        (msgpack.packb({"format": FORMAT, "version": 2}), "version 2"),
        (msgpack.packb({"format": FORMAT, "version": 1, "board_id": "b"}), "missing"),
        (BoardFile("b", 1.0, None, b"not yjs").encode(), "not a Yjs update"),
    ],
)
async def test_what_is_not_a_board_file_is_refused_and_nothing_written(
    data: bytes, message: str
) -> None:
    async with MemoryStore() as store:
        with pytest.raises(NotABoardFile, match=message):
            await import_board(store, data)
        assert await store.list_boards() == []


async def test_a_whole_store_moves_through_a_directory(tmp_path: Path) -> None:
    boards = {
        "team/board 1": {"a": "alpha"},
        "ünïcødé": {"b": "beta"},
        "..": {"c": "gamma"},
        "x" * 300: {"d": "delta"},
    }
    async with SqliteStore(tmp_path / "a.sqlite3") as source, MemoryStore() as target:
        states = {
            board_id: await write_board(source, board_id, t) for board_id, t in boards.items()
        }
        written = await export_all(source, tmp_path / "export")

        assert len(written) == len(boards)
        assert all(path.parent == tmp_path / "export" for path in written)
        assert sorted(await import_all(target, tmp_path / "export")) == sorted(boards)
        assert await target.list_boards() == sorted(boards)
        for board_id, state in states.items():
            assert await board_state(target, board_id) == state


async def test_a_bad_file_in_a_directory_imports_nothing(tmp_path: Path) -> None:
    async with MemoryStore() as source, MemoryStore() as target:
        await write_board(source, "good", {"a": "alpha"})
        await export_all(source, tmp_path)
        (tmp_path / ("zz-bad" + SUFFIX)).write_bytes(b"garbage")
        with pytest.raises(NotABoardFile, match="zz-bad"):
            await import_all(target, tmp_path)
        assert await target.list_boards() == []


def test_file_names_are_safe_and_distinct() -> None:
    names = {file_name(board_id) for board_id in ["a/b", "a%2Fb", "..", "x" * 300, "y" * 300]}
    assert len(names) == 5
    for name in names:
        assert "/" not in name and name.endswith(SUFFIX) and len(name.encode()) <= 255


async def test_an_idle_board_compacted_later_still_exports_as_it_was(tmp_path: Path) -> None:
    """The past before a snapshot stays readable within the every-version window."""
    clock = Clock(1000.0)
    async with SqliteStore(tmp_path / "a.sqlite3", clock=clock) as store:
        doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        doc.get("tasks", type=pycrdt.Map)["t1"] = pycrdt.Map({"title": "one"})
        await store.append({"b": list(updates)})
        clock.now = 1100.0
        doc.get("tasks", type=pycrdt.Map)["t2"] = pycrdt.Map({"title": "two"})
        last = (await store.append({"b": updates[1:]}))["b"]
        # The board goes idle and is snapshotted, which takes its log out of the live log.
        clock.now = 1200.0
        await store.write_snapshot("b", doc.get_update(), last)

        past = BoardFile.decode(await export_board(store, "b", at=1050.0))
        assert titles_of(past.state) == {"t1": "one"}
