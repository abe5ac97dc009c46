"""Hostile input to project documents, lists of projects and membership: named refusals only.

A real server with auth on. Hypothesis makes up document ids under the server's own
prefixes (a stranger's socket must be refused, never opened), project ids, user ids
and bodies for the membership endpoints (a stranger gets 4xx, never a change or a
5xx; the owner's malformed bodies get named problems). At the end the project holds
exactly the members it had, and its owner is still served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from clients.provider import socket_url
from crdt.project_doc import PROJECT_PREFIX
from crdt.project_list import LIST_PREFIX
from tests.auth_helpers import AuthServer, Person, socket_fate
from tests.engine.test_auth_fuzz import ServerThread, _request, json_values


class ProjectServer(ServerThread):
    """The server with a project (its owner, one viewer) and a stranger."""

    owner: Person
    stranger: Person
    project: str

    async def _serve(self, tmp_path: Path) -> None:
        from tests.auth_helpers import auth_server

        self.stop = asyncio.Event()
        async with auth_server(tmp_path) as server:
            self.server = server
            self.owner = await server.add_person("olivia", mfa=True)
            viewer = await server.add_person("vera")
            self.stranger = await server.add_person("mallory")
            self.project, _board = await server.project_with(self.owner, {"vera": "viewer"})
            assert viewer.user_id
            self.ready.set()
            await self.stop.wait()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProjectServer]:
    with ProjectServer(tmp_path_factory.mktemp("project-fuzz")) as thread:
        yield thread


def _server(running: ProjectServer) -> AuthServer:
    assert running.server is not None
    return running.server


SUFFIXES = st.one_of(
    st.text(max_size=220),
    st.text(alphabet="abcdef0123456789", min_size=1, max_size=40),
    st.sampled_from(["", ".", "..", "%2F", "/x", " ", "\x00", "boardcast.directory"]),
)


@seed(20261202)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.sampled_from([PROJECT_PREFIX, LIST_PREFIX]), suffix=SUFFIXES)
def test_a_stranger_opens_no_project_document_and_no_list(
    running: ProjectServer, prefix: str, suffix: str
) -> None:
    server = _server(running)
    doc_id = prefix + suffix
    if doc_id in {LIST_PREFIX + running.stranger.user_id}:
        return  # their own list: theirs to read
    url = socket_url(server.ws, doc_id, {"token": running.stranger.token})
    fate = asyncio.run(socket_fate(url))
    assert fate in {4403, 400, 403, 404}, (doc_id, fate)


@seed(20261202)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    project=st.one_of(st.just("<real>"), st.text(min_size=1, max_size=220)),
    user=st.text(min_size=1, max_size=220),
    body=json_values,
    method=st.sampled_from(["PUT", "DELETE", "GET"]),
)
def test_membership_requests_from_a_stranger_are_refused(
    running: ProjectServer, project: str, user: str, body: Any, method: str
) -> None:
    server = _server(running)
    project_id = running.project if project == "<real>" else project
    path = f"/v1/projects/{quote(project_id, safe='')}/members/{quote(user, safe='')}"
    if method == "GET":
        path = f"/v1/projects/{quote(project_id, safe='')}/members"
    status, text = _request(
        server.base, method, path, headers=running.stranger.auth, data=json.dumps(body)
    )
    assert 400 <= status < 500, (status, text)


@seed(20261202)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=st.text(min_size=1, max_size=220), body=json_values)
def test_the_owners_malformed_membership_bodies_get_named_problems(
    running: ProjectServer, user: str, body: Any
) -> None:
    server = _server(running)
    if isinstance(body, dict) and body.get("role") in {"viewer", "commenter", "editor", "admin"}:
        body = {**body, "role": 7}  # a valid role would add the member: not what this tests
    path = f"/v1/projects/{running.project}/members/{quote(user, safe='')}"
    status, text = _request(
        server.base,
        "PUT",
        path,
        headers={**running.owner.auth, "Content-Type": "application/json"},
        data=json.dumps(body),
    )
    assert status in {400, 404, 409, 413, 415, 422}, (status, text)
    assert "urn:boardcast:problem:" in text


def test_after_the_fuzzing_the_project_is_as_it_was(running: ProjectServer) -> None:
    server = _server(running)
    status, text = _request(
        server.base,
        "GET",
        f"/v1/projects/{running.project}/members",
        headers=running.owner.auth,
    )
    assert status == 200, text
    members = {item["user"]: item["role"] for item in json.loads(text)["items"]}
    assert members == {running.owner.user_id: "owner", server.people["vera"].user_id: "viewer"}
