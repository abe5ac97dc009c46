"""Pending webhook deliveries survive ``kill -9``: nothing acknowledged is lost, and a
receiver sees each event under one ``webhook-id`` (duplicates only as retries of that id).

A real ``boardcast serve`` (local backend: hosts, workers and the delivery loop in one
process) is killed twice: once while the receiver is down and deliveries wait for it, once
while they flow. Tasks are written over REST throughout; every task whose creation was
acknowledged must reach the receiver, which verifies each call with ``standardwebhooks``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.interop.servers import BoardcastProcess, serve_process
from tests.services import TIMEOUT_SCALE, free_port
from tests.webhook_receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.timeout(600)

ENV = {
    "BOARDCAST_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    # An attempt at once, then every 0.6 s for a minute: the receiver comes back in time.
    "BOARDCAST_WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["0.6"] * 99),
    "BOARDCAST_WEBHOOK_RETRY_JITTER": "0",
    "BOARDCAST_WEBHOOK_POLL_SECONDS": "0.05",
    "BOARDCAST_WEBHOOK_TIMEOUT_SECONDS": "2",
    "BOARDCAST_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "1",
    "BOARDCAST_WORKER_POLL_SECONDS": "0.05",
}


class Client:
    def __init__(self, server: BoardcastProcess, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        async with self.http.request(
            method, url, json=body, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None


async def write_tasks(client: Client, board: str, count: int, acknowledged: set[str]) -> None:
    """Create tasks one after another; keep the ids the server acknowledged (201)."""
    for n in range(count):
        try:
            status, task = await client.call(
                "POST", f"/v1/boards/{board}/tasks", {"title": f"t{n}", "column": "todo"}
            )
        except (aiohttp.ClientError, TimeoutError):
            return  # the server is gone; what it did not acknowledge may or may not exist
        if status == 201:
            acknowledged.add(task["id"])


def created_task_ids(receiver: Receiver) -> set[str]:
    return {
        call.body["data"]["task_id"]
        for call in receiver.received
        if call.body["type"] == "task.created"
    }


async def test_deliveries_survive_kill_9_and_arrive_once_per_webhook_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    receiver_port = free_port()
    server = serve_process(tmp_path / "data", "--backend", "local")
    acknowledged: set[str] = set()
    try:
        await server.astart()
        async with aiohttp.ClientSession() as http:
            client = Client(server, http)
            status, project = await client.call("POST", "/v1/projects", {"name": "P"})
            assert status == 201, project
            status, board = await client.call(
                "POST", f"/v1/projects/{project['id']}/boards", {"name": "B"}
            )
            assert status == 201, board
            status, hook = await client.call(
                "POST",
                f"/v1/projects/{project['id']}/webhooks",
                {"url": f"http://127.0.0.1:{receiver_port}/hooks", "events": ["task.created"]},
            )
            assert status == 201, hook

            # 1. The receiver is down: deliveries pile up; the server is killed mid-writes.
            writing = asyncio.ensure_future(write_tasks(client, board["id"], 400, acknowledged))
            for _ in range(600):
                if len(acknowledged) >= 15:
                    break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.kill)
            await writing
            assert len(acknowledged) >= 15

            async with webhook_receiver(port=receiver_port, secrets=[hook["secret"]]) as receiver:
                # 2. Back, with the receiver up: the server is killed again while it sends.
                await server.astart()
                await write_tasks(client, board["id"], 10, acknowledged)
                with contextlib.suppress(TimeoutError):
                    await receiver.wait_for(5, timeout=30 * TIMEOUT_SCALE)
                await asyncio.to_thread(server.kill)
                await server.astart()
                await write_tasks(client, board["id"], 5, acknowledged)

                deadline = asyncio.get_running_loop().time() + 90 * TIMEOUT_SCALE
                while not acknowledged <= created_task_ids(receiver):
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"never delivered: {sorted(acknowledged - created_task_ids(receiver))}"
                    )
                    await asyncio.sleep(0.1)
                assert receiver.refused == []

                # One webhook-id per event, one event per webhook-id; repeats are the same call.
                tasks_of_id: dict[str, set[str]] = defaultdict(set)
                ids_of_task: dict[str, set[str]] = defaultdict(set)
                for call in receiver.received:
                    task = call.body["data"]["task_id"]
                    tasks_of_id[call.webhook_id].add(task)
                    ids_of_task[task].add(call.webhook_id)
                assert all(len(tasks) == 1 for tasks in tasks_of_id.values())
                assert all(len(ids) == 1 for ids in ids_of_task.values())
    finally:
        await server.astop()
