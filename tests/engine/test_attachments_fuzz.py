"""Hostile attachment requests, generated: a named problem or a success, never a 500.

Any JSON a client sends to start an upload or complete one, any name, and any signed-URL
query get a success or a problem document; a name that is accepted comes back safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.engine.test_rest_fuzz import FUZZ, ThreadedServer, check_answer, json_values


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    running = ThreadedServer(tmp_path_factory.mktemp("attachments-fuzz"))
    try:
        status, _, body = running.request(
            "POST",
            "/v1/boards/fa/tasks",
            json.dumps({"title": "t", "column": "c"}).encode(),
            "application/json",
        )
        assert status == 201, body
        running.task_id = json.loads(body)["id"]  # type: ignore[attr-defined]
        yield running
    finally:
        running.close()


def attachments_of(server: ThreadedServer) -> str:
    return f"/v1/boards/fa/tasks/{server.task_id}/attachments"  # type: ignore[attr-defined]


upload_like = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=300) | json_values,
        "size": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
        "content_type": st.sampled_from(["text/plain", "image/png", "text/html", ""])
        | st.text(max_size=80)
        | json_values,
        "extra": json_values,
    },
)


@FUZZ
@given(body=st.one_of(upload_like, json_values))
def test_any_upload_request_gets_a_success_or_a_named_problem(
    server: ThreadedServer, body: Any
) -> None:
    status, content_type, answer = server.request(
        "POST", attachments_of(server), json.dumps(body).encode(), "application/json"
    )
    check_answer(status, content_type, answer)
    if status == 201:
        name = json.loads(answer)["name"]
        assert "/" not in name and "\\" not in name and 1 <= len(name) <= 200


@FUZZ
@given(name=st.text(min_size=1, max_size=400))
def test_any_name_is_refused_or_stored_safe(server: ThreadedServer, name: str) -> None:
    body = {"name": name, "size": 3, "content_type": "text/plain"}
    status, content_type, answer = server.request(
        "POST", attachments_of(server), json.dumps(body).encode(), "application/json"
    )
    check_answer(status, content_type, answer)
    assert status in {201, 409, 422}, answer  # 409: the task is full of attachments
    if status == 201:
        stored = json.loads(answer)["name"]
        assert not any(ch in stored for ch in "/\\\x00\r\n") and len(stored) <= 200


@FUZZ
@given(body=json_values, attachment=st.text(max_size=40))
def test_any_completion_gets_a_success_or_a_named_problem(
    server: ThreadedServer, body: Any, attachment: str
) -> None:
    path = f"{attachments_of(server)}/{quote(attachment, safe='')}/complete"
    check_answer(*server.request("POST", path, json.dumps(body).encode(), "application/json"))


@FUZZ
@given(
    query=st.dictionaries(st.sampled_from(["expires", "size", "sig"]), st.text(max_size=30)),
    method=st.sampled_from(["GET", "PUT"]),
    body=st.binary(max_size=200),
)
def test_any_signed_url_query_is_refused_with_a_named_problem(
    server: ThreadedServer, query: dict[str, str], method: str, body: bytes
) -> None:
    text = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
    path = f"/v1/files/{'a' * 32}/{'b' * 32}?{text}"
    status, content_type, answer = server.request(method, path, body if method == "PUT" else None)
    check_answer(status, content_type, answer)
    assert status == 403, answer
