"""The contract every read model passes (memory, SQLite, MongoDB): the same answers as the
reference filter and order of ``persistence.read_model``, whatever the rows and the query."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import BoardStore
from persistence.read_model import (
    SORTS,
    IndexWrite,
    TaskFilter,
    TaskIndex,
    TaskRow,
    matches,
    sort_key,
)
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures
from tests.unit.test_store_contract import Backend, backend, store  # noqa: F401 - fixtures


@pytest.fixture
async def index(store: BoardStore) -> AsyncIterator[TaskIndex]:  # noqa: F811
    opened = store.task_index()
    try:
        yield opened
    finally:
        await opened.close()


def row(board: str, task: str, version: int = 1, **fields: object) -> TaskRow:
    values: dict[str, object] = {
        "project": "p1",
        "title": f"title of {task}",
        "column": "todo",
        "position": "a0",
        "description": "",
        "assignees": (),
        "labels": (),
        "due": None,
        "created_at": "2026-12-01T00:00:00.000Z",
        "updated_at": "2026-12-01T00:00:00.000Z",
        **fields,
    }
    return TaskRow(board, task, version=version, **values)  # type: ignore[arg-type]


async def everything(index: TaskIndex, query: TaskFilter) -> list[TaskRow]:
    found: list[TaskRow] = []
    after = None
    for _ in range(1000):
        page, after = await index.query(replace(query, after=after))
        found += page
        if after is None:
            return found
    raise AssertionError("pagination never ended")


async def test_filters_find_what_they_say(index: TaskIndex) -> None:
    await index.write(
        [
            IndexWrite(
                "b1",
                3,
                upserts=[
                    row("b1", "t1", 3, assignees=("ann",), due="2026-12-03", labels=("bug",)),
                    row("b1", "t2", 3, assignees=("bob",), due="2026-12-10", title="Ünïcode Ärger"),
                    row("b1", "t3", 3, column="done", description="see the Spec"),
                ],
            ),
            IndexWrite("b2", 1, upserts=[row("b2", "t1", 1, project="p2", assignees=("ann",))]),
        ]
    )

    async def ids(**query: object) -> list[tuple[str, str]]:
        found = await everything(index, TaskFilter(**query, limit=2))  # type: ignore[arg-type]
        return [(r.board_id, r.task_id) for r in found]

    assert await ids(assignee="ann") == [("b1", "t1"), ("b2", "t1")]
    assert await ids(project="p2") == [("b2", "t1")]
    assert await ids(board="b1", column="done") == [("b1", "t3")]
    assert await ids(label="bug") == [("b1", "t1")]
    assert await ids(due_from="2026-12-01", due_to="2026-12-05") == [("b1", "t1")]
    assert await ids(text="spec") == [("b1", "t3")]
    assert await ids(text="ärger") == [("b1", "t2")]
    # Due first (soonest first, none last), then board and id.
    assert await ids() == [("b1", "t1"), ("b1", "t2"), ("b1", "t3"), ("b2", "t1")]
    assert await index.board_version("b1") == 3
    assert await index.board_version("nope") == 0


async def test_an_older_write_never_replaces_a_newer_one(index: TaskIndex) -> None:
    await index.write([IndexWrite("b", 5, upserts=[row("b", "t", 5, title="new")])])
    await index.write([IndexWrite("b", 4, upserts=[row("b", "t", 4, title="old")])])
    await index.write([IndexWrite("b", 3, deletes=["t"])])
    (found,) = await everything(index, TaskFilter())
    assert found.title == "new" and found.version == 5
    assert await index.board_version("b") == 5
    await index.write([IndexWrite("b", 6, deletes=["t"])])
    assert await everything(index, TaskFilter()) == []


async def test_a_replacing_write_drops_the_boards_other_rows(index: TaskIndex) -> None:
    await index.write(
        [
            IndexWrite("b", 1, upserts=[row("b", "gone"), row("b", "kept")]),
            IndexWrite("other", 1, upserts=[row("other", "x")]),
        ]
    )
    await index.write([IndexWrite("b", 2, upserts=[row("b", "kept", 2)], replace=True)])
    found = await everything(index, TaskFilter())
    assert [(r.board_id, r.task_id) for r in found] == [("b", "kept"), ("other", "x")]


names = st.sampled_from(["ann", "bob", "cy", "dé"])
rows = st.builds(
    lambda board, task, project, title, column, assignees, labels, due, description: row(
        board,
        task,
        1,
        project=project,
        title=title,
        column=column,
        assignees=tuple(sorted(set(assignees))),
        labels=tuple(sorted(set(labels))),
        due=due,
        description=description,
        updated_at=f"2026-12-{len(title) % 28 + 1:02d}T00:00:00.000Z",
    ),
    st.sampled_from(["b1", "b2", "b3"]),
    st.text("abcdef", min_size=1, max_size=4),
    st.sampled_from(["p1", "p2"]),
    st.text("aAbBéÉ x", max_size=6),
    st.sampled_from(["todo", "done"]),
    st.lists(names, max_size=2),
    st.lists(st.sampled_from(["bug", "ops"]), max_size=2),
    st.one_of(st.none(), st.sampled_from(["2026-12-01", "2026-12-15", "2027-01-02"])),
    st.text("abé ", max_size=6),
)
filters = st.builds(
    TaskFilter,
    project=st.one_of(st.none(), st.sampled_from(["p1", "p2"])),
    board=st.one_of(st.none(), st.sampled_from(["b1", "b2"])),
    column=st.one_of(st.none(), st.just("todo")),
    assignee=st.one_of(st.none(), names),
    label=st.one_of(st.none(), st.just("bug")),
    due_from=st.one_of(st.none(), st.just("2026-12-10")),
    due_to=st.one_of(st.none(), st.just("2026-12-31")),
    text=st.one_of(st.none(), st.sampled_from(["a", "É", "b x"])),
    sort=st.sampled_from(SORTS),
    limit=st.integers(1, 4),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(written=st.lists(rows, max_size=12), query=filters)
async def test_every_query_matches_the_reference(
    index: TaskIndex, written: list[TaskRow], query: TaskFilter
) -> None:
    # A fresh set of boards per example: the same index, new board ids.
    tag = uuid.uuid4().hex[:8]
    unique = {(r.board_id, r.task_id): r for r in (_retag(r, tag) for r in written)}
    await index.write([IndexWrite(r.board_id, 1, upserts=[r]) for r in unique.values()])
    boards = {r.board_id for r in unique.values()}
    if query.board is not None:
        query = replace(query, board=f"{query.board}-{tag}")
    expected = sorted(
        (r for r in unique.values() if matches(r, query)),
        key=lambda r: sort_key(r, query.sort),
    )
    found = [r for r in await everything(index, query) if r.board_id in boards]
    assert [(r.board_id, r.task_id) for r in found] == [(r.board_id, r.task_id) for r in expected]


def _retag(found: TaskRow, tag: str) -> TaskRow:
    return replace(found, board_id=f"{found.board_id}-{tag}")


async def test_the_generation_moves_with_every_write(index: TaskIndex) -> None:
    first = await index.generation()
    await index.write([IndexWrite("g", 1, upserts=[row("g", "t")])])
    second = await index.generation()
    await index.write([IndexWrite("g", 2, deletes=["t"])])
    assert first != second != await index.generation()
