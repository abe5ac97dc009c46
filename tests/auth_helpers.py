"""Helpers for tests of auth: a server with auth on, people with roles, sockets' fates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyotp

from auth.service import AuthService
from gateway.app import GUARD
from tests.conftest import RunningServer, serve

PASSWORD = "a long enough password"


@dataclass
class Person:
    """A user of the test server, logged in."""

    name: str
    user_id: str
    token: str
    refresh: str
    totp_secret: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class AuthServer:
    """A running server with auth required, and its account service."""

    server: RunningServer
    service: AuthService
    http: aiohttp.ClientSession
    people: dict[str, Person] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws(self) -> str:
        return self.server.url

    async def add_person(self, name: str, *, admin: bool = False, mfa: bool = False) -> Person:
        """Create an account (with TOTP if asked) and log it in."""
        user = await asyncio.to_thread(self.service.create_user, name, PASSWORD, admin=admin)
        secret = None
        if mfa:
            secret = pyotp.random_base32()
            await asyncio.to_thread(self.service.store.set_totp, user.id, secret)
        body: dict[str, Any] = {"username": name, "password": PASSWORD}
        if secret:
            body["totp"] = pyotp.TOTP(secret).now()
        async with self.http.post(f"{self.base}/v1/auth/login", json=body) as response:
            assert response.status == 200, await response.text()
            grant = await response.json()
        person = Person(name, user.id, grant["access_token"], grant["refresh_token"], secret)
        self.people[name] = person
        return person

    async def call(
        self, method: str, path: str, person: Person | None, body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        """A REST call as ``person`` (None: no credentials); status and JSON body."""
        sent = {**(person.auth if person else {}), **headers}
        async with self.http.request(
            method, f"{self.base}{path}", json=body, headers=sent
        ) as response:
            text = await response.text()
            try:
                return response.status, await response.json(content_type=None) if text else None
            except ValueError:
                return response.status, text

    async def add_task(self, person: Person, board: str, title: str) -> tuple[int, Any]:
        """Create a task in the board's first column, as ``person``."""
        _, columns = await self.call("GET", f"/v1/boards/{board}/columns", person)
        column = columns["items"][0]["id"] if isinstance(columns, dict) else "none"
        return await self.call(
            "POST", f"/v1/boards/{board}/tasks", person, {"title": title, "column": column}
        )

    async def project_with(self, owner: Person, roles: dict[str, str]) -> tuple[str, str]:
        """A project of ``owner``, one board, and members in ``roles``: (project, board)."""
        status, project = await self.call("POST", "/v1/projects", owner, {"name": "Launch"})
        assert status == 201, project
        status, board = await self.call(
            "POST", f"/v1/projects/{project['id']}/boards", owner, {"name": "Plan"}
        )
        assert status == 201, board
        for name, role in roles.items():
            user_id = self.people[name].user_id
            status, answer = await self.call(
                "PUT", f"/v1/projects/{project['id']}/members/{user_id}", owner, {"role": role}
            )
            assert status == 200, answer
        return project["id"], board["id"]


@contextlib.asynccontextmanager
async def auth_server(tmp_path: Path, **overrides: Any) -> AsyncIterator[AuthServer]:
    """A local-backend server with auth required."""
    async with serve("local", tmp_path, auth="required", **overrides) as server:
        service = server.runner.app[GUARD].service
        assert service is not None
        async with aiohttp.ClientSession() as http:
            yield AuthServer(server, service, http)


async def socket_fate(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> int | str:
    """What happens to a socket: its close code, or ``"open"`` once the server syncs with it."""
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, headers=headers or {})
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status
        async with asyncio.timeout(timeout):
            message = await ws.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            await ws.close()
            return "open"
        return ws.close_code if ws.close_code is not None else str(message.type)
