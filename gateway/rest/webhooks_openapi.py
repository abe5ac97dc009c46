"""The OpenAPI description of the webhook routes (``gateway/rest/webhooks.py``)."""

from __future__ import annotations

from typing import Any

from persistence.webhook_store import ALL_EVENTS, KNOWN_EVENTS

_ID = r"^[A-Za-z0-9._~-]{1,200}$"
# The URLs described are a plain subset of those accepted (any http or https URL with a
# host name, or an address the policy permits): names of letters and digits, a short port.
_URL = r"^https?://[a-z][a-z0-9]*(\.[a-z][a-z0-9]*)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$"
_PROBLEMS = {
    "default": {
        "description": "a problem (RFC 9457); docs/rest.md lists the types",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _path(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id",
        "schema": {"type": "string", "pattern": _ID},
    }


def _ok(status: str, schema: dict[str, Any] | None, description: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = {"application/json": {"schema": schema}}
    return {status: answer, **_PROBLEMS}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": responses,
        "parameters": parameters,
        "tags": ["webhooks"],
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def webhook_schemas(*, max_url_chars: int = 2000) -> dict[str, Any]:
    """The schemas the webhook routes take and answer with."""
    events = {
        "type": "array",
        "minItems": 1,
        "maxItems": len(KNOWN_EVENTS) + 1,
        "items": {"type": "string", "enum": [*sorted(KNOWN_EVENTS), ALL_EVENTS]},
    }
    url = {"type": "string", "minLength": 1, "maxLength": max_url_chars, "pattern": _URL}
    description = {
        "type": "string",
        "maxLength": 1000,
        "pattern": "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]*$",
    }
    webhook_properties: dict[str, Any] = {
        "id": {"type": "string"},
        "project_id": {"type": "string"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string"}},
        "enabled": {"type": "boolean"},
        "description": {"type": "string"},
        "disabled_reason": {"type": ["string", "null"]},
        "failing_since": _TIME,
        "created_at": _TIME,
        "updated_at": _TIME,
    }
    required = ["id", "project_id", "url", "events", "enabled", "created_at"]
    return {
        "Webhook": {"type": "object", "required": required, "properties": webhook_properties},
        "WebhookWithSecret": {
            "type": "object",
            "required": [*required, "secret"],
            "properties": {
                **webhook_properties,
                "secret": {"type": "string", "pattern": "^whsec_[A-Za-z0-9+/=]{32,}$"},
                "previous_secret_valid_until": _TIME,
            },
        },
        "WebhookCreate": {
            "type": "object",
            "required": ["url", "events"],
            "additionalProperties": False,
            "properties": {"url": url, "events": events, "description": description},
        },
        "WebhookChange": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": url,
                "events": events,
                "description": description,
                "enabled": {"type": "boolean"},
            },
        },
        "WebhookDelivery": {
            "type": "object",
            "required": ["id", "event_id", "event_type", "status", "attempts"],
            "properties": {
                "id": {"type": "string", "description": "the webhook-id header of every attempt"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "delivered", "failed", "paused"]},
                "created_at": _TIME,
                "next_attempt_at": _TIME,
                "attempts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["at", "status", "error"],
                        "properties": {
                            "at": _TIME,
                            "status": {"type": ["integer", "null"]},
                            "error": {"type": ["string", "null"]},
                            "seconds": {"type": "number"},
                        },
                    },
                },
            },
        },
    }


def webhook_paths() -> dict[str, Any]:
    """The webhook routes."""
    project = _path("project_id", "project")
    webhook = _path("webhook_id", "webhook")
    delivery = _path("delivery_id", "delivery")
    page = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 512}},
    ]
    base = "/v1/projects/{project_id}/webhooks"
    one = base + "/{webhook_id}"
    listing = {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": _ref("Webhook")}},
    }
    deliveries = {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": _ref("WebhookDelivery")},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    return {
        base: {
            "get": _operation(
                "The project's webhooks", _ok("200", listing, "the webhooks"), [project]
            ),
            "post": _operation(
                "Register a webhook (a second factor is needed); the secret is shown once",
                _ok("201", _ref("WebhookWithSecret"), "the new webhook and its secret"),
                [project],
                _body(_ref("WebhookCreate")),
            ),
        },
        one: {
            "get": _operation(
                "One webhook (no secret)",
                _ok("200", _ref("Webhook"), "the webhook"),
                [project, webhook],
            ),
            "patch": _operation(
                "Change a webhook's URL, events, description, or enable or disable it",
                _ok("200", _ref("Webhook"), "the webhook"),
                [project, webhook],
                _body(_ref("WebhookChange")),
            ),
            "delete": _operation(
                "Remove a webhook and its delivery log",
                _ok("204", None, "removed"),
                [project, webhook],
            ),
        },
        one + "/rotate-secret": {
            "post": _operation(
                "A new secret, shown once; the old one signs too for the grace period",
                _ok("200", _ref("WebhookWithSecret"), "the webhook and its new secret"),
                [project, webhook],
            )
        },
        one + "/deliveries": {
            "get": _operation(
                "The delivery log, newest first",
                _ok("200", deliveries, "a page of deliveries"),
                [project, webhook, *page],
            )
        },
        one + "/deliveries/{delivery_id}/redeliver": {
            "post": _operation(
                "Send a delivery again now (one attempt)",
                _ok("202", _ref("WebhookDelivery"), "the delivery, due now"),
                [project, webhook, delivery],
            )
        },
    }
