"""What the attachment tests do again and again: a task, an upload through its signed URL."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.services import TIMEOUT_SCALE


async def new_task(http: aiohttp.ClientSession, board: str) -> str:
    """A task on ``board`` (made through REST); its id."""
    async with http.post(f"/v1/boards/{board}/tasks", json={"title": "t", "column": "c"}) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


def base(board: str, task: str) -> str:
    return f"/v1/boards/{board}/tasks/{task}/attachments"


async def start_upload(
    http: aiohttp.ClientSession,
    board: str,
    task: str,
    name: str,
    size: int,
    content_type: str = "text/plain",
) -> aiohttp.ClientResponse:
    """``POST .../attachments``; the response, read."""
    body = {"name": name, "size": size, "content_type": content_type}
    async with http.post(base(board, task), json=body) as response:
        await response.read()
        return response


async def send(upload: dict[str, Any], data: bytes, **changes: Any) -> tuple[int, dict[str, Any]]:
    """Send ``data`` as the pre-signed request says (``url``, ``method`` overridable)."""
    method = changes.get("method", upload["method"])
    url = changes.get("url", upload["url"])
    async with aiohttp.ClientSession() as raw:
        async with raw.request(method, url, data=data, headers=upload["headers"]) as response:
            body = await response.read()
            try:
                parsed = await response.json(content_type=None) if body else {}
            except ValueError:
                parsed = {}
            return response.status, parsed if isinstance(parsed, dict) else {}


async def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET a (pre-signed) URL; status, body, headers."""
    async with aiohttp.ClientSession() as raw:
        async with raw.get(url) as response:
            return response.status, await response.read(), dict(response.headers)


async def attach(
    http: aiohttp.ClientSession,
    board: str,
    task: str,
    name: str,
    data: bytes,
    content_type: str = "text/plain",
) -> dict[str, Any]:
    """Upload ``data`` through the signed URL and complete it; the attachment as created."""
    response = await start_upload(http, board, task, name, len(data), content_type)
    created = dict(await response.json())
    assert response.status == 201, created
    status, _ = await send(created["upload"], data)
    assert status in {200, 201}, status
    async with http.post(
        f"{base(board, task)}/{created['id']}/complete", json={"upload_id": created["upload_id"]}
    ) as done:
        assert done.status == 200, await done.text()
    return created


async def attachment(http: aiohttp.ClientSession, board: str, task: str, ident: str) -> Any:
    async with http.get(f"{base(board, task)}/{ident}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def wait_for_state(
    http: aiohttp.ClientSession,
    board: str,
    task: str,
    ident: str,
    states: set[str],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll the attachment until its state is one of ``states`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * TIMEOUT_SCALE
    while True:
        found = dict(await attachment(http, board, task, ident))
        if found["state"] in states:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"attachment still {found['state']}, not {states}")
        await asyncio.sleep(0.05)
