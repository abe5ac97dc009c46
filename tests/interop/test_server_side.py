"""A change made on the server, seen by stock JavaScript clients as one update."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from crdt.board import Board
from tests.conftest import serve
from tests.interop.jsclient import JsClients

pytestmark = pytest.mark.interop


def plan_sprint(board: Board, tasks: int) -> None:
    board.add_column("Sprint", column_id="sprint")
    for index in range(tasks):
        board.add_task(f"task {index}", "sprint", task_id=f"t{index}")


async def test_javascript_clients_see_a_server_side_change_as_one_update(
    tmp_path: Path, js_clients: JsClients
) -> None:
    async with serve("local", tmp_path) as server:
        watchers = [await js_clients.joined(server.url, "sprint", f"js{n}") for n in range(2)]
        before = [(await js.status())["updates_received"] for js in watchers]
        version = await server.cluster.transact(
            "sprint", partial(plan_sprint, tasks=20), idempotency_key="sprint-1"
        )
        again = await server.cluster.transact(
            "sprint", partial(plan_sprint, tasks=20), idempotency_key="sprint-1"
        )
        assert again == version, "a retried transaction applies once"
        for js, seen in zip(watchers, before, strict=True):
            await js.wait_until(["tasks", "t19", "title"], "task 19")
            after = (await js.status())["updates_received"]
            assert after - seen == 1, f"{js.name} got the change as {after - seen} updates"
            tasks = (await js.get_json())["tasks"]
            assert len(tasks) == 20


async def test_a_rest_bulk_import_of_10000_tasks_reaches_a_javascript_client_as_one_update(
    tmp_path: Path, js_clients: JsClients
) -> None:
    import aiohttp

    tasks = [
        {"title": f"imported {n}", "column": ("Backlog", "Next", "Done")[n % 3]}
        for n in range(10_000)
    ]
    async with serve("local", tmp_path) as server:
        watcher = await js_clients.joined(server.url, "import", "js")
        before = (await watcher.status())["updates_received"]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.post(
                "/v1/boards/import/tasks/bulk",
                json={"tasks": tasks},
                headers={"Idempotency-Key": "trello-1"},
            ) as response:
                assert response.status == 200, await response.text()
                created = (await response.json())["created"]
        assert len(created) == 10_000
        last = created[-1]
        await watcher.wait_until(["tasks", last, "title"], "imported 9999", timeout=60)
        after = (await watcher.status())["updates_received"]
        assert after - before == 1, f"the import arrived as {after - before} updates"
        document = await watcher.get_json()
        assert len(document["tasks"]) == 10_000
        assert sorted(column["name"] for column in document["columns"].values()) == [
            "Backlog",
            "Done",
            "Next",
        ]
