"""The worker runtime: each worker reads the event log from its committed offset, in batches.

Delivery is at least once: a batch is handed to :meth:`Worker.handle` and its offset committed
only after ``handle`` returns, so a crash in between delivers the batch again. ``handle`` must
therefore be idempotent. A ``handle`` that raises is retried with the same batch after a
backoff (doubling up to a ceiling), so a failing worker neither skips events nor spins.

The committed offset is read again before every batch, so a replay (``boardcast events
replay``, which rewinds it) takes effect at the next batch.

Idle workers do not poll the log one by one: a single watcher reads the log's last offset
and every consumer's committed offset (two reads, however many workers) every
``poll_seconds``, and wakes only the workers with something to do, or whose offset was
rewound. An idle deployment of five workers makes 20 reads a second instead of 150.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from persistence.event_log import EventLog, LoggedEvent, ManagedEventLog

log = logging.getLogger("boardcast.workers")


@runtime_checkable
class Worker(Protocol):
    """A consumer of the event log, named by its consumer name."""

    name: str  # its consumer name in the log

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        """Apply a batch of events, in offset order; idempotent (may see a batch again)."""
        ...


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How the runtime feeds its workers; see docs/settings.md (``BOARDCAST_WORKER_*``)."""

    batch_size: int = 500  # events per handle() call at most
    poll_seconds: float = 0.1  # how often an idle worker looks for new events
    backoff_seconds: float = 0.5  # first wait after a failing handle(); doubles
    backoff_max_seconds: float = 30.0
    # Fault injection for crash tests: a pause before and after each handle() call, so a
    # kill lands mid-batch. 0 in production.
    batch_pause_seconds: float = 0.0


@dataclass(slots=True)
class ConsumerState:
    """What the runtime knows of one worker, for lag gauges and tests."""

    committed: int = 0
    last_offset: int = 0
    handled_batches: int = 0
    failures: int = 0
    last_error: str = ""
    updated_at: float = 0.0

    @property
    def lag(self) -> int:
        """Events logged that this worker has not committed yet."""
        return max(0, self.last_offset - self.committed)


class WorkerRuntime:
    """Runs workers as asyncio tasks over one event log."""

    def __init__(
        self,
        event_log: ManagedEventLog,
        workers: Sequence[Worker],
        settings: RuntimeSettings | None = None,
    ) -> None:
        names = [worker.name for worker in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must differ: {names}")
        self.event_log = event_log
        self.workers = list(workers)
        self.settings = settings or RuntimeSettings()
        self.states = {worker.name: ConsumerState() for worker in workers}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = {worker.name: asyncio.Event() for worker in workers}
        self._idle: set[str] = set()  # workers caught up, waiting for the watcher

    def start(self) -> None:
        """Start one task per worker and the watcher of the log (idempotent)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run(worker)) for worker in self.workers]
            self._tasks.append(loop.create_task(self._watch()))

    async def stop(self) -> None:
        """Stop every worker; a batch in flight is abandoned (it comes again: at least once)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def lags(self) -> dict[str, int]:
        """Each worker's lag as of its last batch or poll."""
        return {name: state.lag for name, state in self.states.items()}

    async def run_once(self, worker: Worker) -> int:
        """Feed ``worker`` one batch; return how many events it handled (0: caught up)."""
        state = self.states[worker.name]
        committed = await self.event_log.committed(worker.name)
        batch = await self.event_log.read(committed, self.settings.batch_size)
        state.committed = committed
        state.last_offset = max(await self.event_log.last_offset(), committed)
        state.updated_at = time.time()
        if not batch:
            return 0
        pause = self.settings.batch_pause_seconds
        if pause:
            await asyncio.sleep(pause)
        await worker.handle(batch)
        if pause:
            await asyncio.sleep(pause)
        # Only now: a crash before this line hands the same batch over again.
        await self.event_log.commit(worker.name, batch[-1].offset)
        state.committed = batch[-1].offset
        state.handled_batches += 1
        return len(batch)

    async def catch_up(self, worker: Worker, *, max_batches: int = 1_000_000) -> int:
        """Feed ``worker`` until it has every event logged so far; return how many."""
        total = 0
        for _ in range(max_batches):
            handled = await self.run_once(worker)
            if not handled:
                break
            total += handled
        return total

    async def _run(self, worker: Worker) -> None:
        state = self.states[worker.name]
        # Registered as a consumer at once: retention keeps what it has not had.
        with contextlib.suppress(Exception):
            await self.event_log.commit(worker.name, 0)
        delay = self.settings.backoff_seconds
        while True:
            try:
                handled = await self.run_once(worker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.failures += 1
                state.last_error = repr(exc)
                log.warning("worker %s failed (%r); retrying in %.1f s", worker.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.backoff_max_seconds)
                continue
            delay = self.settings.backoff_seconds
            if not handled:
                wake = self._wake[worker.name]
                wake.clear()
                self._idle.add(worker.name)
                try:
                    await wake.wait()
                finally:
                    self._idle.discard(worker.name)

    async def _watch(self) -> None:
        """Every ``poll_seconds``, wake the idle workers the log has work for."""
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            if not self._idle:
                continue
            try:
                last = await self.event_log.last_offset()
                committed = await self.event_log.consumers()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The workers' own reads report and back off; wake them to do so.
                log.warning("worker runtime: reading the log's offsets failed (%r)", exc)
                for name in list(self._idle):
                    self._wake[name].set()
                continue
            now = time.time()
            for name in list(self._idle):
                state = self.states[name]
                offset = committed.get(name, 0)
                state.last_offset = max(last, offset)
                state.updated_at = now
                # Behind the log, or rewound (a replay) or moved by another process.
                if offset < last or offset != state.committed:
                    self._wake[name].set()


async def consumer_lags(event_log: EventLog, names: Sequence[str]) -> dict[str, int]:
    """How many logged events each named consumer has not committed (any process may ask)."""
    last = await event_log.last_offset()
    return {name: max(0, last - await event_log.committed(name)) for name in names}
