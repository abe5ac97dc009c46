"""A person's list of projects, live over the standard socket, and project documents read-only.

A real server with auth on: a person opens their list (``boardcast.projects-of.<id>``)
with the Python client, exactly as the stock y-websocket provider would, and the
owner changes things through REST. Every change must reach the open list; the
wait is bounded (generous) but not timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Map

from clients.provider import BoardClient, socket_url, wait_for
from crdt.project_doc import ProjectDoc, project_doc_id
from crdt.project_list import list_doc_id, listed_projects
from tests.auth_helpers import auth_server, socket_fate

#: Generous: a push normally arrives within milliseconds.
PUSHED_WITHIN = 10.0


def _shown(client: BoardClient) -> dict[str, tuple[str, str]]:
    return {entry["id"]: (entry["name"], entry["role"]) for entry in listed_projects(client.doc)}


def _boards(client: BoardClient) -> dict[str, str]:
    boards = client.doc.get("boards", type=Map)
    found: dict[str, str] = {}
    for key in list(boards.keys()):
        value: Any = boards[key]
        found[key] = str(value.get("title")) if isinstance(value, Map) else ""
    return found


async def _write_is_refused(ws: str, doc_id: str, token: str, intruder: str) -> None:
    client = BoardClient(ws, doc_id, params={"token": token})
    async with client:
        await client.synced()
        ProjectDoc(client.doc).set_member(intruder, "owner")
        await wait_for(lambda: client.denied_reason is not None, timeout=10)


async def test_the_list_shows_additions_roles_renames_boards_and_removals_live(
    tmp_path: Path,
) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia", mfa=True)
        bob = await server.add_person("bob")
        status, project = await server.call("POST", "/v1/projects", owner, {"name": "Launch"})
        assert status == 201
        members = f"/v1/projects/{project['id']}/members/{bob.user_id}"
        mine = BoardClient(server.ws, list_doc_id(bob.user_id), params={"token": bob.token})
        async with mine:
            await mine.synced()
            assert _shown(mine) == {}
            assert (await server.call("PUT", members, owner, {"role": "viewer"}))[0] == 200
            await wait_for(lambda: project["id"] in _shown(mine), timeout=PUSHED_WITHIN)
            assert _shown(mine)[project["id"]] == ("Launch", "viewer")

            assert (await server.call("PUT", members, owner, {"role": "editor"}))[0] == 200
            await wait_for(
                lambda: _shown(mine)[project["id"]][1] == "editor", timeout=PUSHED_WITHIN
            )
            path = f"/v1/projects/{project['id']}"
            assert (await server.call("PATCH", path, owner, {"name": "Lift-off"}))[0] == 200
            await wait_for(
                lambda: _shown(mine)[project["id"]][0] == "Lift-off", timeout=PUSHED_WITHIN
            )
            status, board = await server.call("POST", f"{path}/boards", owner, {"name": "Plan"})
            assert status == 201
            await wait_for(lambda: board["id"] in _boards(mine), timeout=PUSHED_WITHIN)
            assert _boards(mine)[board["id"]] == "Plan"

            assert (await server.call("DELETE", members, owner))[0] == 204
            await wait_for(lambda: project["id"] not in _shown(mine), timeout=PUSHED_WITHIN)
            assert _boards(mine) == {}
            # What the list showed is what REST says.
            status, listed = await server.call("GET", "/v1/projects", bob)
            assert status == 200 and listed["items"] == []


async def test_project_documents_and_lists_are_read_only_and_private(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia")
        vera = await server.add_person("vera")
        mallory = await server.add_person("mallory")
        status, project = await server.call("POST", "/v1/projects", owner, {"name": "Launch"})
        assert status == 201
        path = f"/v1/projects/{project['id']}/members/{vera.user_id}"
        # Adding members is a sensitive action: the owner has no second factor, so an
        # administrator does it.
        admin = await server.add_person("root", admin=True, mfa=True)
        assert (await server.call("PUT", path, admin, {"role": "viewer"}))[0] == 200
        doc_id = project_doc_id(project["id"])

        def url(doc: str, token: str) -> str:
            return socket_url(server.ws, doc, {"token": token})

        assert await socket_fate(url(doc_id, mallory.token)) == 4403
        assert await socket_fate(url(list_doc_id(vera.user_id), mallory.token)) == 4403
        assert await socket_fate(url(doc_id, vera.token)) == "open"
        assert await socket_fate(url(list_doc_id(vera.user_id), vera.token)) == "open"

        # Even the owner's writes over a socket are refused, and never stored.
        for token, doc in ((owner.token, doc_id), (vera.token, list_doc_id(vera.user_id))):
            await _write_is_refused(server.ws, doc, token, mallory.user_id)
        assert (await server.call("GET", f"/v1/projects/{project['id']}", mallory))[0] == 404
        status, listed = await server.call("GET", f"/v1/projects/{project['id']}/members", owner)
        assert {m["user"] for m in listed["items"]} == {owner.user_id, vera.user_id}
