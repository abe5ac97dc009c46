"""The deployment-wide event log: domain events made durable, read by workers in offset order.

Board hosts append each durable change's events (:class:`NewEvent`); the log gives every event
an offset, strictly increasing across the deployment, and keeps it until every consumer has
committed past it (and retention allows). Appending is idempotent on the event's ``id``
(``"<board_id>:<seq>:<n>"``), so a change delivered again after a crash appends nothing new.

Readers see events in offset order with no gaps that fill in later: an offset a reader has read
past is never assigned afterwards (see each backend for how).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the log assigns its offset and its ``at`` time."""

    id: str  # "<board_id>:<seq>:<n>": the stored update's seq, the event's index in it
    board_id: str
    project: str  # "" when the board has none
    type: str  # the event's kind, e.g. "task.created"
    data: dict[str, Any]  # the event's fields (DomainEvent.to_dict() minus "kind")
    actor: str | None  # who made the change (the update's origin), if known


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as the log holds it."""

    offset: int  # position in the deployment-wide log, strictly increasing
    id: str  # stable across redelivery: "<board_id>:<seq>:<n>"
    board_id: str
    project: str  # "" when the board has none
    type: str  # the event's kind, e.g. "task.created"
    data: dict[str, Any]  # the event's fields (DomainEvent.to_dict() minus "kind")
    actor: str | None  # who made the change (the update's origin), if known
    at: float  # unix seconds when the event was appended


@runtime_checkable
class EventLog(Protocol):
    """A durable, ordered, idempotent log of events with per-consumer committed offsets."""

    async def append(self, events: Sequence[NewEvent]) -> int:
        """Append the events not already logged (by id), in order; return the last offset.

        The offset returned is that of the last of ``events`` (whether appended now or
        before), or :meth:`last_offset` when ``events`` is empty.
        """
        ...

    async def read(self, after: int, limit: int) -> list[LoggedEvent]:
        """Up to ``limit`` events with offset > ``after``, in offset order."""
        ...

    async def last_offset(self) -> int:
        """The highest offset a reader can see (0 when the log is empty)."""
        ...

    async def committed(self, consumer: str) -> int:
        """The offset ``consumer`` has committed (everything up to it handled); 0 if never."""
        ...

    async def commit(self, consumer: str, offset: int) -> None:
        """Record that ``consumer`` has handled everything up to ``offset`` (never moves back)."""
        ...


class ManagedEventLog(EventLog, Protocol):
    """What the runtime, retention and tools need besides :class:`EventLog`."""

    async def consumers(self) -> dict[str, int]:
        """Every consumer that ever committed, with its committed offset."""
        ...

    async def first_offset(self) -> int:
        """The oldest offset still kept (0 when the log is empty)."""
        ...

    async def rewind(self, consumer: str, offset: int) -> None:
        """Set ``consumer``'s committed offset to ``offset``, backwards too (a replay)."""
        ...

    async def trim(self, retention: Retention, *, now: float) -> int:
        """Drop what ``retention`` lets go (see :class:`Retention`); return how many went."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


def event_id(board_id: str, seq: int, index: int) -> str:
    """The stable id of the ``index``-th event of stored update ``seq`` of ``board_id``."""
    return f"{board_id}:{seq}:{index}"


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of the log is kept once every consumer has committed past it.

    An event goes when every known consumer has committed its offset and it is older than
    ``max_age_seconds`` or more than ``max_count`` events behind the newest. The newest event
    always stays (its offset is where the next one continues).
    """

    max_age_seconds: float = 7 * 24 * 3600.0
    max_count: int = 1_000_000


class DataCodec(Protocol):
    """How an event's ``data`` is stored: plain JSON, or sealed (encryption at rest)."""

    def encode(self, event: NewEvent) -> bytes:
        """The stored bytes of ``event.data``."""
        ...

    def decode(self, blob: bytes, board_id: str, event_id: str) -> dict[str, Any]:
        """``data`` back from what :meth:`encode` stored."""
        ...


class PlainCodec:
    """``data`` as compact JSON."""

    def encode(self, event: NewEvent) -> bytes:
        """See :meth:`DataCodec.encode`."""
        return json.dumps(event.data, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, blob: bytes, board_id: str, event_id: str) -> dict[str, Any]:
        """See :meth:`DataCodec.decode`."""
        value = json.loads(bytes(blob))
        if not isinstance(value, dict):
            raise ValueError(f"event {event_id}: stored data is not an object")
        return value
