"""Webhooks end to end on a running server: a board change reaches a receiver, signed.

The server runs its workers beside the hosts (the local backend) with the webhook plugin;
the receiver verifies every call with the ``standardwebhooks`` library and refuses
replays. A webhook is registered over REST, tasks are made over REST, and what arrives is
checked: the type and fields, the same ``webhook-id`` on every retry, the delivery log, a
redelivery, both signatures during a secret rotation, and 410 Gone disabling the endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer, serve
from tests.webhook_receiver import Receiver, webhook_receiver

PLUGIN = "workers.webhooks_service:webhook_plugin"
FAST = {
    "BOARDCAST_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    "BOARDCAST_WEBHOOK_RETRY_SCHEDULE": "0,0.2,0.2",
    "BOARDCAST_WEBHOOK_RETRY_JITTER": "0",
    "BOARDCAST_WEBHOOK_POLL_SECONDS": "0.05",
    "BOARDCAST_WEBHOOK_TIMEOUT_SECONDS": "3",
    "BOARDCAST_AUTH": "none",
}


class Api:
    def __init__(self, server: RunningServer, http: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{server.port}"
        self.http = http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None

    async def board_in_project(self) -> tuple[str, str]:
        status, project = await self.call("POST", "/v1/projects", {"name": "Launch"})
        assert status == 201, project
        status, board = await self.call(
            "POST", f"/v1/projects/{project['id']}/boards", {"name": "Plan"}
        )
        assert status == 201, board
        return project["id"], board["id"]

    async def add_task(self, board: str, title: str) -> str:
        status, task = await self.call(
            "POST", f"/v1/boards/{board}/tasks", {"title": title, "column": "todo"}
        )
        assert status == 201, task
        return str(task["id"])


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Api, Receiver]]:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(tmp_path))
    async with (
        webhook_receiver() as receiver,
        serve(
            "local",
            tmp_path,
            worker_plugins=(PLUGIN,),
            webhook_allow_networks=("127.0.0.0/8",),
            worker_poll_seconds=0.05,
        ) as server,
        aiohttp.ClientSession() as http,
    ):
        yield Api(server, http), receiver


async def register(api: Api, project: str, receiver: Receiver, events: list[str]) -> dict[str, Any]:
    status, hook = await api.call(
        "POST", f"/v1/projects/{project}/webhooks", {"url": receiver.url, "events": events}
    )
    assert status == 201, hook
    receiver.secrets = [hook["secret"]]
    return dict(hook)


async def test_a_new_task_reaches_the_receiver_signed_and_retries_keep_the_id(
    running: tuple[Api, Receiver],
) -> None:
    api, receiver = running
    project, board = await api.board_in_project()
    hook = await register(api, project, receiver, ["task.created"])
    receiver.answers = [500, 500]  # two failures, then 200
    task = await api.add_task(board, "Ship it")
    await receiver.wait_for(3)
    assert receiver.refused == []
    assert len(set(receiver.ids())) == 1
    body = receiver.received[-1].body
    assert body["type"] == "task.created"
    assert body["data"]["task_id"] == task
    assert body["data"]["board_id"] == board and body["data"]["project_id"] == project
    deliveries = f"/v1/projects/{project}/webhooks/{hook['id']}/deliveries"
    for _ in range(100):
        _, log = await api.call("GET", deliveries)
        if log["items"] and log["items"][0]["status"] == "delivered":
            break
        await asyncio.sleep(0.05)
    (entry,) = log["items"]
    assert entry["id"] == receiver.ids()[0] and entry["event_type"] == "task.created"
    assert [a["status"] for a in entry["attempts"]] == [500, 500, 200]
    assert entry["next_attempt_at"] is None

    # Redelivered by hand: the same id once more, with a timestamp of its own (a receiver
    # refuses the same id and timestamp twice as a replay).
    await asyncio.sleep(1.1)
    status, again = await api.call("POST", f"{deliveries}/{entry['id']}/redeliver")
    assert status == 202, again
    await receiver.wait_for(4)
    assert set(receiver.ids()) == {entry["id"]}


async def test_during_a_rotation_both_secrets_verify(running: tuple[Api, Receiver]) -> None:
    api, receiver = running
    project, board = await api.board_in_project()
    hook = await register(api, project, receiver, ["*"])
    old = hook["secret"]
    status, rotated = await api.call(
        "POST", f"/v1/projects/{project}/webhooks/{hook['id']}/rotate-secret"
    )
    assert status == 200
    receiver.secrets = [old]  # a receiver not yet told
    await api.add_task(board, "one")
    await receiver.wait_for(1)
    signatures = receiver.received[0].headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    receiver.secrets = [rotated["secret"]]  # and one that moved on
    await api.add_task(board, "two")
    await receiver.wait_for(2)
    assert receiver.refused == []


async def test_410_gone_disables_the_webhook(running: tuple[Api, Receiver]) -> None:
    api, receiver = running
    project, board = await api.board_in_project()
    hook = await register(api, project, receiver, ["task.created"])
    receiver.default_status = 410
    await api.add_task(board, "one")
    await receiver.wait_for(1)
    one = f"/v1/projects/{project}/webhooks/{hook['id']}"
    for _ in range(100):
        _, read = await api.call("GET", one)
        if not read["enabled"]:
            break
        await asyncio.sleep(0.05)
    assert read["enabled"] is False and "410" in read["disabled_reason"]
    await api.add_task(board, "two")
    await asyncio.sleep(0.5)
    assert receiver.calls == 1
