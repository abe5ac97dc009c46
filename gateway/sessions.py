"""This gateway's sessions, announced in the state gateways share (Redis or in-process).

Registration runs in the background, in order, so a slow or unreachable Redis
never delays a client's sync: presence is advisory, and the gateway's periodic
refresh rebuilds whatever a failed write left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from shared.state import SharedState, SharedStateUnavailable

log = logging.getLogger("boardcast.gateway")


class SessionRegistry:
    """Queues session (un)registrations for one gateway and applies them in order."""

    def __init__(self, shared: SharedState, gateway_id: str, *, max_queued: int = 10_000) -> None:
        self._shared = shared
        self._gateway_id = gateway_id
        # Bounded: while shared state is slow, registrations past the bound are
        # dropped; the periodic refresh rewrites this gateway's sessions anyway.
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(max_queued)
        self.dropped = 0
        self._worker: asyncio.Task[None] | None = None

    def joined(self, board_id: str, session_id: int) -> None:
        """A client opened a session on ``board_id``."""
        info = {"since": round(time.time(), 3)}
        self._submit(
            lambda: self._shared.register_session(self._gateway_id, board_id, str(session_id), info)
        )

    def left(self, board_id: str, session_id: int) -> None:
        """The session ended."""
        self._submit(
            lambda: self._shared.unregister_session(self._gateway_id, board_id, str(session_id))
        )

    def _submit(self, operation: Callable[[], Awaitable[None]]) -> None:
        try:
            self._queue.put_nowait(operation)
        except asyncio.QueueFull:
            self.dropped += 1
            log.debug("session registrations queue full: dropped one, the refresh catches up")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        while not self._queue.empty():
            operation = self._queue.get_nowait()
            try:
                await operation()
            except SharedStateUnavailable as exc:
                log.debug("shared state unavailable, presence catches up later: %s", exc)
            except Exception:
                log.exception("session registration failed")
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait (briefly) for queued registrations, e.g. before shutting down."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._worker), 5)
