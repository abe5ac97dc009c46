"""The gateway's access decisions: who is calling, and what role they have where.

One :class:`Guard` per gateway serves the WebSocket pump and the REST API alike,
so a board's role is decided the same way on every path. Credentials are read
from (in this order) a single-use ``ticket`` query parameter, a ``token`` query
parameter (what the stock y-websocket client can send), an ``Authorization:
Bearer`` header and the ``boardcast_access`` cookie. Roles come from the board's
project document (``members``, narrowed by the board's entry there), found through
the directory index; a bounded :class:`~gateway.auth.role_cache.RoleCache` keeps
them between checks, forgotten per person when the revocation feed announces a
change. Server administrators are owners everywhere, and scoped tokens carry their
own role. Project documents are readable by their members, a person's list of
projects by that person; nobody writes either over a socket.

With ``auth`` set to ``none`` the guard says yes to everything, as the local
administrator: for development and benchmarks only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import jwt

from actors.cluster import Cluster
from auth.oidc import ExternalIdentity, OidcVerifier
from auth.roles import Role, effective_role, role_named
from auth.service import LOCAL_PRINCIPAL, AuthRefused, AuthService, Principal
from crdt.errors import TokenRefused
from crdt.project_doc import project_doc_id, project_of_doc
from crdt.project_list import list_doc_id, user_of_list
from crdt.projects import DIRECTORY_BOARD
from gateway.auth.role_cache import RoleCache, Standing
from gateway.rest.project_commands import board_project, member_standing, read_listing

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


class Guard:
    """Authenticates requests and sockets, and finds roles; ``service`` None means no auth."""

    def __init__(
        self,
        service: AuthService | None,
        cluster: Cluster,
        *,
        oidc: OidcVerifier | None = None,
        roles: RoleCache | None = None,
    ) -> None:
        self.service = service
        self.cluster = cluster
        self.oidc = oidc if service is not None else None
        self.roles = roles if roles is not None else RoleCache()

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
        """The principal's role on a board (``Role.NONE``: not even that it exists).

        The server's own documents are read-only for whoever may see them: the
        directory for administrators, a project's document for its members, a
        person's list of projects for that person.
        """
        owner_of_list = user_of_list(board_id)
        if owner_of_list is not None:
            mine = principal.user_id == owner_of_list and not principal.scope
            seen = self.service is None or principal.admin or mine
            return BoardAccess(Role.VIEWER if seen else Role.NONE, None)
        project_doc = project_of_doc(board_id)
        if project_doc is not None:
            role = await self.project_role(principal, project_doc)
            return BoardAccess(Role.VIEWER if role is not Role.NONE else Role.NONE, project_doc)
        if board_id == DIRECTORY_BOARD:
            # The directory lists every project: administrators only, read-only.
            seen = self.service is None or principal.admin
            return BoardAccess(Role.VIEWER if seen else Role.NONE, None)
        if self.service is None:
            return BoardAccess(Role.OWNER, None)
        project_id = await self.board_project(board_id)
        member = Role.NONE
        if project_id is not None:
            standing = await self.standing(principal.user_id, project_id)
            narrowed = standing.narrowed.get(board_id)
            member = effective_role(
                role_named(standing.role), role_named(narrowed) if narrowed else None
            )
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
        member = role_named((await self.standing(principal.user_id, project_id)).role)
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
        return {entry["id"] for entry in await self.listed_projects(principal.user_id)}

    async def listed_projects(self, user_id: str) -> list[dict[str, str]]:
        """The projects ``user_id``'s list shows that they are still a member of.

        The list is a copy kept from the project documents; each entry is checked
        against its project (through the cache), so a copy a crash left behind
        never shows a project the person has left.
        """
        outcome = await self.cluster.run(list_doc_id(user_id), read_listing)
        found = []
        for entry in outcome.value or []:
            standing = await self.standing(user_id, entry["id"])
            if standing.exists and role_named(standing.role) is not Role.NONE:
                found.append({**entry, "role": standing.role or entry["role"]})
        return found

    # -- the cache ----------------------------------------------------------------------

    async def board_project(self, board_id: str) -> str | None:
        """The project that lists ``board_id`` (the directory index), or None."""
        cached = self.roles.board_project(board_id)
        if cached is not None:
            return cached
        generation = self.roles.board_generation()
        outcome = await self.cluster.run(DIRECTORY_BOARD, partial(board_project, board_id=board_id))
        if outcome.value is not None:
            self.roles.store_board_project(board_id, outcome.value, generation)
        return outcome.value

    async def standing(self, user_id: str, project_id: str) -> Standing:
        """``user_id``'s role in a project and the boards narrowing it (cached)."""
        cached = self.roles.standing(user_id, project_id)
        if cached is not None:
            return cached
        generation = self.roles.generation(user_id)
        outcome = await self.cluster.run(
            project_doc_id(project_id), partial(member_standing, user=user_id)
        )
        exists, role, narrowed = outcome.value or (False, None, {})
        standing = Standing(exists, role, dict(narrowed))
        self.roles.store_standing(user_id, project_id, standing, generation)
        return standing

    def forget(self, user_ids: set[str]) -> None:
        """These people's roles changed (the revocation feed said so): read them again."""
        for user_id in user_ids:
            self.roles.forget_user(user_id)
