"""Which past snapshots survive thinning, and how a past state is merged."""

from __future__ import annotations

import bisect
from typing import Any

import pycrdt
import pytest

from persistence.history import (
    DEFAULT_HISTORY,
    KEEP_EVERYTHING,
    KEEP_NOTHING,
    HistoryPolicy,
    merge_state,
    snapshots_to_drop,
)

HOUR = 3600.0
DAY = 86400.0
NOW = 20_833 * 86400.0  # midnight UTC: hour and day buckets line up with the arithmetic below


def kept(snapshots: list[tuple[int, float]], policy: HistoryPolicy, now: float = NOW) -> list[int]:
    dropped = set(snapshots_to_drop(snapshots, now=now, policy=policy))
    return sorted(seq for seq, _ in snapshots if seq not in dropped)


def newest_at_or_before(times: list[float], t: float) -> float | None:
    """The newest of the sorted ``times`` at or before ``t``."""
    index = bisect.bisect_right(times, t)
    return times[index - 1] if index else None


def test_the_newest_are_kept_whatever_their_age() -> None:
    # Ten snapshots a year old, one second apart.
    old = [(seq, NOW - 400 * DAY + seq) for seq in range(1, 11)]
    assert kept(old, HistoryPolicy(keep_last=3, hourly_for=0, daily_for=0)) == [8, 9, 10]
    assert kept(old, KEEP_NOTHING) == []
    assert kept(old, KEEP_EVERYTHING) == list(range(1, 11))


def test_recent_history_keeps_the_newest_snapshot_of_each_hour() -> None:
    # Every 10 minutes over the last 3 hours: 18 snapshots in 3 hours.
    snapshots = [(seq, NOW - 3 * HOUR + seq * 600) for seq in range(18)]
    policy = HistoryPolicy(keep_last=0, hourly_for=4 * HOUR, daily_for=0)
    # Seq 17 is the newest of the last hour, 11 and 5 of the two before.
    assert kept(snapshots, policy) == [5, 11, 17]


def test_older_history_keeps_the_newest_snapshot_of_each_day_for_a_while() -> None:
    # Four a day, for ten days, all older than the hourly window.
    snapshots = [
        (day * 4 + q, NOW - (10 - day) * DAY + q * 6 * HOUR) for day in range(10) for q in range(4)
    ]
    policy = HistoryPolicy(keep_last=0, hourly_for=HOUR, daily_for=5 * DAY)
    # Days 5..9 are within 5 days (day 5's last snapshot is 4.25 days old); each keeps its last.
    assert kept(snapshots, policy) == [23, 27, 31, 35, 39]
    forever = HistoryPolicy(keep_last=0, hourly_for=HOUR, daily_for=None)
    assert kept(snapshots, forever) == [day * 4 + 3 for day in range(10)]


@pytest.mark.parametrize("minutes_between", [1, 10, 45])
def test_the_default_policy_bounds_how_stale_a_past_read_is(minutes_between: int) -> None:
    """Snapshots every few minutes for 20 days: any past time reads a recent-enough one."""
    step = minutes_between * 60.0
    count = int(20 * DAY / step)
    snapshots = [(seq, NOW - 20 * DAY + seq * step) for seq in range(count)]
    survivors = set(kept(snapshots, DEFAULT_HISTORY))
    times = [at for _, at in snapshots]
    retained = [at for seq, at in snapshots if seq in survivors]

    assert len(retained) <= DEFAULT_HISTORY.keep_last + 49 + 21
    for t in range(int(NOW - 19 * DAY), int(NOW), 997):
        newest = newest_at_or_before(times, t)
        newest_kept = newest_at_or_before(retained, t)
        assert newest is not None and newest_kept is not None
        allowed = 2 * HOUR if NOW - t < 47 * HOUR else 2 * DAY
        assert newest - newest_kept <= allowed


def test_a_policy_with_a_negative_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        HistoryPolicy(keep_last=-1)
    with pytest.raises(ValueError, match="negative"):
        HistoryPolicy(daily_for=-DAY)


def tasks_of(state: bytes) -> dict[str, Any]:
    doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
    doc.apply_update(state)
    return dict(doc.get("tasks", type=pycrdt.Map).to_py() or {})


def test_merge_state_applies_the_snapshot_then_the_updates() -> None:
    doc: pycrdt.Doc[pycrdt.Map[Any]] = pycrdt.Doc()
    tasks = doc.get("tasks", type=pycrdt.Map)
    tasks["a"] = "first"
    snapshot = doc.get_update()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    tasks["b"] = "second"
    tasks["a"] = "renamed"

    merged = merge_state(snapshot, updates)
    assert tasks_of(merged) == {"a": "renamed", "b": "second"}
    assert merged == doc.get_update()
    assert tasks_of(merge_state(None, [])) == {}
    assert tasks_of(merge_state(snapshot, [])) == {"a": "first"}


def test_merge_state_refuses_bytes_that_are_not_an_update() -> None:
    with pytest.raises(ValueError):
        merge_state(b"not yjs", [])
