"""Analytics from events: the counts a scripted sequence of edits must give, exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from persistence.event_log import LoggedEvent, NewEvent
from persistence.event_log_memory import MemoryEventLog
from workers.analytics import AnalyticsWorker
from workers.analytics_model import board_report, project_report
from workers.analytics_store import MemoryAnalyticsStore
from workers.runtime import RuntimeSettings, WorkerRuntime

DAY = 86400.0
MONDAY = datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp()


class Script:
    """Events as a board would log them, with times we choose."""

    def __init__(self) -> None:
        self.events: list[LoggedEvent] = []

    def add(self, kind: str, at: float, board: str = "b1", **data: Any) -> None:
        offset = len(self.events) + 1
        self.events.append(
            LoggedEvent(offset, f"{board}:{offset}:0", board, "p1", kind, data, "ann", at)
        )


def scripted() -> Script:
    s = Script()
    for n, column in enumerate(("todo", "doing", "done")):
        s.add("column.created", MONDAY, column_id=column, position=f"a{n}")
    s.add("task.created", MONDAY, task_id="t1", column="todo", due="2026-11-03")
    s.add("task.created", MONDAY, task_id="t2", column="todo", due=None)
    s.add("task.created", MONDAY, task_id="t3", column="todo", due="2026-11-04")
    s.add("task.moved", MONDAY + 3600, task_id="t1", from_column="todo", to_column="doing")
    s.add("task.moved", MONDAY + DAY, task_id="t1", from_column="doing", to_column="done")
    s.add("task.moved", MONDAY + DAY + 60, task_id="t2", from_column="todo", to_column="done")
    # A reorder inside a column is a move event, but no flow.
    s.add("task.moved", MONDAY + DAY + 61, task_id="t3", from_column="todo", to_column="todo")
    s.add("task.updated", MONDAY + DAY + 62, task_id="t3", fields=["due"], due="2026-11-03")
    s.add("task.created", MONDAY + 2 * DAY, task_id="t4", column="todo")
    s.add("task.deleted", MONDAY + 2 * DAY + 1, task_id="t4")
    return s


async def handled(batches: Sequence[Sequence[LoggedEvent]]) -> MemoryAnalyticsStore:
    store = MemoryAnalyticsStore()
    worker = AnalyticsWorker(store)
    for batch in batches:
        await worker.handle(batch)
    return store


async def test_a_scripted_board_gives_exact_flow_throughput_and_times() -> None:
    store = await handled([scripted().events])
    metrics = (await store.load(["b1"]))["b1"]
    report = board_report(metrics, today="2026-11-04", days=3)
    assert report["cumulative_flow"] == [
        {"date": "2026-11-02", "columns": {"todo": 2, "doing": 1}},
        {"date": "2026-11-03", "columns": {"todo": 1, "done": 2}},
        {"date": "2026-11-04", "columns": {"todo": 1, "done": 2}},  # t4 came and went
    ]
    assert [d["done"] for d in report["throughput"]] == [0, 2, 0]
    # t1: out of "todo" at +1 h, done at +1 day; t2 left "todo" straight into "done".
    assert report["cycle_time"]["count"] == 2
    assert report["cycle_time"]["mean_seconds"] == ((DAY - 3600) + 0) / 2
    assert report["lead_time"]["mean_seconds"] == (DAY + DAY + 60) / 2
    assert report["burndown"] == [
        {"date": "2026-11-02", "open": 3, "planned": 3, "overdue": 0},
        # t3's due date moved to the 3rd: it is overdue that day, and planned away.
        {"date": "2026-11-03", "open": 1, "planned": 1, "overdue": 1},
        {"date": "2026-11-04", "open": 1, "planned": 1, "overdue": 1},
    ]
    assert (report["tasks"], report["done"]) == (3, 2)


async def test_a_batch_handled_twice_counts_once() -> None:
    events = scripted().events
    once = await handled([events])
    # At least once: every prefix handled again, overlapping batches.
    again = await handled([events[:5], events[:9], events[3:], events])
    first = board_report((await once.load(["b1"]))["b1"], today="2026-11-04")
    second = board_report((await again.load(["b1"]))["b1"], today="2026-11-04")
    assert first == second


async def test_a_board_setting_names_the_done_column() -> None:
    s = Script()
    for n, column in enumerate(("todo", "review", "archive")):
        s.add("column.created", MONDAY, column_id=column, position=f"a{n}")
    s.add("meta.updated", MONDAY, fields=["done_column"], done_column="review")
    s.add("task.created", MONDAY, task_id="t1", column="todo")
    s.add("task.moved", MONDAY + 10, task_id="t1", from_column="todo", to_column="review")
    s.add("task.moved", MONDAY + 20, task_id="t1", from_column="review", to_column="archive")
    report = board_report(
        (await (await handled([s.events])).load(["b1"]))["b1"], today="2026-11-02"
    )
    assert report["throughput"][-1]["done"] == 1
    assert report["done"] == 0  # archived is past done: no longer done


async def test_project_analytics_sum_its_boards() -> None:
    s = scripted()
    s.add("column.created", MONDAY, board="b2", column_id="x", position="a0")
    s.add("task.created", MONDAY, board="b2", task_id="u1", column="x")
    store = await handled([s.events])
    report = project_report(await store.of_project("p1"), today="2026-11-02", days=1)
    assert report["cumulative_flow"] == [
        {"date": "2026-11-02", "columns": {"b1/todo": 2, "b1/doing": 1, "b2/x": 1}}
    ]
    assert report["tasks"] == 4


class Flaky:
    """A worker whose handle() fails its first calls."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[int] = []

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("downstream is down")
        self.seen += [event.offset for event in events]


async def test_a_failing_worker_is_retried_with_backoff_and_misses_nothing() -> None:
    log = MemoryEventLog()
    await log.append([NewEvent(f"b:{n}:0", "b", "", "task.created", {}, None) for n in range(7)])
    worker = Flaky(failures=3)
    settings = RuntimeSettings(batch_size=3, poll_seconds=0.01, backoff_seconds=0.01)
    runtime = WorkerRuntime(log, [worker], settings)
    runtime.start()
    try:
        for _ in range(500):
            if worker.seen == list(range(1, 8)):
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.stop()
    assert worker.seen == list(range(1, 8))
    assert runtime.states["flaky"].failures == 3
    assert await log.committed("flaky") == 7
    assert runtime.lags() == {"flaky": 0}
