"""What e-mail a notification causes, and when (sans-I/O: no store, no clock, no socket).

:func:`plan` reads a notification and its person's preferences and answers: nothing (e-mail
off, or a kind they muted), an e-mail of its own, or a place in the person's next digest.
Every answer is computed from the notification alone (its ``created_at``, not the time it
is read), so reading it again after a crash gives the same job id and due time.

Quiet hours defer an e-mail due inside them to their end. Hours are local to the person's
time zone; a window such as 22-7 runs over midnight. :func:`retry_wait` is the backoff
between attempts to send.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from persistence.mail_store import MailJob, Preferences
from persistence.notification_store import Notification

#: The ``@host`` part of every Message-ID Boardcast sends.
MESSAGE_ID_DOMAIN = "boardcast"


@dataclass(frozen=True, slots=True)
class Planned:
    """The job a notification goes into, and when that job is due."""

    job_id: str
    due_at: float
    kind: str  # "immediate" or "digest"

    def job(self, notification: Notification, *, now: float) -> MailJob:
        """The job to record (or to merge into the stored one of the same id)."""
        return MailJob(
            id=self.job_id,
            user=notification.user,
            notification_ids=(notification.id,),
            created_at=now,
            next_attempt_at=self.due_at,
            kind=self.kind,
            updated_at=now,
        )


def zone(name: str) -> ZoneInfo:
    """The time zone of that IANA name, UTC if it is unknown (preferences are checked when
    saved; a name a later tz database dropped must not stop the worker)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def job_id(*parts: str) -> str:
    """A stable job id from what the job is for."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
    return "ml_" + digest


def message_id(job: MailJob) -> str:
    """The Message-ID header of a job's e-mail: the same on every resend."""
    return f"<{job.id}@{MESSAGE_ID_DOMAIN}>"


def in_quiet_hours(preferences: Preferences, at: float) -> bool:
    """Whether ``at`` falls in the person's quiet hours."""
    start, end = preferences.quiet_start, preferences.quiet_end
    if start is None or end is None or start == end:
        return False
    hour = datetime.fromtimestamp(at, zone(preferences.time_zone)).hour
    return start <= hour < end if start < end else hour >= start or hour < end


def after_quiet_hours(preferences: Preferences, at: float) -> float:
    """``at``, or the end of the quiet hours it falls in."""
    if not in_quiet_hours(preferences, at):
        return at
    assert preferences.quiet_end is not None
    local = datetime.fromtimestamp(at, zone(preferences.time_zone))
    end = local.replace(hour=preferences.quiet_end, minute=0, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return _instant(end)


def digest_window_end(preferences: Preferences, at: float) -> float:
    """When the digest that a notification made at ``at`` belongs to goes out."""
    local = datetime.fromtimestamp(at, zone(preferences.time_zone))
    if preferences.mode == "hourly":
        end = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    else:
        end = local.replace(hour=preferences.digest_hour, minute=0, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
    return _instant(end)


def plan(notification: Notification, preferences: Preferences) -> Planned | None:
    """The job ``notification`` goes into, or None when it sends no e-mail."""
    if not preferences.email or notification.kind not in preferences.kinds:
        return None
    if preferences.mode == "immediate":
        due = after_quiet_hours(preferences, notification.created_at)
        return Planned(job_id("immediate", notification.id), due, "immediate")
    end = digest_window_end(preferences, notification.created_at)
    window = datetime.fromtimestamp(end, UTC).isoformat()
    return Planned(
        job_id("digest", notification.user, preferences.mode, window),
        after_quiet_hours(preferences, end),
        "digest",
    )


def late_job_id(notification: Notification) -> str:
    """The job of a notification whose digest had gone out (or filled up) before it was read."""
    return job_id("late", notification.id)


def retry_wait(
    attempts_made: int,
    *,
    base_seconds: float,
    max_seconds: float,
    jitter: float,
    rand: random.Random | None = None,
) -> float:
    """Seconds before the next attempt after ``attempts_made`` failed ones: ``base``
    doubling up to ``max``, each stretched or shrunk by up to ``jitter`` of itself."""
    doublings = max(0, min(attempts_made - 1, 60))
    wait: float = min(max_seconds, base_seconds * float(2**doublings))
    spread = wait * jitter
    return max(0.0, wait + ((rand or random).uniform(-spread, spread) if spread else 0.0))


def _instant(local: datetime) -> float:
    # Through UTC, so a wall time that a DST change skips or repeats still maps to one instant.
    return local.astimezone(UTC).timestamp()
