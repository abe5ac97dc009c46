"""A cache of read-model query answers, shared between gateways, invalidated by writes.

Answers are kept in the shared state (Redis when configured, in process otherwise)
for ``ttl`` seconds, each with the read model's *generation* when it was computed.
The generation moves with every write to the read model, and those writes are what
the board hosts make of committed domain events, so a cached answer is served only
while nothing has changed since: never a value older than the read model itself.
Checking the generation is one small read; the saving is the query.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from persistence.read_model import TaskIndex
from shared.state import SharedState, pack, unpack

log = logging.getLogger("boardcast.rest")


@dataclass
class CacheStats:
    """What the cache has done since the process started."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class QueryCache:
    """Cached JSON answers of read-model queries."""

    def __init__(self, shared: SharedState, index: TaskIndex, *, ttl: float) -> None:
        self.shared = shared
        self.index = index
        self.ttl = ttl
        self.stats = CacheStats()

    async def answer(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        """The answer for ``key`` (from the cache if still good) and whether it was a hit."""
        generation = await self.index.generation()
        name = "query:" + hashlib.sha256(key.encode()).hexdigest()
        try:
            cached = await self.shared.cache_get(name)
        except Exception as exc:  # the cache is an optimisation: answer without it
            log.warning("query cache unavailable: %s", exc)
            cached = None
        if cached is not None:
            entry = unpack(cached)
            if isinstance(entry, list) and len(entry) == 2 and entry[0] == generation:
                self.stats.hits += 1
                body: bytes = entry[1]
                return body, True
        self.stats.misses += 1
        body = await compute()
        try:
            await self.shared.cache_put(name, pack([generation, body]), self.ttl)
        except Exception as exc:
            log.warning("query cache unavailable: %s", exc)
        return body, False
