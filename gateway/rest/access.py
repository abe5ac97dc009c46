"""Who is calling the REST API, and what they may do: the same decision as for a socket.

Every request is authenticated by the gateway's :class:`~gateway.auth.guard.Guard`
(bearer token or access cookie), then its role on the board or project it names
is checked against :mod:`auth.roles`. A caller with no role there is answered
404 (``not-found``), as if the resource did not exist, so ids cannot be probed
across projects; a caller whose role is too low gets 403. Sensitive actions
(deleting a board or project, changing members) also need a second factor that
is fresh (a login with TOTP in the last ``mfa_fresh_seconds``) or sent with the
request in the ``Boardcast-OTP`` header.

Requests authenticated by cookie that change something must come from the
server's own pages (``Origin`` checked), so another site cannot make a logged-in
browser send them. After the guard, the extensions' ``on_connect`` may narrow
the decision (refuse, or make it read-only), as for a socket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from actors.extensions import ConnectRequest, Extensions, Refused
from auth.roles import SENSITIVE, Action, Role, allows
from auth.service import AuthRefused, Principal
from crdt.close_codes import CloseCode
from crdt.projects import DIRECTORY_BOARD
from gateway.auth.guard import ACCESS_COOKIE, Guard
from gateway.limits import check_user
from gateway.limits_middleware import rate_limited, request_limits_state
from gateway.rest.problems import Problem

log = logging.getLogger("boardcast.rest")

OTP_HEADER = "Boardcast-OTP"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    """What the guard (and the extensions) decided about one request."""

    identity: str
    principal: Principal
    role: Role
    read_only: bool = False  # an extension made it read-only

    def require(self, action: Action) -> None:
        """Refuse an action the caller's role does not allow."""
        if self.read_only and action is not Action.READ:
            raise Problem("read-only", f"{self.identity} may read this board but not change it")
        if not allows(self.role, action):
            raise Problem(
                "forbidden", f"the {self.role.label} role may not {action.value.replace('-', ' ')}"
            )

    def require_write(self) -> None:
        """Refuse a change from a caller who may only read."""
        self.require(Action.WRITE)


def refusal_problem(refused: AuthRefused) -> Problem:
    """The 401 answer to credentials that do not hold."""
    problem = Problem("unauthorized", str(refused))
    problem.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", reason="{refused.reason}"'
    if refused.reason == "missing":
        problem.headers["WWW-Authenticate"] = "Bearer"
    return problem


async def authenticate(request: web.Request, guard: Guard) -> Principal:
    """The request's principal; 401 without valid credentials."""
    try:
        principal = await guard.principal(request.headers, request.cookies)
    except AuthRefused as refused:
        raise refusal_problem(refused) from None
    if guard.required:
        decision = await check_user(request_limits_state(request), principal.user_id)
        if not decision.allowed:
            raise rate_limited(decision, "too many requests from this user")
        if request.method not in _SAFE_METHODS:
            check_cookie_origin(request)
    return principal


def check_cookie_origin(request: web.Request) -> None:
    """Refuse a cookie-authenticated change sent from another site's page (CSRF)."""
    if "Authorization" in request.headers or ACCESS_COOKIE not in request.cookies:
        return
    origin = request.headers.get("Origin")
    expected = {f"http://{request.host}", f"https://{request.host}"}
    if origin is None or origin.lower() not in {value.lower() for value in expected}:
        raise Problem("forbidden", "a change made with the session cookie must come from this site")


async def board_caller(
    request: web.Request,
    board_id: str,
    action: Action,
    guard: Guard,
    extensions: Extensions,
) -> Caller:
    """The caller of a request on ``board_id``, allowed ``action`` there."""
    principal = await authenticate(request, guard)
    access = await guard.board_access(principal, board_id)
    caller = await _narrowed(request, board_id, principal, access.role, guard, extensions)
    await _check(caller, action, request, guard, f"board {board_id!r}")
    return caller


async def project_caller(
    request: web.Request,
    project_id: str,
    action: Action,
    guard: Guard,
    extensions: Extensions,
) -> Caller:
    """The caller of a request on a project, allowed ``action`` there."""
    principal = await authenticate(request, guard)
    role = await guard.project_role(principal, project_id)
    caller = await _narrowed(request, DIRECTORY_BOARD, principal, role, guard, extensions)
    await _check(caller, action, request, guard, f"project {project_id!r}")
    return caller


async def user_caller(request: web.Request, guard: Guard, extensions: Extensions) -> Caller:
    """The caller of a request that names no board or project (create a project, query)."""
    principal = await authenticate(request, guard)
    role = Role.OWNER if principal.admin or not guard.required else Role.EDITOR
    if principal.scope:
        role = Role.NONE  # scoped tokens reach their board or project only
    return await _narrowed(request, DIRECTORY_BOARD, principal, role, guard, extensions)


async def _check(
    caller: Caller, action: Action, request: web.Request, guard: Guard, what: str
) -> None:
    if caller.role is Role.NONE:
        raise Problem("not-found", f"no {what}")
    caller.require(action)
    if action in SENSITIVE:
        await require_second_factor(request, guard, caller.principal)


async def require_second_factor(request: web.Request, guard: Guard, principal: Principal) -> None:
    """Refuse a sensitive action without a fresh second factor (docs/security.md)."""
    service = guard.service
    if service is None:
        return
    if not principal.mfa_enrolled:
        raise Problem("mfa-required", "this needs a second factor: enrol TOTP first")
    code = request.headers.get(OTP_HEADER)
    if not await guard.call(service.fresh_second_factor, principal, code):
        raise Problem("mfa-required", f"send a current code in the {OTP_HEADER} header")


async def _narrowed(
    request: web.Request,
    board_id: str,
    principal: Principal,
    role: Role,
    guard: Guard,
    extensions: Extensions,
) -> Caller:
    identity = principal.user_id
    if not extensions:
        return Caller(identity, principal, role)
    try:
        session = await extensions.on_connect(
            ConnectRequest(board_id, request.headers, request.query, request.remote)
        )
    except Refused as refused:
        name = "unauthorized" if refused.close_code == CloseCode.UNAUTHORIZED else "forbidden"
        problem = Problem(name, str(refused))
        if name == "unauthorized":
            problem.headers["WWW-Authenticate"] = "Bearer"
        raise problem from None
    if session.identity is not None and not guard.required:
        identity = session.identity
    elif not guard.required:
        identity = "anonymous"
    return Caller(identity, principal, role, read_only=session.read_only)
