"""Notifications end to end on a running server with auth: REST changes in, inboxes out.

The server runs its workers beside the hosts (the local backend) with the notification
plugin. People are real accounts logged in over REST; tasks, assignments and comments are
made over REST; what each person's ``GET /v1/notifications`` and stream show is checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth_helpers import AuthServer, Person, auth_server
from tests.persistence_servers import mongo_server, mongo_url  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(90)

PLUGIN = "workers.notifications_service:notification_plugin"


@pytest.fixture
async def auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AuthServer]:
    # The worker process reads its settings from the environment, as in production.
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOARDCAST_AUTH", "required")
    monkeypatch.setenv("BOARDCAST_NOTIFICATION_REMINDER_POLL_SECONDS", "0.1")
    async with auth_server(
        tmp_path,
        worker_plugins=(PLUGIN,),
        worker_poll_seconds=0.05,
        notification_push_poll_seconds=0.05,
        notification_streams_per_user=2,
    ) as server:
        yield server


async def inbox(auth: AuthServer, person: Person, query: str = "") -> dict[str, Any]:
    status, answer = await auth.call("GET", f"/v1/notifications{query}", person)
    assert status == 200, answer
    return dict(answer)


async def eventually_told(
    auth: AuthServer, person: Person, count: int, *, seconds: float = 20.0
) -> list[dict[str, Any]]:
    """The person's notifications once there are at least ``count`` (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        items = (await inbox(auth, person, "?limit=100"))["items"]
        if len(items) >= count or asyncio.get_running_loop().time() > deadline:
            return list(items)
        await asyncio.sleep(0.05)


async def assign(auth: AuthServer, actor: Person, board: str, task: str, *users: Person) -> None:
    status, answer = await auth.call(
        "PATCH",
        f"/v1/boards/{board}/tasks/{task}",
        actor,
        {"assignees": [u.user_id for u in users]},
    )
    assert status == 200, answer


async def test_an_assignment_reaches_the_assignee_and_not_the_actor(auth: AuthServer) -> None:
    ada = await auth.add_person("ada", mfa=True)
    bob = await auth.add_person("bob")
    _, board = await auth.project_with(ada, {"bob": "editor"})
    status, task = await auth.add_task(ada, board, "Ship it")
    assert status == 201, task
    await assign(auth, ada, board, task["id"], bob)
    told, joined = await eventually_told(auth, bob, 2)  # newest first
    assert told["kind"] == "assigned" and told["task_id"] == task["id"]
    assert told["board_id"] == board and told["actor"] == ada.user_id and not told["read"]
    assert told["title"].startswith("ada assigned you to")
    assert joined["kind"] == "member" and joined["data"]["role"] == "editor"
    # The actor is told nothing about their own changes (making the project either).
    await asyncio.sleep(0.5)  # a few worker rounds after bob's notifications
    assert (await inbox(auth, ada))["items"] == []
    assert (await inbox(auth, bob))["unread_count"] == 2
    status, marked = await auth.call("POST", "/v1/notifications/read", bob, {"ids": [told["id"]]})
    assert status == 200 and marked == {"marked": 1, "unread_count": 1}


async def test_a_mention_in_a_comment_reaches_the_mentioned_user(auth: AuthServer) -> None:
    ada = await auth.add_person("ada", mfa=True)
    bob = await auth.add_person("bob")
    cy = await auth.add_person("cy")
    _, board = await auth.project_with(ada, {"bob": "commenter", "cy": "editor"})
    _, task = await auth.add_task(ada, board, "Review")
    await assign(auth, ada, board, task["id"], cy)
    status, comment = await auth.call(
        "POST",
        f"/v1/boards/{board}/tasks/{task['id']}/comments",
        bob,
        {"text": "@cy and @ada, look; @nobody is not here"},
    )
    assert status == 201, comment
    told_ada = await eventually_told(auth, ada, 1)
    assert [(n["kind"], n["actor"]) for n in told_ada] == [("mentioned", bob.user_id)]
    kinds = [n["kind"] for n in await eventually_told(auth, cy, 3)]
    assert kinds[:2] == ["mentioned", "assigned"]  # newest first; mentioned, not "commented"
    assert "commented" not in kinds


async def test_nobody_reads_or_marks_anyone_elses_inbox(auth: AuthServer) -> None:
    ada = await auth.add_person("ada", mfa=True)
    bob = await auth.add_person("bob")
    vic = await auth.add_person("vic", mfa=True)
    _, board = await auth.project_with(ada, {"bob": "editor"})
    await auth.project_with(vic, {})  # vic owns another project; views nothing of ada's
    _, task = await auth.add_task(ada, board, "Private")
    await assign(auth, ada, board, task["id"], bob)
    bobs = await eventually_told(auth, bob, 2)
    assert (await inbox(auth, vic))["items"] == []
    # Bob's ids in vic's request change nothing of bob's.
    status, marked = await auth.call(
        "POST", "/v1/notifications/read", vic, {"ids": [n["id"] for n in bobs]}
    )
    assert status == 200 and marked["marked"] == 0
    status, marked = await auth.call("POST", "/v1/notifications/read", vic, {"all": True})
    assert status == 200 and marked["marked"] == 0
    assert (await inbox(auth, bob))["unread_count"] == 2
    status, _ = await auth.call("GET", "/v1/notifications", None)
    assert status == 401
    for bad in ({"ids": "x"}, {"all": False}, {"ids": ["a"] * 501}, {"ids": [], "all": True}):
        status, problem = await auth.call("POST", "/v1/notifications/read", bob, bad)
        assert status == 422, (bad, problem)
    for query in ("?limit=0", "?limit=101", "?before=x", "?unread=maybe", "?user=" + ada.user_id):
        status, problem = await auth.call("GET", "/v1/notifications" + query, bob)
        assert status == 400 and problem["status"] == 400, query


async def test_the_inbox_pages_with_its_next_cursor(auth: AuthServer) -> None:
    ada = await auth.add_person("ada", mfa=True)
    bob = await auth.add_person("bob")
    _, board = await auth.project_with(ada, {"bob": "editor"})
    for n in range(4):
        _, task = await auth.add_task(ada, board, f"T{n}")
        await assign(auth, ada, board, task["id"], bob)
    assert len(await eventually_told(auth, bob, 5)) == 5
    seen: list[int] = []
    query = "?limit=2"
    for _ in range(5):
        page = await inbox(auth, bob, query)
        seen += [n["seq"] for n in page["items"]]
        if page["next"] is None:
            break
        query = f"?limit=2&before={page['next']}"
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5
    unread = await inbox(auth, bob, "?unread=true&limit=100")
    assert len(unread["items"]) == 5 == unread["unread_count"]


async def read_events(
    response: aiohttp.ClientResponse, count: int, *, kind: str = "", seconds: float = 20.0
) -> list[dict[str, Any]]:
    """The first ``count`` notification events of a stream (of ``kind`` if given; those
    recorded just before it opened may come first), within a bounded wait."""
    found: list[dict[str, Any]] = []
    event: dict[str, str] = {}
    async with asyncio.timeout(seconds):
        while len([n for n in found if n["kind"] == kind or not kind]) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith(":") or line.startswith("retry:"):
                continue
            if line == "":
                if event.get("event") == "notification":
                    found.append({**json.loads(event["data"]), "sse_id": event["id"]})
                event = {}
                continue
            key, _, value = line.partition(": ")
            event[key] = value
    return [n for n in found if n["kind"] == kind or not kind]


async def test_the_stream_pushes_new_notifications_and_resumes(auth: AuthServer) -> None:
    ada = await auth.add_person("ada", mfa=True)
    bob = await auth.add_person("bob")
    _, board = await auth.project_with(ada, {"bob": "editor"})
    await eventually_told(auth, bob, 1)  # made an editor
    url = f"{auth.base}/v1/notifications/stream"
    async with auth.http.get(url, headers=bob.auth) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        _, task = await auth.add_task(ada, board, "Live")
        await assign(auth, ada, board, task["id"], bob)
        (pushed,) = await read_events(stream, 1, kind="assigned")
        assert pushed["kind"] == "assigned" and pushed["task_id"] == task["id"]
        assert pushed["sse_id"] == str(pushed["seq"])
    # Away, then back with Last-Event-ID: what was missed comes first.
    _, other = await auth.add_task(ada, board, "While away")
    await assign(auth, ada, board, other["id"], bob)
    await eventually_told(auth, bob, 3)
    headers = {**bob.auth, "Last-Event-ID": pushed["sse_id"]}
    async with auth.http.get(url, headers=headers) as stream:
        (missed,) = await read_events(stream, 1)
        assert missed["task_id"] == other["id"]


async def test_streams_per_user_are_capped(auth: AuthServer) -> None:
    bob = await auth.add_person("bob")
    url = f"{auth.base}/v1/notifications/stream"
    async with (
        auth.http.get(url, headers=bob.auth) as first,
        auth.http.get(url, headers=bob.auth) as second,
    ):
        assert first.status == second.status == 200
        async with auth.http.get(url, headers=bob.auth) as third:
            assert third.status == 429
            assert (await third.json(content_type=None))["status"] == 429
    async with auth.http.get(url, headers={"Last-Event-ID": "nope", **bob.auth}) as bad:
        assert bad.status == 400


async def test_assignees_are_reminded_of_a_due_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOARDCAST_AUTH", "required")
    monkeypatch.setenv("BOARDCAST_NOTIFICATION_REMINDER_POLL_SECONDS", "0.1")
    # A task due tomorrow is due at the end of tomorrow (UTC): within a 3-day window.
    monkeypatch.setenv("BOARDCAST_NOTIFICATION_DUE_SOON_SECONDS", str(3 * 86400))
    async with auth_server(tmp_path, worker_plugins=(PLUGIN,), worker_poll_seconds=0.05) as auth:
        ada = await auth.add_person("ada", mfa=True)
        bob = await auth.add_person("bob")
        _, board = await auth.project_with(ada, {"bob": "editor"})
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        soon = await auth.add_task(ada, board, "Soon")
        late = await auth.add_task(ada, board, "Late")
        for (_, task), due in ((soon, tomorrow), (late, yesterday)):
            status, answer = await auth.call(
                "PATCH", f"/v1/boards/{board}/tasks/{task['id']}", ada, {"due": due}
            )
            assert status == 200, answer
            await assign(auth, ada, board, task["id"], bob)
        told = await eventually_told(auth, bob, 5)
        reminders = sorted(
            (n["kind"], n["task_id"]) for n in told if n["kind"] in ("due_soon", "overdue")
        )
        assert reminders == sorted([("due_soon", soon[1]["id"]), ("overdue", late[1]["id"])])
        await asyncio.sleep(0.5)  # several reminder rounds: each reminder is there once
        again = await eventually_told(auth, bob, 5)
        assert len(again) == 5


async def test_a_change_on_one_gateway_reaches_a_stream_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateways over one data directory: the first serves REST and runs the workers,
    the second (no workers) only holds bob's stream. Its own tail loop over the shared
    store is what brings the notification there."""
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOARDCAST_AUTH", "required")
    async with (
        auth_server(tmp_path, worker_plugins=(PLUGIN,), worker_poll_seconds=0.05) as first,
        auth_server(tmp_path, workers=False, notification_push_poll_seconds=0.05) as second,
    ):
        ada = await first.add_person("ada", mfa=True)
        bob = await first.add_person("bob")
        _, board = await first.project_with(ada, {"bob": "editor"})
        await eventually_told(first, bob, 1)
        url = f"{second.base}/v1/notifications/stream"
        async with second.http.get(url, headers=bob.auth) as stream:
            assert stream.status == 200
            _, task = await first.add_task(ada, board, "Across")
            await assign(first, ada, board, task["id"], bob)
            (pushed,) = await read_events(stream, 1, kind="assigned")
            assert pushed["task_id"] == task["id"]
        # The first gateway's REST answers what the second pushed: one store.
        assert (await inbox(second, bob))["items"][0]["id"] == pushed["id"]


async def test_on_mongodb_an_assignment_reaches_the_assignee(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The same path with every store on MongoDB (SecantusDB): worker, inbox and push."""
    url = request.getfixturevalue("mongo_url")
    monkeypatch.setenv("BOARDCAST_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOARDCAST_AUTH", "required")
    monkeypatch.setenv("BOARDCAST_STORE", url)
    async with auth_server(
        tmp_path,
        store=url,
        worker_plugins=(PLUGIN,),
        worker_poll_seconds=0.05,
        notification_push_poll_seconds=0.05,
    ) as auth:
        ada = await auth.add_person("ada", mfa=True)
        bob = await auth.add_person("bob")
        _, board = await auth.project_with(ada, {"bob": "editor"})
        await eventually_told(auth, bob, 1)
        async with auth.http.get(
            f"{auth.base}/v1/notifications/stream", headers=bob.auth
        ) as stream:
            _, task = await auth.add_task(ada, board, "On Mongo")
            await assign(auth, ada, board, task["id"], bob)
            (pushed,) = await read_events(stream, 1, kind="assigned")
        told = await eventually_told(auth, bob, 2)
        assert [n["kind"] for n in told] == ["assigned", "member"]
        assert told[0]["id"] == pushed["id"]
        assert (await inbox(auth, ada))["items"] == []
