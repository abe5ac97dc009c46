"""Board analytics kept from events alone (sans-I/O): the state of one board and its reports.

:class:`BoardMetrics` folds a board's events, in offset order, into what the reports need,
and remembers the offset of the last event it folded, so an event seen again (the runtime
delivers at least once) changes nothing. Definitions:

* **first column**: the board's column with the lowest position; **done column**: the one
  ``meta.done_column`` names if it exists, else the column with the highest position.
* **cumulative flow**: how many tasks each column held at the end of each UTC day.
* **throughput**: tasks moved into the done column, per UTC day of the move.
* **cycle time**: from a task's first move out of the first column (its creation, if it was
  created elsewhere) to its arrival in the done column; **lead time**: creation to done.
* **burndown**: per day, the tasks still open, the ideal line (tasks not yet due: no due
  date, or due after that day) and the open tasks already due (overdue).

A day is the UTC date of the time the event was logged. Tasks and columns known only from
before the log began are learnt from their first event (a move of an unknown task adds it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from persistence.event_log import LoggedEvent

#: Days a report covers at most (older days stay stored, but are not listed).
MAX_REPORT_DAYS = 366


def day_of(at: float) -> str:
    """The UTC date of a unix time, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(at, UTC).date().isoformat()


@dataclass(slots=True)
class TaskState:
    """What analytics keep of one task."""

    column: str
    created: float | None = None
    started: float | None = None  # first move out of the first column (or created elsewhere)
    done: float | None = None  # when it last arrived in the done column (None while open)
    due: str | None = None

    def to_json(self) -> list[Any]:
        """Compact: tasks are the bulk of a board's stored metrics."""
        return [self.column, self.created, self.started, self.done, self.due]

    @classmethod
    def from_json(cls, value: list[Any]) -> TaskState:
        """Back from :meth:`to_json`."""
        column, created, started, done, due = value
        return cls(str(column), created, started, done, due)


@dataclass(slots=True)
class BoardMetrics:
    """One board's analytics state, folded from its events."""

    board_id: str
    project: str = ""
    applied_offset: int = 0
    columns: dict[str, str] = field(default_factory=dict)  # column id -> position
    done_setting: str | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # tasks per column now
    flow: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> column -> tasks
    throughput: dict[str, int] = field(default_factory=dict)  # day -> tasks done

    # -- folding events ------------------------------------------------------------

    def apply(self, event: LoggedEvent) -> bool:
        """Fold one event in; False (and nothing changes) if it was folded in before."""
        if event.offset <= self.applied_offset:
            return False
        self.applied_offset = event.offset
        if event.project:
            self.project = event.project
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event.data, event.at)
            self.flow[day_of(event.at)] = {c: n for c, n in self.counts.items() if n}
        return True

    def first_column(self) -> str | None:
        """The column with the lowest position (ties by id)."""
        if not self.columns:
            return None
        return min(self.columns, key=lambda c: (self.columns[c], c))

    def done_column(self) -> str | None:
        """The board's done column (see the module docstring)."""
        if self.done_setting and self.done_setting in self.columns:
            return self.done_setting
        if not self.columns:
            return None
        return max(self.columns, key=lambda c: (self.columns[c], c))

    def _place(self, task: TaskState, column: str) -> None:
        if task.column:
            self.counts[task.column] = self.counts.get(task.column, 0) - 1
        task.column = column
        if column:
            self.counts[column] = self.counts.get(column, 0) + 1

    def _task_created(self, data: dict[str, Any], at: float) -> None:
        task_id = str(data.get("task_id", ""))
        old = self.tasks.pop(task_id, None)
        if old is not None:
            self._place(old, "")
        column = str(data.get("column") or "")
        due = data.get("due")
        task = TaskState("", created=at, due=due if isinstance(due, str) else None)
        self._place(task, column)
        if column and column != self.first_column():
            task.started = at
        if column and column == self.done_column():
            task.done = at
        self.tasks[task_id] = task

    def _task_moved(self, data: dict[str, Any], at: float) -> None:
        task_id = str(data.get("task_id", ""))
        before = str(data.get("from_column") or "")
        after = str(data.get("to_column") or "")
        task = self.tasks.get(task_id)
        if task is None:
            # Created before the log began: known from now on.
            task = self.tasks[task_id] = TaskState("")
            self._place(task, before)
        if before == after and task.column == after:
            return  # a reorder within the column
        previous = task.column
        self._place(task, after)
        if task.started is None and previous != after:
            task.started = at
        done = self.done_column()
        if after == done and previous != done:
            task.done = at
            day = day_of(at)
            self.throughput[day] = self.throughput.get(day, 0) + 1
        elif after != done:
            task.done = None

    def _task_updated(self, data: dict[str, Any], at: float) -> None:
        task = self.tasks.get(str(data.get("task_id", "")))
        if task is not None and "due" in _fields(data):
            due = data.get("due")
            task.due = due if isinstance(due, str) else None

    def _task_deleted(self, data: dict[str, Any], at: float) -> None:
        task = self.tasks.pop(str(data.get("task_id", "")), None)
        if task is not None:
            self._place(task, "")

    def _column_created(self, data: dict[str, Any], at: float) -> None:
        self.columns[str(data.get("column_id", ""))] = str(data.get("position") or "")

    def _column_updated(self, data: dict[str, Any], at: float) -> None:
        column_id = str(data.get("column_id", ""))
        if "position" in _fields(data) and column_id in self.columns:
            self.columns[column_id] = str(data.get("position") or "")

    def _column_deleted(self, data: dict[str, Any], at: float) -> None:
        self.columns.pop(str(data.get("column_id", "")), None)

    def _meta_updated(self, data: dict[str, Any], at: float) -> None:
        if "done_column" in _fields(data):
            value = data.get("done_column")
            self.done_setting = value if isinstance(value, str) and value else None

    # -- storing ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON to store (see :meth:`from_json`)."""
        return {
            "board_id": self.board_id,
            "project": self.project,
            "applied_offset": self.applied_offset,
            "columns": self.columns,
            "done_setting": self.done_setting,
            "tasks": {task_id: task.to_json() for task_id, task in self.tasks.items()},
            "counts": self.counts,
            "flow": self.flow,
            "throughput": self.throughput,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> BoardMetrics:
        """Back from :meth:`to_json`."""
        return cls(
            board_id=str(value["board_id"]),
            project=str(value.get("project", "")),
            applied_offset=int(value.get("applied_offset", 0)),
            columns=dict(value.get("columns", {})),
            done_setting=value.get("done_setting"),
            tasks={k: TaskState.from_json(v) for k, v in value.get("tasks", {}).items()},
            counts=dict(value.get("counts", {})),
            flow={day: dict(c) for day, c in value.get("flow", {}).items()},
            throughput=dict(value.get("throughput", {})),
        )


_HANDLERS = {
    "task.created": BoardMetrics._task_created,
    "task.moved": BoardMetrics._task_moved,
    "task.updated": BoardMetrics._task_updated,
    "task.deleted": BoardMetrics._task_deleted,
    "column.created": BoardMetrics._column_created,
    "column.updated": BoardMetrics._column_updated,
    "column.deleted": BoardMetrics._column_deleted,
    "meta.updated": BoardMetrics._meta_updated,
}


# -- reports ---------------------------------------------------------------------------


def _durations(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean_seconds": None, "median_seconds": None, "p85_seconds": None}
    ordered = sorted(values)
    p85 = ordered[min(len(ordered) - 1, int(0.85 * len(ordered)))]
    return {
        "count": len(ordered),
        "mean_seconds": round(statistics.fmean(ordered), 3),
        "median_seconds": round(statistics.median(ordered), 3),
        "p85_seconds": round(p85, 3),
    }


def _days(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    first = max(first, last - timedelta(days=MAX_REPORT_DAYS - 1))
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _end_of(day: str) -> float:
    moment = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    return moment.timestamp()


def board_report(metrics: BoardMetrics, *, today: str, days: int = 30) -> dict[str, Any]:
    """What ``GET /v1/boards/{id}/analytics`` answers: the last ``days`` days up to ``today``."""
    return _report([metrics], today=today, days=days, flow_by_board=False)


def project_report(boards: list[BoardMetrics], *, today: str, days: int = 30) -> dict[str, Any]:
    """What ``GET /v1/projects/{id}/analytics`` answers: every board of the project summed."""
    return _report(boards, today=today, days=days, flow_by_board=True)


def _report(
    boards: list[BoardMetrics], *, today: str, days: int, flow_by_board: bool
) -> dict[str, Any]:
    days = max(1, min(days, MAX_REPORT_DAYS))
    start = (date.fromisoformat(today) - timedelta(days=days - 1)).isoformat()
    window = _days(start, today)
    flow: dict[str, dict[str, int]] = {day: {} for day in window}
    throughput = dict.fromkeys(window, 0)
    cycle: list[float] = []
    lead: list[float] = []
    tasks: list[TaskState] = []
    for board in boards:
        last: dict[str, int] = {}
        # Carry the last known counts forward over days without events.
        for day in sorted(board.flow):
            if day < start:
                last = board.flow[day]
        for day in window:
            last = board.flow.get(day, last)
            for column, count in last.items():
                key = f"{board.board_id}/{column}" if flow_by_board else column
                flow[day][key] = flow[day].get(key, 0) + count
            throughput[day] += board.throughput.get(day, 0)
        for task in board.tasks.values():
            tasks.append(task)
            if task.done is not None:
                if task.started is not None:
                    cycle.append(task.done - task.started)
                if task.created is not None:
                    lead.append(task.done - task.created)
    burndown = []
    for day in window:
        end = _end_of(day)
        existing = [t for t in tasks if t.created is None or t.created < end]
        open_tasks = [t for t in existing if t.done is None or t.done >= end]
        burndown.append(
            {
                "date": day,
                "open": len(open_tasks),
                "planned": sum(1 for t in existing if t.due is None or t.due > day),
                "overdue": sum(1 for t in open_tasks if t.due is not None and t.due <= day),
            }
        )
    return {
        "days": window,
        "cumulative_flow": [{"date": day, "columns": flow[day]} for day in window],
        "throughput": [{"date": day, "done": throughput[day]} for day in window],
        "cycle_time": _durations(cycle),
        "lead_time": _durations(lead),
        "burndown": burndown,
        "tasks": len(tasks),
        "done": sum(1 for task in tasks if task.done is not None),
    }


def _fields(data: dict[str, Any]) -> tuple[str, ...]:
    """An event's ``fields``, or none when a careless value stands there instead of a list."""
    value = data.get("fields")
    if not isinstance(value, list | tuple):
        return ()
    return tuple(name for name in value if isinstance(name, str))
