"""How much one client may ask of a gateway: token buckets, open-socket counts, the client's IP.

The decisions here import no aiohttp (``gateway/limits_middleware.py`` applies them to requests),
so they are tested with an injected clock and plain strings. Each limiter has two
implementations: one in this process, and one in Redis when a Redis URL is configured (the
same URL as ``settings.redis``), which makes a limit hold across every gateway sharing it.
Every limit, its default and what a client gets past it is listed in docs/limits.md.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.client_address import client_ip, client_ip_from, ip_limit_key, trusted_networks

log = logging.getLogger("boardcast.limits")

__all__ = [
    "ALLOWED",
    "ConnectionCounter",
    "Decision",
    "GatewayLimits",
    "LimitsState",
    "LogThrottle",
    "MemoryConnectionCounter",
    "MemoryTokenBucket",
    "RedisConnectionCounter",
    "RedisTokenBucket",
    "TokenBucket",
    "check_login",
    "check_user",
    "client_ip",
    "client_ip_from",
    "ip_limit_key",
]

Clock = Callable[[], float]

# Keys come from clients (user names, addresses): past this length they are hashed, so a
# stored key never grows with what a client sends.
_MAX_KEY_CHARS = 128


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Every limit the gateway applies to its clients, with its default (docs/limits.md).

    Rates are per second unless named otherwise; a rate or a cap of 0 turns that limit off.
    """

    rest_per_ip_per_second: float = 20.0  # requests of one IP, past them 429 rate-limited
    rest_per_ip_burst: int = 100
    rest_per_user_per_second: float = 20.0  # requests of one signed-in user (check_user)
    rest_per_user_burst: int = 100
    ws_upgrades_per_ip_per_second: float = 2.0  # WebSocket upgrades of one IP; past them 429
    ws_upgrades_per_ip_burst: int = 30
    max_sockets_per_ip: int = 256  # open WebSockets of one IP; past it 429 before the upgrade
    max_sockets_per_user: int = 32  # open WebSockets of one user; past it close code 4430
    login_per_username_per_hour: float = 10.0  # slow brute force on one account
    login_per_username_burst: int = 10
    login_per_ip_per_hour: float = 100.0  # slow brute force from one address
    login_per_ip_burst: int = 30
    # From TCP accept (or the end of the previous response) to a complete request head,
    # WebSocket upgrade requests included; also how long an idle keep-alive connection stays.
    handshake_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 60.0  # to receive a request body in full; past it 408
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    max_forwarded_for_chars: int = 2048  # a longer X-Forwarded-For is ignored
    ipv6_prefix_length: int = 64  # IPv6 clients share limits per network of this size
    max_tracked_keys: int = 100_000  # buckets kept in process; least recently used dropped
    redis_fail_open: bool = True  # Redis down: allow requests and sockets (False: refuse)
    login_fail_open: bool = False  # Redis down: allow login attempts (False: refuse them)
    redis_timeout_seconds: float = 0.5  # one Redis call of a limiter
    socket_count_ttl_seconds: float = 30.0  # a dead gateway's socket counts vanish after this
    refusal_log_seconds: float = 60.0  # at most one log line per refused key in this time
    exempt_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{spec.name} must not be negative, got {value!r}")
        trusted_networks(self.trusted_proxies)  # a bad CIDR fails at start, with its text
        if not 0 < self.ipv6_prefix_length <= 128:
            raise ValueError("ipv6_prefix_length must be 1-128")
        for rate, burst in (
            ("rest_per_ip_per_second", "rest_per_ip_burst"),
            ("rest_per_user_per_second", "rest_per_user_burst"),
            ("ws_upgrades_per_ip_per_second", "ws_upgrades_per_ip_burst"),
            ("login_per_username_per_hour", "login_per_username_burst"),
            ("login_per_ip_per_hour", "login_per_ip_burst"),
        ):
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                raise ValueError(f"{burst} must be at least 1 while {rate} is on")


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may go ahead, and if not, when to try again."""

    allowed: bool
    retry_after_seconds: float = 0.0


ALLOWED = Decision(True, 0.0)


def bounded_key(key: str) -> str:
    """``key`` itself, or a digest of it when it is longer than a stored key may be."""
    if len(key) <= _MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class LogThrottle:
    """At most one log line per key per ``interval`` seconds, for a bounded number of keys."""

    def __init__(
        self, interval: float = 60.0, *, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def ready(self, key: str) -> int | None:
        """If a line may be logged now: how many were held back since the last one; else None."""
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return 0 if last is None else last[1]


# -- token buckets --------------------------------------------------------------------------


class TokenBucket(abc.ABC):
    """``burst`` tokens per key, refilled at ``rate`` per second; each request takes some.

    A refused request takes nothing, so a client that keeps retrying still gets ``rate``
    requests per second through.
    """

    def __init__(self, *, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)

    @abc.abstractmethod
    async def take(self, key: str, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, if it holds them."""

    async def close(self) -> None:  # noqa: B027 (most buckets hold nothing to release)
        """Release what the bucket holds open."""

    def _check_cost(self, cost: float) -> None:
        if not 0 < cost <= self.burst:
            raise ValueError(f"cost must be in (0, burst={self.burst}], got {cost!r}")


class MemoryTokenBucket(TokenBucket):
    """Buckets in this process, at most ``max_keys`` of them (least recently used dropped).

    A dropped bucket comes back full, as it would have been after ``burst / rate`` seconds.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_keys: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(rate=rate, burst=burst)
        self.max_keys = max(1, max_keys)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, if it holds them."""
        return self.take_now(key, cost)

    def take_now(self, key: str, cost: float = 1) -> Decision:
        """:meth:`take` without awaiting: the in-process bucket never waits."""
        self._check_cost(cost)
        key = bounded_key(key)
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        # A clock that went back (an injected one, or a restored state) refills nothing.
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= cost:
            decision = ALLOWED
            tokens -= cost
        else:
            decision = Decision(False, (cost - tokens) / self.rate)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return decision


# KEYS: the bucket. ARGV: rate per s, burst, cost, ttl ms. Returns {allowed, retry-after as text}.
# Redis's own clock, so gateways with skewed clocks share one bucket correctly.
_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate) end
local allowed, retry = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, tostring(retry)}
"""


class RedisOutage:
    """What a limiter does when Redis fails: allow or refuse, and say so once a minute."""

    def __init__(self, *, fail_open: bool, clock: Clock = time.monotonic) -> None:
        self.fail_open = fail_open
        self._log = LogThrottle(60.0, clock=clock)

    def decide(self, name: str, exc: BaseException) -> Decision:
        """Log (at most once a minute per limiter) and answer the configured way."""
        self.report(name, exc)
        return ALLOWED if self.fail_open else Decision(False, 1.0)

    def report(self, name: str, exc: BaseException) -> None:
        """Log a Redis failure of limiter ``name``, at most once a minute."""
        held_back = self._log.ready(name)
        if held_back is not None:
            how = "allowing" if self.fail_open else "refusing"
            log.warning(
                "limit %s: Redis failed (%s: %s); %s meanwhile (%d more failures not logged)",
                *(name, type(exc).__name__, exc, how, held_back),
            )


_REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisTokenBucket(TokenBucket):
    """Buckets in Redis, shared by every gateway using the same ``prefix``: one Lua script
    per take, so concurrent takes never overspend; a key expires once it would be full again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        *,
        rate: float,
        burst: float,
        prefix: str,
        outage: RedisOutage,
    ) -> None:
        super().__init__(rate=rate, burst=burst)
        self.name = name
        self.client = client
        self.outage = outage
        self._key_prefix = f"{prefix}limits:bucket:{name}:"
        self._ttl_ms = math.ceil(self.burst / rate * 1000) + 1000
        self._script = client.register_script(_TAKE)

    async def take(self, key: str, cost: float = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, if it holds them."""
        self._check_cost(cost)
        try:
            allowed, retry = await self._script(
                keys=[self._key_prefix + bounded_key(key)],
                args=[repr(self.rate), repr(self.burst), repr(float(cost)), self._ttl_ms],
            )
        except _REDIS_FAILURES as exc:
            return self.outage.decide(self.name, exc)
        return Decision(bool(allowed), float(retry))


# -- open-socket counts ---------------------------------------------------------------------


class ConnectionCounter(abc.ABC):
    """Open WebSockets per key (an IP, a user), at most ``limit`` at a time."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def held(self, key: str) -> int:
        """How many of ``key``'s sockets this gateway holds."""
        return self._held.get(bounded_key(key), 0)

    @abc.abstractmethod
    async def acquire(self, key: str) -> bool:
        """Count one more socket for ``key``; False (and nothing counted) if at the limit."""

    @abc.abstractmethod
    async def release(self, key: str) -> None:
        """Count one socket of ``key`` less (after a successful :meth:`acquire`)."""

    async def close(self) -> None:  # noqa: B027 (the in-process counter holds nothing)
        """Stop background work; counts held elsewhere expire on their own."""

    def _add(self, key: str, delta: int) -> int:
        count = self._held.get(key, 0) + delta
        if count > 0:
            self._held[key] = count
        else:
            self._held.pop(key, None)
        return max(0, count)


class MemoryConnectionCounter(ConnectionCounter):
    """Counts in this process: one gateway's sockets only."""

    async def acquire(self, key: str) -> bool:
        """Count one more socket for ``key``; False (and nothing counted) if at the limit."""
        key = bounded_key(key)
        if self._held.get(key, 0) >= self.limit:
            return False
        self._add(key, 1)
        return True

    async def release(self, key: str) -> None:
        """Count one socket of ``key`` less."""
        self._add(bounded_key(key), -1)


# Each gateway keeps its own count per key, with a TTL it renews while it lives; an index set
# names the gateways counting a key. A gateway that dies stops renewing: its counts expire.
# KEYS: the index. ARGV: count key head, count key tail, this gateway, limit, ttl ms.
_ACQUIRE = """
local head, tail, me, limit, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local total = 0
for _, g in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local n = tonumber(redis.call('GET', head .. g .. tail) or '0') or 0
  if n <= 0 then redis.call('SREM', KEYS[1], g) else total = total + n end
end
if total >= limit then return 0 end
local own = head .. me .. tail
redis.call('INCR', own)
redis.call('PEXPIRE', own, ttl)
redis.call('SADD', KEYS[1], me)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: this gateway's count, the index. ARGV: the count this gateway holds, this gateway, ttl ms.
_PUT_COUNT = """
if tonumber(ARGV[1]) <= 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
"""


class RedisConnectionCounter(ConnectionCounter):
    """Counts across every gateway sharing the Redis ``prefix``.

    This gateway's own counts are the truth it writes (on release and every ``ttl / 3``
    seconds), so a count lost to a Redis restart or a failed call is repaired within a TTL.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        *,
        limit: int,
        prefix: str,
        gateway_id: str,
        ttl_seconds: float,
        outage: RedisOutage,
    ) -> None:
        super().__init__(limit=limit)
        self.client = client
        self.name = name
        self.gateway_id = gateway_id
        self.outage = outage
        self.ttl_seconds = ttl_seconds
        self._ttl_ms = max(1000, round(ttl_seconds * 1000))
        self._head = f"{prefix}limits:sockets:{name}:"
        self._acquire = client.register_script(_ACQUIRE)
        self._put = client.register_script(_PUT_COUNT)
        self._renewal: asyncio.Task[None] | None = None

    def _index(self, key: str) -> str:
        return f"{self._head}gateways:{key}"

    def _own(self, key: str) -> str:
        # Gateway ids hold no ':', so "<gateway>:<key>" is unambiguous.
        return f"{self._head}count:{self.gateway_id}:{key}"

    async def acquire(self, key: str) -> bool:
        """Count one more socket for ``key`` across gateways; False if at the limit."""
        key = bounded_key(key)
        self._start_renewal()
        self._add(key, 1)  # counted first: a renewal meanwhile over-counts, never under
        try:
            allowed = await self._acquire(
                keys=[self._index(key)],
                args=[
                    *(f"{self._head}count:", f":{key}", self.gateway_id),
                    *(self.limit, self._ttl_ms),
                ],
            )
        except _REDIS_FAILURES as exc:
            allowed = self.outage.decide(f"{self.name} sockets", exc).allowed
        if not allowed:
            self._add(key, -1)
        return bool(allowed)

    async def release(self, key: str) -> None:
        """Count one socket of ``key`` less (written through at once)."""
        key = bounded_key(key)
        count = self._add(key, -1)
        await self._write(key, count)

    async def _write(self, key: str, count: int) -> None:
        try:
            await self._put(
                keys=[self._own(key), self._index(key)],
                args=[count, self.gateway_id, self._ttl_ms],
            )
        except _REDIS_FAILURES as exc:
            self.outage.report(f"{self.name} sockets", exc)

    def _start_renewal(self) -> None:
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            for key, count in list(self._held.items()):
                await self._write(key, count)

    async def close(self) -> None:
        """Stop renewing; this gateway's counts expire within the TTL."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None


# -- everything one gateway applies ---------------------------------------------------------


class Unlimited(TokenBucket):
    """A limit that is turned off."""

    def __init__(self) -> None:
        super().__init__(rate=1.0, burst=1.0)

    async def take(self, key: str, cost: float = 1) -> Decision:
        """Always allowed."""
        return ALLOWED


class UncappedCounter(ConnectionCounter):
    """A socket cap that is turned off."""

    async def acquire(self, key: str) -> bool:
        """Always allowed."""
        return True

    async def release(self, key: str) -> None:
        """Nothing to count."""


class LimitsState:
    """The limiters of one gateway: in process, or in Redis when ``redis_url`` is set.

    Built empty; :meth:`configure` creates the limiters from a :class:`GatewayLimits` (the
    middleware does it at the first request, from the app's ``LIMITS`` key or the defaults).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "boardcast:",
        limits: GatewayLimits | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        url = (redis_url or "").strip()
        self.redis_url = url if url not in {"", "memory"} else None
        self.prefix = prefix
        self.clock = clock
        self.gateway_id = uuid.uuid4().hex[:16]
        self.refusals = LogThrottle(clock=clock)
        self._client: aioredis.Redis | None = None
        self.limits: GatewayLimits | None = None
        if limits is not None:
            self.configure(limits)

    def configure(self, limits: GatewayLimits) -> None:
        """Create every limiter for ``limits`` (once; later calls with other limits refuse)."""
        if self.limits is not None:
            if limits != self.limits:
                raise RuntimeError("limits are configured already; make a new LimitsState")
            return
        self.refusals.interval = limits.refusal_log_seconds
        if self.redis_url is not None and self._client is None:
            timeout = limits.redis_timeout_seconds
            self._client = aioredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout
            )
        hour = 3600.0
        fail_open = limits.redis_fail_open
        self.rest_per_ip = self._bucket(
            "rest-ip", limits.rest_per_ip_per_second, limits.rest_per_ip_burst, limits, fail_open
        )
        self.rest_per_user = self._bucket(
            "rest-user",
            limits.rest_per_user_per_second,
            limits.rest_per_user_burst,
            limits,
            fail_open,
        )
        self.ws_upgrades_per_ip = self._bucket(
            "ws-ip",
            limits.ws_upgrades_per_ip_per_second,
            limits.ws_upgrades_per_ip_burst,
            limits,
            fail_open,
        )
        login = limits.login_fail_open
        self.login_per_username = self._bucket(
            "login-user",
            limits.login_per_username_per_hour / hour,
            limits.login_per_username_burst,
            limits,
            login,
        )
        self.login_per_ip = self._bucket(
            "login-ip",
            limits.login_per_ip_per_hour / hour,
            limits.login_per_ip_burst,
            limits,
            login,
        )
        self.sockets_per_ip = self._counter("ip", limits.max_sockets_per_ip, limits)
        self.sockets_per_user = self._counter("user", limits.max_sockets_per_user, limits)
        self.limits = limits

    def _bucket(
        self, name: str, rate: float, burst: int, limits: GatewayLimits, fail_open: bool
    ) -> TokenBucket:
        if rate <= 0:
            return Unlimited()
        if self._client is None:
            return MemoryTokenBucket(
                rate=rate, burst=burst, max_keys=limits.max_tracked_keys, clock=self.clock
            )
        outage = RedisOutage(fail_open=fail_open, clock=self.clock)
        return RedisTokenBucket(
            self._client, name, rate=rate, burst=burst, prefix=self.prefix, outage=outage
        )

    def _counter(self, name: str, limit: int, limits: GatewayLimits) -> ConnectionCounter:
        if limit <= 0:
            return UncappedCounter(limit=0)
        if self._client is None:
            return MemoryConnectionCounter(limit=limit)
        return RedisConnectionCounter(
            self._client,
            name,
            limit=limit,
            prefix=self.prefix,
            gateway_id=self.gateway_id,
            ttl_seconds=limits.socket_count_ttl_seconds,
            outage=RedisOutage(fail_open=limits.redis_fail_open, clock=self.clock),
        )

    def require(self) -> GatewayLimits:
        """The configured limits (the defaults, configured now, if none were)."""
        if self.limits is None:
            self.configure(GatewayLimits())
        assert self.limits is not None
        return self.limits

    async def close(self) -> None:
        """Stop the socket counts' renewal and close the Redis connection, if any."""
        if self.limits is not None:
            await self.sockets_per_ip.close()
            await self.sockets_per_user.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def check_user(limits_state: LimitsState, user_id: str) -> Decision:
    """One REST request of signed-in ``user_id`` (call it after authentication)."""
    limits_state.require()
    return await limits_state.rest_per_user.take(f"user:{user_id}")


async def check_login(limits_state: LimitsState, username: str, ip: str) -> Decision:
    """One login attempt for ``username`` from ``ip``: both budgets must allow it.

    Call it before checking the password, for every attempt (a success counts too: at the
    default 10 an hour per account, only someone guessing runs out).
    """
    limits = limits_state.require()
    by_ip = await limits_state.login_per_ip.take(ip_limit_key(ip, limits.ipv6_prefix_length))
    if not by_ip.allowed:
        return by_ip
    account = username.strip().casefold()
    return await limits_state.login_per_username.take(f"login:{account}")
