"""The OpenAPI description of the notification routes (``gateway/rest/notifications.py``)."""

from __future__ import annotations

from typing import Any

from gateway.rest.notifications import MAX_ID_CHARS, MAX_SEQ, InboxLimits
from persistence.notification_store import KINDS

_PROBLEMS = {
    "default": {
        "description": "a problem (RFC 9457); docs/rest.md lists the types",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(
    summary: str,
    status: str,
    content: dict[str, Any],
    description: str,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {status: {"description": description, "content": content}, **_PROBLEMS},
        "parameters": parameters or [],
        "tags": ["notifications"],
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _json_of(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def notification_schemas(limits: InboxLimits | None = None) -> dict[str, Any]:
    """The schemas the notification routes take and answer with."""
    chosen = limits or InboxLimits()
    ids = {
        "type": "array",
        "maxItems": chosen.read_max_ids,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
    }
    return {
        "Notification": {
            "type": "object",
            "required": ["id", "seq", "kind", "title", "created_at", "read"],
            "properties": {
                "id": {"type": "string"},
                "seq": {"type": "integer", "description": "its place in the store; a cursor"},
                "kind": {"type": "string", "enum": list(KINDS)},
                "title": {"type": "string"},
                "created_at": {"type": "number", "description": "unix seconds"},
                "board_id": {"type": "string"},
                "project": {"type": "string"},
                "task_id": {"type": "string"},
                "actor": {"type": "string", "description": "who caused it"},
                "data": {"type": "object"},
                "read": {"type": "boolean"},
                "read_at": {"type": ["number", "null"]},
            },
        },
        "NotificationPage": {
            "type": "object",
            "required": ["items", "unread_count", "next"],
            "properties": {
                "items": {"type": "array", "items": _ref("Notification")},
                "unread_count": {"type": "integer", "minimum": 0},
                "next": {
                    "type": ["string", "null"],
                    "description": "pass as before= for the next page; null: no more",
                },
            },
        },
        "MarkRead": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["ids"],
                    "additionalProperties": False,
                    "properties": {"ids": ids},
                },
                {
                    "type": "object",
                    "required": ["all"],
                    "additionalProperties": False,
                    "properties": {"all": {"const": True}},
                },
            ]
        },
        "MarkedRead": {
            "type": "object",
            "required": ["marked", "unread_count"],
            "properties": {
                "marked": {"type": "integer", "minimum": 0},
                "unread_count": {"type": "integer", "minimum": 0},
            },
        },
    }


def notification_paths(limits: InboxLimits | None = None) -> dict[str, Any]:
    """The notification routes."""
    chosen = limits or InboxLimits()
    seq = {"type": "string", "pattern": r"^[0-9]{1,15}$", "maxLength": len(str(MAX_SEQ))}
    page = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": chosen.page_max},
        },
        {"name": "before", "in": "query", "schema": seq},
        {"name": "unread", "in": "query", "schema": {"type": "boolean"}},
    ]
    return {
        "/v1/notifications": {
            "get": _operation(
                "Your notifications, newest first, with the unread count",
                "200",
                _json_of("NotificationPage"),
                "a page of your notifications",
                page,
            )
        },
        "/v1/notifications/read": {
            "post": _operation(
                "Mark your notifications read: these ids, or all",
                "200",
                _json_of("MarkedRead"),
                "how many changed, and the unread count now",
                body=_ref("MarkRead"),
            )
        },
        "/v1/notifications/stream": {
            "get": _operation(
                "Your new notifications as Server-Sent Events (event: notification, id: seq)",
                "200",
                {"text/event-stream": {"schema": {"type": "string"}}},
                "an endless stream; Last-Event-ID resumes after that seq",
                [{"name": "Last-Event-ID", "in": "header", "schema": seq}],
            )
        },
    }
