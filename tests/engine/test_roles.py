"""Roles on a real server: what each may do, across projects (IDOR), and live revocation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyotp
from aiohttp import web

from clients.provider import BoardClient, socket_url, wait_for
from crdt.board import Board
from gateway.app import create_app
from tests.auth_helpers import AuthServer, Person, auth_server, socket_fate


async def _people(server: AuthServer) -> dict[str, Person]:
    owner = await server.add_person("olivia", mfa=True)
    for name in ("eddie", "cora", "vera", "mallory"):
        await server.add_person(name)
    return {"owner": owner, **{name: server.people[name] for name in server.people}}


async def test_each_role_may_do_what_the_table_says_and_no_more(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = await _people(server)
        project, board = await server.project_with(
            people["owner"], {"eddie": "editor", "cora": "commenter", "vera": "viewer"}
        )
        status, task = await server.add_task(people["eddie"], board, "Draft the plan")
        assert status == 201, task
        tasks = f"/v1/boards/{board}/tasks"
        comments = f"{tasks}/{task['id']}/comments"
        for name in ("vera", "cora"):
            assert (await server.call("GET", tasks, people[name]))[0] == 200
            status, body = await server.add_task(people[name], board, "x")
            assert status == 403, (name, body)
        assert (await server.call("POST", comments, people["vera"], {"text": "hi"}))[0] == 403
        assert (await server.call("POST", comments, people["cora"], {"text": "hi"}))[0] == 201
        # An editor may not delete the board; the owner may, with a fresh second factor.
        assert (await server.call("DELETE", f"/v1/boards/{board}", people["eddie"]))[0] == 403
        assert (await server.call("DELETE", f"/v1/projects/{project}", people["eddie"]))[0] == 403
        # Nobody may grant a role above their own, and the last owner stays.
        owner_id = people["owner"].user_id
        status, body = await server.call(
            "DELETE", f"/v1/projects/{project}/members/{owner_id}", people["owner"]
        )
        assert status == 409, body
        assert (await server.call("DELETE", f"/v1/boards/{board}", people["owner"]))[0] == 204


async def test_sensitive_actions_need_a_second_factor(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia")  # no TOTP enrolled
        status, project = await server.call("POST", "/v1/projects", owner, {"name": "P"})
        assert status == 201
        status, body = await server.call("DELETE", f"/v1/projects/{project['id']}", owner)
        assert status == 401 and body["type"] == "urn:boardcast:problem:mfa-required"
        # Enrolled, but logged in long ago (a refreshed token's auth_time is the login's):
        secret = pyotp.random_base32()
        server.service.store.set_totp(owner.user_id, secret)
        status, body = await server.call("DELETE", f"/v1/projects/{project['id']}", owner)
        assert status == 401  # this login was made without the second factor
        status, _ = await server.call(
            "DELETE",
            f"/v1/projects/{project['id']}",
            owner,
            **{"Boardcast-OTP": pyotp.TOTP(secret).now()},
        )
        assert status == 204


async def test_ids_of_other_projects_answer_not_found(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = await _people(server)
        project, board = await server.project_with(people["owner"], {"eddie": "editor"})
        _, task = await server.add_task(people["eddie"], board, "Secret plan")
        mallory = people["mallory"]
        probes = [
            ("GET", f"/v1/projects/{project}"),
            ("GET", f"/v1/projects/{project}/boards"),
            ("GET", f"/v1/projects/{project}/members"),
            ("GET", f"/v1/projects/{project}/tasks"),
            ("GET", f"/v1/boards/{board}"),
            ("GET", f"/v1/boards/{board}/tasks"),
            ("GET", f"/v1/boards/{board}/tasks/{task['id']}"),
            ("GET", f"/v1/boards/{board}/export"),
            ("GET", f"/v1/boards/{board}/ydoc"),
            ("GET", f"/v1/tasks?board={board}"),
            ("GET", f"/v1/tasks?project={project}"),
            ("PATCH", f"/v1/boards/{board}/tasks/{task['id']}"),
            ("DELETE", f"/v1/boards/{board}"),
            ("POST", f"/v1/projects/{project}/boards"),
            ("PUT", f"/v1/projects/{project}/members/{mallory.user_id}"),
        ]
        for method, path in probes:
            body = {"role": "owner"} if "members" in path else {"title": "pwned", "name": "x"}
            status, answer = await server.call(method, path, mallory, body)
            assert status == 404, (method, path, answer)
        status, listed = await server.call("GET", "/v1/projects", mallory)
        assert status == 200 and listed["items"] == []
        # A query naming no project could reach every project's rows: refused.
        assert (await server.call("GET", "/v1/tasks", mallory))[0] == 403
        assert await socket_fate(socket_url(server.ws, board, {"token": mallory.token})) == 4403
        assert (
            await socket_fate(
                socket_url(server.ws, "boardcast.directory", {"token": mallory.token})
            )
            == 4403
        )
        # Nothing of the probes changed the board.
        status, still = await server.call(
            "GET", f"/v1/boards/{board}/tasks/{task['id']}", people["eddie"]
        )
        assert status == 200 and still["title"] == "Secret plan"


async def test_a_viewers_edits_reach_nobody_and_the_viewer_is_told(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = await _people(server)
        _project, board = await server.project_with(
            people["owner"], {"eddie": "editor", "vera": "viewer"}
        )
        editor = BoardClient(server.ws, board, params={"token": people["eddie"].token})
        viewer = BoardClient(server.ws, board, params={"token": people["vera"].token})
        async with editor, viewer:
            await editor.synced()
            await viewer.synced()
            column = Board(viewer.doc).columns()[0].id
            Board(viewer.doc).add_task("Viewer's edit", column)
            await wait_for(lambda: viewer.denied_reason is not None, timeout=10)
            Board(editor.doc).add_task("Editor's edit", column)
            await editor.flush()
            await wait_for(lambda: len(Board(viewer.doc).tasks()) == 2, timeout=10)
            titles = {task.title for task in Board(editor.doc).tasks()}
            assert titles == {"Editor's edit"}
        _status, stored = await server.call("GET", f"/v1/boards/{board}/tasks", people["eddie"])
        assert [task["title"] for task in stored["items"]] == ["Editor's edit"]


async def _second_gateway(server: AuthServer) -> tuple[web.AppRunner, str]:
    """Another gateway on the same cluster and data directory (its own account-store reader)."""
    app = create_app(server.server.settings, server.server.cluster, own_cluster=False)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"


async def test_revocations_close_live_sockets_on_another_gateway(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = await _people(server)
        project, board = await server.project_with(
            people["owner"], {"eddie": "editor", "vera": "editor"}
        )
        runner, other = await _second_gateway(server)
        try:
            eddie = BoardClient(other, board, params={"token": people["eddie"].token})
            vera = BoardClient(other, board, params={"token": people["vera"].token})
            async with eddie, vera:
                await eddie.synced()
                await vera.synced()
                # Logging out on the first gateway ends Eddie's socket on the second...
                assert (await server.call("POST", "/v1/auth/logout", people["eddie"]))[0] == 204
                await wait_for(lambda: eddie.close_code is not None, timeout=10)
                assert eddie.close_code == 4401
                # ...and lowering Vera to viewer closes hers, to reopen read-only.
                status, _ = await server.call(
                    "PUT",
                    f"/v1/projects/{project}/members/{people['vera'].user_id}",
                    people["owner"],
                    {"role": "viewer"},
                )
                assert status == 200
                await wait_for(lambda: vera.close_code is not None, timeout=10)
                assert vera.close_code == 4403
        finally:
            await runner.cleanup()


async def test_disabling_an_account_closes_its_sockets(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        admin = await server.add_person("root", admin=True)
        people = await _people(server)
        _project, board = await server.project_with(people["owner"], {"eddie": "editor"})
        eddie = BoardClient(server.ws, board, params={"token": people["eddie"].token})
        async with eddie:
            await eddie.synced()
            status, _ = await server.call(
                "POST", f"/v1/admin/users/{people['eddie'].user_id}/disable", admin
            )
            assert status == 204
            await wait_for(lambda: eddie.close_code is not None, timeout=10)
            assert eddie.close_code == 4401
        assert (await server.call("GET", "/v1/me", people["eddie"]))[0] == 401
        await asyncio.sleep(0)


async def test_a_board_narrows_its_projects_roles_and_never_widens_them(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        people = await _people(server)
        project, board = await server.project_with(people["owner"], {"eddie": "editor"})
        status, other = await server.call(
            "POST", f"/v1/projects/{project}/boards", people["owner"], {"name": "Other"}
        )
        assert status == 201
        members = f"/v1/boards/{board}/members/{people['eddie'].user_id}"
        eddie = BoardClient(server.ws, board, params={"token": people["eddie"].token})
        async with eddie:
            await eddie.synced()
            status, narrowed = await server.call(
                "PUT", members, people["owner"], {"role": "viewer"}
            )
            assert status == 200 and narrowed["role"] == "viewer"
            await wait_for(lambda: eddie.close_code is not None, timeout=10)
            assert eddie.close_code == 4403
        assert (await server.add_task(people["eddie"], board, "x"))[0] == 403
        assert (await server.call("GET", f"/v1/boards/{board}/tasks", people["eddie"]))[0] == 200
        # The project's other board is not narrowed.
        assert (await server.add_task(people["eddie"], other["id"], "y"))[0] == 201
        # "owner" on the board is still at most the project role: editor.
        status, widened = await server.call("PUT", members, people["owner"], {"role": "owner"})
        assert status == 200 and widened["role"] == "editor"
        assert (await server.call("DELETE", members, people["owner"]))[0] == 204
        assert (await server.add_task(people["eddie"], board, "z"))[0] == 201
