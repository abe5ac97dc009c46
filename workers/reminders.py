"""Due-date reminders: a loop beside the notification worker, in the worker process.

Every ``poll_seconds`` it asks the task table for tasks owed a reminder (due within
``due_soon_seconds`` and not yet told so, or past due and not yet told that), records
``due_soon`` or ``overdue`` for each assignee, and notes the stage on the task. The ids
(task, due date, user, kind) make each reminder once even if two loops run, or a loop dies
between recording and noting. A task's due date is the end of its UTC day
(``workers/notification_rules.py:due_at``). The same loop trims the inbox: notifications
older than the retention and beyond each user's cap go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from persistence.notification_state import ReminderStage, WorkerNotificationStore
from workers.notification_rules import reminders_for

log = logging.getLogger("boardcast.notifications")


@dataclass(frozen=True, slots=True)
class ReminderSettings:
    """How often and how far ahead; see docs/settings.md (``BOARDCAST_NOTIFICATION_*``)."""

    poll_seconds: float = 60.0
    due_soon_seconds: float = 24 * 3600.0
    retention_days: float = 90.0
    max_per_user: int = 1000
    trim_every_seconds: float = 600.0
    batch: int = 200  # tasks per store read
    max_batches: int = 50  # per round, so one round is bounded


class ReminderLoop:
    """Sends due-date reminders and trims the inbox (see the module docstring)."""

    def __init__(
        self,
        store: WorkerNotificationStore,
        settings: ReminderSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.settings = settings or ReminderSettings()
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._last_trim: float | None = None

    async def run_once(self) -> int:
        """One round: the reminders owed now; how many were recorded."""
        now = self._clock()
        horizon = now + self.settings.due_soon_seconds
        recorded = 0
        for _ in range(self.settings.max_batches):
            owed = await self._store.tasks_to_remind(
                now=now, horizon=horizon, limit=self.settings.batch
            )
            for task in owed:
                reminders = reminders_for(task, now=now, horizon=horizon)
                recorded += len(await self._store.add(reminders)) if reminders else 0
                if task.due_at is not None:
                    stage: ReminderStage = "overdue" if task.due_at <= now else "due_soon"
                    await self._store.mark_reminded(
                        task.board_id, task.task_id, due_at=task.due_at, stage=stage
                    )
            if len(owed) < self.settings.batch:
                break
        return recorded

    async def trim_once(self) -> int:
        """Drop what retention and the per-user cap no longer keep."""
        now = self._clock()
        return await self._store.trim(
            older_than=now - self.settings.retention_days * 86400.0,
            keep_per_user=self.settings.max_per_user,
        )

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
                since = None if self._last_trim is None else time.monotonic() - self._last_trim
                if since is None or since >= self.settings.trim_every_seconds:
                    self._last_trim = time.monotonic()
                    gone = await self.trim_once()
                    if gone:
                        log.info("notifications: retention dropped %d", gone)
            except Exception:
                log.exception("notification reminders failed; trying again next round")
            await asyncio.sleep(self.settings.poll_seconds)
