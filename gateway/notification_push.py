"""The live push of notifications: one tail loop per gateway, fanned out to its open streams.

Every gateway follows the shared notification store with one loop: it reads
:meth:`NotificationStore.since` its cursor every ``poll_seconds`` and hands each new
notification to the streams of its user open on this gateway. The worker writes to the
store wherever it runs, so a notification reaches a stream on any gateway. A stream that
falls behind (its queue full) is ended; its browser reconnects with ``Last-Event-ID`` and
gets what it missed from the store.

:class:`NotificationHub` holds no socket; ``gateway/rest/notifications.py`` writes the
Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from persistence.notification_store import Notification, NotificationStore

log = logging.getLogger("boardcast.notifications")


@dataclass(frozen=True, slots=True)
class PushSettings:
    """How the hub follows the store and bounds its streams (docs/settings.md)."""

    poll_seconds: float = 0.2
    heartbeat_seconds: float = 15.0
    streams_per_user: int = 8
    streams_max: int = 10_000
    queue_items: int = 256  # notifications waiting for one stream; past it the stream ends
    read_batch: int = 500  # notifications read from the store at once


class StreamRefused(Exception):
    """No stream for this user now: the per-user or the gateway's cap is reached."""


class Stream:
    """One open stream of one user: notifications to send, in seq order."""

    def __init__(self, user: str, queue_items: int) -> None:
        self.user = user
        self.queue: asyncio.Queue[Notification | None] = asyncio.Queue(queue_items)
        self.overflowed = False

    def offer(self, notification: Notification) -> None:
        """Queue one; a stream too far behind is ended (its browser reconnects)."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(notification)
        except asyncio.QueueFull:
            self.overflowed = True
            self._stop()

    def end(self) -> None:
        """End the stream (the gateway is stopping)."""
        self.overflowed = True
        self._stop()

    def _stop(self) -> None:
        # ``None`` tells the writer to end; room is made for it if need be.
        with contextlib.suppress(asyncio.QueueEmpty):
            if self.queue.full():
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class NotificationHub:
    """The gateway's one tail loop and its open streams (see the module docstring)."""

    def __init__(self, store: NotificationStore, settings: PushSettings | None = None) -> None:
        self.store = store
        self.settings = settings or PushSettings()
        self._streams: dict[str, set[Stream]] = {}
        self._count = 0
        self._cursor: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.pushed = 0  # notifications handed to streams (for tests and metrics)

    @property
    def open_streams(self) -> int:
        """Streams open on this gateway."""
        return self._count

    def open(self, user: str) -> Stream:
        """A new stream for ``user``; :class:`StreamRefused` past a cap."""
        mine = self._streams.get(user, set())
        if len(mine) >= self.settings.streams_per_user:
            raise StreamRefused(f"at most {self.settings.streams_per_user} streams per user")
        if self._count >= self.settings.streams_max:
            raise StreamRefused(f"at most {self.settings.streams_max} streams on this gateway")
        stream = Stream(user, self.settings.queue_items)
        self._streams.setdefault(user, set()).add(stream)
        self._count += 1
        return stream

    def close(self, stream: Stream) -> None:
        """Forget a stream (its response ended)."""
        mine = self._streams.get(stream.user)
        if mine is not None and stream in mine:
            mine.discard(stream)
            self._count -= 1
            if not mine:
                del self._streams[stream.user]

    def fan_out(self, notifications: Sequence[Notification]) -> None:
        """Hand each notification to its user's streams here."""
        for notification in notifications:
            for stream in tuple(self._streams.get(notification.user, ())):
                stream.offer(notification)
                self.pushed += 1

    async def poll_once(self) -> int:
        """Read what is new since the cursor and fan it out; how many were read."""
        if self._cursor is None:
            self._cursor = await self.store.last_seq()  # streams resume from the store
        if not self._streams:
            # Nobody to hand anything to: move the cursor without reading (and opening)
            # every notification, unless a stream opened while the store answered.
            newest = await self.store.last_seq()
            if not self._streams:
                self._cursor = max(self._cursor, newest)
                return 0
        read = 0
        for _ in range(20):  # bounded per round; the next round goes on
            found = await self.store.since(self._cursor, limit=self.settings.read_batch)
            if not found:
                break
            self._cursor = found[-1].seq
            read += len(found)
            self.fan_out(found)
            if len(found) < self.settings.read_batch:
                break
        return read

    def start(self) -> None:
        """Start the tail loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop and end every stream."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for streams in list(self._streams.values()):
            for stream in tuple(streams):
                stream.end()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.poll_once()
                failing = False
            except Exception:
                if not failing:  # one line per outage, not one per poll
                    log.exception("notification push: reading the store failed; retrying")
                failing = True
            await asyncio.sleep(self.settings.poll_seconds)
