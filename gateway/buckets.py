"""Token buckets: in this process, or in Redis shared by every gateway (one Lua script).

Also the small pieces every limiter uses: a :class:`Decision`, keys bounded in length, and
logging that says a thing once a minute rather than once a request.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("boardcast.limits")

Clock = Callable[[], float]

# Keys come from clients (user names, addresses): past this length they are hashed, so a
# stored key never grows with what a client sends.
_MAX_KEY_CHARS = 128


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


class RedisCircuit:
    """Whether Redis failed a moment ago: then limiters skip it for ``pause_seconds``.

    Without it, a Redis that hangs would add its whole timeout to every request.
    """

    def __init__(self, *, pause_seconds: float = 2.0, clock: Clock = time.monotonic) -> None:
        self.pause_seconds = pause_seconds
        self.clock = clock
        self._down_until = -math.inf

    def is_open(self) -> bool:
        """True while Redis is being skipped."""
        return self.clock() < self._down_until

    def trip(self) -> None:
        """Redis just failed: skip it for a while."""
        self._down_until = self.clock() + self.pause_seconds


class RedisOutage:
    """What a limiter does when Redis fails: allow or refuse, and say so once a minute."""

    def __init__(
        self,
        *,
        fail_open: bool,
        clock: Clock = time.monotonic,
        circuit: RedisCircuit | None = None,
    ) -> None:
        self.fail_open = fail_open
        self.circuit = circuit if circuit is not None else RedisCircuit(clock=clock)
        self._log = LogThrottle(60.0, clock=clock)

    @property
    def answer(self) -> Decision:
        """The configured answer while Redis is unavailable."""
        return ALLOWED if self.fail_open else Decision(False, 1.0)

    def skipping(self) -> bool:
        """True while Redis failed a moment ago (the caller answers without it)."""
        return self.circuit.is_open()

    def decide(self, name: str, exc: BaseException) -> Decision:
        """Log (at most once a minute per limiter) and answer the configured way."""
        self.report(name, exc)
        return self.answer

    def report(self, name: str, exc: BaseException) -> None:
        """Log a Redis failure of limiter ``name``, at most once a minute; skip Redis a while."""
        self.circuit.trip()
        held_back = self._log.ready(name)
        if held_back is not None:
            how = "allowing" if self.fail_open else "refusing"
            log.warning(
                "limit %s: Redis failed (%s: %s); %s meanwhile (%d more failures not logged)",
                *(name, type(exc).__name__, exc, how, held_back),
            )


REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


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
        if self.outage.skipping():
            return self.outage.answer
        try:
            allowed, retry = await self._script(
                keys=[self._key_prefix + bounded_key(key)],
                args=[repr(self.rate), repr(self.burst), repr(float(cost)), self._ttl_ms],
            )
        except REDIS_FAILURES as exc:
            return self.outage.decide(self.name, exc)
        return Decision(bool(allowed), float(retry))


class Unlimited(TokenBucket):
    """A limit that is turned off."""

    def __init__(self) -> None:
        super().__init__(rate=1.0, burst=1.0)

    async def take(self, key: str, cost: float = 1) -> Decision:
        """Always allowed."""
        return ALLOWED
