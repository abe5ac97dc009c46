"""The OpenAPI 3.1 description of the REST API, served at ``/v1/openapi.json``.

Written beside the handlers (``gateway/rest/resources.py``) and checked against the
running server by ``tests/engine/test_openapi.py`` (schemathesis): every route is
described, every answer matches its schema, errors are problem documents.
"""

from __future__ import annotations

from typing import Any

from auth.roles import ASSIGNABLE
from gateway.rest.attachments_openapi import attachment_paths, attachment_schemas
from gateway.rest.inputs import RestLimits
from gateway.rest.mail_openapi import mail_paths, mail_schemas
from gateway.rest.notifications_openapi import notification_paths, notification_schemas
from gateway.rest.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, problem_type
from gateway.rest.webhooks_openapi import webhook_paths, webhook_schemas
from persistence.files import FileLimits
from persistence.read_model import SORTS

_ID_PATTERN = r"^[A-Za-z0-9._~-]{1,200}$"
_POSITION = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[A-Za-z][0-9A-Za-z]*$",
}
# Text may hold tabs and line breaks, no other control characters; a name is not blank.
_PLAIN = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]*$"
_NOT_BLANK = "[^ \\t\\n\\r]"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _id_parameter(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id",
        "schema": {"type": "string", "pattern": _ID_PATTERN},
    }


_PROBLEMS = {
    "default": {
        "description": "a problem (RFC 9457); docs/rest.md lists the types",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
    }
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "apply only if the resource's ETag is one of these",
    "schema": {"type": "string"},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key applies once",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[ -~]+$"},
}
_PAGE_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 1024}},
]
_VERSION = {
    "Boardcast-Version": {
        "description": "the board's version once what the request saw or made is durable",
        "schema": {"type": "string", "pattern": r"^[0-9]+$"},
    }
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(status: str, schema: dict[str, Any] | None, description: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return {status: answer, **_PROBLEMS}


def _page_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _name(limits: RestLimits) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.max_name_chars,
        "allOf": [{"pattern": _PLAIN}, {"pattern": _NOT_BLANK}],
    }


def _name_body(limits: RestLimits) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": _name(limits)},
    }


def _schemas(limits: RestLimits) -> dict[str, Any]:
    strings = {
        "type": "array",
        "maxItems": limits.max_list_items,
        "items": {"type": "string", "minLength": 1, "maxLength": 200},
    }
    task_fields: dict[str, Any] = {
        "title": _name(limits),
        "column": {**_name(limits), "maxLength": 200},
        "position": _POSITION,
        "description": {
            "type": "string",
            "maxLength": limits.max_description_chars,
            "pattern": _PLAIN,
        },
        "assignees": strings,
        "labels": strings,
        "due": {"type": ["string", "null"], "format": "date"},
    }
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "enum": [problem_type(name) for name in PROBLEM_TYPES]},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
            },
        },
        "Project": {
            "type": "object",
            "required": ["id", "name", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "BoardEntry": {
            "type": "object",
            "required": ["id", "name", "project_id", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "project_id": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "Board": {
            "type": "object",
            "required": ["id", "name", "project_id", "columns", "task_count"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "project_id": {"type": ["string", "null"]},
                "columns": {"type": "array", "items": _ref("Column")},
                "task_count": {"type": "integer", "minimum": 0},
            },
        },
        "Column": {
            "type": "object",
            "required": ["id", "name", "position"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "position": {"type": "string"},
            },
        },
        "ColumnCreate": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": task_fields["title"],
                "position": _POSITION,
                "id": {"type": "string", "pattern": _ID_PATTERN},
            },
        },
        "ColumnChange": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"name": task_fields["title"], "position": _POSITION},
        },
        "Task": {
            "type": "object",
            "required": ["id", "title", "column", "position", "created_at", "updated_at"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "column": {"type": "string"},
                "position": {"type": "string"},
                "description": {"type": "string"},
                "assignees": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "array", "items": {"type": "string"}},
                "due": {"type": ["string", "null"]},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
            },
        },
        "TaskCreate": {
            "type": "object",
            "required": ["title", "column"],
            "additionalProperties": False,
            "properties": task_fields,
        },
        "TaskChange": {
            "type": "object",
            "additionalProperties": False,
            "properties": task_fields,
        },
        "Bulk": {
            "type": "object",
            "additionalProperties": False,
            "description": f"at most {limits.max_bulk_items} items over all four lists",
            "properties": {
                "tasks": {"type": "array", "items": _ref("TaskCreate")},
                "update": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id"],
                        "additionalProperties": False,
                        "properties": {
                            "id": {"type": "string", "pattern": _ID_PATTERN},
                            **{
                                key: value
                                for key, value in task_fields.items()
                                if key not in ("column", "position")
                            },
                        },
                    },
                },
                "move": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "column"],
                        "additionalProperties": False,
                        "properties": {
                            "id": {"type": "string", "pattern": _ID_PATTERN},
                            "column": task_fields["column"],
                            "position": _POSITION,
                        },
                    },
                },
                "delete": {"type": "array", "items": {"type": "string", "pattern": _ID_PATTERN}},
            },
        },
        "IndexedTask": {
            "type": "object",
            "required": ["board_id", "task_id", "project", "title", "column", "version"],
            "properties": {
                "board_id": {"type": "string"},
                "task_id": {"type": "string"},
                "project": {"type": "string"},
                "title": {"type": "string"},
                "column": {"type": "string"},
                "position": {"type": "string"},
                "description": {"type": "string"},
                "assignees": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "array", "items": {"type": "string"}},
                "due": {"type": ["string", "null"]},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
                "version": {"type": "integer"},
            },
        },
        "Member": {
            "type": "object",
            "required": ["id", "user", "role"],
            "properties": {
                "id": {"type": "string"},
                "user": {"type": "string"},
                "role": {"type": "string", "enum": list(ASSIGNABLE)},
            },
        },
        "Comment": {
            "type": "object",
            "required": ["id", "task_id", "author", "text", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "task_id": {"type": "string"},
                "author": {"type": "string"},
                "text": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "Feed": {
            "type": "object",
            "required": ["id", "scope", "target", "url", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "scope": {"type": "string", "enum": ["project", "user"]},
                "target": {"type": "string"},
                "url": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "BulkResult": {
            "type": "object",
            "required": ["created", "updated", "moved", "deleted", "version"],
            "properties": {
                "created": {"type": "array", "items": {"type": "string"}},
                "updated": {"type": "integer"},
                "moved": {"type": "integer"},
                "deleted": {"type": "integer"},
                "version": {"type": "integer"},
            },
        },
    }


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    return operation


def openapi_document(limits: RestLimits) -> dict[str, Any]:
    """The API's OpenAPI 3.1 document."""
    project = _id_parameter("project_id", "project")
    board = _id_parameter("board_id", "board")
    column = _id_parameter("column_id", "column")
    task = _id_parameter("task_id", "task")
    no_content = {"204": {"description": "done", "headers": _VERSION}, **_PROBLEMS}
    role_body = _json_body(
        {
            "type": "object",
            "required": ["role"],
            "additionalProperties": False,
            "properties": {"role": {"type": "string", "enum": list(ASSIGNABLE)}},
        }
    )
    query_parameters: list[dict[str, Any]] = [
        *_PAGE_PARAMETERS,
        {"name": "board", "in": "query", "schema": {"type": "string", "pattern": _ID_PATTERN}},
        *(
            {"name": name, "in": "query", "schema": {"type": "string", "maxLength": 200}}
            for name in ("column", "assignee", "label")
        ),
        {"name": "due_from", "in": "query", "schema": {"type": "string", "format": "date"}},
        {"name": "due_to", "in": "query", "schema": {"type": "string", "format": "date"}},
        {
            "name": "q",
            "in": "query",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        {"name": "sort", "in": "query", "schema": {"type": "string", "enum": list(SORTS)}},
        {"name": "min_version", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30}},
    ]
    query_answer = _answer("200", _page_of("IndexedTask"), "a page of tasks, from the read model")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Boardcast REST API",
            "version": "1",
            "description": "Projects, boards, columns and tasks; bulk writes as one transaction;"
            " the Yjs document over HTTP. See docs/rest.md.",
        },
        "paths": {
            **webhook_paths(),
            **mail_paths(),
            **notification_paths(),
            "/v1/tasks": {
                "get": _operation(
                    "Tasks across every board, from the read model",
                    query_answer,
                    parameters=[
                        {
                            "name": "project",
                            "in": "query",
                            "schema": {"type": "string", "pattern": _ID_PATTERN},
                        },
                        *query_parameters,
                    ],
                )
            },
            "/v1/projects/{project_id}/tasks": {
                "get": _operation(
                    "The project's tasks, from the read model",
                    query_answer,
                    parameters=[project, *query_parameters],
                )
            },
            "/v1/projects": {
                "get": _operation(
                    "List projects",
                    _answer("200", _page_of("Project"), "a page of projects"),
                    parameters=_PAGE_PARAMETERS,
                ),
                "post": _operation(
                    "Create a project",
                    _answer("201", _ref("Project"), "the new project"),
                    parameters=[_IDEMPOTENCY_KEY],
                    body=_json_body(_name_body(limits)),
                ),
            },
            "/v1/projects/{project_id}": {
                "get": _operation(
                    "One project",
                    _answer("200", _ref("Project"), "the project"),
                    parameters=[project],
                ),
                "patch": _operation(
                    "Rename a project",
                    _answer("200", _ref("Project"), "the renamed project"),
                    parameters=[project, _IF_MATCH],
                    body=_json_body(_name_body(limits)),
                ),
                "delete": _operation(
                    "Delete a project without boards", no_content, parameters=[project, _IF_MATCH]
                ),
            },
            "/v1/projects/{project_id}/boards": {
                "get": _operation(
                    "The project's boards",
                    _answer("200", _page_of("BoardEntry"), "a page of boards"),
                    parameters=[project, *_PAGE_PARAMETERS],
                ),
                "post": _operation(
                    "Create a board in the project",
                    _answer("201", _ref("BoardEntry"), "the new board"),
                    parameters=[project, _IDEMPOTENCY_KEY],
                    body=_json_body(_name_body(limits)),
                ),
            },
            "/v1/projects/{project_id}/imports/trello": {
                "post": _operation(
                    "Import a Trello board export as a new board of the project",
                    _answer(
                        "201",
                        {
                            "type": "object",
                            "required": ["board", "imported", "skipped"],
                            "properties": {
                                "board": _ref("BoardEntry"),
                                "imported": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "skipped": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                            },
                        },
                        "the new board, what was imported and what was not",
                    ),
                    parameters=[project, _IDEMPOTENCY_KEY],
                    body=_json_body(
                        {
                            "type": "object",
                            "required": ["lists"],
                            "description": "the JSON of Trello's Export as JSON",
                            "properties": {
                                "name": {"type": "string"},
                                "lists": {"type": "array", "items": {"type": "object"}},
                                "cards": {"type": "array", "items": {"type": "object"}},
                            },
                        }
                    ),
                )
            },
            "/v1/projects/{project_id}/feeds": {
                "post": _operation(
                    "A secret calendar URL for the project's due dates",
                    _answer("201", _ref("Feed"), "the feed and its URL"),
                    parameters=[project],
                )
            },
            "/v1/users/{user}/feeds": {
                "post": _operation(
                    "A secret calendar URL for one person's assignments",
                    _answer("201", _ref("Feed"), "the feed and its URL"),
                    parameters=[
                        {
                            "name": "user",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": _ID_PATTERN},
                        }
                    ],
                )
            },
            "/v1/feeds/{feed_id}": {
                "delete": _operation(
                    "Revoke a calendar feed",
                    {"204": {"description": "revoked"}, **_PROBLEMS},
                    parameters=[_id_parameter("feed_id", "feed")],
                )
            },
            "/v1/feeds/{token}.ics": {
                "get": _operation(
                    "A calendar feed (iCalendar, RFC 5545); the URL is the credential",
                    {
                        "200": {
                            "description": "the calendar",
                            "content": {"text/calendar": {"schema": {"type": "string"}}},
                        },
                        **_PROBLEMS,
                    },
                    parameters=[
                        {
                            "name": "token",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{20,100}$"},
                        }
                    ],
                )
            },
            "/v1/projects/{project_id}/members": {
                "get": _operation(
                    "The project's members and their roles",
                    _answer("200", _page_of("Member"), "the members"),
                    parameters=[project],
                )
            },
            "/v1/projects/{project_id}/members/{user}": {
                "put": _operation(
                    "Add a member or change their role",
                    _answer("200", _ref("Member"), "the member"),
                    parameters=[project, _id_parameter("user", "user")],
                    body=role_body,
                ),
                "delete": _operation(
                    "Take a member out of the project",
                    no_content,
                    parameters=[project, _id_parameter("user", "user")],
                ),
            },
            "/v1/boards/{board_id}/members": {
                "get": _operation(
                    "Roles on this board: the project's, narrowed by the board's own",
                    _answer("200", _page_of("Member"), "the members"),
                    parameters=[board],
                )
            },
            "/v1/boards/{board_id}/members/{user}": {
                "put": _operation(
                    "Narrow a member's role on this board (never above their project role)",
                    _answer("200", _ref("Member"), "the member, with their role on the board"),
                    parameters=[board, _id_parameter("user", "user")],
                    body=role_body,
                ),
                "delete": _operation(
                    "Give a member their project role on this board again",
                    no_content,
                    parameters=[board, _id_parameter("user", "user")],
                ),
            },
            "/v1/boards/{board_id}/tasks/{task_id}/comments": {
                "get": _operation(
                    "A task's comments, oldest first",
                    _answer("200", _page_of("Comment"), "the comments"),
                    parameters=[board, task],
                ),
                "post": _operation(
                    "Comment on a task (the caller is the author)",
                    _answer("201", _ref("Comment"), "the comment"),
                    parameters=[board, task],
                    body=_json_body(
                        {
                            "type": "object",
                            "required": ["text"],
                            "additionalProperties": False,
                            "properties": {"text": _name(limits)},
                        }
                    ),
                ),
            },
            "/v1/boards/{board_id}/tasks/{task_id}/comments/{comment_id}": {
                "delete": _operation(
                    "Delete a comment",
                    no_content,
                    parameters=[board, task, _id_parameter("comment_id", "comment")],
                )
            },
            "/v1/boards/{board_id}": {
                "get": _operation(
                    "A board: name, project, columns, task count",
                    _answer("200", _ref("Board"), "the board"),
                    parameters=[board],
                ),
                "delete": _operation(
                    "Unlist a board and empty it (its history stays)",
                    no_content,
                    parameters=[board, _IF_MATCH],
                ),
                "patch": _operation(
                    "Rename a board",
                    _answer("200", _ref("Board"), "the renamed board"),
                    parameters=[board, _IF_MATCH],
                    body=_json_body(_name_body(limits)),
                ),
            },
            "/v1/boards/{board_id}/export": {
                "get": _operation(
                    "The board in the export format, which /imports/board reads back",
                    _answer("200", {"type": "object"}, "the board"),
                    parameters=[board],
                )
            },
            "/v1/projects/{project_id}/imports/board": {
                "post": _operation(
                    "A board export becomes a new board of the project",
                    _answer(
                        "201",
                        {
                            "type": "object",
                            "required": ["board", "imported"],
                            "properties": {"board": _ref("BoardEntry"), "imported": {}},
                        },
                        "the new board",
                    ),
                    parameters=[project, _IDEMPOTENCY_KEY],
                    body=_json_body({"type": "object"}),
                )
            },
            "/v1/boards/{board_id}/columns": {
                "get": _operation(
                    "The board's columns, in order",
                    _answer("200", _page_of("Column"), "the columns"),
                    parameters=[board],
                ),
                "post": _operation(
                    "Add a column",
                    _answer("201", _ref("Column"), "the new column"),
                    parameters=[board],
                    body=_json_body(_ref("ColumnCreate")),
                ),
            },
            "/v1/boards/{board_id}/columns/{column_id}": {
                "patch": _operation(
                    "Rename or move a column",
                    _answer("200", _ref("Column"), "the column"),
                    parameters=[board, column, _IF_MATCH],
                    body=_json_body(_ref("ColumnChange")),
                ),
                "delete": _operation(
                    "Delete a column and its tasks, or move them",
                    no_content,
                    parameters=[
                        board,
                        column,
                        _IF_MATCH,
                        {
                            "name": "move_tasks_to",
                            "in": "query",
                            "schema": {"type": "string", "pattern": _ID_PATTERN},
                        },
                    ],
                ),
            },
            "/v1/boards/{board_id}/tasks": {
                "get": _operation(
                    "Tasks in (column, position) order",
                    _answer("200", _page_of("Task"), "a page of tasks"),
                    parameters=[
                        board,
                        *_PAGE_PARAMETERS,
                        *(
                            {"name": name, "in": "query", "schema": {"type": "string"}}
                            for name in ("column", "assignee", "label")
                        ),
                    ],
                ),
                "post": _operation(
                    "Create a task",
                    _answer("201", _ref("Task"), "the new task"),
                    parameters=[board, _IDEMPOTENCY_KEY],
                    body=_json_body(_ref("TaskCreate")),
                ),
            },
            "/v1/boards/{board_id}/tasks/bulk": {
                "post": _operation(
                    "Create, update, move and delete tasks as one transaction",
                    _answer("200", _ref("BulkResult"), "what was done"),
                    parameters=[board, _IDEMPOTENCY_KEY],
                    body=_json_body(_ref("Bulk")),
                ),
            },
            "/v1/boards/{board_id}/tasks/{task_id}": {
                "get": _operation(
                    "One task", _answer("200", _ref("Task"), "the task"), parameters=[board, task]
                ),
                "patch": _operation(
                    "Change a task (column or position moves it)",
                    _answer("200", _ref("Task"), "the task"),
                    parameters=[board, task, _IF_MATCH],
                    body=_json_body(_ref("TaskChange")),
                ),
                "delete": _operation(
                    "Delete a task", no_content, parameters=[board, task, _IF_MATCH]
                ),
            },
            "/v1/boards/{board_id}/ydoc": {
                "get": _operation(
                    "The board as one Yjs update, or as JSON",
                    {
                        "200": {
                            "description": "the document",
                            "content": {
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}
                                },
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        **_PROBLEMS,
                    },
                    parameters=[board],
                ),
                "post": _operation(
                    "Apply one Yjs update",
                    _answer(
                        "200",
                        {
                            "type": "object",
                            "required": ["applied"],
                            "properties": {"applied": {"type": "boolean"}},
                        },
                        "applied and durable",
                    ),
                    parameters=[board],
                    body={
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                ),
            },
            **attachment_paths(FileLimits()),
        },
        "components": {
            "schemas": {
                **_schemas(limits),
                **attachment_schemas(FileLimits()),
                **webhook_schemas(),
                **mail_schemas(),
                **notification_schemas(),
            }
        },
    }
