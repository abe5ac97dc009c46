"""Shared state inside one process: one machine needs nothing else.

Several :class:`MemorySharedState` clients built on one :class:`MemoryData` see each other,
as gateways sharing one Redis do; tests use that to run several gateways in one process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.state import (
    OwnedSession,
    RateDecision,
    SessionInfo,
    SharedState,
    pack,
    require_positive,
    unpack,
)

#: Cached values one process keeps at most (oldest dropped first).
MAX_CACHED_VALUES = 10_000


@dataclass
class _StoredGateway:
    expires_at: float
    boards: dict[str, dict[str, bytes]] = field(default_factory=dict)  # board -> session -> info


class MemoryData:
    """The storage several :class:`MemorySharedState` clients in one process share."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Lose everything, as a restarted server without persistence would."""
        self.gateways: dict[str, _StoredGateway] = {}
        self.board_gateways: dict[str, set[str]] = {}
        # key -> (packed value or count, expiry on the monotonic clock)
        self.hosts: dict[str, tuple[bytes, float]] = {}
        self.counters: dict[str, tuple[int, float]] = {}
        self.tokens: dict[str, tuple[bytes, float]] = {}
        self.cache: dict[str, tuple[bytes, float]] = {}
        self.revoked: dict[str, float] = {}
        self.revocations_since = time.time()
        self._writes = 0

    def live_gateway(self, gateway_id: str) -> _StoredGateway | None:
        """The gateway's stored sessions, or None once its TTL lapsed."""
        stored = self.gateways.get(gateway_id)
        if stored is not None and stored.expires_at <= time.monotonic():
            self.remove_gateway(gateway_id)
            return None
        return stored

    def remove_gateway(self, gateway_id: str) -> None:
        """Drop a gateway and its entries in the board index."""
        stored = self.gateways.pop(gateway_id, None)
        for board_id in stored.boards if stored is not None else ():
            self.unindex(board_id, gateway_id)

    def unindex(self, board_id: str, gateway_id: str) -> None:
        """The gateway has no more sessions on the board."""
        gateways = self.board_gateways.get(board_id)
        if gateways is not None:
            gateways.discard(gateway_id)
            if not gateways:
                del self.board_gateways[board_id]

    def wrote(self) -> None:
        """Count a write; now and then drop expired entries, which reads skip anyway."""
        self._writes += 1
        if self._writes % 1024:
            return
        now = time.monotonic()
        for table in (self.hosts, self.counters, self.tokens, self.cache):
            for key in [key for key, (_, until) in table.items() if until <= now]:
                del table[key]
        for key in [key for key, until in self.revoked.items() if until <= now]:
            del self.revoked[key]
        for gateway_id in list(self.gateways):
            self.live_gateway(gateway_id)


def _fresh(entry: tuple[Any, float] | None) -> Any:
    return entry[0] if entry is not None and entry[1] > time.monotonic() else None


class MemorySharedState(SharedState):
    """Shared state inside one process; clients built on the same ``data`` see each other.

    The methods behave as :class:`SharedState` documents them.
    """

    def __init__(self, data: MemoryData | None = None) -> None:
        super().__init__()
        self.data = data if data is not None else MemoryData()

    async def board_sessions(self, board_id: str) -> list[SessionInfo]:
        found = []
        for gateway_id in sorted(self.data.board_gateways.get(board_id, ())):
            stored = self.data.live_gateway(gateway_id)
            sessions = stored.boards.get(board_id, {}) if stored is not None else {}
            found += [
                SessionInfo(gateway_id, board_id, session_id, unpack(info))
                for session_id, info in sorted(sessions.items())
            ]
        return found

    async def gateway_sessions(self, gateway_id: str) -> list[SessionInfo]:
        stored = self.data.live_gateway(gateway_id)
        return [
            SessionInfo(gateway_id, board_id, session_id, unpack(info))
            for board_id, sessions in sorted(stored.boards.items() if stored is not None else ())
            for session_id, info in sorted(sessions.items())
        ]

    async def live_gateways(self) -> list[str]:
        return sorted(g for g in list(self.data.gateways) if self.data.live_gateway(g) is not None)

    async def cache_board_host(self, board_id: str, host_name: str, ttl_s: float) -> None:
        require_positive("ttl_s", ttl_s)
        self.data.hosts[board_id] = (pack(host_name), time.monotonic() + ttl_s)
        self.data.wrote()

    async def cached_board_host(self, board_id: str) -> str | None:
        packed = _fresh(self.data.hosts.get(board_id))
        return None if packed is None else str(unpack(packed))

    async def forget_board_host(self, board_id: str, *, host_name: str | None = None) -> None:
        if host_name is None or await self.cached_board_host(board_id) == host_name:
            self.data.hosts.pop(board_id, None)

    async def hit(self, key: str, *, limit: int, window_s: float) -> RateDecision:
        require_positive("limit", limit)
        require_positive("window_s", window_s)
        now = time.monotonic()
        count, until = self.data.counters.get(key, (0, now))
        if until <= now:
            count, until = 0, now + window_s
        count += 1
        self.data.counters[key] = (count, until)
        self.data.wrote()
        return RateDecision(count <= limit, max(0, limit - count), until - now)

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        require_positive("ttl_s", ttl_s)
        cache = self.data.cache
        cache.pop(key, None)
        cache[key] = (bytes(value), time.monotonic() + ttl_s)
        while len(cache) > MAX_CACHED_VALUES:
            del cache[next(iter(cache))]  # the oldest written
        self.data.wrote()

    async def cache_get(self, key: str) -> bytes | None:
        value = _fresh(self.data.cache.get(key))
        return value if isinstance(value, bytes) else None

    async def put_token(self, token_id: str, data: Mapping[str, Any], ttl_s: float) -> None:
        require_positive("ttl_s", ttl_s)
        self.data.tokens[token_id] = (pack(dict(data)), time.monotonic() + ttl_s)
        self.data.wrote()

    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        packed = _fresh(self.data.tokens.get(token_id))
        return None if packed is None else dict(unpack(packed))

    async def pop_token(self, token_id: str) -> dict[str, Any] | None:
        packed = _fresh(self.data.tokens.pop(token_id, None))
        return None if packed is None else dict(unpack(packed))

    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        require_positive("ttl_s", ttl_s)
        self.data.revoked[token_id] = time.monotonic() + ttl_s
        self.data.tokens.pop(token_id, None)
        self.data.wrote()

    async def is_revoked(self, token_id: str, *, issued_at: float | None = None) -> bool:
        if self.data.revoked.get(token_id, 0.0) > time.monotonic():
            return True
        return issued_at is not None and issued_at < self.data.revocations_since

    async def close(self) -> None:
        pass  # the data stays for the other clients on it

    async def _put_session(
        self, gateway_id: str, board_id: str, session_id: str, info: bytes, ttl_s: float
    ) -> None:
        stored = self.data.live_gateway(gateway_id)
        if stored is None:
            # Its TTL lapsed while the owner was away: the next refresh writes everything again.
            stored = self.data.gateways[gateway_id] = _StoredGateway(time.monotonic() + ttl_s)
        stored.boards.setdefault(board_id, {})[session_id] = info
        self.data.board_gateways.setdefault(board_id, set()).add(gateway_id)

    async def _delete_session(self, gateway_id: str, board_id: str, session_id: str) -> None:
        stored = self.data.live_gateway(gateway_id)
        sessions = stored.boards.get(board_id) if stored is not None else None
        if stored is None or sessions is None:
            return
        sessions.pop(session_id, None)
        if not sessions:
            del stored.boards[board_id]
            self.data.unindex(board_id, gateway_id)

    async def _touch_gateway(self, gateway_id: str, ttl_s: float) -> int:
        stored = self.data.live_gateway(gateway_id)
        if stored is None:
            stored = self.data.gateways[gateway_id] = _StoredGateway(0.0)
        stored.expires_at = time.monotonic() + ttl_s
        return sum(len(sessions) for sessions in stored.boards.values())

    async def _replace_gateway(
        self,
        gateway_id: str,
        sessions: Mapping[str, OwnedSession],
        ttl_s: float,
        *,
        live: bool,
    ) -> None:
        self.data.remove_gateway(gateway_id)
        if not live:
            return
        stored = self.data.gateways[gateway_id] = _StoredGateway(time.monotonic() + ttl_s)
        for session_id, (board_id, info) in sessions.items():
            stored.boards.setdefault(board_id, {})[session_id] = info
            self.data.board_gateways.setdefault(board_id, set()).add(gateway_id)
