"""What gateways and board hosts share across processes: presence, a directory cache, rate
limits and auth tokens.

Two implementations pass one contract (``tests/integration/test_shared_state.py``):
:class:`shared.memory.MemorySharedState` keeps everything in the process (one machine needs
nothing else), :class:`shared.redis_state.RedisSharedState` keeps it in Redis; choose one by
URL with :func:`shared.factory.open_shared_state`. Nothing stored is lost for
good when the server restarts: each gateway writes its sessions again at its next refresh, board
locations are a cache, rate-limit counters start afresh, and tokens fail closed
(docs/shared-state.md).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import msgpack

from crdt.errors import BoardcastError

log = logging.getLogger("boardcast.shared_state")

#: Prepended to every key, so several deployments can share one Redis.
DEFAULT_PREFIX = "boardcast:"
#: How long a gateway's sessions outlive its last sign of life before its first refresh.
DEFAULT_GATEWAY_TTL_S = 15.0

# Gateway ids become part of keys; keeping ':' out of them keeps every key unambiguous.
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# A session as its owner remembers it: (board id, packed info).
OwnedSession = tuple[str, bytes]


class SharedStateUnavailable(BoardcastError):
    """The shared-state server did not answer in time; the call may be retried later."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One client session on one board, served by one gateway."""

    gateway_id: str
    board_id: str
    session_id: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one rate-limited hit."""

    allowed: bool
    remaining: int  # hits still allowed in the current window
    reset_after_s: float  # until the current window ends and the count starts afresh


def pack(value: Any) -> bytes:
    """Encode a stored value (msgpack)."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    """Decode a value written by :func:`pack`."""
    return msgpack.unpackb(data, raw=False)


def check_gateway_id(gateway_id: str) -> None:
    """Refuse ids that could make two gateways' keys collide."""
    if not _GATEWAY_ID.match(gateway_id):
        raise ValueError(f"gateway id {gateway_id!r}: use 1-128 of A-Z a-z 0-9 . _ -")


def require_positive(name: str, value: float) -> None:
    """Refuse a TTL, window or limit that is not above zero."""
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass
class _OwnedGateway:
    # The owner's own record of its sessions: the truth that the stored copy is rebuilt from.
    sessions: dict[str, OwnedSession] = field(default_factory=dict)
    ttl_s: float = DEFAULT_GATEWAY_TTL_S
    # False until the stored copy is known to match `sessions` (first use, or a failed write).
    synced: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SharedState(abc.ABC):
    """The interface; the session bookkeeping every implementation shares lives here.

    A gateway owns its sessions: this object remembers the ones registered through it, and
    rebuilds the stored copy from that record whenever the copy may be wrong (the first call
    for a gateway id, after a failed write, or when a refresh finds sessions missing).
    """

    def __init__(self) -> None:
        self._owned: dict[str, _OwnedGateway] = {}

    # -- sessions and presence -------------------------------------------------------------

    async def register_session(
        self,
        gateway_id: str,
        board_id: str,
        session_id: str,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that ``gateway_id`` serves ``session_id`` on ``board_id``.

        If the write fails (:class:`SharedStateUnavailable`), the session is still remembered
        and written with the gateway's next successful refresh.
        """
        owned = self._owner(gateway_id)
        record: OwnedSession = (board_id, pack(dict(info or {})))
        async with owned.lock:
            previous = owned.sessions.get(session_id)
            owned.sessions[session_id] = record
            if not owned.synced:
                await self._rewrite(gateway_id, owned)
                return
            async with self._unsynced_on_error(owned):
                if previous is not None and previous[0] != board_id:
                    await self._delete_session(gateway_id, previous[0], session_id)
                await self._put_session(gateway_id, board_id, session_id, record[1], owned.ttl_s)

    async def unregister_session(self, gateway_id: str, board_id: str, session_id: str) -> None:
        """Forget a session that ended."""
        owned = self._owner(gateway_id)
        async with owned.lock:
            previous = owned.sessions.pop(session_id, None)
            if not owned.synced:
                await self._rewrite(gateway_id, owned)
                return
            async with self._unsynced_on_error(owned):
                stored_board = previous[0] if previous is not None else board_id
                await self._delete_session(gateway_id, stored_board, session_id)

    async def refresh_gateway(self, gateway_id: str, ttl_s: float) -> None:
        """Keep the gateway and its sessions alive for ``ttl_s`` more seconds.

        Call it every ``ttl_s / 3`` or so. If the stored sessions differ from those registered
        through this object (a restarted server, an earlier process with the same id), the
        stored copy is replaced.
        """
        require_positive("ttl_s", ttl_s)
        owned = self._owner(gateway_id)
        async with owned.lock:
            owned.ttl_s = ttl_s
            if owned.synced:
                async with self._unsynced_on_error(owned):
                    stored = await self._touch_gateway(gateway_id, ttl_s)
                if stored == len(owned.sessions):
                    return
                log.info(
                    "gateway %s: %d of %d sessions stored; writing them again",
                    gateway_id,
                    stored,
                    len(owned.sessions),
                )
            await self._rewrite(gateway_id, owned)

    async def drop_gateway(self, gateway_id: str) -> None:
        """A gateway stops cleanly: its sessions and its presence vanish at once."""
        owned = self._owner(gateway_id)
        async with owned.lock:
            owned.sessions.clear()
            await self._rewrite(gateway_id, owned, live=False)

    @abc.abstractmethod
    async def board_sessions(self, board_id: str) -> list[SessionInfo]:
        """Every session on ``board_id``, across all live gateways."""

    @abc.abstractmethod
    async def gateway_sessions(self, gateway_id: str) -> list[SessionInfo]:
        """Every stored session of ``gateway_id`` (none once it is dead)."""

    @abc.abstractmethod
    async def live_gateways(self) -> list[str]:
        """Ids of the gateways whose last refresh has not lapsed, sorted."""

    # -- directory cache -------------------------------------------------------------------

    @abc.abstractmethod
    async def cache_board_host(self, board_id: str, host_name: str, ttl_s: float) -> None:
        """Remember for ``ttl_s`` seconds that ``board_id`` lives on ``host_name``."""

    @abc.abstractmethod
    async def cached_board_host(self, board_id: str) -> str | None:
        """The cached host of ``board_id``, or None."""

    @abc.abstractmethod
    async def forget_board_host(self, board_id: str, *, host_name: str | None = None) -> None:
        """Drop the cached host of ``board_id`` (only if it is ``host_name``, when given)."""

    # -- rate limiting ---------------------------------------------------------------------

    @abc.abstractmethod
    async def hit(self, key: str, *, limit: int, window_s: float) -> RateDecision:
        """Count one hit on ``key``: at most ``limit`` are allowed per ``window_s`` window.

        A window starts with the first hit after the previous one ended (a fixed window).
        """

    # -- tokens ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def put_token(self, token_id: str, data: Mapping[str, Any], ttl_s: float) -> None:
        """Store ``data`` under ``token_id`` for ``ttl_s`` seconds."""

    @abc.abstractmethod
    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        """The data of a stored token, or None if unknown, expired, used or revoked."""

    @abc.abstractmethod
    async def pop_token(self, token_id: str) -> dict[str, Any] | None:
        """Take a token once: exactly one of any number of concurrent callers gets its data."""

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        """Mark ``token_id`` revoked for ``ttl_s`` seconds (its remaining lifetime); drop it."""

    @abc.abstractmethod
    async def is_revoked(self, token_id: str, *, issued_at: float | None = None) -> bool:
        """Whether ``token_id`` is revoked.

        With ``issued_at`` (unix seconds), a token issued before the revocation list began
        (before the server last started empty) also counts as revoked: the list may have
        lost its revocation.
        """

    # -- response cache ----------------------------------------------------------------

    @abc.abstractmethod
    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds (a cache: it may go sooner)."""

    @abc.abstractmethod
    async def cache_get(self, key: str) -> bytes | None:
        """The cached value, or None if unknown or expired."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; stored state stays for other processes."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- what an implementation provides for sessions --------------------------------------

    @abc.abstractmethod
    async def _put_session(
        self, gateway_id: str, board_id: str, session_id: str, info: bytes, ttl_s: float
    ) -> None:
        """Store one session (``info`` packed); its keys live ``ttl_s`` more seconds."""

    @abc.abstractmethod
    async def _delete_session(self, gateway_id: str, board_id: str, session_id: str) -> None:
        """Remove one stored session."""

    @abc.abstractmethod
    async def _touch_gateway(self, gateway_id: str, ttl_s: float) -> int:
        """Mark the gateway live for ``ttl_s``, extend its sessions; return how many are stored."""

    @abc.abstractmethod
    async def _replace_gateway(
        self,
        gateway_id: str,
        sessions: Mapping[str, OwnedSession],
        ttl_s: float,
        *,
        live: bool,
    ) -> None:
        """Atomically replace everything stored for the gateway by ``sessions``.

        With ``live`` false the gateway is removed from the live set as well.
        """

    # -- internals -------------------------------------------------------------------------

    def _owner(self, gateway_id: str) -> _OwnedGateway:
        owned = self._owned.get(gateway_id)
        if owned is None:
            check_gateway_id(gateway_id)
            owned = self._owned[gateway_id] = _OwnedGateway()
        return owned

    async def _rewrite(self, gateway_id: str, owned: _OwnedGateway, *, live: bool = True) -> None:
        owned.synced = False
        await self._replace_gateway(gateway_id, dict(owned.sessions), owned.ttl_s, live=live)
        owned.synced = True

    @contextlib.asynccontextmanager
    async def _unsynced_on_error(self, owned: _OwnedGateway) -> AsyncIterator[None]:
        # A write that failed or was cancelled midway leaves the stored copy unknown.
        try:
            yield
        except BaseException:
            owned.synced = False
            raise


async def keep_gateway_alive(
    state: SharedState,
    gateway_id: str,
    *,
    ttl_s: float = DEFAULT_GATEWAY_TTL_S,
    every_s: float | None = None,
) -> None:
    """Refresh ``gateway_id`` every ``every_s`` (default ``ttl_s / 3``) until cancelled.

    Outages are logged once and waited out; the first refresh after one rebuilds the
    gateway's stored sessions.
    """
    interval = every_s if every_s is not None else ttl_s / 3
    failing = False
    while True:
        try:
            await state.refresh_gateway(gateway_id, ttl_s)
        except SharedStateUnavailable as exc:
            if not failing:
                log.warning("gateway %s: shared state unavailable: %s", gateway_id, exc)
            failing = True
        except Exception:
            # Keep going: if this loop ended, the gateway's sessions would expire.
            log.exception("gateway %s: refresh failed", gateway_id)
            failing = True
        else:
            if failing:
                log.info("gateway %s: shared state reachable again", gateway_id)
            failing = False
        await asyncio.sleep(interval)
