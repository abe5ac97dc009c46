"""A Python client for Boardcast's REST API (docs/rest.md), for scripts and importers.

::

    async with RestClient("http://127.0.0.1:8000") as api:
        project = await api.create_project("Launch")
        board = await api.create_board(project["id"], "Sprint 1")
        result = await api.bulk(board["id"], create=[{"title": "a", "column": "To do"}],
                                idempotency_key="import-1")
        async for task in api.tasks(assignee="ann", min_version=(board["id"], result["version"])):
            print(task["title"])

Errors raise :class:`ApiError` with the server's problem document. Iterating
methods follow ``next_cursor`` until the last page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp


class ApiError(Exception):
    """The server answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.type = str(problem.get("type", "about:blank"))
        self.name = self.type.rsplit(":", 1)[-1]
        super().__init__(f"{status} {self.name}: {problem.get('detail', '')}")


class RestClient:
    """One session against a Boardcast gateway's ``/v1`` API.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8000``.
        headers: sent with every request (an ``Authorization`` header, say).
        timeout: seconds for one request, a 10,000-task bulk request included.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self._session = aiohttp.ClientSession(
            base_url.rstrip("/"),
            headers=dict(headers or {}),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """One request; the decoded body (None if empty) and the response headers."""
        async with self._session.request(
            method, path, json=json, params=params, headers=headers
        ) as response:
            body = await response.read()
            decoded = None
            if body and response.content_type.endswith("json"):
                decoded = await response.json(content_type=None)
            if response.status >= 400:
                problem = decoded if isinstance(decoded, dict) else {"detail": body.decode()[:500]}
                raise ApiError(response.status, problem)
            return decoded, response.headers

    async def _pages(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page, _ = await self.request("GET", path, params=query)
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if not cursor:
                return

    # -- projects and boards -----------------------------------------------------

    async def create_project(self, name: str, *, idempotency_key: str | None = None) -> Any:
        """Create a project; returns it (with its ``id``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        project, _ = await self.request(
            "POST", "/v1/projects", json={"name": name}, headers=headers
        )
        return project

    def projects(self) -> AsyncIterator[dict[str, Any]]:
        """Every project."""
        return self._pages("/v1/projects", {"limit": "200"})

    async def create_board(
        self, project_id: str, name: str, *, idempotency_key: str | None = None
    ) -> Any:
        """Create a board in a project; returns it (with its ``id``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        board, _ = await self.request(
            "POST", f"/v1/projects/{project_id}/boards", json={"name": name}, headers=headers
        )
        return board

    def boards(self, project_id: str) -> AsyncIterator[dict[str, Any]]:
        """The project's boards."""
        return self._pages(f"/v1/projects/{project_id}/boards", {"limit": "200"})

    async def board(self, board_id: str) -> Any:
        """A board's name, project, columns and task count."""
        board, _ = await self.request("GET", f"/v1/boards/{board_id}")
        return board

    # -- tasks -------------------------------------------------------------------

    async def create_task(self, board_id: str, **task: Any) -> Any:
        """Create one task (``title`` and ``column`` at least); returns it."""
        created, _ = await self.request("POST", f"/v1/boards/{board_id}/tasks", json=task)
        return created

    async def task(self, board_id: str, task_id: str) -> tuple[Any, str]:
        """A task and its ETag (for :meth:`update_task`'s ``if_match``)."""
        task, headers = await self.request("GET", f"/v1/boards/{board_id}/tasks/{task_id}")
        return task, headers["ETag"]

    async def update_task(
        self, board_id: str, task_id: str, *, if_match: str | None = None, **changes: Any
    ) -> Any:
        """Change a task; with ``if_match``, only if nobody changed it since (else 412)."""
        headers = {"If-Match": if_match} if if_match else None
        task, _ = await self.request(
            "PATCH", f"/v1/boards/{board_id}/tasks/{task_id}", json=changes, headers=headers
        )
        return task

    async def delete_task(self, board_id: str, task_id: str) -> None:
        """Delete a task."""
        await self.request("DELETE", f"/v1/boards/{board_id}/tasks/{task_id}")

    async def bulk(
        self,
        board_id: str,
        *,
        create: Sequence[Mapping[str, Any]] = (),
        update: Sequence[Mapping[str, Any]] = (),
        move: Sequence[Mapping[str, Any]] = (),
        delete: Sequence[str] = (),
        idempotency_key: str | None = None,
    ) -> Any:
        """Create, update, move and delete tasks as one transaction; returns what was done."""
        body: dict[str, Any] = {}
        for name, items in (("tasks", create), ("update", update), ("move", move)):
            if items:
                body[name] = [dict(item) for item in items]
        if delete:
            body["delete"] = list(delete)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        result, _ = await self.request(
            "POST", f"/v1/boards/{board_id}/tasks/bulk", json=body, headers=headers
        )
        return result

    def tasks(
        self,
        *,
        project: str | None = None,
        min_version: tuple[str, int] | None = None,
        **filters: str,
    ) -> AsyncIterator[dict[str, Any]]:
        """Tasks across boards from the read model (filters as docs/rest.md lists them).

        ``min_version=(board_id, version)`` waits until the read model has that write.
        """
        params = {"limit": "200", **filters}
        if min_version is not None:
            params["board"], params["min_version"] = min_version[0], str(min_version[1])
        path = f"/v1/projects/{project}/tasks" if project is not None else "/v1/tasks"
        return self._pages(path, params)
