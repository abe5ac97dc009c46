"""GET /v1/boards/{id}/analytics and /v1/projects/{id}/analytics: members read, others 404.

Edits go through REST as people would make them; the analytics worker runs in the serving
process (local backend) and the answers count exactly what was done.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from tests.auth_helpers import AuthServer, auth_server
from tests.services import TIMEOUT_SCALE


async def caught_up(auth: AuthServer, path: str) -> dict[str, Any]:
    """The analytics answer once the worker has handled every event logged so far."""
    owner = auth.people["olga"]
    deadline = asyncio.get_running_loop().time() + 20 * TIMEOUT_SCALE
    while True:
        status, body = await auth.call("GET", path, owner)
        assert status == 200, body
        if body["staleness"]["lag_events"] == 0:
            return dict(body)
        assert asyncio.get_running_loop().time() < deadline, body["staleness"]
        await asyncio.sleep(0.05)


async def test_members_read_board_and_project_analytics(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as auth:
        owner = await auth.add_person("olga", admin=True, mfa=True)
        viewer = await auth.add_person("vic")
        outsider = await auth.add_person("otto")
        project, board = await auth.project_with(owner, {"vic": "viewer"})
        _, columns = await auth.call("GET", f"/v1/boards/{board}/columns", owner)
        first = columns["items"][0]["id"]
        status, done = await auth.call(
            "POST", f"/v1/boards/{board}/columns", owner, {"name": "Shipped"}
        )
        assert status == 201, done
        tasks = []
        for title in ("a", "b", "c"):
            status, task = await auth.call(
                "POST", f"/v1/boards/{board}/tasks", owner, {"title": title, "column": first}
            )
            assert status == 201, task
            tasks.append(task["id"])
        for task_id in tasks[:2]:
            status, moved = await auth.call(
                "PATCH", f"/v1/boards/{board}/tasks/{task_id}", owner, {"column": done["id"]}
            )
            assert status == 200, moved

        report = await caught_up(auth, f"/v1/boards/{board}/analytics?days=2")
        today = datetime.now(UTC).date().isoformat()
        assert report["days"][-1] == today
        assert report["throughput"][-1] == {"date": today, "done": 2}
        assert report["cumulative_flow"][-1]["columns"] == {first: 1, done["id"]: 2}
        assert (report["tasks"], report["done"]) == (3, 2)
        assert report["lead_time"]["count"] == 2
        assert report["staleness"]["oldest_unhandled_seconds"] == 0

        status, seen = await auth.call("GET", f"/v1/boards/{board}/analytics", viewer)
        assert status == 200 and seen["tasks"] == 3
        status, _ = await auth.call("GET", f"/v1/boards/{board}/analytics", outsider)
        assert status == 404
        status, whole = await auth.call("GET", f"/v1/projects/{project}/analytics", viewer)
        assert status == 200, whole
        assert whole["boards"] == [board] and whole["throughput"][-1]["done"] == 2
        status, _ = await auth.call("GET", f"/v1/projects/{project}/analytics", outsider)
        assert status == 404
        status, refused = await auth.call("GET", f"/v1/boards/{board}/analytics?days=0", owner)
        assert status == 400, refused

    # Who made each change is in the log: the REST caller, and membership changes too.
    log = event_log_for(open_store("sqlite", data_dir=str(tmp_path)))
    events = await log.read(0, 1000)
    await log.close()
    moves = [e for e in events if e.type == "task.moved"]
    assert len(moves) == 2 and {e.actor for e in moves} == {owner.user_id}
    members = [e for e in events if e.type == "member.changed"]
    assert {(e.data["user"], e.data["role"]) for e in members} >= {(viewer.user_id, "viewer")}
    assert all(e.project == project for e in members)


async def test_metrics_show_each_consumers_lag(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as auth:
        owner = await auth.add_person("olga", admin=True, mfa=True)
        _, board = await auth.project_with(owner, {})
        await auth.add_task(owner, board, "a")
        await caught_up(auth, f"/v1/boards/{board}/analytics")
        async with auth.http.get(f"{auth.base}/metrics") as response:
            text = await response.text()
    assert 'boardcast_event_consumer_lag{consumer="analytics"} 0.0' in text
    newest = [line for line in text.splitlines() if line.startswith("boardcast_event_log_last")]
    assert newest and float(newest[0].split()[-1]) > 0
