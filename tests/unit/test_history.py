"""Retention policies: parsing, what a thinning pass does, and how a past state is merged."""

from __future__ import annotations

import math
from typing import Any

import pycrdt
import pytest

from persistence.history import (
    DEFAULT_HISTORY,
    KEEP_EVERYTHING,
    KEEP_NOTHING,
    InvalidHistoryPolicy,
    RetentionTier,
    merge_state,
    parse_history_policy,
    plan_thinning,
)

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
NOW = 20_833 * DAY  # midnight UTC: 10-minute and hour steps line up with the arithmetic below


def test_the_default_is_the_documented_setting() -> None:
    assert str(DEFAULT_HISTORY) == "1h:all,1d:10m,30d:1h"
    tiers = (
        RetentionTier(HOUR, None),
        RetentionTier(DAY, 10 * MINUTE),
        RetentionTier(30 * DAY, HOUR),
    )
    assert DEFAULT_HISTORY.tiers == tiers
    assert DEFAULT_HISTORY.describe() == ("1h of every version, 10m steps for 1d, 1h steps for 30d")


@pytest.mark.parametrize(
    "text",
    ["1h:all,1d:10m,30d:1h", "90s:all", "2w:1d", "1h:all,forever:1d", "forever:all", "none"],
)
def test_a_setting_parses_back_to_itself(text: str) -> None:
    assert str(parse_history_policy(text)) == text


def test_parsing_is_lenient_about_spaces_and_case() -> None:
    assert parse_history_policy(" 1H : ALL , 1d:10M ") == parse_history_policy("1h:all,1d:10m")
    assert parse_history_policy("") == KEEP_NOTHING
    assert parse_history_policy("forever:all") == KEEP_EVERYTHING
    assert KEEP_NOTHING.describe().startswith("no past versions")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1h", "expected SPAN:STEP"),
        ("1x:all", "not a duration"),
        ("1h:all,1d:all", "only the first tier"),
        ("1d:all,1h:10m", "spans must be positive and increase"),
        ("1h:1h,1d:10m", "steps must be positive and not shrink"),
        ("1h:0s", "steps must be positive"),
        ("0s:all", "spans must be positive"),
    ],
)
def test_a_bad_setting_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidHistoryPolicy, match=message):
        parse_history_policy(text)
    assert issubclass(InvalidHistoryPolicy, ValueError)


def test_tiers_are_found_by_age() -> None:
    assert DEFAULT_HISTORY.tier_for(0.0) == (0, RetentionTier(HOUR, None))
    assert DEFAULT_HISTORY.tier_for(HOUR + 1) == (1, RetentionTier(DAY, 10 * MINUTE))
    assert DEFAULT_HISTORY.tier_for(31 * DAY) is None
    assert DEFAULT_HISTORY.every_version_since(NOW) == NOW - HOUR
    assert KEEP_NOTHING.every_version_since(NOW) == math.inf


def minutes_ago(minutes: float) -> float:
    return NOW - minutes * MINUTE


def test_a_closed_step_keeps_its_newest_version_and_drops_the_rest() -> None:
    # Updates 1-20, one a minute, 3 hours ago; a compaction snapshot at 7; current at 20.
    updates = [(seq, minutes_ago(200 - seq)) for seq in range(1, 21)]
    plan = plan_thinning(
        policy=DEFAULT_HISTORY,
        now=NOW,
        current=(20, updates[-1][1]),
        snapshots=[(7, updates[6][1])],
        aged_updates=updates,
    )
    # Steps are 10 minutes from midnight: 199-191 minutes ago ends at seq 9, 190-181 at 19
    # (both built); seq 20, 180 minutes ago, is the current snapshot: nothing to build.
    assert plan.build == [(9, updates[8][1]), (19, updates[18][1])]
    assert plan.drop_snapshots == [7]
    assert plan.drop_updates_upto == 20


def test_a_step_still_filling_up_is_left_alone() -> None:
    # The step of 60-50 minutes ago straddles the one-hour mark: one update either side.
    plan = plan_thinning(
        policy=parse_history_policy("1h:all,1d:10m"),
        now=NOW + MINUTE,
        current=(2, minutes_ago(58)),
        snapshots=[],
        aged_updates=[(1, minutes_ago(60))],
        first_newer_update=2,
    )
    assert plan.is_empty


def test_materialising_is_bounded_per_pass() -> None:
    # Six closed 10-minute steps, each ending in an update.
    updates = [(seq, minutes_ago(301 - seq * 5)) for seq in range(1, 13)]
    plan = plan_thinning(
        policy=DEFAULT_HISTORY,
        now=NOW,
        current=(40, minutes_ago(1)),
        snapshots=[],
        aged_updates=updates,
        max_builds=2,
    )
    assert [seq for seq, _ in plan.build] == [2, 4]
    # Only what the built snapshots cover is dropped; the rest waits for the next pass.
    assert plan.drop_updates_upto == 4


def test_what_ages_out_of_every_tier_is_dropped_but_the_kept_updates_keep_a_base() -> None:
    policy = parse_history_policy("1h:all")
    old = [(seq, minutes_ago(120 - seq)) for seq in range(1, 6)]
    # Updates 6-8 are inside the hour and need the state at 5 to be rebuilt.
    plan = plan_thinning(
        policy=policy,
        now=NOW,
        current=(8, minutes_ago(1)),
        snapshots=[(3, old[2][1])],
        aged_updates=old,
        first_newer_update=6,
    )
    assert plan.build == [(5, old[4][1])]
    assert plan.drop_snapshots == [3] and plan.drop_updates_upto == 5
    # With a snapshot at 6 already kept, no base is built.
    with_base = plan_thinning(
        policy=policy,
        now=NOW,
        current=(8, minutes_ago(1)),
        snapshots=[(3, old[2][1]), (6, minutes_ago(30))],
        aged_updates=old,
        first_newer_update=6,
    )
    assert with_base.build == [] and with_base.drop_updates_upto == 5


def test_keep_nothing_drops_all_history_and_keep_everything_none() -> None:
    updates = [(seq, minutes_ago(10 - seq)) for seq in range(1, 6)]
    nothing = plan_thinning(
        policy=KEEP_NOTHING,
        now=NOW,
        current=(5, updates[-1][1]),
        snapshots=[(2, updates[1][1])],
        aged_updates=updates,
    )
    assert (nothing.build, nothing.drop_snapshots, nothing.drop_updates_upto) == ([], [2], 5)
    everything = plan_thinning(
        policy=KEEP_EVERYTHING,
        now=NOW,
        current=(5, updates[-1][1]),
        snapshots=[(2, updates[1][1])],
        aged_updates=updates,
    )
    assert everything.is_empty


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
