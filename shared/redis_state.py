"""Shared state in Redis (``redis.asyncio``); values are msgpack.

Keys, after the prefix (``boardcast:``)::

    gateways                  zset  gateway id -> expiry (ms, Redis clock)
    gateway-boards:{g}        set   boards where gateway g has sessions            TTL of g
    sessions:{g}:{b}          hash  session id -> info, g's sessions on board b    TTL of g
    board-gateways:{b}        set   gateways that may have sessions on b (a hint)  longest TTL
    board-host:{b}            board b's cached host                                TTL given
    rate:{key}                a fixed-window counter                               the window
    token:{t}, revoked:{t}    a stored token, a revocation                         TTL given
    revocation-epoch          when the revocation list began (ms, Redis clock)

A dead gateway's keys expire with its TTL, so its sessions vanish without anyone cleaning up;
the hint sets are pruned when read. Every multi-key change is one Lua script, hence atomic.
Scripts build key names from the prefix, so this needs one Redis (or a Sentinel-managed
primary), not Redis Cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.state import (
    DEFAULT_PREFIX,
    OwnedSession,
    RateDecision,
    SessionInfo,
    SharedState,
    SharedStateUnavailable,
    pack,
    require_positive,
    unpack,
)

# Every script starts with ARGV[1] = key prefix and ARGV[2] = a gateway or board id.
_COMMON = """
local p = ARGV[1]
local function sessions_key(g, b) return p .. 'sessions:' .. g .. ':' .. b end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Several gateways extend a board's hint set: never shorten what another one set.
local function extend(key, ttl)
  if redis.call('PEXPIRE', key, ttl, 'NX') == 0 then redis.call('PEXPIRE', key, ttl, 'GT') end
end
local function index(g, b, ttl)
  redis.call('SADD', p .. 'gateway-boards:' .. g, b)
  local hint = p .. 'board-gateways:' .. b
  redis.call('SADD', hint, g)
  extend(hint, ttl)
end
"""

# ARGV: p, g, b, session id, info, ttl ms
_PUT_SESSION = """
local g, b, ttl = ARGV[2], ARGV[3], ARGV[6]
redis.call('HSET', sessions_key(g, b), ARGV[4], ARGV[5])
redis.call('PEXPIRE', sessions_key(g, b), ttl)
index(g, b, ttl)
redis.call('PEXPIRE', p .. 'gateway-boards:' .. g, ttl)
"""

# ARGV: p, g, b, session id
_DELETE_SESSION = """
local g, b = ARGV[2], ARGV[3]
redis.call('HDEL', sessions_key(g, b), ARGV[4])
if redis.call('EXISTS', sessions_key(g, b)) == 0 then
  redis.call('SREM', p .. 'gateway-boards:' .. g, b)
  redis.call('SREM', p .. 'board-gateways:' .. b, g)
end
"""

# ARGV: p, g, ttl ms. Returns the number of sessions stored for g.
_TOUCH_GATEWAY = """
local g, ttl = ARGV[2], ARGV[3]
local now = now_ms()
redis.call('ZADD', p .. 'gateways', now + ttl, g)
redis.call('ZREMRANGEBYSCORE', p .. 'gateways', '-inf', now)
redis.call('SET', p .. 'revocation-epoch', now, 'NX')
local boards = p .. 'gateway-boards:' .. g
local total = 0
for _, b in ipairs(redis.call('SMEMBERS', boards)) do
  local n = redis.call('HLEN', sessions_key(g, b))
  if n == 0 then
    redis.call('SREM', boards, b)
  else
    total = total + n
    redis.call('PEXPIRE', sessions_key(g, b), ttl)
    local hint = p .. 'board-gateways:' .. b
    redis.call('SADD', hint, g)
    extend(hint, ttl)
  end
end
redis.call('PEXPIRE', boards, ttl)
return total
"""

# ARGV: p, g, ttl ms, live ('1' or '0'), then (board, session id, info) triples.
_REPLACE_GATEWAY = """
local g, ttl = ARGV[2], ARGV[3]
local boards = p .. 'gateway-boards:' .. g
for _, b in ipairs(redis.call('SMEMBERS', boards)) do
  redis.call('DEL', sessions_key(g, b))
  redis.call('SREM', p .. 'board-gateways:' .. b, g)
end
redis.call('DEL', boards)
if ARGV[4] == '0' then
  redis.call('ZREM', p .. 'gateways', g)
  return 0
end
local now = now_ms()
redis.call('ZADD', p .. 'gateways', now + ttl, g)
redis.call('SET', p .. 'revocation-epoch', now, 'NX')
local written = {}
for i = 5, #ARGV, 3 do
  redis.call('HSET', sessions_key(g, ARGV[i]), ARGV[i + 1], ARGV[i + 2])
  written[ARGV[i]] = true
end
for b in pairs(written) do
  redis.call('PEXPIRE', sessions_key(g, b), ttl)
  index(g, b, ttl)
end
redis.call('PEXPIRE', boards, ttl)
return 0
"""

# ARGV: p, b. Returns {g, {session id, info, ...}, ...}; prunes gateways without sessions.
_BOARD_SESSIONS = """
local b = ARGV[2]
local hint = p .. 'board-gateways:' .. b
local found = {}
for _, g in ipairs(redis.call('SMEMBERS', hint)) do
  local entries = redis.call('HGETALL', sessions_key(g, b))
  if #entries == 0 then
    redis.call('SREM', hint, g)
  else
    found[#found + 1] = g
    found[#found + 1] = entries
  end
end
return found
"""

# ARGV: p, g. Returns {b, {session id, info, ...}, ...}.
_GATEWAY_SESSIONS = """
local g = ARGV[2]
local found = {}
for _, b in ipairs(redis.call('SMEMBERS', p .. 'gateway-boards:' .. g)) do
  local entries = redis.call('HGETALL', sessions_key(g, b))
  if #entries > 0 then
    found[#found + 1] = b
    found[#found + 1] = entries
  end
end
return found
"""

# ARGV: p
_LIVE_GATEWAYS = """
return redis.call('ZRANGE', p .. 'gateways', '(' .. now_ms(), '+inf', 'BYSCORE')
"""

# KEYS: counter. ARGV: window ms. Returns {count, ms until the window ends}.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""

# KEYS: token, revocation-epoch. ARGV: data, ttl ms.
_PUT_TOKEN = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
redis.call('SET', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 'NX')
"""

# KEYS: revoked, token, revocation-epoch. ARGV: ttl ms.
_REVOKE_TOKEN = """
redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
redis.call('DEL', KEYS[2])
local t = redis.call('TIME')
redis.call('SET', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 'NX')
"""

# KEYS: revoked, revocation-epoch. ARGV: issued at (ms) or ''. Returns 1 if revoked.
_IS_REVOKED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if ARGV[1] == '' then return 0 end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  -- The list is empty since the server started: it is complete from now on.
  local t = redis.call('TIME')
  epoch = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[2], epoch)
end
if tonumber(ARGV[1]) < tonumber(epoch) then return 1 end
return 0
"""

# KEYS: cached host. ARGV: the packed host it must still name.
_FORGET_HOST_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise SharedStateUnavailable(f"redis: {exc}") from exc


def _decode(packed: bytes | str) -> Any:
    # The client is built without decode_responses: values arrive as bytes.
    assert isinstance(packed, bytes)
    return unpack(packed)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(entries: list[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    for index in range(0, len(entries), 2):
        yield _text(entries[index]), dict(unpack(entries[index + 1]))


class RedisSharedState(SharedState):
    """Shared state in one Redis server; every process of a deployment uses the same prefix.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``).
        prefix: prepended to every key.
        timeout_s: how long one command may take before the call fails with
            :class:`SharedStateUnavailable`. A refused or broken connection is retried twice
            within about 0.1 s first.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 2.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # A connection broken by a server restart is replaced at once by a retry. A timeout
            # is not retried: the command may have run (an INCR would count twice), and a server
            # that hangs once mostly hangs again.
            retry=Retry(
                ExponentialBackoff(cap=0.2, base=0.02),
                retries=2,
                supported_errors=(RedisConnectionError,),
            ),
        )

        def script(body: str) -> AsyncScript:
            return self.redis.register_script(_COMMON + body)

        self._put_session_script = script(_PUT_SESSION)
        self._delete_session_script = script(_DELETE_SESSION)
        self._touch_script = script(_TOUCH_GATEWAY)
        self._replace_script = script(_REPLACE_GATEWAY)
        self._board_sessions_script = script(_BOARD_SESSIONS)
        self._gateway_sessions_script = script(_GATEWAY_SESSIONS)
        self._live_script = script(_LIVE_GATEWAYS)
        self._hit_script = self.redis.register_script(_HIT)
        self._put_token_script = self.redis.register_script(_PUT_TOKEN)
        self._revoke_script = self.redis.register_script(_REVOKE_TOKEN)
        self._is_revoked_script = self.redis.register_script(_IS_REVOKED)
        self._forget_host_script = self.redis.register_script(_FORGET_HOST_IF)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    async def board_sessions(self, board_id: str) -> list[SessionInfo]:
        """Every session on ``board_id``, across all live gateways."""
        with _translate_errors():
            found = await self._board_sessions_script(args=[self.prefix, board_id])
        sessions = []
        for index in range(0, len(found), 2):
            gateway_id = _text(found[index])
            for session_id, info in _pairs(found[index + 1]):
                sessions.append(SessionInfo(gateway_id, board_id, session_id, info))
        return sorted(sessions, key=lambda s: (s.gateway_id, s.session_id))

    async def gateway_sessions(self, gateway_id: str) -> list[SessionInfo]:
        """Every stored session of ``gateway_id`` (none once it is dead)."""
        with _translate_errors():
            found = await self._gateway_sessions_script(args=[self.prefix, gateway_id])
        sessions = []
        for index in range(0, len(found), 2):
            board_id = _text(found[index])
            for session_id, info in _pairs(found[index + 1]):
                sessions.append(SessionInfo(gateway_id, board_id, session_id, info))
        return sorted(sessions, key=lambda s: (s.board_id, s.session_id))

    async def live_gateways(self) -> list[str]:
        """Ids of the gateways whose last refresh has not lapsed, sorted."""
        with _translate_errors():
            found = await self._live_script(args=[self.prefix])
        return sorted(_text(gateway_id) for gateway_id in found)

    async def cache_board_host(self, board_id: str, host_name: str, ttl_s: float) -> None:
        """Remember for ``ttl_s`` seconds that ``board_id`` lives on ``host_name``."""
        require_positive("ttl_s", ttl_s)
        with _translate_errors():
            await self.redis.set(self._key("board-host", board_id), pack(host_name), px=_ms(ttl_s))

    async def cached_board_host(self, board_id: str) -> str | None:
        """The cached host of ``board_id``, or None."""
        with _translate_errors():
            packed = await self.redis.get(self._key("board-host", board_id))
        return None if packed is None else str(_decode(packed))

    async def forget_board_host(self, board_id: str, *, host_name: str | None = None) -> None:
        """Drop the cached host of ``board_id`` (only if it is ``host_name``, when given)."""
        key = self._key("board-host", board_id)
        with _translate_errors():
            if host_name is None:
                await self.redis.delete(key)
            else:
                await self._forget_host_script(keys=[key], args=[pack(host_name)])

    async def hit(self, key: str, *, limit: int, window_s: float) -> RateDecision:
        """Count one hit on ``key``: at most ``limit`` are allowed per ``window_s`` window."""
        require_positive("limit", limit)
        require_positive("window_s", window_s)
        with _translate_errors():
            count, left_ms = await self._hit_script(
                keys=[self._key("rate", key)], args=[_ms(window_s)]
            )
        return RateDecision(count <= limit, max(0, limit - count), left_ms / 1000)

    async def cache_put(self, key: str, value: bytes, ttl_s: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds."""
        require_positive("ttl_s", ttl_s)
        with _translate_errors():
            await self.redis.set(self._key("cache", key), bytes(value), px=_ms(ttl_s))

    async def cache_get(self, key: str) -> bytes | None:
        """The cached value, or None if unknown or expired."""
        with _translate_errors():
            value = await self.redis.get(self._key("cache", key))
        # The client is built without decode_responses: values arrive as bytes.
        return value if isinstance(value, bytes) else None

    async def put_token(self, token_id: str, data: Mapping[str, Any], ttl_s: float) -> None:
        """Store ``data`` under ``token_id`` for ``ttl_s`` seconds."""
        require_positive("ttl_s", ttl_s)
        keys = [self._key("token", token_id), self.prefix + "revocation-epoch"]
        with _translate_errors():
            await self._put_token_script(keys=keys, args=[pack(dict(data)), _ms(ttl_s)])

    async def get_token(self, token_id: str) -> dict[str, Any] | None:
        """The data of a stored token, or None if unknown, expired, used or revoked."""
        with _translate_errors():
            packed = await self.redis.get(self._key("token", token_id))
        return None if packed is None else dict(_decode(packed))

    async def pop_token(self, token_id: str) -> dict[str, Any] | None:
        """Take a token once: exactly one of any number of concurrent callers gets its data."""
        with _translate_errors():
            packed = await self.redis.getdel(self._key("token", token_id))
        return None if packed is None else dict(_decode(packed))

    async def revoke_token(self, token_id: str, ttl_s: float) -> None:
        """Mark ``token_id`` revoked for ``ttl_s`` seconds (its remaining lifetime); drop it."""
        require_positive("ttl_s", ttl_s)
        keys = [
            self._key("revoked", token_id),
            self._key("token", token_id),
            self.prefix + "revocation-epoch",
        ]
        with _translate_errors():
            await self._revoke_script(keys=keys, args=[_ms(ttl_s)])

    async def is_revoked(self, token_id: str, *, issued_at: float | None = None) -> bool:
        """Whether ``token_id`` is revoked, or was issued before the revocation list began."""
        keys = [self._key("revoked", token_id), self.prefix + "revocation-epoch"]
        issued = "" if issued_at is None else str(int(issued_at * 1000))
        with _translate_errors():
            revoked = await self._is_revoked_script(keys=keys, args=[issued])
        return bool(revoked)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def _put_session(
        self, gateway_id: str, board_id: str, session_id: str, info: bytes, ttl_s: float
    ) -> None:
        args: list[str | bytes | int] = [self.prefix, gateway_id, board_id, session_id, info]
        args.append(_ms(ttl_s))
        with _translate_errors():
            await self._put_session_script(args=args)

    async def _delete_session(self, gateway_id: str, board_id: str, session_id: str) -> None:
        with _translate_errors():
            await self._delete_session_script(args=[self.prefix, gateway_id, board_id, session_id])

    async def _touch_gateway(self, gateway_id: str, ttl_s: float) -> int:
        with _translate_errors():
            stored = await self._touch_script(args=[self.prefix, gateway_id, _ms(ttl_s)])
        return int(stored)

    async def _replace_gateway(
        self,
        gateway_id: str,
        sessions: Mapping[str, OwnedSession],
        ttl_s: float,
        *,
        live: bool,
    ) -> None:
        args: list[str | int | bytes] = [self.prefix, gateway_id, _ms(ttl_s), "1" if live else "0"]
        for session_id, (board_id, info) in sessions.items():
            args += [board_id, session_id, info]
        with _translate_errors():
            await self._replace_script(args=args)
