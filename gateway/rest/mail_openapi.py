"""The OpenAPI description of the e-mail routes (``gateway/rest/mail.py``)."""

from __future__ import annotations

from typing import Any

from gateway.rest.mail import known_zones
from persistence.mail_store import MODES, STATUSES
from persistence.notification_store import KINDS

_PROBLEMS = {
    "default": {
        "description": "a problem (RFC 9457); docs/rest.md lists the types",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_HOUR = {"type": "integer", "minimum": 0, "maximum": 23}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(status: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}},
        **_PROBLEMS,
    }


def _operation(
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": responses,
        "parameters": parameters or [],
        "tags": ["e-mail"],
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def mail_schemas() -> dict[str, Any]:
    """The schemas the e-mail routes take and answer with."""
    quiet = {
        "type": ["object", "null"],
        "required": ["start", "end"],
        "additionalProperties": False,
        "properties": {"start": _HOUR, "end": _HOUR},
        "description": "local hours in which no e-mail goes out (the same hour twice: none)",
    }
    fields = {
        "email": {"type": "boolean"},
        "kinds": {
            "type": "array",
            "maxItems": len(KINDS),
            "items": {"type": "string", "enum": list(KINDS)},
        },
        "mode": {"type": "string", "enum": list(MODES)},
        "digest_hour": _HOUR,
        "quiet_hours": quiet,
        "time_zone": {"type": "string", "enum": sorted(known_zones()), "description": "IANA"},
    }
    return {
        "NotificationPreferencesInput": {
            "type": "object",
            "additionalProperties": False,
            "properties": fields,
        },
        "NotificationPreferences": {
            "type": "object",
            "required": [*fields, "updated_at"],
            "properties": {**fields, "updated_at": {"type": "number"}},
        },
        "MailJob": {
            "type": "object",
            "required": ["id", "user", "kind", "status", "notification_ids", "attempts"],
            "properties": {
                "id": {"type": "string", "description": "also the e-mail's Message-ID"},
                "user": {"type": "string"},
                "kind": {"type": "string", "enum": ["immediate", "digest"]},
                "status": {"type": "string", "enum": list(STATUSES)},
                "notification_ids": {"type": "array", "items": {"type": "string"}},
                "created_at": _TIME,
                "updated_at": _TIME,
                "next_attempt_at": _TIME,
                "attempts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": _TIME,
                            "code": {"type": ["integer", "null"]},
                            "error": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        },
    }


def mail_paths() -> dict[str, Any]:
    """The e-mail routes."""
    page = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 512}},
    ]
    job = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "description": "the dead letter's id",
        "schema": {"type": "string", "maxLength": 100},
    }
    dead_page = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("MailJob")},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    stats = {
        "type": "object",
        "required": ["smtp_configured", "jobs", "cursor"],
        "properties": {
            "smtp_configured": {"type": "boolean"},
            "jobs": {
                "type": "object",
                "properties": {status: {"type": "integer"} for status in STATUSES},
            },
            "cursor": {"type": "integer"},
        },
    }
    preferences = _ref("NotificationPreferences")
    return {
        "/v1/me/notification-preferences": {
            "get": _operation(
                "Your e-mail preferences", _ok("200", preferences, "the preferences")
            ),
            "put": _operation(
                "Replace your e-mail preferences (fields left out take their defaults)",
                _ok("200", preferences, "as saved"),
                body=_ref("NotificationPreferencesInput"),
            ),
        },
        "/v1/admin/mail/dead-letters": {
            "get": _operation(
                "E-mail that failed for good, most recent first (administrators)",
                _ok("200", dead_page, "a page of dead letters"),
                page,
            )
        },
        "/v1/admin/mail/dead-letters/{job_id}/retry": {
            "post": _operation(
                "Send a dead letter again, now (administrators)",
                _ok("202", _ref("MailJob"), "pending again"),
                [job],
            )
        },
        "/v1/admin/mail/stats": {
            "get": _operation(
                "E-mail jobs per status and the worker's cursor (administrators)",
                _ok("200", stats, "the counts"),
            )
        },
    }
