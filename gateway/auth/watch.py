"""Live revocation: open sockets whose user lost access are closed within a second.

Every change that can take access away (logout, refresh-token reuse, a revoked
token, a disabled account, a role lowered or removed) is written to the account
store's revocation feed. Each gateway polls that feed (a single indexed read,
every ``poll_seconds``), and for each user named there checks each of its open
sessions again: the credential, then the role on the board. A session that may
no longer be open is closed with 4401 (its credential ended) or 4403 (its role
no longer allows the board, or no longer allows what it was opened for).
Scoped tokens that expire while a socket is open close it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from auth.roles import Role, read_only
from auth.service import KEYS_CHANGED, Principal
from crdt.close_codes import CloseCode
from gateway.auth.guard import Guard

log = logging.getLogger("boardcast.auth")


@dataclass(eq=False, slots=True)
class WatchedSession:
    """One open socket, and what it was allowed when it opened."""

    ws: web.WebSocketResponse
    board_id: str
    principal: Principal
    role: Role
    closed: bool = field(default=False)


class SessionWatch:
    """The open sockets of one gateway, by user, and the task that polls the feed."""

    def __init__(self, guard: Guard, *, poll_seconds: float = 0.25) -> None:
        self.guard = guard
        self.poll_seconds = poll_seconds
        self._by_user: dict[str, set[WatchedSession]] = {}
        self._task: asyncio.Task[None] | None = None
        self._seen = 0

    def add(self, session: WatchedSession) -> None:
        """Watch an open socket."""
        self._by_user.setdefault(session.principal.user_id, set()).add(session)

    def remove(self, session: WatchedSession) -> None:
        """Stop watching a socket that closed."""
        sessions = self._by_user.get(session.principal.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[session.principal.user_id]

    def open_sessions(self, user_id: str) -> int:
        """How many sockets ``user_id`` has open on this gateway."""
        return len(self._by_user.get(user_id, ()))

    async def start(self) -> None:
        """Start polling (from the newest feed entry: older ones were before these sockets)."""
        service = self.guard.service
        if service is None or self._task is not None:
            return
        self._seen = await self.guard.call(service.store.last_revocation)
        self._task = asyncio.create_task(self._poll(), name="revocation-watch")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        service = self.guard.service
        assert service is not None
        last_expiry_check = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                entries = await self.guard.call(service.store.revocations_after, self._seen)
                users = {entry.user_id for entry in entries}
                if entries:
                    self._seen = entries[-1].seq
                if KEYS_CHANGED in users:
                    users.discard(KEYS_CHANGED)
                    await self.guard.call(service.reload_keys)
                # Roles the guard remembers for these people may have changed.
                self.guard.forget(users)
                for user_id in users:
                    await self.recheck(user_id)
                if time.monotonic() - last_expiry_check >= 5.0:
                    last_expiry_check = time.monotonic()
                    await self._close_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The feed is read again next time; a missed poll delays, it does not lose.
                log.exception("revocation watch: poll failed")

    async def recheck(self, user_id: str) -> None:
        """Check every open socket of ``user_id`` again, closing those no longer allowed."""
        service = self.guard.service
        if service is None:
            return
        for session in list(self._by_user.get(user_id, ())):
            if session.closed:
                continue
            valid = await self.guard.call(service.still_valid, session.principal)
            if not valid:
                await self._close(session, CloseCode.UNAUTHORIZED, "your login has ended")
                continue
            access = await self.guard.board_access(session.principal, session.board_id)
            if access.role is Role.NONE:
                await self._close(session, CloseCode.FORBIDDEN, "your access to this board ended")
            elif read_only(access.role) and not read_only(session.role):
                await self._close(session, CloseCode.FORBIDDEN, "your role changed: reconnect")

    async def _close_expired(self) -> None:
        now = time.time()
        for sessions in list(self._by_user.values()):
            for session in list(sessions):
                expires = session.principal.expires_at
                if session.principal.scope and expires is not None and expires < now:
                    await self._close(session, CloseCode.UNAUTHORIZED, "your token expired")

    async def _close(self, session: WatchedSession, code: CloseCode, reason: str) -> None:
        session.closed = True
        log.info(
            "closing a session of %s on board %s: %s",
            session.principal.user_id,
            session.board_id,
            reason,
        )
        with contextlib.suppress(Exception):
            await session.ws.close(code=int(code), message=reason.encode())
