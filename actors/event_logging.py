"""What a board host appends to the event log: each durable update's domain events.

Pure helpers and one small retrying writer, kept out of :mod:`actors.host` so the host only
calls them. An event's id is ``"<board_id>:<seq>:<n>"`` (the stored update's seq, the event's
index among that update's events), so live delivery and redelivery after a crash append the
same ids, and the log keeps each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from crdt.board import Board
from crdt.events import PROJECT_DOC_PREFIX, DomainEvent
from persistence.event_log import EventLog, NewEvent, event_id
from persistence.store import BoardStore

log = logging.getLogger("boardcast.events")


def logged_events(
    board_id: str, project: str, seq: int, origin: str | None, events: Sequence[DomainEvent]
) -> list[NewEvent]:
    """The log's records of the events stored update ``seq`` yielded, in order."""
    records: list[NewEvent] = []
    for index, event in enumerate(events):
        data = event.to_dict()
        kind = str(data.pop("kind"))
        data.pop("board_id", None)
        records.append(
            NewEvent(event_id(board_id, seq, index), board_id, project, kind, data, origin)
        )
    return records


def project_of(board_id: str, doc: Any) -> str:
    """The project a board belongs to (its ``meta.project``; a project document's own id)."""
    if board_id.startswith(PROJECT_DOC_PREFIX):
        return board_id.removeprefix(PROJECT_DOC_PREFIX)
    if doc is None:
        return ""
    with contextlib.suppress(Exception):
        return Board(doc).get_meta().project
    return ""


class EventAppender:
    """Appends to the log, retrying with backoff until the log takes the events.

    A host calls it before it counts a change as delivered, so a snapshot never covers an
    event the log lacks; while the log refuses, commits wait (as they do for the store).
    """

    def __init__(
        self, event_log: EventLog, *, retry_seconds: float = 0.5, retry_max_seconds: float = 5.0
    ) -> None:
        self.event_log = event_log
        self._retry_seconds = retry_seconds
        self._retry_max_seconds = retry_max_seconds

    @classmethod
    def for_store(
        cls, store: BoardStore, *, retry_seconds: float = 0.5, retry_max_seconds: float = 5.0
    ) -> EventAppender | None:
        """The appender for the log beside ``store``; None if that store has no log."""
        from persistence.event_log_factory import event_log_for

        try:
            event_log = event_log_for(store)
        except NotImplementedError:
            return None
        return cls(event_log, retry_seconds=retry_seconds, retry_max_seconds=retry_max_seconds)

    async def append(self, events: Sequence[NewEvent]) -> None:
        """Append ``events``; returns once they are in the log."""
        if not events:
            return
        delay = self._retry_seconds
        while True:
            try:
                await self.event_log.append(events)
                return
            except Exception as exc:
                log.warning("event log append failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_seconds)
