"""Hostile REST input, generated: whatever a client sends, the answer is a named problem or a
success, never a 500, and the server keeps serving everyone.

The server runs in a thread of its own (in-process board hosts, the embedded store);
hypothesis drives it with plain blocking HTTP from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import serve

PROBLEM_PREFIX = "urn:boardcast:problem:"
TASK_KEYS = ["title", "column", "position", "description", "assignees", "labels", "due", "id"]


class ThreadedServer:
    """``tests.conftest.serve`` on an event loop in a background thread."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._context = serve("local", data_dir)
        server = asyncio.run_coroutine_threadsafe(self._context.__aenter__(), self.loop).result(60)
        self.port = server.port

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "", response.read()
        finally:
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            future = asyncio.run_coroutine_threadsafe(
                self._context.__aexit__(None, None, None), self.loop
            )
            future.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    running = ThreadedServer(tmp_path_factory.mktemp("rest-fuzz"))
    try:
        status, _, body = running.request(
            "POST",
            "/v1/boards/fz/tasks",
            json.dumps({"title": "t", "column": "c"}).encode(),
            "application/json",
        )
        assert status == 201, body
        running.task_id = json.loads(body)["id"]  # type: ignore[attr-defined]
        yield running
    finally:
        running.close()


def check_answer(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, f"{status}: {body[:500]!r}"
    if status >= 400:
        assert content_type.startswith("application/problem+json"), content_type
        problem = json.loads(body)
        assert problem["type"].startswith(PROBLEM_PREFIX) and problem["status"] == status


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
task_like = st.dictionaries(st.sampled_from(TASK_KEYS), json_values, max_size=8)
bulk_like = st.dictionaries(
    st.sampled_from(["tasks", "update", "move", "delete", "other"]),
    st.lists(task_like | json_values, max_size=5) | json_values,
    max_size=4,
)
raw_bodies = st.binary(max_size=300)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", None]
)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    body=st.one_of(json_values, task_like, bulk_like),
    path=st.sampled_from(
        [
            "/v1/projects",
            "/v1/boards/fz/tasks",
            "/v1/boards/fz/tasks/bulk",
            "/v1/boards/fz/columns",
            "/v1/projects/nope/boards",
        ]
    ),
)
def test_any_json_body_gets_a_success_or_a_named_problem(
    server: ThreadedServer, body: Any, path: str
) -> None:
    check_answer(*server.request("POST", path, json.dumps(body).encode(), "application/json"))


@FUZZ
@given(body=task_like)
def test_any_task_change_gets_a_success_or_a_named_problem(
    server: ThreadedServer, body: dict[str, Any]
) -> None:
    path = f"/v1/boards/fz/tasks/{server.task_id}"  # type: ignore[attr-defined]
    check_answer(*server.request("PATCH", path, json.dumps(body).encode(), "application/json"))


@FUZZ
@given(
    body=raw_bodies,
    content_type=content_types,
    path=st.sampled_from(["/v1/projects", "/v1/boards/fz/tasks/bulk", "/v1/boards/fz/ydoc"]),
)
def test_any_bytes_get_a_success_or_a_named_problem(
    server: ThreadedServer, body: bytes, content_type: str | None, path: str
) -> None:
    if path.endswith("/ydoc"):
        content_type = "application/octet-stream"
    check_answer(*server.request("POST", path, body, content_type))


@FUZZ
@given(
    segment=st.text(max_size=30),
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "column", "assignee", "label", "move_tasks_to"]),
        st.text(max_size=30),
        max_size=3,
    ),
    method=st.sampled_from(["GET", "DELETE", "PATCH"]),
)
def test_any_path_and_query_get_a_success_or_a_named_problem(
    server: ThreadedServer, segment: str, query: dict[str, str], method: str
) -> None:
    from urllib.parse import quote, urlencode

    path = f"/v1/boards/fz/tasks/{quote(segment, safe='')}?{urlencode(query)}"
    if method == "GET":
        path = f"/v1/boards/fz/tasks?{urlencode(query)}"
    status, content_type, body = server.request(method, path)
    if status == 404 and not content_type.startswith("application/problem+json"):
        pytest.fail(f"a plain 404 for {path}")
    check_answer(status, content_type, body)


def test_the_server_still_serves_after_the_fuzzing(server: ThreadedServer) -> None:
    status, _, body = server.request("GET", "/v1/boards/fz/tasks")
    assert status == 200 and json.loads(body)["items"]
