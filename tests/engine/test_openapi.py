"""The OpenAPI description matches the running server (schemathesis), and covers every route.

Schemathesis generates requests from ``/v1/openapi.json`` (valid ones and invalid ones)
and checks each answer: never a server error, a documented status and content type,
a body that matches the documented schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.openapi import from_dict

from gateway.files_route import FilesRoute
from gateway.rest.attachments import AttachmentsApi
from gateway.rest.inputs import RestLimits
from gateway.rest.mail import MailApi
from gateway.rest.notifications import InboxLimits, NotificationApi
from gateway.rest.openapi import openapi_document
from gateway.rest.resources import Api
from gateway.rest.webhooks import WebhookApi, WebhookLimits
from tests.engine.test_rest_fuzz import ThreadedServer
from workers.webhooks_policy import AddressPolicy


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    server = ThreadedServer(tmp_path_factory.mktemp("openapi"))
    try:
        # Something to find: a project, a board with a column and a task.
        status, _, body = server.request(
            "POST", "/v1/projects", json.dumps({"name": "p"}).encode(), "application/json"
        )
        assert status == 201
        project = json.loads(body)["id"]
        server.request(
            "POST",
            f"/v1/projects/{project}/boards",
            json.dumps({"name": "b"}).encode(),
            "application/json",
        )
        server.request(
            "POST",
            "/v1/boards/b1/tasks",
            json.dumps({"title": "t", "column": "c"}).encode(),
            "application/json",
        )
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def api_schema(running: ThreadedServer) -> Any:
    status, _, body = running.request("GET", "/v1/openapi.json")
    assert status == 200
    loaded = from_dict(json.loads(body))
    loaded.config.base_url = f"http://127.0.0.1:{running.port}"
    return loaded


def test_the_server_answers_as_its_openapi_description_says(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # A stream of Server-Sent Events never ends: tests/engine/test_notifications.py reads it.
    operations = [op for op in operations if not op.path.endswith("/notifications/stream")]
    assert len(operations) >= 20
    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # waiting on the read model only slows the run
            excluded = [positive_data_acceptance] if depends_on_state(case) else []
            if case.query and "min_version" in case.query:
                # A version the read model has not reached answers 503 + Retry-After.
                excluded.append(not_a_server_error)
            case.call_and_validate(excluded_checks=excluded)

        check()


def depends_on_state(case: Any) -> bool:
    """Whether a schema-valid request may still be refused for what the server holds.

    A cursor or ETag the server never gave, a position between no two keys, a task id
    that is not there, bytes that are not a Yjs update: the schema cannot say these,
    so for such requests a 4xx is as right as a 2xx. Every other valid request must
    be accepted.
    """
    query = case.query or {}
    headers = case.headers or {}
    body = case.body if isinstance(case.body, dict) else {}
    return bool(
        "cursor" in query
        or "move_tasks_to" in query
        or "min_version" in query
        or "If-Match" in headers
        or (case.method.upper() == "POST" and case.path.endswith("/ydoc"))
        or "position" in json.dumps(body)
        or any(body.get(name) for name in ("update", "move", "delete"))
    )


def test_every_route_is_described() -> None:
    described = {
        (method.upper(), path)
        for path, methods in openapi_document(RestLimits()).get("paths", {}).items()
        for method in methods
    }
    webhooks = WebhookApi(None, None, None, RestLimits(), WebhookLimits(), AddressPolicy())  # type: ignore[arg-type]
    mail = MailApi(None, None, RestLimits(), smtp_configured=False)  # type: ignore[arg-type]
    notifications = NotificationApi(None, None, None, RestLimits(), InboxLimits())  # type: ignore[arg-type]
    served = {
        (route.method, route.path)
        for route in [
            *Api(None, None, RestLimits()).routes(),  # type: ignore[arg-type]
            *webhooks.routes(),
            *mail.routes(),
            *notifications.routes(),
        ]
        if not route.path.startswith(("/v1/openapi", "/v1/docs"))
    }
    files = [
        *AttachmentsApi(None, None, None, RestLimits(), None).routes(),  # type: ignore[arg-type]
        *FilesRoute(None, None, b"").routes(),  # type: ignore[arg-type]
    ]
    # Routes with a pattern ({name:regex}) are described by their plain name.
    served |= {(r.method, re.sub(r"\{(\w+):[^/]*\}", r"{\1}", r.path)) for r in files}
    assert described == served


def test_the_docs_page_loads_the_description(running: ThreadedServer) -> None:
    status, content_type, body = running.request("GET", "/v1/docs")
    assert status == 200 and content_type.startswith("text/html")
    assert b"/v1/openapi.json" in body
