"""The worker runtime: each worker reads the event log from its committed offset, in batches.

Delivery is at least once: a batch is handed to :meth:`Worker.handle` and its offset committed
only after ``handle`` returns, so a crash in between delivers the batch again. ``handle`` must
therefore be idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from persistence.event_log import LoggedEvent


@runtime_checkable
class Worker(Protocol):
    """A consumer of the event log, named by its consumer name."""

    name: str  # its consumer name in the log

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        """Apply a batch of events, in offset order; idempotent (may see a batch again)."""
        ...
