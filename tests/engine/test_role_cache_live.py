"""Roles come from project documents through each gateway's cache, and changes reach every cache.

A real server with auth on (and a second gateway on the same cluster and account
store). The guard's calls to the cluster are counted where it makes them: requests
after the first must not cost an actor call for the access check, and a role changed
through one gateway must be what the other decides with, after a bounded wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from actors.cluster import Cluster
from crdt.project_doc import PROJECT_PREFIX
from crdt.projects import DIRECTORY_BOARD
from gateway.app import GUARD, create_app
from tests.auth_helpers import AuthServer, auth_server
from tests.services import TIMEOUT_SCALE


class CountingCluster:
    """The real cluster, with the ids of the documents the guard asked it about."""

    def __init__(self, inner: Cluster) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def run(self, board_id: str, function: Callable[..., Any], **kwargs: Any) -> Any:
        self.asked.append(board_id)
        return await self.inner.run(board_id, function, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def role_reads(self) -> int:
        return sum(
            1 for doc in self.asked if doc == DIRECTORY_BOARD or doc.startswith(PROJECT_PREFIX)
        )


async def test_access_checks_after_the_first_cost_no_actor_call(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia", mfa=True)
        await server.add_person("eddie")
        project, board = await server.project_with(owner, {"eddie": "editor"})
        # The setup's announcements on the revocation feed (polled every 0.25 s) must have
        # reached this gateway: each makes it forget, and read again, that person's roles.
        await asyncio.sleep(4 * server.server.settings.auth_revocation_poll_seconds)
        guard = server.server.runner.app[GUARD]
        counting = CountingCluster(guard.cluster)
        guard.cluster = counting  # type: ignore[assignment]
        eddie = server.people["eddie"]
        assert (await server.call("GET", f"/v1/boards/{board}/columns", eddie))[0] == 200
        first = counting.role_reads()
        for _ in range(20):
            assert (await server.call("GET", f"/v1/boards/{board}/columns", eddie))[0] == 200
        assert counting.role_reads() == first
        # A change is read again at once on the gateway that made it.
        member = f"/v1/projects/{project}/members/{eddie.user_id}"
        assert (await server.call("DELETE", member, owner))[0] == 204
        assert (await server.call("GET", f"/v1/boards/{board}/columns", eddie))[0] == 404
        assert counting.role_reads() > first


async def _second_gateway(server: AuthServer) -> tuple[web.AppRunner, str]:
    app = create_app(server.server.settings, server.server.cluster, own_cluster=False)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_a_role_changed_through_one_gateway_decides_on_another(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia", mfa=True)
        vera = await server.add_person("vera")
        mallory = await server.add_person("mallory")
        project, board = await server.project_with(owner, {"vera": "editor"})
        runner, other = await _second_gateway(server)
        try:
            async with ClientSession() as http:

                async def status_on_other(method: str, path: str, token: str) -> int:
                    headers = {"Authorization": f"Bearer {token}"}
                    body = {"title": "t", "column": "To do"} if method == "POST" else None
                    async with http.request(
                        method, f"{other}{path}", json=body, headers=headers
                    ) as answer:
                        return answer.status

                tasks = f"/v1/boards/{board}/tasks"
                # The other gateway remembers Vera as an editor, Mallory as nobody.
                assert await status_on_other("POST", tasks, vera.token) == 201
                assert await status_on_other("GET", tasks, mallory.token) == 404
                members = f"/v1/projects/{project}/members"
                change = {"role": "viewer"}
                assert (await server.call("PUT", f"{members}/{vera.user_id}", owner, change))[
                    0
                ] == 200
                assert (await server.call("PUT", f"{members}/{mallory.user_id}", owner, change))[
                    0
                ] == 200
                seen: dict[str, int] = {}
                deadline = asyncio.get_running_loop().time() + 10 * TIMEOUT_SCALE
                while seen != {"vera": 403, "mallory": 200}:
                    assert asyncio.get_running_loop().time() < deadline, seen
                    await asyncio.sleep(0.05)
                    seen["vera"] = await status_on_other("POST", tasks, vera.token)
                    seen["mallory"] = await status_on_other("GET", tasks, mallory.token)
        finally:
            await runner.cleanup()
