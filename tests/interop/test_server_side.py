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
