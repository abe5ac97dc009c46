"""A deployment whose directory still holds every project's members is split on start.

The store is written the old way (one directory document with projects, members,
boards and narrowed roles, as the server wrote it before project documents), then
a real server starts on it. A crash halfway through the split is the store after
one project was adopted and the server stopped before marking the directory; a
change made to that project in between must survive the restart that finishes the
job. A second restart must change nothing.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from boardcast.deployment import build_cluster
from crdt.board import Board
from crdt.project_doc import ProjectDoc, project_doc_id
from crdt.project_list import list_doc_id, listed_projects
from crdt.projects import DIRECTORY_BOARD
from crdt.updates import decode_state_vector
from gateway.rest.project_commands import adopt_project, legacy_projects
from gateway.settings import Settings
from persistence.factory import SQLITE_FILENAME, open_store
from tests.auth_helpers import AuthServer, Person, auth_server


def _old_directory(people: dict[str, Person]) -> bytes:
    """The directory document as the server wrote it before project documents."""
    doc: Doc[Any] = Doc()
    projects = doc.get("projects", type=Map)
    boards = doc.get("boards", type=Map)
    alice, bob, carol = (people[name].user_id for name in ("alice", "bob", "carol"))
    with doc.transaction():
        projects["p-launch"] = Map(
            {
                "name": "Launch",
                "position": "a0",
                "created_at": "2026-11-01T10:00:00.000Z",
                "members": Map({alice: "owner", bob: "editor", carol: "editor"}),
            }
        )
        projects["p-ops"] = Map(
            {
                "name": "Ops",
                "position": "a1",
                "created_at": "2026-11-02T10:00:00.000Z",
                "members": Map({alice: "owner", carol: "viewer"}),
            }
        )
        boards["b-plan"] = Map(
            {
                "title": "Plan",
                "project": "p-launch",
                "position": "a0",
                "created_at": "2026-11-01T10:01:00.000Z",
                "members": Map({carol: "viewer"}),
            }
        )
        boards["b-rota"] = Map(
            {
                "title": "Rota",
                "project": "p-ops",
                "position": "a0",
                "created_at": "2026-11-02T10:01:00.000Z",
            }
        )
    update: bytes = doc.get_update()
    return update


def _plan_board() -> bytes:
    board = Board()
    board.set_meta(title="Plan", project="p-launch")
    board.add_column("To do")
    update: bytes = board.doc.get_update()
    return update


async def _write_old_store(data_dir: Path, people: dict[str, Person]) -> None:
    for leftover in data_dir.glob(f"{SQLITE_FILENAME}*"):
        leftover.unlink()  # the boards of the run that made the accounts
    store = open_store("sqlite", data_dir=str(data_dir))
    await store.append({DIRECTORY_BOARD: [_old_directory(people)], "b-plan": [_plan_board()]})
    await store.close()


async def _crash_after_one_project(data_dir: Path, bob: str) -> None:
    """Adopt only the first project (as a split that crashed would have), then change it."""
    settings = Settings(data_dir=str(data_dir), backend="local", auth="none")
    cluster = await build_cluster(settings)
    try:
        legacy = (await cluster.run(DIRECTORY_BOARD, legacy_projects)).value
        assert legacy is not None and [p.entry.id for p in legacy] == ["p-launch", "p-ops"]
        await cluster.run(project_doc_id("p-launch"), partial(adopt_project, legacy=legacy[0]))
        # A change after the adoption, which finishing the split must not undo.
        await cluster.run(project_doc_id("p-launch"), partial(_remove, user=bob))
    finally:
        await cluster.close()


def _remove(board: Board, user: str) -> None:
    ProjectDoc(board.doc).remove_member(user)


def _state(board: Board) -> bytes:
    state: bytes = board.doc.get_state()
    return state


def _directory_members(board: Board) -> list[str]:
    found = []
    for name in ("projects", "boards"):
        entries = board.doc.get(name, type=Map)
        for key in list(entries.keys()):
            value = entries[key]
            if isinstance(value, Map) and "members" in value:
                found.append(key)
    return found


def _project_members(board: Board) -> dict[str, str]:
    return ProjectDoc(board.doc).members()


def _list(board: Board) -> list[str]:
    return [entry["id"] for entry in listed_projects(board.doc)]


DOCUMENTS = (DIRECTORY_BOARD, project_doc_id("p-launch"), project_doc_id("p-ops"))


async def _states(server: AuthServer) -> list[dict[int, int]]:
    # Decoded: the order of a state vector's entries is not part of its value.
    cluster = server.server.cluster
    return [
        decode_state_vector((await cluster.run(doc_id, _state)).value or b"\x00")
        for doc_id in DOCUMENTS
    ]


async def test_an_old_directory_is_split_into_project_documents_once(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = {name: await server.add_person(name) for name in ("alice", "bob", "carol")}
        people["mallory"] = await server.add_person("mallory")
    await _write_old_store(tmp_path, people)
    await _crash_after_one_project(tmp_path, people["bob"].user_id)

    alice, bob, carol, mallory = (people[n] for n in ("alice", "bob", "carol", "mallory"))
    async with auth_server(tmp_path) as server:
        server.people.update(people)
        cluster = server.server.cluster
        status, body = await server.call("GET", "/v1/projects", alice)
        assert status == 200 and [p["name"] for p in body["items"]] == ["Launch", "Ops"]
        status, body = await server.call("GET", "/v1/projects", carol)
        assert [(p["id"], p["role"]) for p in body["items"]] == [
            ("p-launch", "editor"),
            ("p-ops", "viewer"),
        ]
        # Bob left Launch after it was adopted: finishing the split did not bring him back.
        assert (await server.call("GET", "/v1/projects/p-launch", bob))[0] == 404
        assert (await server.call("GET", "/v1/projects", bob))[1]["items"] == []
        assert (await server.call("GET", "/v1/projects/p-ops", mallory))[0] == 404
        # The narrowed role came along: carol reads the plan but may not change it.
        status, members = await server.call("GET", "/v1/boards/b-plan/members", alice)
        roles = {m["user"]: m["role"] for m in members["items"]}
        assert roles == {alice.user_id: "owner", carol.user_id: "viewer"}
        assert (await server.call("GET", "/v1/boards/b-plan/columns", carol))[0] == 200
        status, _ = await server.add_task(carol, "b-plan", "not allowed")
        assert status == 403
        status, _ = await server.add_task(alice, "b-plan", "allowed")
        assert status == 201
        # The roles now live in the project documents, not in the directory.
        assert (await cluster.run(DIRECTORY_BOARD, _directory_members)).value == []
        members_ops = (await cluster.run(project_doc_id("p-ops"), _project_members)).value
        assert members_ops == {alice.user_id: "owner", carol.user_id: "viewer"}
        listed = (await cluster.run(list_doc_id(carol.user_id), _list)).value
        assert listed == ["p-launch", "p-ops"]
        before = await _states(server)

    async with auth_server(tmp_path) as server:
        assert await _states(server) == before  # a second start changed nothing
        server.people.update(people)
        status, body = await server.call("GET", "/v1/projects", carol)
        assert status == 200 and len(body["items"]) == 2


async def test_a_new_deployment_leaves_the_directory_unwritten(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        cluster = server.server.cluster
        assert (await cluster.run(DIRECTORY_BOARD, _state)).value == b"\x00"
        assert (await cluster.run(DIRECTORY_BOARD, legacy_projects)).value == []
