"""Idle workers cost the log two reads a poll, however many there are, and still miss nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence

from persistence.event_log import LoggedEvent, NewEvent
from persistence.event_log_memory import MemoryEventLog
from tests.conftest import wait_until
from workers.runtime import RuntimeSettings, WorkerRuntime

POLL = 0.02


class CountingLog(MemoryEventLog):
    """The in-memory log, counting the reads made of it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def read(self, after: int, limit: int) -> list[LoggedEvent]:
        self.calls["read"] += 1
        return await super().read(after, limit)

    async def last_offset(self) -> int:
        self.calls["last_offset"] += 1
        return await super().last_offset()

    async def committed(self, consumer: str) -> int:
        self.calls["committed"] += 1
        return await super().committed(consumer)

    async def consumers(self) -> dict[str, int]:
        self.calls["consumers"] += 1
        return await super().consumers()


class Recorder:
    """A worker that notes the offsets it was handed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[int] = []

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        self.seen.extend(event.offset for event in events)


def event(n: int) -> NewEvent:
    return NewEvent(f"b:{n}:0", "b", "", "task.created", {"task": str(n)}, None)


@contextlib.asynccontextmanager
async def running(log: CountingLog, workers: Sequence[Recorder]) -> AsyncIterator[WorkerRuntime]:
    """A started runtime over ``log``, polling every ``POLL`` seconds; stopped after."""
    runtime = WorkerRuntime(log, workers, RuntimeSettings(poll_seconds=POLL))
    runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def test_idle_workers_share_two_reads_a_poll() -> None:
    log = CountingLog()
    async with running(log, [Recorder(f"w{i}") for i in range(5)]):
        await asyncio.sleep(5 * POLL)  # every worker caught up and idle
        log.calls.clear()
        polls = 20
        await asyncio.sleep(polls * POLL)
    reads = sum(log.calls.values())
    # One worker polling alone would make 3 reads a poll; five of them, 15.
    assert reads <= 2 * (polls + 2), log.calls
    assert log.calls["read"] == 0, log.calls


async def test_a_new_event_reaches_every_idle_worker() -> None:
    log = CountingLog()
    workers = [Recorder(f"w{i}") for i in range(3)]
    async with running(log, workers) as runtime:
        await asyncio.sleep(5 * POLL)
        await log.append([event(1), event(2)])
        await wait_until(lambda: all(w.seen == [1, 2] for w in workers), message="all handled")
        assert runtime.lags() == {"w0": 0, "w1": 0, "w2": 0}


async def test_a_rewind_of_an_idle_worker_replays_its_events() -> None:
    log = CountingLog()
    worker = Recorder("w")
    await log.append([event(1), event(2), event(3)])
    async with running(log, [worker]):
        await wait_until(lambda: worker.seen == [1, 2, 3], message="handled once")
        await asyncio.sleep(5 * POLL)  # idle again: nothing new in the log
        await log.rewind("w", 1)  # as `boardcast events replay` does, from another process
        await wait_until(lambda: worker.seen == [1, 2, 3, 2, 3], message="replayed")
