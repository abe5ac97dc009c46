"""Hostile credentials against a real server: never a crash, a hang or an acceptance.

Hypothesis sends generated Authorization headers, cookies, query tokens, tickets and
login bodies; after each, the server must answer with a named refusal, and at the
end a legitimate user must still be served and the process must not have grown.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.auth_helpers import AuthServer, auth_server, socket_fate


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


header_values = st.one_of(
    st.text(max_size=300),
    st.builds(lambda t: f"Bearer {t}", st.text(max_size=3000)),
    st.builds(lambda t: f"bearer  {t}", st.text(alphabet="abc.-_=", max_size=200)),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# Tokens that look like JWTs: any header and claims, any (or no) signature.
jwt_like = st.builds(
    lambda header, claims, signature: (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{signature}"
    ),
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "jku", "jwk", "x5u", "crit", "b64"]),
        json_values,
        max_size=5,
    ),
    st.dictionaries(
        st.sampled_from(["sub", "iss", "aud", "exp", "nbf", "iat", "jti", "sid", "scope", "amr"]),
        json_values,
        max_size=8,
    ),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", max_size=90),
)

tokens = st.one_of(jwt_like, st.text(max_size=200), st.just("brt_" + "A" * 43))


class ServerThread:
    """The auth server on its own loop and thread, so hypothesis can call it synchronously."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.server: AuthServer | None = None
        self.thread = threading.Thread(target=self._run, args=(tmp_path,), daemon=True)

    def _run(self, tmp_path: Path) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve(tmp_path))

    async def _serve(self, tmp_path: Path) -> None:
        self.stop = asyncio.Event()
        async with auth_server(tmp_path) as server:
            self.server = server
            await server.add_person("admin", admin=True)
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(60), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("auth-fuzz")) as thread:
        yield thread


def _request(base: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(15):
                async with http.request(method, f"{base}{path}", **kwargs) as response:
                    text = await response.text()
                    return response.status, text

    return asyncio.run(go())


@seed(20261202)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(authorization=header_values, cookie=tokens)
def test_hostile_bearer_headers_and_cookies_are_refused(
    running: ServerThread, authorization: str, cookie: str
) -> None:
    server = running.server
    assert server is not None
    headers = {"Authorization": authorization} if authorization.isprintable() else {}
    cookies = {"boardcast_access": cookie} if cookie.isascii() and cookie.isprintable() else {}
    status, body = _request(server.base, "GET", "/v1/me", headers=headers, cookies=cookies)
    assert status == 401, body
    assert "urn:boardcast:problem:unauthorized" in body


@seed(20261202)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=tokens, ticket=st.text(max_size=120))
def test_hostile_socket_tokens_and_tickets_are_refused(
    running: ServerThread, token: str, ticket: str
) -> None:
    server = running.server
    assert server is not None
    from clients.provider import socket_url

    for params in ({"token": token}, {"ticket": "btk_" + ticket}):
        if not all(value for value in params.values()):
            continue
        fate = asyncio.run(socket_fate(socket_url(server.ws, "b1", params)))
        assert fate == 4401, (params, fate)


@seed(20261202)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values, refresh=tokens)
def test_hostile_login_and_refresh_bodies_get_named_problems(
    running: ServerThread, body: Any, refresh: str
) -> None:
    server = running.server
    assert server is not None
    status, text = _request(server.base, "POST", "/v1/auth/login", json=body)
    assert status in {400, 401, 415, 422}, text
    assert "urn:boardcast:problem:" in text
    status, text = _request(
        server.base, "POST", "/v1/auth/refresh", json={"refresh_token": refresh}
    )
    assert status in {401, 422}, text


def test_after_the_fuzzing_a_real_user_is_served_and_memory_is_bounded(
    running: ServerThread,
) -> None:
    server = running.server
    assert server is not None
    process = psutil.Process(os.getpid())
    before = process.memory_info().rss
    for _ in range(300):
        status, _ = _request(
            server.base, "GET", "/v1/me", headers={"Authorization": "Bearer x.y.z"}
        )
        assert status == 401
    grown = process.memory_info().rss - before
    assert grown < 64 * 1024 * 1024, grown
    login = {"username": "admin", "password": "a long enough password"}
    status, text = _request(server.base, "POST", "/v1/auth/login", json=login)
    assert status == 200, text
