"""The auth endpoints under ``/v1/auth`` and ``/v1/me`` (docs/security.md).

Logins answer a short-lived access token and a refresh token in the body (for
scripts) and as ``HttpOnly; SameSite=Strict`` cookies (for the board app: the
browser sends the access cookie on the WebSocket handshake, so the stock
y-websocket provider needs nothing more). The refresh cookie is scoped to
``/v1/auth``, so it travels only to these endpoints.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from auth import mfa
from auth.oidc import ExternalIdentity
from auth.oidc_flow import CodeFlowSettings
from auth.roles import Role
from auth.service import AuthRefused, Grant, Principal
from gateway.auth.guard import ACCESS_COOKIE, REFRESH_COOKIE, Guard
from gateway.auth.oidc_login import START_PATH, OidcLogin
from gateway.limits import check_login
from gateway.limits_middleware import rate_limited, request_client_ip, request_limits_state
from gateway.rest.access import authenticate, refusal_problem, require_second_factor
from gateway.rest.inputs import RestLimits, an_object, only_keys, read_json
from gateway.rest.problems import Problem
from shared.state import SharedState

#: Problems a refusal's reason answers with (others: 401 unauthorized).
_REASON_PROBLEMS = {
    "invalid-credentials": "invalid-credentials",
    "mfa-required": "mfa-required",
    "weak-password": "validation",
    "name-taken": "conflict",
    "bad-scope": "validation",
    "invalid-otp": "validation",
}
MAX_FIELD_CHARS = 1024


def _problem(refused: AuthRefused) -> Problem:
    name = _REASON_PROBLEMS.get(refused.reason)
    return Problem(name, str(refused)) if name else refusal_problem(refused)


def _string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise Problem("validation", f"{name} must be a string of 1-{MAX_FIELD_CHARS} characters")
    return value


class AuthRoutes:
    """Handlers for logging in and out, refreshing, tickets, MFA and scoped tokens."""

    def __init__(
        self,
        guard: Guard,
        limits: RestLimits,
        *,
        secure_cookies: bool,
        code_flow: CodeFlowSettings | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.guard = guard
        self.limits = limits
        self.secure_cookies = secure_cookies
        # The browser sign-in through the external issuer, when one is configured.
        self.sign_in = (
            OidcLogin(self, code_flow, shared)
            if code_flow is not None and shared is not None and guard.oidc is not None
            else None
        )

    def routes(self) -> list[web.RouteDef]:
        """Every auth route (``config`` alone when auth is off)."""
        found = [web.get("/v1/auth/config", self.config)]
        if self.guard.service is None:
            return found
        if self.sign_in is not None:
            found.extend(self.sign_in.route_defs())
        return [
            *found,
            web.post("/v1/auth/login", self.login),
            web.post("/v1/auth/oidc", self.login_oidc),
            web.post("/v1/auth/refresh", self.refresh),
            web.post("/v1/auth/logout", self.logout),
            web.get("/v1/auth/once", self.once),
            web.post("/v1/auth/tickets", self.ticket),
            web.get("/v1/me", self.me),
            web.put("/v1/me/password", self.set_password),
            web.post("/v1/me/mfa", self.begin_mfa),
            web.put("/v1/me/mfa", self.confirm_mfa),
            web.delete("/v1/me/mfa", self.remove_mfa),
            web.post("/v1/me/tokens", self.issue_token),
            web.delete("/v1/me/tokens/{token_id}", self.revoke_token),
            web.get("/v1/admin/audit", self.audit),
            web.post("/v1/admin/users", self.add_user),
            web.post("/v1/admin/users/{user_id}/disable", self.disable_user),
        ]

    @property
    def _service(self) -> Any:
        assert self.guard.service is not None
        return self.guard.service

    async def _body(self, request: web.Request, keys: set[str]) -> dict[str, Any]:
        body = dict(an_object(await read_json(request, self.limits)))
        only_keys(body, keys)
        return body

    # -- sessions ---------------------------------------------------------------------

    async def config(self, request: web.Request) -> web.Response:
        """What a client needs to know before logging in."""
        oidc = self.guard.oidc
        issuer = (
            {"issuer": oidc.settings.issuer, "client_id": oidc.settings.audience}
            if oidc is not None
            else None
        )
        sign_in = (
            {"name": self.sign_in.provider_name, "url": START_PATH}
            if self.sign_in is not None
            else None
        )
        return web.json_response(
            {
                "auth": "required" if self.guard.required else "none",
                "oidc": issuer,
                "sign_in": sign_in,
            }
        )

    async def login(self, request: web.Request) -> web.Response:
        """Password (and TOTP) in, tokens out."""
        body = await self._body(request, {"username", "password", "totp"})
        name = _string(body, "username")
        password = _string(body, "password")
        totp = _string(body, "totp", required=False)
        assert name is not None and password is not None
        ip = request_client_ip(request)
        decision = await check_login(request_limits_state(request), name, ip)
        if not decision.allowed:
            # Not audited: a flood of refused attempts must not grow the store.
            raise rate_limited(decision, "too many login attempts")
        try:
            grant = await self.guard.call(lambda: self._service.login(name, password, totp, ip=ip))
        except AuthRefused as refused:
            raise _problem(refused) from None
        return self._granted(grant)

    async def login_oidc(self, request: web.Request) -> web.Response:
        """An ID token of the configured issuer in, Boardcast tokens out.

        The first login makes the account; later ones find it by issuer and subject.
        """
        body = await self._body(request, {"id_token"})
        token = _string(body, "id_token")
        assert token is not None
        try:
            identity = await self.guard.external_identity(token)
        except AuthRefused as refused:
            if refused.reason == "issuer-unavailable":
                raise Problem("unavailable", "the identity provider cannot be reached") from None
            raise _problem(refused) from None
        try:
            grant = await self.log_in_external(identity)
        except AuthRefused as refused:
            raise _problem(refused) from None
        return self._granted(grant)

    async def log_in_external(self, identity: ExternalIdentity) -> Grant:
        """The login of the account of an external identity (made on its first login).

        Named from the identity's name or e-mail; an e-mail is kept only if verified.
        """
        email = identity.email if identity.email_verified else None
        name = identity.name or (email.split("@")[0] if email else identity.subject)
        return await self.guard.call(
            lambda: self._service.login_external(identity.issuer, identity.subject, name, email)
        )

    async def refresh(self, request: web.Request) -> web.Response:
        """Rotate the refresh token (body or cookie): a new pair."""
        token = request.cookies.get(REFRESH_COOKIE)
        if request.can_read_body:
            body = await self._body(request, {"refresh_token"})
            token = _string(body, "refresh_token", required=False) or token
        if not token:
            raise refusal_problem(AuthRefused("missing", "no refresh token"))
        try:
            grant = await self.guard.call(self._service.refresh, token)
        except AuthRefused as refused:
            response = _problem(refused).response(request.path)
            self._clear_cookies(response)
            return response
        return self._granted(grant)

    async def logout(self, request: web.Request) -> web.Response:
        """End this login everywhere (its sockets close within a second)."""
        refresh = request.cookies.get(REFRESH_COOKIE)
        try:
            principal = await authenticate(request, self.guard)
        except Problem:
            # An expired access token: the refresh token alone proves the login.
            if not refresh:
                raise
            ended = await self.guard.call(self._service.logout_by_refresh, refresh)
            if not ended:
                raise
        else:
            if principal.family is not None:
                await self.guard.call(self._service.logout, principal.family)
        response = web.Response(status=204)
        self._clear_cookies(response)
        return response

    async def once(self, request: web.Request) -> web.StreamResponse:
        """The first-start login link: log in, then go to the board app."""
        code = request.query.get("code", "")
        try:
            grant = await self.guard.call(self._service.redeem_login_link, code)
        except AuthRefused as refused:
            raise _problem(refused) from None
        response = web.HTTPSeeOther("/")
        self.set_session_cookies(response, grant)
        return response

    async def ticket(self, request: web.Request) -> web.Response:
        """A single-use ticket for one board's WebSocket (``?ticket=``), valid 30 s."""
        principal = await authenticate(request, self.guard)
        body = await self._body(request, {"board"})
        board_id = _string(body, "board")
        assert board_id is not None
        access = await self.guard.board_access(principal, board_id)
        if access.role is Role.NONE:
            raise Problem("not-found", f"no board {board_id!r}")
        ticket = await self.guard.call(self._service.issue_ticket, principal, board_id)
        ttl = int(self._service.settings.ticket_ttl_seconds)
        return web.json_response({"ticket": ticket, "expires_in": ttl})

    async def me(self, request: web.Request) -> web.Response:
        """Who the caller is."""
        principal = await authenticate(request, self.guard)
        return web.json_response(_me(principal))

    async def set_password(self, request: web.Request) -> web.Response:
        """Set the password: ``{"password", "current"?}`` (current needed if one is set).

        Every other login of the user ends; this one stays.
        """
        principal = await authenticate(request, self.guard)
        body = await self._body(request, {"password", "current"})
        new, current = _string(body, "password"), _string(body, "current", required=False)
        assert new is not None
        if principal.scope or principal.family is None:
            raise Problem("forbidden", "only a logged-in user changes their password")
        try:
            await self.guard.call(lambda: self._service.change_password(principal, current, new))
        except AuthRefused as refused:
            raise _problem(refused) from None
        return web.Response(status=204)

    # -- second factor -------------------------------------------------------------------

    async def begin_mfa(self, request: web.Request) -> web.Response:
        """A new TOTP secret to enrol (it counts once confirmed with ``PUT``)."""
        principal = await authenticate(request, self.guard)
        secret = mfa.new_secret()
        return web.json_response(
            {"secret": secret, "uri": mfa.provisioning_uri(secret, principal.name)}
        )

    async def confirm_mfa(self, request: web.Request) -> web.Response:
        """Enrol: ``{"secret", "code", "password"}`` (the password again: MFA is sensitive)."""
        principal = await authenticate(request, self.guard)
        body = await self._body(request, {"secret", "code", "password"})
        secret, code, password = (_string(body, key) for key in ("secret", "code", "password"))
        assert secret is not None and code is not None and password is not None
        user = await self.guard.call(self._service.store.get_user, principal.user_id)
        if user is None or principal.scope:
            raise Problem("forbidden", "only a logged-in user changes their second factor")
        try:
            await self.guard.call(self._service.confirm_totp, user, password, secret, code)
        except AuthRefused as refused:
            raise _problem(refused) from None
        return web.Response(status=204)

    async def remove_mfa(self, request: web.Request) -> web.Response:
        """Remove the second factor: ``{"code", "password"}``."""
        principal = await authenticate(request, self.guard)
        body = await self._body(request, {"code", "password"})
        code, password = _string(body, "code"), _string(body, "password")
        assert code is not None and password is not None
        user = await self.guard.call(self._service.store.get_user, principal.user_id)
        if user is None or principal.scope:
            raise Problem("forbidden", "only a logged-in user changes their second factor")
        try:
            await self.guard.call(self._service.remove_totp, user, password, code)
        except AuthRefused as refused:
            raise _problem(refused) from None
        return web.Response(status=204)

    # -- scoped tokens ----------------------------------------------------------------------

    async def issue_token(self, request: web.Request) -> web.Response:
        """A scoped token for automation: ``{"board" | "project", "role", "ttl_days"?}``.

        Sensitive (a second factor is needed); the token's role is capped at the
        user's own role wherever it is used.
        """
        principal = await authenticate(request, self.guard)
        if principal.scope:
            raise Problem("forbidden", "a scoped token cannot make tokens")
        await require_second_factor(request, self.guard, principal)
        body = await self._body(request, {"board", "project", "role", "ttl_days", "label"})
        scope = {key: body[key] for key in ("board", "project", "role") if key in body}
        if not all(isinstance(value, str) and len(value) <= 200 for value in scope.values()):
            raise Problem("validation", "board, project and role are strings")
        ttl_days = body.get("ttl_days", 90)
        if not isinstance(ttl_days, int | float) or not 0 < ttl_days <= 366:
            raise Problem("validation", "ttl_days is a number of days, at most 366")
        label = body.get("label", "")
        if not isinstance(label, str):
            raise Problem("validation", "label is a string")
        user = await self.guard.call(self._service.store.get_user, principal.user_id)
        try:
            token_id, token = await self.guard.call(
                lambda: self._service.issue_api_token(
                    user, scope, ttl_seconds=float(ttl_days) * 86400, label=label
                )
            )
        except (AuthRefused, ValueError) as exc:
            raise Problem("validation", str(exc)) from None
        return web.json_response({"id": token_id, "token": token}, status=201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        """Revoke one of the caller's scoped tokens; sockets using it close within a second."""
        principal = await authenticate(request, self.guard)
        token_id = request.match_info["token_id"]
        found = await self.guard.call(self._service.store.get_api_token, token_id[:100])
        if found is None or (found.user_id != principal.user_id and not principal.admin):
            raise Problem("not-found", "no such token")
        await self.guard.call(self._service.revoke_api_token, token_id)
        return web.Response(status=204)

    # -- administration -----------------------------------------------------------------------

    async def _admin(self, request: web.Request) -> Principal:
        principal = await authenticate(request, self.guard)
        if not principal.admin:
            raise Problem("forbidden", "server administrators only")
        return principal

    async def audit(self, request: web.Request) -> web.Response:
        """The security log, newest first (``?before=SEQ`` pages back)."""
        await self._admin(request)
        before = request.query.get("before")
        if before is not None and not before.isdigit():
            raise Problem("bad-request", "before is a sequence number")
        entries = await self.guard.call(
            lambda: self._service.store.audit_log(before=int(before) if before else None)
        )
        return web.json_response(
            {
                "items": [
                    {
                        "seq": entry.seq,
                        "at": entry.at,
                        "kind": entry.kind,
                        "user": entry.user_id,
                        "detail": entry.detail,
                    }
                    for entry in entries
                ]
            }
        )

    async def add_user(self, request: web.Request) -> web.Response:
        """Create an account: ``{"username", "password", "email"?, "admin"?}``."""
        await self._admin(request)
        body = await self._body(request, {"username", "password", "email", "admin"})
        name, password = _string(body, "username"), _string(body, "password")
        email = _string(body, "email", required=False)
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise Problem("validation", "admin is true or false")
        try:
            user = await self.guard.call(
                lambda: self._service.create_user(name, password, email=email, admin=admin)
            )
        except AuthRefused as refused:
            raise _problem(refused) from None
        return web.json_response(
            {"id": user.id, "name": user.name, "admin": user.admin}, status=201
        )

    async def disable_user(self, request: web.Request) -> web.Response:
        """Disable an account: its sockets close within a second, its tokens stop working."""
        principal = await self._admin(request)
        user_id = request.match_info["user_id"][:100]
        if user_id == principal.user_id:
            raise Problem("conflict", "an administrator cannot disable their own account")
        if await self.guard.call(self._service.store.get_user, user_id) is None:
            raise Problem("not-found", "no such user")
        await self.guard.call(self._service.disable_user, user_id)
        return web.Response(status=204)

    # -- cookies --------------------------------------------------------------------------------

    def _granted(self, grant: Grant) -> web.Response:
        response = web.json_response(
            {
                "access_token": grant.access_token,
                "token_type": "Bearer",
                "expires_in": grant.expires_in,
                "refresh_token": grant.refresh_token,
                "user": {"id": grant.user.id, "name": grant.user.name, "admin": grant.user.admin},
            },
            headers={"Cache-Control": "no-store"},
        )
        self.set_session_cookies(response, grant)
        return response

    def set_session_cookies(self, response: web.StreamResponse, grant: Grant) -> None:
        """The access and refresh cookies of ``grant`` on ``response``."""
        common: dict[str, Any] = {
            "httponly": True,
            "samesite": "Strict",
            "secure": self.secure_cookies,
        }
        response.set_cookie(
            ACCESS_COOKIE, grant.access_token, path="/", max_age=grant.expires_in, **common
        )
        lifetime = int(self._service.settings.idle_seconds)
        response.set_cookie(
            REFRESH_COOKIE, grant.refresh_token, path="/v1/auth", max_age=lifetime, **common
        )

    def _clear_cookies(self, response: web.StreamResponse) -> None:
        response.del_cookie(ACCESS_COOKIE, path="/")
        response.del_cookie(REFRESH_COOKIE, path="/v1/auth")


def _me(principal: Principal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": principal.user_id,
        "name": principal.name,
        "admin": principal.admin,
        "mfa": principal.mfa_enrolled,
    }
    if principal.scope:
        body["scope"] = principal.scope
    if principal.expires_at is not None:
        body["expires_in"] = max(0, int(principal.expires_at - time.time()))
    return body
