"""The webhook endpoints over REST on a real server: who may manage them, what is accepted.

Admins and owners of a project manage its webhooks, with a fresh second factor to make a
secret; an editor is refused, a stranger told nothing exists. The secret is shown once.
Everything a client sends is bounded and validated (URL scheme and length, known events,
endpoints per project, addresses the SSRF policy refuses), and hypothesis sends arbitrary
JSON without ever getting a server error.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pyotp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.auth_helpers import auth_server
from tests.conftest import serve

HOOKS = "/v1/projects/{}/webhooks"


async def test_admins_manage_webhooks_and_see_the_secret_once(tmp_path: Path) -> None:
    async with auth_server(tmp_path) as server:
        owner = await server.add_person("olivia", mfa=True)
        eddie = await server.add_person("eddie")
        adam = await server.add_person("adam")  # an admin without a second factor
        mallory = await server.add_person("mallory")
        project, _ = await server.project_with(owner, {"eddie": "editor", "adam": "admin"})
        hooks = HOOKS.format(project)
        body = {"url": "https://hooks.example.com/in", "events": ["task.created", "task.moved"]}

        status, made = await server.call("POST", hooks, owner, body)
        assert status == 201, made
        assert made["secret"].startswith("whsec_")
        assert len(base64.b64decode(made["secret"].removeprefix("whsec_"))) >= 24
        assert made["events"] == ["task.created", "task.moved"] and made["enabled"] is True
        one = f"{hooks}/{made['id']}"
        # Later reads show no secret.
        status, listed = await server.call("GET", hooks, owner)
        assert status == 200 and [h["id"] for h in listed["items"]] == [made["id"]]
        assert "secret" not in listed["items"][0]
        status, read = await server.call("GET", one, owner)
        assert status == 200 and "secret" not in read and made["secret"] not in json.dumps(read)

        # An editor may not; a stranger is told nothing is there; an admin needs a second factor.
        assert (await server.call("GET", hooks, eddie))[0] == 403
        assert (await server.call("POST", hooks, eddie, body))[0] == 403
        assert (await server.call("GET", one, mallory))[0] == 404
        assert (await server.call("POST", hooks, mallory, body))[0] == 404
        status, refused = await server.call("POST", hooks, adam, body)
        assert status == 401 and refused["type"] == "urn:boardcast:problem:mfa-required"
        assert (await server.call("GET", hooks, adam))[0] == 200  # reading needs none

        # Rotating makes a new secret, shown once, the old one honoured for a while.
        status, rotated = await server.call("POST", f"{one}/rotate-secret", owner)
        assert status == 200 and rotated["secret"] != made["secret"]
        assert rotated["previous_secret_valid_until"] is not None
        assert (await server.call("POST", f"{one}/rotate-secret", adam))[0] == 401
        secret = pyotp.random_base32()
        server.service.store.set_totp(adam.user_id, secret)
        code = pyotp.TOTP(secret).now()
        status, _ = await server.call(
            "POST", f"{one}/rotate-secret", adam, **{"Boardcast-OTP": code}
        )
        assert status == 200

        status, changed = await server.call("PATCH", one, adam, {"enabled": False, "events": ["*"]})
        assert status == 200 and changed["enabled"] is False and changed["events"] == ["*"]
        assert changed["disabled_reason"] == "disabled through the API"
        status, changed = await server.call("PATCH", one, owner, {"enabled": True})
        assert status == 200 and changed["enabled"] and changed["disabled_reason"] is None
        status, log = await server.call("GET", f"{one}/deliveries", owner)
        assert status == 200 and log == {"items": [], "next_cursor": None}
        assert (await server.call("DELETE", one, eddie))[0] == 403
        assert (await server.call("DELETE", one, owner))[0] == 204
        assert (await server.call("GET", one, owner))[0] == 404


async def test_what_a_webhook_may_be_is_bounded(tmp_path: Path) -> None:
    async with (
        serve("local", tmp_path, webhook_max_endpoints=2, webhook_max_url_chars=100) as server,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{server.port}"

        async def create(body: Any) -> tuple[int, Any]:
            async with http.post(base + HOOKS.format("p1"), json=body) as response:
                return response.status, await response.json(content_type=None)

        refusals = [
            {"url": "ftp://example.com/x", "events": ["task.created"]},
            {"url": "https://example.com/" + "a" * 100, "events": ["task.created"]},
            {"url": "https://example.com/x", "events": ["task.exploded"]},
            {"url": "https://example.com/x", "events": []},
            {"url": "https://user:pw@example.com/x", "events": ["*"]},
            {"url": "http://127.0.0.1:9/x", "events": ["*"]},
            {"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]},
            {"url": "http://[::ffff:10.0.0.1]/x", "events": ["*"]},
            {"url": "http://0.0.0.0/x", "events": ["*"]},
            {"url": "https://example.com/x", "events": ["*"], "secret": "mine"},
            {"url": "https://exa mple.com/x", "events": ["*"]},
        ]
        for body in refusals:
            status, problem = await create(body)
            assert status == 422, (body, problem)
            assert problem["type"] == "urn:boardcast:problem:validation"
        for _ in range(2):
            assert (await create({"url": "https://example.com/x", "events": ["*"]}))[0] == 201
        status, problem = await create({"url": "https://example.com/y", "events": ["*"]})
        assert status == 409 and problem["type"] == "urn:boardcast:problem:too-many-webhooks"


async def test_the_loopback_network_is_reachable_only_when_allowed(tmp_path: Path) -> None:
    async with (
        serve("local", tmp_path, webhook_allow_networks=("127.0.0.0/8",)) as server,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{server.port}" + HOOKS.format("p1")
        body = {"url": "http://127.0.0.1:9/x", "events": ["*"]}
        async with http.post(url, json=body) as response:
            assert response.status == 201
        body = {"url": "http://10.1.2.3/x", "events": ["*"]}
        async with http.post(url, json=body) as response:
            assert response.status == 422


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "url": st.one_of(
                st.text(max_size=80), st.sampled_from(["https://example.com/h", "http://[::1]/"])
            ),
            "events": st.one_of(_json, st.lists(st.sampled_from(["*", "task.created", "x"]))),
            "description": _json,
            "enabled": _json,
        },
    ),
)


async def test_hostile_json_never_makes_a_server_error(tmp_path: Path) -> None:
    async with serve("local", tmp_path) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.port}" + HOOKS.format("fz")
        async with http.post(base, json={"url": "https://example.com/h", "events": ["*"]}) as r:
            one = f"{base}/{(await r.json())['id']}"
        seen: list[tuple[str, int]] = []

        @settings(
            max_examples=150,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=_bodies, method=st.sampled_from(["POST", "PATCH"]))
        def fuzz(body: Any, method: str) -> None:
            seen.append((method, json.dumps(body)))

        fuzz()
        for method, raw in seen:
            target = base if method == "POST" else one
            async with http.request(
                method, target, data=raw, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status in {200, 201, 400, 409, 422}, (method, raw, response.status)
                if response.status >= 400:
                    problem = await response.json(content_type=None)
                    assert problem["type"].startswith("urn:boardcast:problem:")
        async with http.get(one) as response:
            assert response.status == 200  # the endpoint is still there and readable
