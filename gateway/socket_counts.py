"""Open WebSockets per key (an address, a user): in this process, or across gateways in Redis.

In Redis each gateway keeps its own count per key and renews it while it lives, so the
counts of a gateway that died expire on their own.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib

import redis.asyncio as aioredis

from gateway.buckets import REDIS_FAILURES, RedisOutage, bounded_key


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
        # Keys whose count Redis may have wrong (a write failed or was skipped); written
        # again by the renewal, even when this gateway's count fell to 0.
        self._unwritten: set[str] = set()

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
        if self.outage.skipping():
            allowed = self.outage.answer.allowed
            if allowed:
                self._unwritten.add(key)
            else:
                self._add(key, -1)
            return allowed
        try:
            allowed = await self._acquire(
                keys=[self._index(key)],
                args=[
                    *(f"{self._head}count:", f":{key}", self.gateway_id),
                    *(self.limit, self._ttl_ms),
                ],
            )
        except REDIS_FAILURES as exc:
            allowed = self.outage.decide(f"{self.name} sockets", exc).allowed
            self._unwritten.add(key)
        if not allowed:
            self._add(key, -1)
        return bool(allowed)

    async def release(self, key: str) -> None:
        """Count one socket of ``key`` less (written through at once)."""
        key = bounded_key(key)
        count = self._add(key, -1)
        await self._write(key, count)

    async def _write(self, key: str, count: int) -> None:
        if self.outage.skipping():
            self._unwritten.add(key)  # the renewal writes it once Redis answers again
            return
        try:
            await self._put(
                keys=[self._own(key), self._index(key)],
                args=[count, self.gateway_id, self._ttl_ms],
            )
        except REDIS_FAILURES as exc:
            self._unwritten.add(key)
            self.outage.report(f"{self.name} sockets", exc)
        else:
            self._unwritten.discard(key)

    def _start_renewal(self) -> None:
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_seconds / 3)
            for key in set(self._held) | self._unwritten:
                await self._write(key, self._held.get(key, 0))

    async def close(self) -> None:
        """Stop renewing; this gateway's counts expire within the TTL."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None


class UncappedCounter(ConnectionCounter):
    """A socket cap that is turned off."""

    async def acquire(self, key: str) -> bool:
        """Always allowed."""
        return True

    async def release(self, key: str) -> None:
        """Nothing to count."""
