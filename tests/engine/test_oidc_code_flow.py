"""Signing in through the issuer's login page: the code flow with PKCE, over real HTTP.

A real gateway (auth required, an OIDC issuer configured) and the local issuer of
tests/oidc_issuer.py with its authorization and token endpoints; an aiohttp client with
its own cookie jar plays the browser, following each redirect by hand so every hop is
checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.auth_helpers import AuthServer, auth_server
from tests.oidc_issuer import LocalIssuer

CALLBACK = "/v1/auth/oidc/callback"


@dataclass
class Flow:
    server: AuthServer
    issuer: LocalIssuer

    @property
    def base(self) -> str:
        return self.server.base

    def browser(self) -> aiohttp.ClientSession:
        """A browser of its own: cookies kept (127.0.0.1 included), redirects by hand."""
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def to_issuer(self, browser: aiohttp.ClientSession, return_to: str = "/") -> str:
        """Start signing in; the issuer's authorization URL the gateway redirected to."""
        start = f"{self.base}/v1/auth/oidc/start?{urlencode({'return_to': return_to})}"
        async with browser.get(start, allow_redirects=False) as response:
            assert response.status == 303, await response.text()
            location = response.headers["Location"]
        assert location.startswith(self.issuer.url + "/authorize?")
        return location

    async def sign_in_at_issuer(
        self, browser: aiohttp.ClientSession, authorize: str, username: str
    ) -> str:
        """Fill the issuer's form; the callback URL it sends the browser back to."""
        async with browser.get(authorize) as page:
            assert page.status == 200, await page.text()
            assert "Sign in to Local ID" in await page.text()
        form = dict(parse_qsl(urlsplit(authorize).query)) | {"username": username}
        async with browser.post(
            self.issuer.url + "/authorize", data=form, allow_redirects=False
        ) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]

    def callback_url(self, query: dict[str, str]) -> str:
        return f"{self.base}{CALLBACK}?{urlencode(query)}"

    async def callback(self, browser: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
        """Follow the issuer's redirect to the gateway: status, body, Location."""
        async with browser.get(url, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers.get("Location")

    async def me(self, browser: aiohttp.ClientSession) -> tuple[int, Any]:
        async with browser.get(f"{self.base}/v1/me") as response:
            return response.status, await response.json(content_type=None)


@asynccontextmanager
async def code_flow(tmp_path: Path, **overrides: Any) -> AsyncIterator[Flow]:
    async with LocalIssuer() as issuer:
        values: dict[str, Any] = {
            "oidc_issuer": issuer.url,
            "oidc_audience": issuer.audience,
            "oidc_client_secret": issuer.client_secret,
            **overrides,
        }
        async with auth_server(tmp_path, **values) as server:
            issuer.redirect_uris.add(server.base + CALLBACK)
            yield Flow(server, issuer)


def reason_of(body: str) -> str:
    marker = 'data-reason="'
    assert marker in body, body
    return body.split(marker, 1)[1].split('"', 1)[0]


async def test_a_person_signs_in_at_the_issuer_and_comes_back_logged_in(tmp_path: Path) -> None:
    async with code_flow(tmp_path, oidc_provider_name="Local ID") as flow:
        status, config = await flow.server.call("GET", "/v1/auth/config", None)
        assert config["sign_in"] == {"name": "Local ID", "url": "/v1/auth/oidc/start"}
        async with flow.browser() as browser:
            authorize = await flow.to_issuer(browser, "/#/b/plans")
            query = dict(parse_qsl(urlsplit(authorize).query))
            assert query["code_challenge_method"] == "S256"
            assert query["redirect_uri"] == flow.base + CALLBACK
            assert "openid" in query["scope"].split()
            back = await flow.sign_in_at_issuer(browser, authorize, "nadia")
            status, body, location = await flow.callback(browser, back)
            assert status == 303, body
            assert location == "/#/b/plans"
            status, me = await flow.me(browser)
            assert status == 200, me
            assert me["name"] == "nadia"
            first_id = me["id"]
            # The issuer's tokens stayed with the gateway: nothing of them in the answer.
            assert "id_token" not in body
        # Again, in another browser: the same account (found by issuer and subject).
        async with flow.browser() as browser:
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "nadia")
            status, _, location = await flow.callback(browser, back)
            assert (status, location) == (303, "/")
            assert (await flow.me(browser))[1]["id"] == first_id
        assert flow.issuer.exchanges == [(200, ""), (200, "")]


async def test_a_callback_used_twice_or_in_another_browser_logs_nobody_in(tmp_path: Path) -> None:
    async with code_flow(tmp_path) as flow:
        async with flow.browser() as browser, flow.browser() as thief:
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "ola")
            # Another browser with the callback URL (a leaked link, login CSRF) gets nothing,
            # and the code is not even sent to the issuer.
            status, body, _ = await flow.callback(thief, back)
            assert (status, reason_of(body)) == (400, "other-browser")
            assert (await flow.me(thief))[0] == 401
            assert flow.issuer.exchanges == []
            # The state was taken by that attempt: the right browser is now refused too.
            status, body, _ = await flow.callback(browser, back)
            assert (status, reason_of(body)) == (400, "reused-state")

            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "ola")
            assert (await flow.callback(browser, back))[0] == 303
            status, body, location = await flow.callback(browser, back)
            assert (status, reason_of(body), location) == (400, "reused-state", None)
            assert flow.issuer.exchanges == [(200, "")]

            unknown = back.replace("state=", "state=x", 1)
            status, body, _ = await flow.callback(browser, unknown)
            assert (status, reason_of(body)) == (400, "unknown-state")
            never = {"code": "abc", "state": "A" * 43}
            status, body, _ = await flow.callback(
                browser, f"{flow.base}{CALLBACK}?{urlencode(never)}"
            )
            assert (status, reason_of(body)) == (400, "unknown-state")


async def test_return_paths_stay_on_this_site(tmp_path: Path) -> None:
    async with code_flow(tmp_path) as flow:
        async with flow.browser() as browser:
            for target in ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil"]:
                start = f"{flow.base}/v1/auth/oidc/start?{urlencode({'return_to': target})}"
                async with browser.get(start, allow_redirects=False) as response:
                    assert response.status == 400, target
                    assert "Location" not in response.headers
                    assert reason_of(await response.text()) == "bad-callback"
            assert flow.issuer.requests["authorize"] == 0


async def test_an_id_token_for_another_login_or_a_refused_code_logs_nobody_in(
    tmp_path: Path,
) -> None:
    async with code_flow(tmp_path) as flow:
        async with flow.browser() as browser:
            flow.issuer.id_token_claims = {"nonce": "another-login"}
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "pia")
            status, body, _ = await flow.callback(browser, back)
            assert (status, reason_of(body)) == (401, "wrong-nonce")
            assert (await flow.me(browser))[0] == 401
            flow.issuer.id_token_claims = {"aud": "another-app"}
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "pia")
            status, body, _ = await flow.callback(browser, back)
            assert (status, reason_of(body)) == (401, "wrong-audience")
            flow.issuer.id_token_claims = {}
            # The issuer said no (the person cancelled).
            authorize = await flow.to_issuer(browser)
            state = dict(parse_qsl(urlsplit(authorize).query))["state"]
            denied = {"error": "access_denied", "state": state}
            status, body, _ = await flow.callback(
                browser, f"{flow.base}{CALLBACK}?{urlencode(denied)}"
            )
            assert (status, reason_of(body)) == (401, "provider-error")
            # A response naming another issuer (the mix-up attack) is refused before use.
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "pia")
            mixed = back.replace("iss=", "iss=https%3A%2F%2Fevil.example%2F", 1)
            status, body, _ = await flow.callback(browser, mixed)
            assert (status, reason_of(body)) == (400, "bad-callback")
            assert (await flow.me(browser))[0] == 401
        assert flow.server.service.store.count_users() == 0


async def test_a_wrong_client_secret_is_refused_by_the_issuer(tmp_path: Path) -> None:
    async with code_flow(tmp_path, oidc_client_secret="not-the-secret") as flow:
        async with flow.browser() as browser:
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "quin")
            status, body, _ = await flow.callback(browser, back)
            assert (status, reason_of(body)) == (401, "code-refused")
            assert flow.issuer.exchanges == [(401, "invalid_client")]


async def test_sign_ins_in_progress_are_bounded(tmp_path: Path) -> None:
    async with code_flow(tmp_path, oidc_max_pending_logins=2) as flow:
        async with flow.browser() as browser:
            await flow.to_issuer(browser)
            await flow.to_issuer(browser)
            start = f"{flow.base}/v1/auth/oidc/start"
            async with browser.get(start, allow_redirects=False) as response:
                assert response.status == 503
                assert reason_of(await response.text()) == "busy"


async def test_the_issuer_down_is_a_clear_page(tmp_path: Path) -> None:
    async with code_flow(tmp_path) as flow:
        async with flow.browser() as browser:
            back = await flow.sign_in_at_issuer(browser, await flow.to_issuer(browser), "rui")
            flow.issuer.fail_with(500)
            status, body, _ = await flow.callback(browser, back)
            assert (status, reason_of(body)) == (503, "issuer-unavailable")


_QUERY_VALUE = st.text(st.characters(codec="utf-8"), max_size=3000)
_QUERY = st.dictionaries(
    st.sampled_from(["code", "state", "iss", "error", "session_state", "x"]), _QUERY_VALUE
)


def _queries(count: int) -> list[dict[str, str]]:
    """``count`` callback queries drawn by hypothesis: any keys an issuer or an attacker
    may send, any text in them (long, non-ASCII, empty)."""
    drawn: list[dict[str, str]] = []

    @settings(max_examples=count, deadline=None, database=None)
    @given(query=_QUERY)
    def draw(query: dict[str, str]) -> None:
        drawn.append(query)

    draw()
    return drawn


async def test_any_callback_query_is_refused_with_a_page_never_a_crash(tmp_path: Path) -> None:
    async with code_flow(tmp_path) as flow:
        async with flow.browser() as browser:
            await flow.to_issuer(browser)  # a real pending sign-in and its cookie exist
            for query in _queries(80):
                url = flow.callback_url(query)
                status, body, location = await flow.callback(browser, url)
                assert status in {400, 401, 414, 431}, (query, status, body)
                assert location is None
            assert (await flow.me(browser))[0] == 401
            assert flow.issuer.exchanges == []
