"""Who may do what with attachments, with auth on: editors upload and delete; anyone who may
read the board downloads clean files; people outside the project see nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth_helpers import AuthServer, Person, auth_server
from tests.engine.attachment_flow import fetch, send
from tests.file_services import ClamdServer
from tests.services import TIMEOUT_SCALE


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    server = ClamdServer(tmp_path_factory.mktemp("clamd-roles"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def clean(server: AuthServer, path: str, person: Person) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + 30 * TIMEOUT_SCALE
    while asyncio.get_running_loop().time() < deadline:
        status, found = await server.call("GET", path, person)
        assert status == 200, found
        if found["state"] != "pending" and found["state"] != "uploading":
            return dict(found)
        await asyncio.sleep(0.05)
    raise AssertionError("the scan did not finish")


async def test_editors_upload_and_delete_readers_download_outsiders_see_nothing(
    tmp_path: Path, clamd: ClamdServer
) -> None:
    async with auth_server(
        tmp_path, files_clamd=f"127.0.0.1:{clamd.port}", files_scan_poll_seconds=0.05
    ) as server:
        owner = await server.add_person("olivia", mfa=True)
        people = {name: await server.add_person(name) for name in ("eddie", "cora", "vera")}
        outsider = await server.add_person("mallory")
        _project, board = await server.project_with(
            owner, {"eddie": "editor", "cora": "commenter", "vera": "viewer"}
        )
        status, task = await server.add_task(people["eddie"], board, "Draft the plan")
        assert status == 201, task
        attachments = f"/v1/boards/{board}/tasks/{task['id']}/attachments"
        body = {"name": "plan.txt", "size": 4, "content_type": "text/plain"}

        for name in ("cora", "vera"):
            status, refused = await server.call("POST", attachments, people[name], body)
            assert status == 403, (name, refused)
        assert (await server.call("POST", attachments, outsider, body))[0] == 404
        assert (await server.call("POST", attachments, None, body))[0] == 401

        status, created = await server.call("POST", attachments, people["eddie"], body)
        assert status == 201, created
        assert (await send(created["upload"], b"plan"))[0] == 201
        one = f"{attachments}/{created['id']}"
        assert (await server.call("POST", f"{one}/complete", people["vera"]))[0] == 403
        assert (await server.call("POST", f"{one}/complete", people["eddie"]))[0] == 200
        found = await clean(server, one, people["eddie"])
        assert found["state"] == "clean"

        # A viewer may download it; someone outside the project cannot even see it.
        status, seen = await server.call("GET", one, people["vera"])
        assert status == 200 and "download" in seen
        status, data, _ = await fetch(seen["download"]["url"])
        assert (status, data) == (200, b"plan")
        assert (await server.call("GET", one, outsider))[0] == 404
        assert (await server.call("GET", attachments, outsider))[0] == 404
        assert (await server.call("GET", f"{one}/versions", outsider))[0] == 404

        for name in ("cora", "vera"):
            assert (await server.call("DELETE", one, people[name]))[0] == 403
        assert (await server.call("DELETE", one, outsider))[0] == 404
        assert (await server.call("DELETE", one, people["eddie"]))[0] == 204
        assert (await server.call("GET", one, people["vera"]))[0] == 404
