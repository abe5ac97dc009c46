"""The REST resources under ``/v1``: projects, boards, columns, tasks, bulk, the Yjs document.

Every write is one server-side transaction on the board's actor (``Cluster.run``),
wherever the board lives: WebSocket clients see it at once, as one update, and the
response comes once it is durable. Every read runs on the actor too, so it sees
what every client sees, including a write this caller just made. Responses carry
the board's version (``Boardcast-Version``: its store sequence number once what
the request saw or made is durable); single resources carry an ``ETag``, and
``If-Match`` makes a change conditional on it (412 if the resource changed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import astuple, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from actors.cluster import Cluster
from actors.direct import DirectConnection, DirectConnectionClosed
from actors.extensions import Extensions
from actors.host import BoardUnavailable
from actors.transactions import Outcome
from auth.roles import Action, Role
from crdt.board import Board
from crdt.errors import BoardcastError, BoardFull, LimitExceeded, TransactionFailed
from crdt.project_doc import project_doc_id
from crdt.projects import DIRECTORY_BOARD, ProjectEntry, now_text
from gateway.auth.guard import Guard
from gateway.project_lists import propagate
from gateway.rest import calendar as calendar_feeds
from gateway.rest import commands, project_commands
from gateway.rest.access import Caller, board_caller, project_caller, user_caller
from gateway.rest.cache import QueryCache
from gateway.rest.calendar import FEEDS_BOARD, calendar, new_token, token_hash
from gateway.rest.commands import Bulk, Refusal, TaskQuery, etag_of
from gateway.rest.explorer import PAGE
from gateway.rest.inputs import (
    DUE,
    RestLimits,
    an_id,
    an_object,
    only_keys,
    read_body,
    read_json,
    required_text,
    task_fields,
    text,
)
from gateway.rest.openapi import openapi_document
from gateway.rest.problems import Problem, problem_for_close_code
from gateway.rest.trello import plan_trello_import
from persistence.read_model import SORTS, TaskFilter, TaskIndex, TaskRow

T = TypeVar("T")

#: The most events one calendar feed holds (the soonest due first).
MAX_FEED_EVENTS = 5_000

VERSION_HEADER = "Boardcast-Version"
IDEMPOTENCY_HEADER = "Idempotency-Key"
YJS_MEDIA_TYPE = "application/octet-stream"


class Api:
    """The handlers, bound to a cluster, the process's extensions and the limits."""

    def __init__(
        self,
        cluster: Cluster,
        extensions: Extensions,
        limits: RestLimits,
        *,
        call_timeout: float = 30.0,
        max_update_bytes: int = 16 * 1024 * 1024,
        index: TaskIndex | None = None,
        cache: QueryCache | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.cluster = cluster
        self.guard = guard if guard is not None else Guard(None, cluster)
        self.index = index
        self.cache = cache
        self.extensions = extensions
        self.limits = limits
        self.call_timeout = call_timeout
        self.max_update_bytes = max_update_bytes

    def routes(self) -> list[web.RouteDef]:
        """Every route of the API."""
        return [
            web.get("/v1/projects", self.list_projects),
            web.post("/v1/projects", self.create_project),
            web.get("/v1/projects/{project_id}", self.get_project),
            web.patch("/v1/projects/{project_id}", self.update_project),
            web.delete("/v1/projects/{project_id}", self.delete_project),
            web.get("/v1/projects/{project_id}/boards", self.list_boards),
            web.post("/v1/projects/{project_id}/boards", self.create_board),
            web.post("/v1/projects/{project_id}/imports/trello", self.import_trello),
            web.get("/v1/projects/{project_id}/members", self.list_members),
            web.put("/v1/projects/{project_id}/members/{user}", self.put_member),
            web.delete("/v1/projects/{project_id}/members/{user}", self.delete_member),
            web.get("/v1/boards/{board_id}", self.get_board),
            web.patch("/v1/boards/{board_id}", self.update_board),
            web.delete("/v1/boards/{board_id}", self.delete_board),
            web.get("/v1/boards/{board_id}/export", self.export_board),
            web.post("/v1/projects/{project_id}/imports/board", self.import_board),
            web.get("/v1/boards/{board_id}/columns", self.list_columns),
            web.post("/v1/boards/{board_id}/columns", self.create_column),
            web.patch("/v1/boards/{board_id}/columns/{column_id}", self.update_column),
            web.delete("/v1/boards/{board_id}/columns/{column_id}", self.delete_column),
            web.get("/v1/boards/{board_id}/tasks", self.list_tasks),
            web.post("/v1/boards/{board_id}/tasks", self.create_task),
            web.post("/v1/boards/{board_id}/tasks/bulk", self.bulk_tasks),
            web.get("/v1/boards/{board_id}/tasks/{task_id}", self.get_task),
            web.patch("/v1/boards/{board_id}/tasks/{task_id}", self.update_task),
            web.delete("/v1/boards/{board_id}/tasks/{task_id}", self.delete_task),
            web.get("/v1/boards/{board_id}/members", self.list_board_members),
            web.put("/v1/boards/{board_id}/members/{user}", self.narrow_board_member),
            web.delete("/v1/boards/{board_id}/members/{user}", self.widen_board_member),
            web.get("/v1/boards/{board_id}/tasks/{task_id}/comments", self.list_comments),
            web.post("/v1/boards/{board_id}/tasks/{task_id}/comments", self.add_comment),
            web.delete(
                "/v1/boards/{board_id}/tasks/{task_id}/comments/{comment_id}", self.delete_comment
            ),
            web.get("/v1/boards/{board_id}/ydoc", self.get_ydoc),
            web.post("/v1/boards/{board_id}/ydoc", self.post_ydoc),
            web.get("/v1/tasks", self.query_tasks),
            web.get("/v1/projects/{project_id}/tasks", self.query_tasks),
            web.post("/v1/projects/{project_id}/feeds", self.create_project_feed),
            web.post("/v1/users/{user}/feeds", self.create_user_feed),
            web.delete("/v1/feeds/{feed_id}", self.revoke_feed),
            web.get("/v1/feeds/{token}.ics", self.get_feed),
            web.get("/v1/openapi.json", self.openapi),
            web.get("/v1/docs", self.explorer),
        ]

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI 3.1 description of this API."""
        return web.json_response(openapi_document(self.limits))

    async def explorer(self, request: web.Request) -> web.Response:
        """A page to read the API and try it."""
        return web.Response(text=PAGE, content_type="text/html")

    # -- plumbing ----------------------------------------------------------------

    async def _run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        caller: Caller | None = None,
        key: str | None = None,
    ) -> Outcome[T]:
        """Run ``function`` on the board's actor; board errors become problems."""
        origin = caller.identity if caller is not None else None
        try:
            return await asyncio.wait_for(
                self.cluster.run(board_id, function, idempotency_key=key, origin=origin),
                self.call_timeout,
            )
        except TransactionFailed as exc:
            raise Problem("validation", str(exc)) from None
        except BoardFull as exc:
            raise Problem("board-full", str(exc)) from None
        except LimitExceeded as exc:
            raise Problem("too-large", str(exc)) from None
        except (BoardUnavailable, TimeoutError, ConnectionError) as exc:
            raise Problem("unavailable", f"board {board_id!r} is unavailable: {exc}") from None
        except BoardcastError as exc:
            raise problem_for_close_code(int(exc.close_code), str(exc)) from None

    @staticmethod
    def _value(outcome: Outcome[T | Refusal]) -> T:
        value = outcome.value
        if isinstance(value, Refusal):
            problem = Problem(value.problem, value.detail)
            if value.etag is not None:
                problem.headers["ETag"] = value.etag
            raise problem
        assert value is not None
        return value

    def _refused(self, outcome: Outcome[Any]) -> None:
        """Raise the problem a board function refused with, if it did."""
        if isinstance(outcome.value, Refusal):
            self._value(outcome)

    @staticmethod
    def _no_content(outcome: Outcome[Any]) -> web.Response:
        return web.Response(status=204, headers={VERSION_HEADER: str(outcome.version)})

    async def _caller(
        self, request: web.Request, board_id: str, action: Action = Action.READ
    ) -> Caller:
        return await board_caller(request, board_id, action, self.guard, self.extensions)

    async def _writer(self, request: web.Request, board_id: str) -> Caller:
        return await self._caller(request, board_id, Action.WRITE)

    async def _project_caller(
        self, request: web.Request, action: Action = Action.READ
    ) -> tuple[Caller, str]:
        project_id = an_id(request.match_info["project_id"], "a project id")
        caller = await project_caller(request, project_id, action, self.guard, self.extensions)
        return caller, project_id

    async def _user_caller(self, request: web.Request) -> Caller:
        return await user_caller(request, self.guard, self.extensions)

    def _board_id(self, request: web.Request) -> str:
        board_id = request.match_info["board_id"]
        if board_id.startswith("boardcast."):
            raise Problem("forbidden", f"{board_id!r} is the server's own document")
        return an_id(board_id, "a board id")

    @staticmethod
    def _key(request: web.Request) -> str | None:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return None
        if not 1 <= len(key) <= 200 or not key.isascii() or not key.isprintable():
            raise Problem("bad-request", "Idempotency-Key must be 1-200 printable ASCII characters")
        return key

    def _caller_key(self, request: web.Request, caller: Caller, scope: str) -> str | None:
        """An Idempotency-Key made the caller's own: the same key from someone else, or
        for another project, names another resource (so keys cannot reach across)."""
        key = self._key(request)
        return f"{scope}/{caller.principal.user_id}/{key}" if key else None

    @staticmethod
    def _if_match(request: web.Request) -> str | None:
        return request.headers.get("If-Match")

    @staticmethod
    def _json(
        value: Any, outcome: Outcome[Any], *, status: int = 200, etag: bool = False
    ) -> web.Response:
        headers = {VERSION_HEADER: str(outcome.version)}
        if etag:
            headers["ETag"] = etag_of(value)
        if not outcome.applied:
            headers["Idempotent-Replayed"] = "true"
        return web.json_response(value, status=status, headers=headers)

    def _page(self, request: web.Request) -> tuple[int, Any]:
        raw_limit = request.query.get("limit", str(self.limits.default_page))
        try:
            limit = int(raw_limit)
        except ValueError:
            raise Problem("bad-request", "limit must be an integer") from None
        if not 1 <= limit <= self.limits.max_page:
            raise Problem("bad-request", f"limit must be 1-{self.limits.max_page}")
        cursor = request.query.get("cursor")
        return limit, _read_cursor(cursor) if cursor else None

    # -- projects ----------------------------------------------------------------
    # A project's document is the truth; after each change, the directory index and
    # the lists of the people concerned are written from it (gateway/project_lists.py).

    def _project_doc(self, project_id: str) -> str:
        return project_doc_id(project_id)

    async def _propagate(self, project_id: str, *, former: tuple[str, ...] = ()) -> None:
        try:
            await asyncio.wait_for(
                propagate(self.cluster, project_id, former=former), self.call_timeout
            )
        except (BoardUnavailable, TimeoutError, ConnectionError, BoardcastError) as exc:
            raise Problem("unavailable", f"project {project_id!r}: {exc}") from None

    async def _announce(self, users: tuple[str, ...], kind: str = "role-changed") -> None:
        """Have every gateway read these people's roles again (the revocation feed)."""
        self.guard.forget(set(users))
        service = self.guard.service
        if service is not None:
            for user in users:
                await self.guard.call(service.store.announce, user, kind)

    async def _existing_project(self, project_id: str) -> None:
        """404 unless the project exists."""
        self._value(await self._run(self._project_doc(project_id), project_commands.get_project))

    async def list_projects(self, request: web.Request) -> web.Response:
        caller = await self._user_caller(request)
        limit, after = self._page(request)
        principal = caller.principal
        outcome: Outcome[Any] = Outcome(0, None)
        if not self.guard.required or principal.admin:
            outcome = await self._run(
                DIRECTORY_BOARD, partial(project_commands.list_projects_of, visible=None)
            )
            items = outcome.value or []
        elif principal.scope:
            project = principal.scope.get("project")
            shown = await self.guard.project_role(principal, project) if project else None
            items = []
            if project and shown is not None and shown is not Role.NONE:
                found = await self._run(self._project_doc(project), project_commands.get_project)
                if not isinstance(found.value, Refusal) and found.value is not None:
                    items = [{**found.value, "role": shown.label}]
        else:
            listed = await self.guard.listed_projects(principal.user_id)
            items = [
                {key: entry[key] for key in ("id", "name", "created_at", "role")}
                for entry in listed
            ]
        return self._json(_paged(items, limit, after), outcome)

    async def create_project(self, request: web.Request) -> web.Response:
        caller = await self._user_caller(request)
        caller.require(Action.CREATE_BOARD)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name"})
        name = required_text(body, "name", self.limits.max_name_chars)
        key = self._caller_key(request, caller, "project")
        project_id = commands.derived_id(key, 0) if key else uuid.uuid4().hex
        owner = caller.principal.user_id if self.guard.required else None
        position = await self._run(DIRECTORY_BOARD, project_commands.next_project_position)
        entry = ProjectEntry(project_id, name, position.value or "a0", now_text())
        outcome = await self._run(
            self._project_doc(project_id),
            partial(project_commands.create_project, entry=entry, owner=owner),
            caller=caller,
            key=key,
        )
        if not outcome.applied:
            outcome = await self._run(self._project_doc(project_id), project_commands.get_project)
        project = self._value(outcome)
        # Also on a retry: a crash may have come between the project and its copies.
        await self._propagate(project_id)
        if owner is not None:
            await self._announce((owner,))
        response = self._json(project, outcome, status=201, etag=True)
        response.headers["Location"] = f"/v1/projects/{project_id}"
        return response

    async def get_project(self, request: web.Request) -> web.Response:
        _caller, project_id = await self._project_caller(request)
        outcome = await self._run(self._project_doc(project_id), project_commands.get_project)
        return self._json(self._value(outcome), outcome, etag=True)

    async def update_project(self, request: web.Request) -> web.Response:
        caller, project_id = await self._project_caller(request, Action.RENAME_PROJECT)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name"})
        name = required_text(body, "name", self.limits.max_name_chars)
        outcome = await self._run(
            self._project_doc(project_id),
            partial(project_commands.rename_project, name=name, if_match=self._if_match(request)),
            caller=caller,
        )
        renamed = self._value(outcome)
        await self._propagate(project_id)
        return self._json(renamed, outcome, etag=True)

    async def delete_project(self, request: web.Request) -> web.Response:
        caller, project_id = await self._project_caller(request, Action.DELETE_PROJECT)
        outcome = await self._run(
            self._project_doc(project_id),
            partial(project_commands.delete_project, if_match=self._if_match(request)),
            caller=caller,
        )
        members: list[str] = self._value(outcome)
        former = tuple(members)
        await self._propagate(project_id, former=former)
        await self._announce(former)
        return self._no_content(outcome)

    # -- boards ------------------------------------------------------------------

    async def list_boards(self, request: web.Request) -> web.Response:
        _caller, project_id = await self._project_caller(request)
        limit, after = self._page(request)
        outcome = await self._run(
            self._project_doc(project_id), project_commands.list_project_boards
        )
        return self._json(_paged(self._value(outcome), limit, after), outcome)

    async def _list_board(
        self, caller: Caller, project_id: str, board_id: str, title: str
    ) -> Outcome[Any]:
        """List a board in its project, then in the index and its members' lists."""
        outcome = await self._run(
            self._project_doc(project_id),
            partial(
                project_commands.add_project_board,
                board_id=board_id,
                title=title,
                created_at=now_text(),
            ),
            caller=caller,
        )
        self._value(outcome)
        await self._propagate(project_id)
        return outcome

    async def create_board(self, request: web.Request) -> web.Response:
        caller, project_id = await self._project_caller(request, Action.CREATE_BOARD)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name"})
        name = required_text(body, "name", self.limits.max_name_chars)
        key = self._caller_key(request, caller, f"board/{project_id}")
        await self._existing_project(project_id)
        board_id = commands.derived_id(key, 0) if key else uuid.uuid4().hex
        # The board first, then its entry: a crash in between leaves a board nobody
        # lists, which the retry (same key, same id) lists.
        await self._run(
            board_id,
            partial(commands.init_board, title=name, project_id=project_id),
            caller=caller,
            key=key,
        )
        outcome = await self._list_board(caller, project_id, board_id, name)
        board = self._value(outcome)
        response = self._json(board, outcome, status=201, etag=True)
        response.headers["Location"] = f"/v1/boards/{board_id}"
        return response

    async def import_trello(self, request: web.Request) -> web.Response:
        """A Trello board export becomes a new board of the project, in one transaction."""
        caller, project_id = await self._project_caller(request, Action.CREATE_BOARD)
        plan = plan_trello_import(await read_json(request, self.limits), self.limits)
        await self._existing_project(project_id)
        key = self._caller_key(request, caller, f"trello/{project_id}")
        seed = key or uuid.uuid4().hex
        board_id = commands.derived_id(seed, 0)
        outcome = await self._run(
            board_id,
            partial(commands.import_plan, plan=plan.plain(), seed=seed, project_id=project_id),
            caller=caller,
            key=seed if key else None,
        )
        listed = await self._list_board(caller, project_id, board_id, plan.name)
        imported = outcome.value or {
            "columns": len(plan.columns),
            "tasks": len(plan.tasks),
            "checklist_items": sum(len(task.checklist) for task in plan.tasks),
            "comments": sum(len(task.comments) for task in plan.tasks),
        }
        body = {"board": self._value(listed), "imported": imported, "skipped": plan.skipped}
        response = self._json(body, outcome, status=201)
        response.headers["Location"] = f"/v1/boards/{board_id}"
        return response

    async def get_board(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        outcome = await self._run(board_id, partial(commands.board_meta, board_id=board_id))
        return self._json(self._value(outcome), outcome, etag=True)

    async def update_board(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name"})
        name = required_text(body, "name", self.limits.max_name_chars)
        outcome = await self._run(
            board_id,
            partial(
                commands.rename_board,
                board_id=board_id,
                name=name,
                if_match=self._if_match(request),
            ),
            caller=caller,
        )
        board = self._value(outcome)
        project_id = await self.guard.board_project(board_id)
        if project_id is not None:
            await self._run(
                self._project_doc(project_id),
                partial(project_commands.rename_project_board, board_id=board_id, title=name),
                caller=caller,
            )
            await self._propagate(project_id)
        return self._json(board, outcome, etag=True)

    async def delete_board(self, request: web.Request) -> web.Response:
        """Unlist the board and empty it, in one transaction each; its history stays.

        What it held can still be read as it was before (``boardcast export --at``)
        for as long as the history retains it.
        """
        board_id = self._board_id(request)
        caller = await self._caller(request, board_id, Action.DELETE_BOARD)
        outcome = await self._run(
            board_id,
            partial(commands.empty_board, board_id=board_id, if_match=self._if_match(request)),
            caller=caller,
        )
        self._refused(outcome)
        project_id = await self.guard.board_project(board_id)
        if project_id is not None:
            await self._run(
                self._project_doc(project_id),
                partial(project_commands.remove_project_board, board_id=board_id),
                caller=caller,
            )
            await self._propagate(project_id)
        self.guard.roles.forget_board(board_id)
        return self._no_content(outcome)

    async def export_board(self, request: web.Request) -> web.Response:
        """The board in the export format (``Board.to_dict``), which import reads back."""
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        outcome = await self._run(board_id, commands.whole_board)
        return self._json(outcome.value, outcome)

    async def import_board(self, request: web.Request) -> web.Response:
        """A board export becomes a new board of the project, exactly as exported."""
        caller, project_id = await self._project_caller(request, Action.CREATE_BOARD)
        data = an_object(await read_json(request, self.limits))
        await self._existing_project(project_id)
        found_meta = data.get("meta")
        meta: dict[str, Any] = found_meta if isinstance(found_meta, dict) else {}
        title = text(meta, "title", self.limits.max_name_chars, required=False) or "Imported"
        key = self._caller_key(request, caller, f"board-import/{project_id}")
        seed = key or uuid.uuid4().hex
        board_id = commands.derived_id(seed, 0)
        outcome = await self._run(
            board_id,
            partial(commands.import_export, data=data, project_id=project_id, title=title),
            caller=caller,
            key=seed if key else None,
        )
        self._refused(outcome)
        listed = await self._list_board(caller, project_id, board_id, title)
        body = {"board": self._value(listed), "imported": outcome.value}
        response = self._json(body, outcome, status=201)
        response.headers["Location"] = f"/v1/boards/{board_id}"
        return response

    # -- columns -----------------------------------------------------------------

    async def list_columns(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        outcome = await self._run(board_id, commands.list_columns)
        return self._json({"items": outcome.value or [], "next_cursor": None}, outcome)

    async def create_column(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name", "position", "id"})
        name = required_text(body, "name", self.limits.max_name_chars)
        position = text(body, "position", 200, required=False)
        column_id = an_id(body.get("id", uuid.uuid4().hex), "a column id")
        outcome = await self._run(
            board_id,
            partial(commands.create_column, column_id=column_id, name=name, position=position),
            caller=caller,
        )
        column = self._value(outcome)
        response = self._json(column, outcome, status=201, etag=True)
        response.headers["Location"] = f"/v1/boards/{board_id}/columns/{column_id}"
        return response

    async def update_column(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        column_id = an_id(request.match_info["column_id"], "a column id")
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"name", "position"})
        changes: dict[str, Any] = {}
        name = text(body, "name", self.limits.max_name_chars, required=False)
        if name is not None:
            changes["name"] = name
        position = text(body, "position", 200, required=False)
        if position is not None:
            changes["position"] = position
        outcome = await self._run(
            board_id,
            partial(
                commands.update_column,
                column_id=column_id,
                changes=changes,
                if_match=self._if_match(request),
            ),
            caller=caller,
        )
        return self._json(self._value(outcome), outcome, etag=True)

    async def delete_column(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        column_id = an_id(request.match_info["column_id"], "a column id")
        move_to = request.query.get("move_tasks_to")
        outcome = await self._run(
            board_id,
            partial(
                commands.delete_column,
                column_id=column_id,
                move_tasks_to=an_id(move_to, "move_tasks_to") if move_to else None,
                if_match=self._if_match(request),
            ),
            caller=caller,
        )
        self._refused(outcome)
        return self._no_content(outcome)

    # -- tasks -------------------------------------------------------------------

    async def list_tasks(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        limit, after = self._page(request)
        if after is not None and not (
            isinstance(after, list) and len(after) == 3 and all(isinstance(a, str) for a in after)
        ):
            raise Problem("bad-request", "the cursor is not one this list gave")
        query = TaskQuery(
            column=request.query.get("column"),
            assignee=request.query.get("assignee"),
            label=request.query.get("label"),
            after=(after[0], after[1], after[2]) if after is not None else None,
            limit=limit,
        )
        outcome = await self._run(board_id, partial(commands.list_tasks, query=query))
        page = outcome.value or {"items": [], "after": None}
        body = {
            "items": page["items"],
            "next_cursor": _write_cursor(page["after"]) if page["after"] else None,
        }
        return self._json(body, outcome)

    async def get_task(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        task_id = an_id(request.match_info["task_id"], "a task id")
        outcome = await self._run(board_id, partial(commands.get_task, task_id=task_id))
        return self._json(self._value(outcome), outcome, etag=True)

    async def create_task(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        body = an_object(await read_json(request, self.limits))
        spec = task_fields(body, self.limits, "the task", creating=True)
        key = self._key(request)
        task_id = commands.derived_id(f"task/{key}", 0) if key else uuid.uuid4().hex
        outcome = await self._run(
            board_id,
            partial(commands.create_task, task_id=task_id, spec=spec),
            caller=caller,
            key=f"task/{key}" if key else None,
        )
        if not outcome.applied:
            outcome = await self._run(board_id, partial(commands.get_task, task_id=task_id))
        task = self._value(outcome)
        response = self._json(task, outcome, status=201, etag=True)
        response.headers["Location"] = f"/v1/boards/{board_id}/tasks/{task_id}"
        return response

    async def update_task(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        task_id = an_id(request.match_info["task_id"], "a task id")
        body = an_object(await read_json(request, self.limits))
        changes = task_fields(body, self.limits, "the task", creating=False)
        changes.pop("id", None)
        outcome = await self._run(
            board_id,
            partial(
                commands.update_task,
                task_id=task_id,
                changes=changes,
                if_match=self._if_match(request),
            ),
            caller=caller,
        )
        return self._json(self._value(outcome), outcome, etag=True)

    async def delete_task(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        task_id = an_id(request.match_info["task_id"], "a task id")
        outcome = await self._run(
            board_id,
            partial(commands.delete_task, task_id=task_id, if_match=self._if_match(request)),
            caller=caller,
        )
        self._refused(outcome)
        return self._no_content(outcome)

    async def bulk_tasks(self, request: web.Request) -> web.Response:
        """Create, update, move and delete tasks in one transaction (one update)."""
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"tasks", "update", "move", "delete"})
        limits = self.limits
        groups: dict[str, list[Any]] = {}
        for name in ("tasks", "update", "move", "delete"):
            value = body.get(name, [])
            if not isinstance(value, list):
                raise Problem("validation", f"{name!r} must be a list")
            groups[name] = value
        count = sum(len(items) for items in groups.values())
        if count > limits.max_bulk_items:
            raise Problem(
                "too-many-items",
                f"{count} items in one request; at most {limits.max_bulk_items}",
                limit=limits.max_bulk_items,
            )
        create = [
            task_fields(an_object(item, f"tasks[{i}]"), limits, f"tasks[{i}]", creating=True)
            for i, item in enumerate(groups["tasks"])
        ]
        update = []
        for i, item in enumerate(groups["update"]):
            entry = an_object(item, f"update[{i}]")
            fields = task_fields(entry, limits, f"update[{i}]", creating=False)
            if "column" in fields or "position" in fields:
                raise Problem("validation", f"update[{i}]: 'move' changes column and position")
            fields["id"] = an_id(entry.get("id"), f"update[{i}].id")
            update.append(fields)
        move = []
        for i, item in enumerate(groups["move"]):
            entry = an_object(item, f"move[{i}]")
            only_keys(entry, {"id", "column", "position"}, f"move[{i}]")
            moved: dict[str, Any] = {
                "id": an_id(entry.get("id"), f"move[{i}].id"),
                "column": text(entry, "column", 200, where=f"move[{i}]"),
            }
            position = text(entry, "position", 200, where=f"move[{i}]", required=False)
            if position is not None:
                moved["position"] = position
            move.append(moved)
        delete = [an_id(item, f"delete[{i}]") for i, item in enumerate(groups["delete"])]
        key = self._key(request)
        request_bulk = Bulk(
            create=create,
            update=update,
            move=move,
            delete=delete,
            seed=f"bulk/{key}" if key else uuid.uuid4().hex,
            title=board_id,
        )
        outcome = await self._run(
            board_id,
            partial(commands.bulk, request=request_bulk),
            caller=caller,
            key=f"bulk/{key}" if key else None,
        )
        if outcome.applied:
            result = self._value(outcome)
        else:
            # A replay: the first call's ids derive from the same key.
            result = {
                "created": [commands.derived_id(request_bulk.seed, i) for i in range(len(create))],
                "updated": len(update),
                "moved": len(move),
                "deleted": len(delete),
            }
        return self._json({**result, "version": outcome.version}, outcome)

    # -- queries over every board (the read model) -----------------------------

    async def query_tasks(self, request: web.Request) -> web.Response:
        """Tasks across boards from the read model, filtered, sorted and paged.

        The read model follows each commit (docs/rest.md, *Queries*); with
        ``board`` and ``min_version`` (a version a write answered) the query waits,
        at most ``wait`` seconds (default 5, at most 30), until the model has it.
        """
        if self.index is None:
            raise Problem("unavailable", "this store keeps no read model")
        # An empty filter is no filter.
        project = request.match_info.get("project_id") or request.query.get("project") or None
        board = request.query.get("board") or None
        if project is not None:
            await project_caller(
                request, an_id(project, "a project id"), Action.READ, self.guard, self.extensions
            )
        if board is not None:
            await self._caller(request, an_id(board, "a board id"))
        if project is None and board is None:
            caller = await self._user_caller(request)
            if await self.guard.visible_projects(caller.principal) is not None:
                # Rows of every project would be filtered one by one; name the project.
                raise Problem("forbidden", "name a project or a board to query")
        limit, after = self._page(request)
        if after is not None and not (
            isinstance(after, list) and len(after) == 3 and all(isinstance(a, str) for a in after)
        ):
            raise Problem("bad-request", "the cursor is not one this list gave")
        query = request.query
        sort = query.get("sort", "due")
        if sort not in SORTS:
            raise Problem("bad-request", f"sort must be one of {', '.join(SORTS)}")
        dates = {}
        for name in ("due_from", "due_to"):
            value = query.get(name)
            if value is not None and not DUE.match(value):
                raise Problem("bad-request", f"{name} must be YYYY-MM-DD")
            dates[name] = value
        text = query.get("q")
        if text is not None and not 1 <= len(text) <= 200:
            raise Problem("bad-request", "q must be 1-200 characters")
        found = TaskFilter(
            project=project,
            board=board,
            column=query.get("column"),
            assignee=query.get("assignee"),
            label=query.get("label"),
            due_from=dates["due_from"],
            due_to=dates["due_to"],
            text=text,
            sort=sort,
            after=(after[0], after[1], after[2]) if after is not None else None,
            limit=limit,
        )
        await self._wait_for_index(request)
        index = self.index

        async def compute() -> bytes:
            rows, next_after = await index.query(found)
            body = {
                "items": [row.to_json() for row in rows],
                "next_cursor": _write_cursor(list(next_after)) if next_after else None,
            }
            return json.dumps(body).encode()

        if self.cache is None:
            return web.Response(body=await compute(), content_type="application/json")
        # Answers do not depend on who asks (every caller who may query sees every
        # row); the key is the query alone, waiting parameters left out.
        key = json.dumps([request.path, astuple(found)])
        body, hit = await self.cache.answer(key, compute)
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Boardcast-Cache": "hit" if hit else "miss"},
        )

    async def _wait_for_index(self, request: web.Request) -> None:
        raw = request.query.get("min_version")
        if raw is None:
            return
        board_id = request.query.get("board")
        if board_id is None:
            raise Problem("bad-request", "min_version needs board: a version is a board's")
        try:
            wanted = int(raw)
            wait = float(request.query.get("wait", "5"))
        except ValueError:
            raise Problem("bad-request", "min_version is an integer, wait a number") from None
        if not 0 <= wait <= 30:
            raise Problem("bad-request", "wait must be 0-30 seconds")
        assert self.index is not None
        deadline = asyncio.get_running_loop().time() + wait
        while await self.index.board_version(board_id) < wanted:
            if asyncio.get_running_loop().time() >= deadline:
                problem = Problem(
                    "unavailable", f"the read model has not reached version {wanted} yet"
                )
                problem.headers["Retry-After"] = "1"
                raise problem
            await asyncio.sleep(0.02)

    # -- members -------------------------------------------------------------------

    async def list_members(self, request: web.Request) -> web.Response:
        _caller, project_id = await self._project_caller(request)
        outcome = await self._run(self._project_doc(project_id), project_commands.list_members)
        return self._json({"items": self._value(outcome), "next_cursor": None}, outcome)

    async def put_member(self, request: web.Request) -> web.Response:
        """Add a member, or change their role: ``{"role": "viewer" | ... | "owner"}``."""
        caller, project_id = await self._project_caller(request, Action.MANAGE_MEMBERS)
        role = await self._requested_role(request)
        setter = partial(project_commands.set_member, role=role)
        outcome = await self._change_membership(
            request, caller, project_id, setter, f"role in {project_id} set to {role}"
        )
        return self._json(self._value(outcome), outcome, etag=True)

    async def delete_member(self, request: web.Request) -> web.Response:
        caller, project_id = await self._project_caller(request, Action.MANAGE_MEMBERS)
        outcome = await self._change_membership(
            request,
            caller,
            project_id,
            project_commands.remove_member,
            f"removed from {project_id}",
        )
        return self._no_content(outcome)

    async def list_board_members(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        outcome = await self._run(
            self._project_doc(await self._board_project(board_id)),
            partial(project_commands.board_members, board_id=board_id),
        )
        return self._json({"items": self._value(outcome), "next_cursor": None}, outcome)

    async def narrow_board_member(self, request: web.Request) -> web.Response:
        """Narrow a member's role on one board: ``{"role": ...}``."""
        board_id = self._board_id(request)
        caller = await self._caller(request, board_id, Action.MANAGE_MEMBERS)
        role = await self._requested_role(request)
        narrower = partial(project_commands.narrow_board_member, board_id=board_id, role=role)
        outcome = await self._change_membership(
            request,
            caller,
            await self._board_project(board_id),
            narrower,
            f"role on board {board_id} narrowed to {role}",
        )
        return self._json(self._value(outcome), outcome, etag=True)

    async def widen_board_member(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._caller(request, board_id, Action.MANAGE_MEMBERS)
        widener = partial(project_commands.narrow_board_member, board_id=board_id, role=None)
        outcome = await self._change_membership(
            request,
            caller,
            await self._board_project(board_id),
            widener,
            f"role on board {board_id} back to the project's",
        )
        return self._no_content(outcome)

    async def _requested_role(self, request: web.Request) -> str:
        """The ``{"role": ...}`` body of a membership change."""
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"role"})
        role = body.get("role")
        if role not in commands.ROLES:
            raise Problem("validation", f"role must be one of {', '.join(commands.ROLES)}")
        return str(role)

    async def _board_project(self, board_id: str) -> str:
        """The project listing a board; 404 for a board no project lists."""
        project_id = await self.guard.board_project(board_id)
        if project_id is None:
            raise Problem("not-found", f"no board {board_id!r} in a project")
        return project_id

    async def _change_membership(
        self,
        request: web.Request,
        caller: Caller,
        project_id: str,
        change: Callable[..., Any],
        what: str,
    ) -> Outcome[Any]:
        """Run a membership change on the project's document for the path's user
        (refusals answered), copy the project into that user's list, then have every
        gateway check the user's roles and open sockets again, and audit it."""
        user = an_id(request.match_info["user"], "a user")
        outcome = await self._run(
            self._project_doc(project_id),
            partial(change, user=user, granter=int(caller.role)),
            caller=caller,
        )
        self._refused(outcome)
        await self._propagate(project_id, former=(user,))
        await self._announce((user,))
        service = self.guard.service
        if service is not None:
            await self.guard.call(
                lambda: service.store.audit("role-changed", user, by=caller.identity, change=what)
            )
        return outcome

    # -- comments ------------------------------------------------------------------

    async def list_comments(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        task_id = an_id(request.match_info["task_id"], "a task id")
        outcome = await self._run(board_id, partial(commands.list_comments, task_id=task_id))
        return self._json({"items": self._value(outcome), "next_cursor": None}, outcome)

    async def add_comment(self, request: web.Request) -> web.Response:
        """A comment on a task, by the caller: ``{"text": ...}``."""
        board_id = self._board_id(request)
        caller = await self._caller(request, board_id, Action.COMMENT)
        task_id = an_id(request.match_info["task_id"], "a task id")
        body = an_object(await read_json(request, self.limits))
        only_keys(body, {"text"})
        text_value = required_text(body, "text", self.limits.max_description_chars)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        outcome = await self._run(
            board_id,
            partial(
                commands.add_comment,
                task_id=task_id,
                comment_id=uuid.uuid4().hex[:16],
                # The account's name, as the board app writes it (ids mean nothing to readers).
                author=caller.principal.name if self.guard.required else caller.identity,
                text=text_value,
                now=now,
            ),
            caller=caller,
        )
        return self._json(self._value(outcome), outcome, status=201)

    async def delete_comment(self, request: web.Request) -> web.Response:
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        task_id = an_id(request.match_info["task_id"], "a task id")
        comment_id = an_id(request.match_info["comment_id"], "a comment id")
        outcome = await self._run(
            board_id,
            partial(commands.delete_comment, task_id=task_id, comment_id=comment_id),
            caller=caller,
        )
        self._refused(outcome)
        return self._no_content(outcome)

    # -- calendar feeds ----------------------------------------------------------

    async def create_project_feed(self, request: web.Request) -> web.Response:
        """A secret iCalendar URL for the project's tasks with due dates."""
        caller, project_id = await self._project_caller(request)
        await self._existing_project(project_id)
        return await self._new_feed(caller, "project", project_id)

    async def create_user_feed(self, request: web.Request) -> web.Response:
        """A secret iCalendar URL for one person's assignments, on every board."""
        user = request.match_info["user"]
        if not 1 <= len(user) <= 200 or not user.isprintable():
            raise Problem("validation", "a user is 1-200 printable characters")
        caller = await self._user_caller(request)
        if (self.guard.required or self.extensions) and caller.identity != user:
            raise Problem("forbidden", "a person's feed is made by that person")
        return await self._new_feed(caller, "user", user)

    async def _new_feed(self, caller: Caller, scope: str, target: str) -> web.Response:
        token = new_token()
        feed_id = uuid.uuid4().hex
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        outcome = await self._run(
            FEEDS_BOARD,
            partial(
                calendar_feeds.add_feed,
                feed_id=feed_id,
                digest=token_hash(token),
                scope=scope,
                target=target,
                now=now,
            ),
            caller=caller,
        )
        url = f"/v1/feeds/{token}.ics"
        body = {"id": feed_id, "scope": scope, "target": target, "url": url, "created_at": now}
        response = self._json(body, outcome, status=201)
        response.headers["Location"] = url
        return response

    async def revoke_feed(self, request: web.Request) -> web.Response:
        """Revoke a feed by its id: its URL answers 404 from now on."""
        caller = await self._user_caller(request)
        feed_id = an_id(request.match_info["feed_id"], "a feed id")
        outcome = await self._run(
            FEEDS_BOARD, partial(calendar_feeds.revoke_feed, feed_id=feed_id), caller=caller
        )
        if not outcome.value:
            raise Problem("not-found", f"no feed {feed_id!r}")
        return web.Response(status=204)

    async def get_feed(self, request: web.Request) -> web.Response:
        """The feed as ``text/calendar``; the token in the URL is the only credential."""
        token = request.match_info["token"]
        if not 20 <= len(token) <= 100:
            raise Problem("not-found", "no such feed")
        outcome = await self._run(
            FEEDS_BOARD, partial(calendar_feeds.find_feed, digest=token_hash(token))
        )
        feed = outcome.value
        if not isinstance(feed, dict):
            raise Problem("not-found", "no such feed (or it was revoked)")
        if self.index is None:
            raise Problem("unavailable", "this store keeps no read model")
        scope, target = feed["scope"], feed["target"]
        rows: list[TaskRow] = []
        query = TaskFilter(
            project=target if scope == "project" else None,
            assignee=target if scope == "user" else None,
            due_from="0000-01-01",
            limit=self.limits.max_page,
        )
        while len(rows) < MAX_FEED_EVENTS:
            page, after = await self.index.query(query)
            rows += page
            if after is None:
                break
            query = replace(query, after=after)
        name = f"Boardcast: {scope} {target}"
        return web.Response(
            text=calendar(name, rows[:MAX_FEED_EVENTS]),
            content_type="text/calendar",
            headers={"Cache-Control": "private, max-age=300"},
        )

    # -- the Yjs document --------------------------------------------------------

    async def get_ydoc(self, request: web.Request) -> web.Response:
        """The board as one Yjs update (``application/octet-stream``), or as JSON."""
        board_id = self._board_id(request)
        await self._caller(request, board_id)
        accept = request.headers.get("Accept", YJS_MEDIA_TYPE)
        wants_json = "application/json" in accept and YJS_MEDIA_TYPE not in accept
        if not wants_json and not any(
            kind in accept for kind in (YJS_MEDIA_TYPE, "*/*", "application/*")
        ):
            raise Problem("not-acceptable", "ask for application/octet-stream or application/json")
        if wants_json:
            outcome = await self._run(board_id, commands.whole_board)
            return self._json(outcome.value, outcome)
        update_outcome = await self._run(board_id, commands.board_update)
        return web.Response(
            body=update_outcome.value or b"",
            content_type=YJS_MEDIA_TYPE,
            headers={VERSION_HEADER: str(update_outcome.version)},
        )

    async def post_ydoc(self, request: web.Request) -> web.Response:
        """Apply one Yjs update, checked exactly as a WebSocket client's would be."""
        board_id = self._board_id(request)
        caller = await self._writer(request, board_id)
        if request.content_type != YJS_MEDIA_TYPE:
            raise Problem("unsupported-media-type", f"send {YJS_MEDIA_TYPE} (one Yjs update)")
        limits = RestLimits(max_body_bytes=min(self.limits.max_body_bytes, self.max_update_bytes))
        update = await read_body(request, limits)
        if not update:
            raise Problem("validation", "the body is empty; send one Yjs update")
        session = DirectConnection(self.cluster, board_id, origin=caller.identity)
        try:
            await session.open(timeout=self.call_timeout)
            session.send_update(update)
            await session.persisted(timeout=self.call_timeout)
        except DirectConnectionClosed as closed:
            raise problem_for_close_code(closed.code, str(closed)) from None
        except (TimeoutError, ConnectionError) as exc:
            raise Problem("unavailable", f"board {board_id!r} is unavailable: {exc}") from None
        finally:
            await session.close()
        return web.json_response({"applied": True}, status=200)


def _paged(items: list[dict[str, Any]], limit: int, after: Any) -> dict[str, Any]:
    """A page of ``items`` (ordered, each with an ``id``) after the cursor's id."""
    if after is not None:
        if not isinstance(after, str):
            raise Problem("bad-request", "the cursor is not one this list gave")
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
        items = items[start:]
    page = items[:limit]
    more = len(items) > limit
    return {"items": page, "next_cursor": _write_cursor(page[-1]["id"]) if more else None}


def _write_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> Any:
    if len(cursor) > 1024:
        raise Problem("bad-request", "the cursor is not one this list gave")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        raise Problem("bad-request", "the cursor is not one this list gave") from None
