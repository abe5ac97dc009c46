"""When a notification's e-mail goes (sans-I/O): quiet hours in any zone, across midnight and
daylight-saving changes; digest windows; the same answer for the same notification."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from persistence.mail_store import Preferences
from persistence.notification_store import Notification
from workers.mail_rules import (
    after_quiet_hours,
    digest_window_end,
    in_quiet_hours,
    plan,
    retry_wait,
)

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
_instants = st.floats(1.6e9, 2.0e9)
_hours = st.integers(0, 23)


def local(at: float, zone: str) -> datetime:
    return datetime.fromtimestamp(at, ZoneInfo(zone))


@given(at=_instants, start=_hours, end=_hours, zone=st.sampled_from(ZONES))
def test_after_quiet_hours_is_outside_them_and_no_later_than_a_day(
    at: float, start: int, end: int, zone: str
) -> None:
    chosen = Preferences("u", quiet_start=start, quiet_end=end, time_zone=zone)
    due = after_quiet_hours(chosen, at)
    assert at <= due <= at + 25 * 3600
    assert not in_quiet_hours(chosen, due)
    if due > at:
        assert in_quiet_hours(chosen, at)
        assert local(due, zone).minute == 0


def test_quiet_hours_run_over_midnight() -> None:
    chosen = Preferences("u", quiet_start=22, quiet_end=7, time_zone="Europe/Paris")
    night = datetime(2026, 3, 2, 23, 30, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    early = datetime(2026, 3, 3, 6, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    noon = datetime(2026, 3, 3, 12, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    seven = datetime(2026, 3, 3, 7, 0, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    assert in_quiet_hours(chosen, night) and in_quiet_hours(chosen, early)
    assert not in_quiet_hours(chosen, noon)
    assert after_quiet_hours(chosen, night) == seven == after_quiet_hours(chosen, early)


@given(
    at=_instants,
    zone=st.sampled_from(ZONES),
    hour=_hours,
    mode=st.sampled_from(["hourly", "daily"]),
)
def test_a_digest_window_ends_after_its_notification_within_a_day(
    at: float, zone: str, hour: int, mode: str
) -> None:
    chosen = Preferences("u", mode=mode, digest_hour=hour, time_zone=zone)
    end = digest_window_end(chosen, at)
    assert at < end <= at + (2 if mode == "hourly" else 25) * 3600
    # Everything in the window up to its end shares it (and so the job).
    assert digest_window_end(chosen, end - 1) == end


@given(at=_instants, mode=st.sampled_from(["immediate", "hourly", "daily"]))
def test_the_same_notification_plans_the_same_job(at: float, mode: str) -> None:
    chosen = Preferences("u", mode=mode, quiet_start=1, quiet_end=5, time_zone="Asia/Kolkata")
    made = Notification("n1", "u", "assigned", "t", at)
    assert plan(made, chosen) == plan(made, chosen)
    assert plan(made, chosen.replace(kinds=("moved",))) is None
    assert plan(made, chosen.replace(email=False)) is None


def test_retry_waits_double_up_to_the_ceiling_with_bounded_jitter() -> None:
    waits = [retry_wait(n, base_seconds=30, max_seconds=3600, jitter=0) for n in range(1, 10)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    jittered = retry_wait(3, base_seconds=30, max_seconds=3600, jitter=0.2)
    assert 96 <= jittered <= 144
    assert retry_wait(10_000, base_seconds=30, max_seconds=3600, jitter=0) == 3600
