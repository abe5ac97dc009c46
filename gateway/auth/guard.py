"""The gateway's access decisions: who is calling, and what role they have where.

One :class:`Guard` per gateway serves the WebSocket pump and the REST API alike,
so a board's role is decided the same way on every path. Credentials are read
from (in this order) a single-use ``ticket`` query parameter, a ``token`` query
parameter (what the stock y-websocket client can send), an ``Authorization:
Bearer`` header and the ``boardcast_access`` cookie. Roles come from the project
directory (``members`` of the board's project); server administrators are owners
everywhere, and scoped tokens carry their own role.

With ``auth`` set to ``none`` the guard says yes to everything, as the local
administrator: for development and benchmarks only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt

from actors.cluster import Cluster
from auth.oidc import ExternalIdentity, OidcVerifier
from auth.roles import Role, effective_role, role_named
from auth.service import LOCAL_PRINCIPAL, AuthRefused, AuthService, Principal
from crdt.board import Board
from crdt.errors import TokenRefused
from crdt.projects import DIRECTORY_BOARD, Directory

log = logging.getLogger("boardcast.auth")

T = TypeVar("T")

ACCESS_COOKIE = "boardcast_access"
REFRESH_COOKIE = "boardcast_refresh"


@dataclass(frozen=True, slots=True)
class BoardAccess:
    """A principal's standing on one board."""

    role: Role
    project_id: str | None  # None: a board no project lists (reachable by admins, scoped tokens)


def bearer_from(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The bearer token of a request: the Authorization header, else the access cookie."""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = cookies.get(ACCESS_COOKIE)
    return cookie or None


def _issuer_of(token: str) -> str | None:
    """The ``iss`` a token claims, unverified: only to choose who verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def _access_on(
    board: Board, user_id: str, board_id: str
) -> tuple[str | None, str | None, str | None]:
    """Run on the directory's actor: the board's project, the user's role there, and
    the board's narrower role for the user, if it has one."""
    directory = Directory(board.doc)
    entry = directory.get_board(board_id)
    if entry is None:
        return None, None, None
    narrowed = directory.board_roles(board_id).get(user_id)
    try:
        members = directory.members(entry.project)
    except KeyError:
        return entry.project, None, narrowed
    return entry.project, members.get(user_id), narrowed


def _project_role_on(board: Board, user_id: str, project_id: str) -> str | None:
    try:
        return Directory(board.doc).members(project_id).get(user_id)
    except KeyError:
        return None


def _member_projects_on(board: Board, user_id: str) -> list[str]:
    directory = Directory(board.doc)
    found = []
    for project in directory.projects():
        if user_id in directory.members(project.id):
            found.append(project.id)
    return found


class Guard:
    """Authenticates requests and sockets, and finds roles; ``service`` None means no auth."""

    def __init__(
        self, service: AuthService | None, cluster: Cluster, *, oidc: OidcVerifier | None = None
    ) -> None:
        self.service = service
        self.cluster = cluster
        self.oidc = oidc if service is not None else None

    @property
    def required(self) -> bool:
        """Whether callers must prove who they are."""
        return self.service is not None

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run an account-store call off the event loop."""
        return await asyncio.to_thread(function, *args)

    # -- who --------------------------------------------------------------------------

    async def principal(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Principal:
        """The caller of a REST request; :class:`AuthRefused` ``missing`` without credentials."""
        if self.service is None:
            return LOCAL_PRINCIPAL
        token = bearer_from(headers, cookies)
        if token is None:
            raise AuthRefused("missing", "log in, or send a bearer token")
        return await self.authenticate(token)

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token: ours, or the configured external issuer's."""
        assert self.service is not None
        if self.oidc is not None and _issuer_of(token) == self.oidc.settings.issuer:
            return await self._external(token)
        return await self.call(self.service.authenticate, token)

    async def external_identity(self, token: str) -> ExternalIdentity:
        """Verify a token of the external issuer; :class:`AuthRefused` if it does not hold."""
        if self.oidc is None:
            raise AuthRefused("no-issuer", "no external issuer is configured")
        try:
            return await self.oidc.verify(token)
        except TokenRefused as refused:
            raise AuthRefused(refused.reason, str(refused)) from None

    async def _external(self, token: str) -> Principal:
        assert self.service is not None
        identity = await self.external_identity(token)
        user = await self.call(self.service.store.find_external, identity.issuer, identity.subject)
        if user is None or user.disabled:
            raise AuthRefused("unknown-user", "log in once through /v1/auth/oidc first")
        return Principal(
            user_id=user.id,
            name=user.name,
            admin=user.admin,
            expires_at=identity.expires_at.timestamp(),
            amr=("oidc",),
            mfa_enrolled=user.mfa,
        )

    async def socket_principal(
        self,
        board_id: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
    ) -> Principal:
        """The client of a WebSocket on ``board_id``."""
        if self.service is None:
            return LOCAL_PRINCIPAL
        ticket = query.get("ticket")
        if ticket:
            return await self.call(self.service.redeem_ticket, ticket, board_id)
        token = query.get("token")
        if token:
            return await self.authenticate(token)
        return await self.principal(headers, cookies)

    # -- where ------------------------------------------------------------------------

    async def board_access(self, principal: Principal, board_id: str) -> BoardAccess:
        """The principal's role on a board (``Role.NONE``: not even that it exists)."""
        if self.service is None:
            return BoardAccess(Role.OWNER, None)
        if board_id == DIRECTORY_BOARD:
            # The directory lists every project and member: administrators only, read-only.
            return BoardAccess(Role.VIEWER if principal.admin else Role.NONE, None)
        outcome = await self.cluster.run(
            DIRECTORY_BOARD, lambda board: _access_on(board, principal.user_id, board_id)
        )
        project_id, label, narrowed = outcome.value or (None, None, None)
        member = effective_role(role_named(label), role_named(narrowed) if narrowed else None)
        if principal.admin:
            return BoardAccess(Role.OWNER, project_id)
        scoped = principal.scoped_role
        if scoped is None:
            return BoardAccess(member, project_id)
        scope = principal.scope
        if scope.get("board") == board_id or (
            project_id is not None and scope.get("project") == project_id
        ):
            # Operator-issued tokens grant their role; a user's own are capped by theirs.
            granted = scoped if scope.get("grant") == "operator" else min(scoped, member)
            return BoardAccess(granted, project_id)
        return BoardAccess(Role.NONE, project_id)

    async def project_role(self, principal: Principal, project_id: str) -> Role:
        """The principal's role in a project."""
        if self.service is None or principal.admin:
            return Role.OWNER
        outcome = await self.cluster.run(
            DIRECTORY_BOARD, lambda board: _project_role_on(board, principal.user_id, project_id)
        )
        member = role_named(outcome.value)
        scoped = principal.scoped_role
        if scoped is None:
            return member
        if principal.scope.get("project") != project_id:
            return Role.NONE
        return scoped if principal.scope.get("grant") == "operator" else min(scoped, member)

    async def visible_projects(self, principal: Principal) -> set[str] | None:
        """The projects a principal may see; None means all of them."""
        if self.service is None or principal.admin:
            return None
        if principal.scope:
            project = principal.scope.get("project")
            return {project} if project else set()
        outcome = await self.cluster.run(
            DIRECTORY_BOARD, lambda board: _member_projects_on(board, principal.user_id)
        )
        return set(outcome.value or [])
