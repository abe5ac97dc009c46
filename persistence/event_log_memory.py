"""The event log in memory, for tests and ``BOARDCAST_STORE=memory``: lost with the process."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence

from persistence.event_log import LoggedEvent, NewEvent, Retention


class MemoryEventLog:
    """The event log as a list in this process (every host and worker of it share one)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._events: list[LoggedEvent] = []
        self._offsets: list[int] = []  # the events' offsets, for bisect
        self._by_id: dict[str, int] = {}
        self._consumers: dict[str, int] = {}
        self._last = 0
        self._lock = asyncio.Lock()

    async def append(self, events: Sequence[NewEvent]) -> int:
        """See :meth:`EventLog.append`."""
        async with self._lock:
            at = self._clock()
            last = self._last
            for event in events:
                known = self._by_id.get(event.id)
                if known is not None:
                    last = known
                    continue
                self._last += 1
                last = self._last
                self._by_id[event.id] = last
                self._offsets.append(last)
                self._events.append(
                    LoggedEvent(
                        last,
                        event.id,
                        event.board_id,
                        event.project,
                        event.type,
                        dict(event.data),
                        event.actor,
                        at,
                    )
                )
            return last

    async def read(self, after: int, limit: int) -> list[LoggedEvent]:
        """See :meth:`EventLog.read`."""
        start = bisect.bisect_right(self._offsets, after)
        return self._events[start : start + max(0, limit)]

    async def last_offset(self) -> int:
        """See :meth:`EventLog.last_offset`."""
        return self._last

    async def first_offset(self) -> int:
        """See :meth:`ManagedEventLog.first_offset`."""
        return self._offsets[0] if self._offsets else 0

    async def committed(self, consumer: str) -> int:
        """See :meth:`EventLog.committed`."""
        return self._consumers.get(consumer, 0)

    async def commit(self, consumer: str, offset: int) -> None:
        """See :meth:`EventLog.commit`."""
        self._consumers[consumer] = max(self._consumers.get(consumer, 0), offset)

    async def rewind(self, consumer: str, offset: int) -> None:
        """See :meth:`ManagedEventLog.rewind`."""
        self._consumers[consumer] = offset

    async def consumers(self) -> dict[str, int]:
        """See :meth:`ManagedEventLog.consumers`."""
        return dict(self._consumers)

    async def trim(self, retention: Retention, *, now: float) -> int:
        """See :meth:`ManagedEventLog.trim`."""
        if not self._consumers or not self._events:
            return 0
        floor = min(self._consumers.values())
        newest = self._last
        oldest_kept = now - retention.max_age_seconds
        gone = 0
        for event in self._events:
            if event.offset > floor or event.offset >= newest:
                break
            if event.at >= oldest_kept and event.offset > newest - retention.max_count:
                break
            gone += 1
        for event in self._events[:gone]:
            del self._by_id[event.id]
        del self._events[:gone]
        del self._offsets[:gone]
        return gone

    async def close(self) -> None:
        """Nothing to release."""
