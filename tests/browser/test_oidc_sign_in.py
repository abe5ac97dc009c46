"""Signing in with the organisation's identity provider, in a real browser.

A real `boardcast serve` with accounts and an OIDC issuer configured, the local issuer of
tests/oidc_issuer.py (discovery, JWKS, a sign-in form, a token endpoint) on ``localhost``,
which to the browser is another site than the board app on 127.0.0.1, and Chromium
clicking through the whole authorization code flow.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, Request, expect

from tests.browser import test_login
from tests.browser.test_accessibility import assert_accessible
from tests.browser.test_login import AuthServer, Shot, Visitors, _start
from tests.oidc_issuer import LocalIssuer
from tests.services import TIMEOUT_SCALE

PROVIDER = "Local ID"
# Pages of their own for each person, as in the log-in tests.
visitors = test_login.visitors


class IssuerThread:
    """A :class:`LocalIssuer` serving from an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.issuer = LocalIssuer(host="localhost")

    def __enter__(self) -> LocalIssuer:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(self.issuer.start(), self.loop)
        started.result(timeout=10 * TIMEOUT_SCALE)
        return self.issuer

    def __exit__(self, *exc_info: object) -> None:
        stopped = asyncio.run_coroutine_threadsafe(self.issuer.stop(), self.loop)
        stopped.result(timeout=10 * TIMEOUT_SCALE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10 * TIMEOUT_SCALE)
        self.loop.close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with IssuerThread() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser, issuer: LocalIssuer
) -> Iterator[AuthServer]:
    env = {
        "BOARDCAST_OIDC_ISSUER": issuer.url,
        "BOARDCAST_OIDC_AUDIENCE": issuer.audience,
        "BOARDCAST_OIDC_CLIENT_SECRET": issuer.client_secret,
        "BOARDCAST_OIDC_PROVIDER_NAME": PROVIDER,
    }
    for running in _start(tmp_path_factory.mktemp("sso-data"), browser, env):
        # The callback the gateway derives from the address the browser uses.
        issuer.redirect_uris.add(f"{running.base_url}v1/auth/oidc/callback")
        yield running


def test_a_person_signs_in_with_the_identity_provider_and_lands_where_they_were(
    server: AuthServer, issuer: LocalIssuer, visitors: Visitors, screenshot: Shot
) -> None:
    page = visitors.open(f"{server.base_url}#/b/somewhere")
    callbacks: list[str] = []

    def seen(request: Request) -> None:
        if "/v1/auth/oidc/callback" in request.url:
            callbacks.append(request.url)

    page.on("request", seen)
    expect(page.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    sign_in = page.get_by_role("link", name=f"Sign in with {PROVIDER}")
    expect(sign_in).to_be_visible()
    assert_accessible(page, "log-in page with a sign-in through the identity provider")
    screenshot(page, "login-sso")

    sign_in.click()
    expect(page.get_by_role("heading", name="Sign in to Local ID")).to_be_visible()
    assert page.url.startswith(issuer.url + "/authorize?")
    page.get_by_label("Username").fill("nadia")
    page.get_by_role("button", name="Sign in").click()

    # Back in the board app, signed in, on the page the sign-in started from.
    expect(page.locator("#account")).to_contain_text("nadia")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert page.url.endswith("#/b/somewhere"), page.url
    assert issuer.exchanges == [(200, "")]
    # The session is in HttpOnly cookies; nothing of the issuer's tokens is in the page.
    assert "boardcast_access" not in page.evaluate("document.cookie")
    stored = page.evaluate("JSON.stringify(Object.assign({}, localStorage, sessionStorage))")
    assert "eyJ" not in stored, stored

    # A reload keeps the session; the board list is the person's own.
    page.goto(server.base_url)
    expect(page.get_by_role("heading", name="Projects and boards")).to_be_visible()
    expect(page.locator("#account")).to_contain_text("nadia")

    # The same callback URL again (from history, a shared link) logs nobody in.
    assert len(callbacks) == 1
    again = visitors.open(callbacks[0])
    expect(again.get_by_role("heading", name="Sign-in did not work")).to_be_visible()
    expect(again.get_by_text("This sign-in link was already used.")).to_be_visible()
    assert_accessible(again, "sign-in error page")
    screenshot(again, "sign-in-error")
    again.get_by_role("link", name="go back to Boardcast").click()
    expect(again.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()
    assert issuer.exchanges == [(200, "")]


def test_signing_in_again_finds_the_same_account(
    server: AuthServer, issuer: LocalIssuer, visitors: Visitors
) -> None:
    first = visitors.open(server.base_url)
    first.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    first.get_by_label("Username").fill("omar")
    first.get_by_role("button", name="Sign in").click()
    expect(first.get_by_role("heading", name="Projects and boards")).to_be_visible()
    first.get_by_label("Project name").fill("Omar's")
    first.get_by_role("button", name="Create project").click()
    expect(first.get_by_role("region", name="Omar's")).to_be_visible()
    first.get_by_role("button", name="Log out").click()
    expect(first.get_by_role("heading", name="Log in to Boardcast")).to_be_visible()

    first.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    first.get_by_label("Username").fill("omar")
    first.get_by_role("button", name="Sign in").click()
    expect(first.get_by_role("region", name="Omar's")).to_be_visible()
    expect(first.locator("#account .account-name")).to_have_text("omar")
