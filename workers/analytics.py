"""The analytics worker: keeps each board's metrics current from the event log.

Each batch loads the metrics of the boards it names, folds their events in (an event at or
below a board's ``applied_offset`` is skipped: that is what makes a batch handled twice
count once), and saves every board it changed in one write.
"""

from __future__ import annotations

from collections.abc import Sequence

from persistence.event_log import LoggedEvent
from workers.analytics_model import BoardMetrics
from workers.analytics_store import AnalyticsStore

#: The consumer name analytics commit their offset under.
ANALYTICS_CONSUMER = "analytics"

# Internal documents (the project directory, project documents) hold no tasks.
_INTERNAL_PREFIX = "boardcast."


class AnalyticsWorker:
    """Materialised board and project metrics (docs/events.md, *Analytics*)."""

    name = ANALYTICS_CONSUMER

    def __init__(self, store: AnalyticsStore) -> None:
        self.store = store

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        """Fold a batch into the boards' metrics; a batch seen before changes nothing."""
        board_ids = {e.board_id for e in events if not e.board_id.startswith(_INTERNAL_PREFIX)}
        if not board_ids:
            return
        boards = await self.store.load(board_ids)
        changed: dict[str, BoardMetrics] = {}
        for event in events:
            if event.board_id not in board_ids:
                continue
            board = boards.get(event.board_id)
            if board is None:
                board = boards[event.board_id] = BoardMetrics(event.board_id)
            if board.apply(event):
                changed[board.board_id] = board
        if changed:
            await self.store.save(list(changed.values()))

    async def reset(self) -> None:
        """Forget every metric, for a replay that derives them again from the log."""
        await self.store.reset()
