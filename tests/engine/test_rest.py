"""The REST API through a real server: resources, concurrency, bulk, the Yjs document, errors."""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map

from clients.provider import BoardClient
from crdt.board import Board
from tests.conftest import RunningServer, serve, wait_until

DOC = Path(__file__).parents[2] / "docs" / "extensions.md"
PROBLEM = "application/problem+json"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serve("local", tmp_path) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


async def problem_of(response: aiohttp.ClientResponse, status: int, name: str) -> dict[str, Any]:
    body = await response.json(content_type=None)
    assert response.status == status, body
    assert response.content_type == PROBLEM
    assert body["type"] == f"urn:boardcast:problem:{name}", body
    assert body["status"] == status and body["title"] and body["detail"]
    return dict(body)


async def new_project(http: aiohttp.ClientSession, name: str = "Launch") -> dict[str, Any]:
    async with http.post("/v1/projects", json={"name": name}) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Location"].startswith("/v1/projects/")
        return dict(await response.json())


async def new_board(http: aiohttp.ClientSession, project_id: str, name: str) -> dict[str, Any]:
    async with http.post(f"/v1/projects/{project_id}/boards", json={"name": name}) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())


# -- projects and boards --------------------------------------------------------------


async def test_projects_and_boards_are_created_listed_and_renamed(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    project = await new_project(http, "Launch")
    assert project["name"] == "Launch" and project["id"]
    other = await new_project(http, "Research")
    async with http.get("/v1/projects") as response:
        listed = await response.json()
    assert [p["name"] for p in listed["items"]] == ["Launch", "Research"]

    board = await new_board(http, project["id"], "Sprint 1")
    assert board["project_id"] == project["id"] and board["name"] == "Sprint 1"
    async with http.get(f"/v1/projects/{project['id']}/boards") as response:
        assert [b["id"] for b in (await response.json())["items"]] == [board["id"]]
    async with http.get(f"/v1/projects/{other['id']}/boards") as response:
        assert (await response.json())["items"] == []

    # The board document itself knows its title and project, as a live client sees it.
    async with BoardClient(server.url, board["id"], ack=False) as reader:
        await reader.synced()
        meta = Board(reader.doc).get_meta()
        assert (meta.title, meta.project) == ("Sprint 1", project["id"])

    async with http.get(f"/v1/projects/{project['id']}") as response:
        etag = response.headers["ETag"]
    async with http.patch(
        f"/v1/projects/{project['id']}", json={"name": "Launch v2"}, headers={"If-Match": etag}
    ) as response:
        assert response.status == 200 and (await response.json())["name"] == "Launch v2"
    # The old ETag no longer matches.
    async with http.patch(
        f"/v1/projects/{project['id']}", json={"name": "Launch v3"}, headers={"If-Match": etag}
    ) as response:
        await problem_of(response, 412, "precondition-failed")
        assert response.headers["ETag"] != etag

    async with http.delete(f"/v1/projects/{project['id']}") as response:
        await problem_of(response, 409, "conflict")
    async with http.delete(f"/v1/projects/{other['id']}") as response:
        assert response.status == 204
    async with http.get(f"/v1/projects/{other['id']}") as response:
        await problem_of(response, 404, "not-found")


async def test_lists_page_with_cursors(http: aiohttp.ClientSession) -> None:
    for index in range(7):
        await new_project(http, f"p{index}")
    seen: list[str] = []
    url: str | None = "/v1/projects?limit=3"
    pages = 0
    while url is not None:
        async with http.get(url) as response:
            page = await response.json()
        seen += [item["name"] for item in page["items"]]
        pages += 1
        url = f"/v1/projects?limit=3&cursor={page['next_cursor']}" if page["next_cursor"] else None
    assert seen == [f"p{index}" for index in range(7)] and pages == 3
    async with http.get("/v1/projects?cursor=not-a-cursor!") as response:
        await problem_of(response, 400, "bad-request")
    async with http.get("/v1/projects?limit=100000") as response:
        await problem_of(response, 400, "bad-request")


# -- tasks ---------------------------------------------------------------------------


async def test_tasks_are_created_read_updated_moved_and_deleted_live(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    async with BoardClient(server.url, "crud", ack=False) as watcher:
        await watcher.synced()
        async with http.post(
            "/v1/boards/crud/tasks",
            json={"title": "Write the spec", "column": "To do", "labels": ["docs"]},
        ) as response:
            assert response.status == 201, await response.text()
            task = await response.json()
            version = int(response.headers["Boardcast-Version"])
        assert version >= 1
        await wait_until(lambda: task["id"] in watcher.doc.get("tasks", type=Map))
        board = Board(watcher.doc)
        assert board.get_task(task["id"]).title == "Write the spec"
        assert [column.name for column in board.columns()] == ["To do"]

        async with http.get(f"/v1/boards/crud/tasks/{task['id']}") as response:
            etag = response.headers["ETag"]
            assert (await response.json())["labels"] == ["docs"]
        async with http.patch(
            f"/v1/boards/crud/tasks/{task['id']}",
            json={"title": "Write the spec, v2", "column": "Doing"},
            headers={"If-Match": etag},
        ) as response:
            assert response.status == 200, await response.text()
            updated = await response.json()
        assert updated["title"] == "Write the spec, v2"
        await wait_until(lambda: board.get_task(task["id"]).title == "Write the spec, v2")
        doing = next(column for column in board.columns() if column.name == "Doing")
        assert board.get_task(task["id"]).column == doing.id

        async with http.get("/v1/boards/crud/tasks", params={"column": doing.id}) as response:
            assert [t["id"] for t in (await response.json())["items"]] == [task["id"]]

        async with http.delete(f"/v1/boards/crud/tasks/{task['id']}") as response:
            assert response.status == 204
        await wait_until(lambda: not board.has_task(task["id"]))
        async with http.get(f"/v1/boards/crud/tasks/{task['id']}") as response:
            await problem_of(response, 404, "not-found")


async def test_concurrent_if_match_changes_one_wins_the_other_gets_412(
    http: aiohttp.ClientSession,
) -> None:
    async with http.post("/v1/boards/race/tasks", json={"title": "t", "column": "c"}) as response:
        task = await response.json()
        etag = response.headers["ETag"]

    async def rename(title: str) -> int:
        async with http.patch(
            f"/v1/boards/race/tasks/{task['id']}",
            json={"title": title},
            headers={"If-Match": etag},
        ) as response:
            return response.status

    statuses = await asyncio.gather(*(rename(f"title {n}") for n in range(5)))
    assert sorted(statuses) == [200, 412, 412, 412, 412]


async def test_a_bulk_request_is_one_update_and_a_retry_applies_once(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    tasks = [{"title": f"imported {n}", "column": "Backlog"} for n in range(500)]
    seen: list[int] = []
    async with BoardClient(server.url, "bulk", ack=False) as watcher:
        await watcher.synced()
        watcher.doc.observe(lambda event: seen.append(len(event.update)))
        headers = {"Idempotency-Key": "import-1"}
        async with http.post(
            "/v1/boards/bulk/tasks/bulk", json={"tasks": tasks}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            first = await response.json()
        assert len(first["created"]) == 500
        await wait_until(lambda: len(watcher.doc.get("tasks", type=Map)) == 500)
        assert len(seen) == 1, f"the bulk change arrived as {len(seen)} updates"

        async with http.post(
            "/v1/boards/bulk/tasks/bulk", json={"tasks": tasks}, headers=headers
        ) as response:
            again = await response.json()
            assert response.headers["Idempotent-Replayed"] == "true"
        assert again == first
        await asyncio.sleep(0.2)
        assert len(watcher.doc.get("tasks", type=Map)) == 500 and len(seen) == 1

        # Update, move and delete in one go, also one update.
        ids = first["created"]
        body = {
            "update": [{"id": ids[0], "title": "renamed"}],
            "move": [{"id": ids[1], "column": "Done"}],
            "delete": ids[2:10],
        }
        async with http.post("/v1/boards/bulk/tasks/bulk", json=body) as response:
            assert response.status == 200, await response.text()
        board = Board(watcher.doc)
        await wait_until(lambda: len(watcher.doc.get("tasks", type=Map)) == 492)
        assert len(seen) == 2
        assert board.get_task(ids[0]).title == "renamed"
        assert next(c.name for c in board.columns() if c.id == board.get_task(ids[1]).column) == (
            "Done"
        )

        # One unknown id refuses the whole request: nothing of it applies.
        body = {"update": [{"id": ids[0], "title": "again"}], "delete": ["no-such-task"]}
        async with http.post("/v1/boards/bulk/tasks/bulk", json=body) as response:
            await problem_of(response, 422, "validation")
        await asyncio.sleep(0.2)
        assert board.get_task(ids[0]).title == "renamed" and len(seen) == 2


# -- the Yjs document over HTTP ---------------------------------------------------


async def test_the_yjs_document_reads_and_writes_over_http(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    async with http.post("/v1/boards/ydoc/tasks", json={"title": "a", "column": "c"}):
        pass
    async with http.get("/v1/boards/ydoc/ydoc") as response:
        assert response.content_type == "application/octet-stream"
        state = await response.read()
    copy: Doc[Any] = Doc()
    copy.apply_update(state)
    assert [task.title for task in Board(copy).tasks()] == ["a"]
    async with http.get("/v1/boards/ydoc/ydoc", headers={"Accept": "application/json"}) as response:
        exported = await response.json()
    assert [task["title"] for task in exported["tasks"].values()] == ["a"]

    # An update made offline, posted as bytes, reaches a live client.
    before = copy.get_state()
    Board(copy).add_task("from http", next(iter(exported["columns"])), task_id="h1")
    update = copy.get_update(before)
    async with BoardClient(server.url, "ydoc", ack=False) as watcher:
        await watcher.synced()
        async with http.post(
            "/v1/boards/ydoc/ydoc",
            data=update,
            headers={"Content-Type": "application/octet-stream"},
        ) as response:
            assert response.status == 200, await response.text()
        await wait_until(lambda: "h1" in watcher.doc.get("tasks", type=Map))

    async with http.post(
        "/v1/boards/ydoc/ydoc",
        data=b"\x01\x02garbage",
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        await problem_of(response, 422, "invalid-update")


# -- errors -------------------------------------------------------------------------


async def test_bad_requests_get_named_problems_and_the_server_keeps_serving(
    http: aiohttp.ClientSession,
) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/v1/projects", {"data": b"{not json", "headers": _JSON}, 400, "invalid-json"),
        ("POST", "/v1/projects", {"data": b"NaN", "headers": _JSON}, 400, "invalid-json"),
        ("POST", "/v1/projects", {"data": b"name=x"}, 415, "unsupported-media-type"),
        ("POST", "/v1/projects", {"json": {"name": ""}}, 422, "validation"),
        ("POST", "/v1/projects", {"json": {"name": "x" * 5000}}, 422, "validation"),
        ("POST", "/v1/projects", {"json": {"name": "x", "extra": 1}}, 422, "validation"),
        ("POST", "/v1/projects", {"json": ["not", "an", "object"]}, 422, "validation"),
        ("POST", "/v1/projects/nope/boards", {"json": {"name": "b"}}, 404, "not-found"),
        ("GET", "/v1/boards/never-written", {}, 404, "not-found"),
        ("GET", "/v1/boards/bad%20id", {}, 422, "validation"),
        ("PUT", "/v1/projects", {}, 405, "method-not-allowed"),
        ("GET", "/v1/nothing-here", {}, 404, "not-found"),
        (
            "POST",
            "/v1/boards/b/tasks",
            {"json": {"title": "t", "column": "c", "due": "tomorrow"}},
            422,
            "validation",
        ),
        (
            "POST",
            "/v1/boards/b/tasks/bulk",
            {"json": {"tasks": [{"title": "t", "column": "c"}] * 10_001}},
            413,
            "too-many-items",
        ),
        (
            "POST",
            "/v1/boards/b/tasks/bulk",
            {"json": {"tasks": [{"title": "t", "column": "c", "position": "!!"}]}},
            422,
            "validation",
        ),
        ("POST", "/v1/boards/boardcast.directory/tasks", {"json": {}}, 403, "forbidden"),
    ]
    for method, url, options, status, name in cases:
        async with http.request(method, url, **options) as response:
            await problem_of(response, status, name)
    # Still serving.
    project = await new_project(http, "after the errors")
    assert project["id"]


async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path) -> None:
    async with serve("local", tmp_path, rest_max_body_bytes=1000) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            async with http.post("/v1/projects", json={"name": "x" * 900}) as response:
                assert response.status == 201
            async with http.post(
                "/v1/projects", data=b'{"name": "' + b"x" * 2000 + b'"}', headers=_JSON
            ) as response:
                await problem_of(response, 413, "too-large")


_JSON = {"Content-Type": "application/json"}


# -- who may do what -----------------------------------------------------------------


@pytest.fixture
def doc_examples(tmp_path: Path) -> Iterator[str]:
    module = "boardcast_rest_doc_extensions"
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    (tmp_path / f"{module}.py").write_text("\n\n".join(blocks))
    sys.path.insert(0, str(tmp_path))
    try:
        yield module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


async def test_rest_callers_get_the_same_decision_as_a_socket(
    tmp_path: Path, doc_examples: str
) -> None:
    importlib.import_module(doc_examples)
    extensions = (f"{doc_examples}:RequireToken", f"{doc_examples}:ViewersReadOnly")
    async with serve("local", tmp_path, extensions=extensions) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            task = {"title": "t", "column": "c"}
            async with http.post("/v1/boards/guarded/tasks", json=task) as response:
                await problem_of(response, 401, "unauthorized")
            editor = {"token": "let-me-in", "user": "ann"}
            async with http.post("/v1/boards/guarded/tasks", json=task, params=editor) as response:
                assert response.status == 201
            viewer = {**editor, "role": "viewer", "user": "vic"}
            async with http.get("/v1/boards/guarded/tasks", params=viewer) as response:
                assert response.status == 200 and len((await response.json())["items"]) == 1
            async with http.post("/v1/boards/guarded/tasks", json=task, params=viewer) as response:
                await problem_of(response, 403, "read-only")
        from persistence.factory import open_store

        async with open_store("sqlite", data_dir=str(tmp_path)) as store:
            entries = (await store.load("guarded")).updates
        assert {entry.origin for entry in entries} == {"ann"}


async def test_rest_writes_and_reads_reach_the_board_wherever_it_lives(
    backend: str, tmp_path: Path, cluster_name: str
) -> None:
    async with serve(backend, tmp_path, cluster_name=cluster_name) as server:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
            project = await new_project(http, "Everywhere")
            board = await new_board(http, project["id"], "On any host")
            tasks = [{"title": f"t{n}", "column": "Backlog"} for n in range(50)]
            async with http.post(
                f"/v1/boards/{board['id']}/tasks/bulk", json={"tasks": tasks}
            ) as response:
                assert response.status == 200, await response.text()
                version = (await response.json())["version"]
            async with http.get(f"/v1/boards/{board['id']}") as response:
                summary = await response.json()
                assert int(response.headers["Boardcast-Version"]) >= version
            assert summary["task_count"] == 50 and summary["name"] == "On any host"


async def test_the_python_rest_client_does_an_import_and_a_query(
    server: RunningServer,
) -> None:
    from clients.rest import ApiError, RestClient

    async with RestClient(f"http://127.0.0.1:{server.port}") as api:
        project = await api.create_project("Imports")
        board = await api.create_board(project["id"], "From the old tool")
        result = await api.bulk(
            board["id"],
            create=[
                {"title": f"card {n}", "column": "Inbox", "assignees": ["ann" if n % 2 else "bob"]}
                for n in range(30)
            ],
            idempotency_key="old-tool-1",
        )
        assert len(result["created"]) == 30
        mine = [
            task
            async for task in api.tasks(
                project=project["id"], assignee="ann", min_version=(board["id"], result["version"])
            )
        ]
        assert len(mine) == 15 and {task["board_id"] for task in mine} == {board["id"]}
        task, etag = await api.task(board["id"], result["created"][0])
        await api.update_task(board["id"], task["id"], title="renamed", if_match=etag)
        try:
            await api.update_task(board["id"], task["id"], title="again", if_match=etag)
        except ApiError as error:
            assert error.status == 412 and error.name == "precondition-failed"
        else:
            pytest.fail("a stale ETag was accepted")
        assert [p["name"] async for p in api.projects()] == ["Imports"]
        assert [b["name"] async for b in api.boards(project["id"])] == ["From the old tool"]


async def test_members_and_comments(http: aiohttp.ClientSession, server: RunningServer) -> None:
    project = await new_project(http, "Team")
    base = f"/v1/projects/{project['id']}/members"
    async with http.put(f"{base}/ann", json={"role": "editor"}) as response:
        assert response.status == 200 and (await response.json())["role"] == "editor"
    async with http.put(f"{base}/bob", json={"role": "viewer"}) as response:
        assert response.status == 200
    async with http.put(f"{base}/ann", json={"role": "admin"}) as response:
        assert response.status == 200
    async with http.put(f"{base}/cy", json={"role": "superuser"}) as response:
        await problem_of(response, 422, "validation")
    async with http.get(base) as response:
        members = (await response.json())["items"]
    assert [(m["user"], m["role"]) for m in members] == [("ann", "admin"), ("bob", "viewer")]
    async with http.delete(f"{base}/bob") as response:
        assert response.status == 204
    async with http.delete(f"{base}/bob") as response:
        await problem_of(response, 404, "not-found")

    async with http.post("/v1/boards/talk/tasks", json={"title": "t", "column": "c"}) as response:
        task = await response.json()
    comments = f"/v1/boards/talk/tasks/{task['id']}/comments"
    async with BoardClient(server.url, "talk", ack=False) as watcher:
        await watcher.synced()
        async with http.post(comments, json={"text": "first!"}) as response:
            assert response.status == 201
            first = await response.json()
        async with http.post(comments, json={"text": "second"}) as response:
            assert response.status == 201
        # The board app reads the same array of maps on the task.
        raw: Any = watcher.doc.get("tasks", type=Map)
        await wait_until(lambda: len(raw[task["id"]].get("comments") or []) == 2)
        assert [c["text"] for c in raw[task["id"]]["comments"]] == ["first!", "second"]
    async with http.get(comments) as response:
        listed = (await response.json())["items"]
    assert [(c["author"], c["text"]) for c in listed] == [
        ("local-admin", "first!"),
        ("local-admin", "second"),
    ]
    async with http.delete(f"{comments}/{first['id']}") as response:
        assert response.status == 204
    async with http.get(comments) as response:
        assert [c["text"] for c in (await response.json())["items"]] == ["second"]
    async with http.get("/v1/boards/talk/tasks/nope/comments") as response:
        await problem_of(response, 404, "not-found")


async def test_a_board_exports_and_imports_exactly_and_deletes(
    http: aiohttp.ClientSession, server: RunningServer
) -> None:
    project = await new_project(http, "Moves")
    board = await new_board(http, project["id"], "Original")
    tasks = [
        {"title": "a", "column": "To do", "labels": ["x"], "due": "2026-12-02"},
        {"title": "b", "column": "Doing", "assignees": ["ann"], "description": "line\nline"},
    ]
    async with http.post(f"/v1/boards/{board['id']}/tasks/bulk", json={"tasks": tasks}):
        pass
    async with http.get(f"/v1/boards/{board['id']}/export") as response:
        exported = await response.json()
    async with http.post(f"/v1/projects/{project['id']}/imports/board", json=exported) as response:
        assert response.status == 201, await response.text()
        copy = (await response.json())["board"]
    async with http.get(f"/v1/boards/{copy['id']}/export") as response:
        again = await response.json()
    assert again == exported, "an export imports back exactly"
    async with http.post(
        f"/v1/projects/{project['id']}/imports/board", json={"version": 99}
    ) as response:
        await problem_of(response, 422, "validation")

    # Renaming and deleting a board take If-Match, checked in the board's transaction.
    async with http.get(f"/v1/boards/{board['id']}") as response:
        stale = response.headers["ETag"]
    async with http.patch(
        f"/v1/boards/{board['id']}", json={"name": "Renamed"}, headers={"If-Match": stale}
    ) as response:
        assert response.status == 200 and (await response.json())["name"] == "Renamed"
    for method, body in (("PATCH", {"name": "Again"}), ("DELETE", None)):
        async with http.request(
            method, f"/v1/boards/{board['id']}", json=body, headers={"If-Match": stale}
        ) as response:
            await problem_of(response, 412, "precondition-failed")

    async with BoardClient(server.url, board["id"], ack=False) as watcher:
        await watcher.synced()
        assert len(Board(watcher.doc).tasks()) == 2
        async with http.delete(f"/v1/boards/{board['id']}") as response:
            assert response.status == 204
        await wait_until(lambda: not Board(watcher.doc).tasks())
    async with http.get(f"/v1/projects/{project['id']}/boards") as response:
        assert [b["id"] for b in (await response.json())["items"]] == [copy["id"]]
