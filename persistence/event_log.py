"""The deployment-wide event log: domain events made durable, read by workers in offset order.

Board hosts append each durable change's events (:class:`NewEvent`); the log gives every event
an offset, strictly increasing across the deployment, and keeps it until every consumer has
committed past it (and retention allows). Appending is idempotent on the event's ``id``
(``"<board_id>:<seq>:<n>"``), so a change delivered again after a crash appends nothing new.

Readers see events in offset order with no gaps that fill in later: an offset a reader has read
past is never assigned afterwards (see each backend for how).
"""

from __future__ import annotations

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


def event_id(board_id: str, seq: int, index: int) -> str:
    """The stable id of the ``index``-th event of stored update ``seq`` of ``board_id``."""
    return f"{board_id}:{seq}:{index}"
