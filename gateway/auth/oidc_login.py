"""Signing in from the browser through the external issuer (docs/oidc.md).

``GET /v1/auth/oidc/start?return_to=/path`` sends the browser to the issuer's
authorization endpoint; ``GET /v1/auth/oidc/callback`` is where the issuer sends it back.
The gateway is the client: it exchanges the code at the token endpoint itself, checks
the ID token (signature, issuer, audience, nonce) and sets the session cookies a password
login sets. No token of the issuer ever reaches the page. The pending sign-in (state,
nonce, PKCE verifier, return path) is kept in shared state, so the callback may land on
any gateway, and taken once; the browser that started it holds a secret in a cookie.
"""

from __future__ import annotations

import html
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from auth import oidc_flow
from auth.oidc import ExternalIdentity
from auth.oidc_flow import CodeFlowSettings, PendingLogin, PendingLogins, SignInRefused
from auth.service import AuthRefused
from crdt.errors import TokenRefused
from shared.state import SharedState, SharedStateUnavailable

if TYPE_CHECKING:
    from gateway.auth.routes import AuthRoutes

log = logging.getLogger("boardcast.auth")

START_PATH = "/v1/auth/oidc/start"
CALLBACK_PATH = "/v1/auth/oidc/callback"
#: Holds the secret that binds a sign-in to the browser that started it.
SIGN_IN_COOKIE = "boardcast_oidc"
_PENDING_KEY = "oidc-login:"
_USED_KEY = "oidc-used:"
# A state is remembered this many login lifetimes, so a late or repeated callback is told
# apart from one this server never issued.
_REMEMBER_FACTOR = 2.0

#: reason -> (HTTP status, what the page says).
_PAGES: dict[str, tuple[int, str]] = {
    "unknown-state": (400, "This sign-in is not one this server started, or it is long over."),
    "expired-state": (400, "The sign-in took too long."),
    "reused-state": (400, "This sign-in link was already used."),
    "other-browser": (400, "This sign-in was started in another browser or window."),
    "bad-callback": (400, "The answer from the identity provider is not acceptable."),
    "provider-error": (401, "The identity provider did not sign you in."),
    "code-refused": (401, "The identity provider did not confirm the sign-in."),
    "issuer-unavailable": (503, "The identity provider cannot be reached right now."),
    "busy": (503, "Too many sign-ins are in progress right now."),
    "unavailable": (503, "Sign-in is unavailable right now."),
    "disabled": (403, "This account is disabled."),
}


class OidcLogin:
    """The two routes of the browser sign-in, for one issuer."""

    def __init__(self, routes: AuthRoutes, settings: CodeFlowSettings, shared: SharedState) -> None:
        self.routes = routes
        self.settings = settings
        self.shared = shared
        self.pending = PendingLogins(
            limit=settings.max_pending_logins, ttl_seconds=settings.login_ttl_seconds
        )

    @property
    def provider_name(self) -> str:
        """How the sign-in button names the issuer."""
        verifier = self.routes.guard.oidc
        issuer = verifier.settings.issuer if verifier is not None else ""
        return self.settings.provider_name or urlsplit(issuer).hostname or "your organisation"

    def route_defs(self) -> list[web.RouteDef]:
        """``start`` and ``callback``."""
        return [web.get(START_PATH, self.start), web.get(CALLBACK_PATH, self.callback)]

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Remember a new sign-in and send the browser to the issuer."""
        try:
            return await self._start(request)
        except SignInRefused as refused:
            return self._refusal_page(refused)

    async def _start(self, request: web.Request) -> web.StreamResponse:
        return_to = oidc_flow.safe_return_path(request.query.get("return_to"))
        verifier = self.routes.guard.oidc
        assert verifier is not None
        try:
            metadata = await verifier.provider_metadata()
        except TokenRefused as refused:
            raise SignInRefused("issuer-unavailable", refused.detail) from None
        endpoint = metadata.get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise SignInRefused("issuer-unavailable", "the issuer names no authorization endpoint")
        if not self.pending.admit(time.monotonic()):
            raise SignInRefused("busy", f"{self.settings.max_pending_logins} sign-ins open")
        browser = request.cookies.get(SIGN_IN_COOKIE, "")
        if not oidc_flow.BROWSER_PATTERN.fullmatch(browser):
            browser = oidc_flow.new_browser_secret()
        redirect_uri = self.settings.redirect_uri or (
            f"{request.scheme}://{request.host}{CALLBACK_PATH}"
        )
        login = oidc_flow.start_login(
            redirect_uri=redirect_uri,
            return_to=return_to,
            browser_secret=browser,
            now=time.time(),
        )
        remember = self.settings.login_ttl_seconds * _REMEMBER_FACTOR
        try:
            await self.shared.put_token(_PENDING_KEY + login.state, login.to_record(), remember)
        except SharedStateUnavailable as error:
            raise SignInRefused("unavailable", str(error)) from None
        response = _see_other(oidc_flow.authorization_url(endpoint, self.settings, login))
        # Lax, not Strict: the issuer sends the browser back with a cross-site navigation.
        response.set_cookie(
            SIGN_IN_COOKIE,
            browser,
            path="/v1/auth/oidc",
            max_age=int(self.settings.login_ttl_seconds),
            httponly=True,
            samesite="Lax",
            secure=self.routes.secure_cookies,
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Check what the issuer sent back, exchange the code, log the person in."""
        try:
            return await self._callback(request)
        except SignInRefused as refused:
            return self._refusal_page(refused)

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        verifier = self.routes.guard.oidc
        assert verifier is not None
        answer = oidc_flow.read_callback(
            request.query,
            issuer=verifier.settings.issuer,
            max_code_chars=self.settings.max_code_chars,
        )
        login = await self._take(answer.state)
        oidc_flow.check_pending(
            login,
            browser_secret=request.cookies.get(SIGN_IN_COOKIE),
            now=time.time(),
            ttl_seconds=self.settings.login_ttl_seconds,
        )
        if answer.code is None:
            raise SignInRefused("provider-error", f"the issuer answered {answer.error}")
        identity = await self._exchange(login, answer.code)
        try:
            grant = await self.routes.log_in_external(identity)
        except AuthRefused as refused:
            reason = "disabled" if "disabled" in str(refused) else refused.reason
            raise SignInRefused(reason, str(refused)) from None
        response = _see_other(login.return_to)
        self.routes.set_session_cookies(response, grant)
        response.del_cookie(SIGN_IN_COOKIE, path="/v1/auth/oidc")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def _take(self, state: str) -> PendingLogin:
        """The pending sign-in of ``state``, taken once (a second callback finds it used)."""
        remember = self.settings.login_ttl_seconds * _REMEMBER_FACTOR
        try:
            record = await self.shared.pop_token(_PENDING_KEY + state)
            if record is None:
                used = await self.shared.get_token(_USED_KEY + state)
                raise SignInRefused("reused-state" if used is not None else "unknown-state")
            await self.shared.put_token(_USED_KEY + state, {"used": True}, remember)
        except SharedStateUnavailable as error:
            raise SignInRefused("unavailable", str(error)) from None
        return PendingLogin.from_record(record)

    async def _exchange(self, login: PendingLogin, code: str) -> ExternalIdentity:
        verifier = self.routes.guard.oidc
        assert verifier is not None
        try:
            metadata = await verifier.provider_metadata()
            endpoint = metadata.get("token_endpoint")
            if not isinstance(endpoint, str):
                raise SignInRefused("issuer-unavailable", "the issuer names no token endpoint")
            form, headers = oidc_flow.token_request(self.settings, login, code)
            status, body = await verifier.post_form(endpoint, form, headers=headers)
            token = oidc_flow.id_token_of(status, body)
            return await verifier.verify(token, nonce=login.nonce)
        except TokenRefused as refused:
            raise SignInRefused(refused.reason, refused.detail) from None

    def _refusal_page(self, refused: SignInRefused) -> web.Response:
        status, message = _PAGES.get(
            refused.reason, (401, "The identity provider's answer did not check out.")
        )
        log.info("OIDC sign-in refused: %s", refused)
        body = _PAGE.format(
            reason=html.escape(refused.reason),
            message=html.escape(message),
            start=html.escape(START_PATH),
        )
        response = web.Response(status=status, text=body, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = _PAGE_POLICY
        return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'"
_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign-in did not work · Boardcast</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto}}</style>
</head>
<body>
<main>
<h1>Sign-in did not work</h1>
<p id="sign-in-problem" data-reason="{reason}">{message}</p>
<p><a href="{start}">Sign in again</a> or <a href="/">go back to Boardcast</a>.</p>
</main>
</body>
</html>
"""
