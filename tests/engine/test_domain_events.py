"""Domain events come out of the board actor as clients edit the board."""

from __future__ import annotations

from pathlib import Path

from pycrdt import Map

from clients.provider import BoardClient
from crdt.events import DomainEvent, TaskCreated, TaskMoved
from tests.conftest import serve, wait_until


async def test_client_edits_become_domain_events(tmp_path: Path) -> None:
    events: list[DomainEvent] = []
    async with serve("local", tmp_path, event_sink=events.extend) as server:
        async with BoardClient(server.url, "ops") as client:
            await client.synced()
            tasks = client.doc.get("tasks", type=Map)
            tasks["t1"] = Map({"title": "Ship it", "column": "todo", "position": "a0"})
            await wait_until(lambda: len(events) == 1, message="task created event")
            tasks["t1"]["column"] = "done"
            await wait_until(lambda: len(events) == 2, message="task moved event")
    created, moved = events
    assert isinstance(created, TaskCreated)
    assert (created.board_id, created.task_id) == ("ops", "t1")
    assert isinstance(moved, TaskMoved)
    assert (moved.from_column, moved.to_column) == ("todo", "done")
