"""E-mail about notifications: people's preferences, mail jobs, and the worker's cursor.

:class:`Preferences` say whether a person gets e-mail, about which notification kinds, at
once or as an hourly or daily digest, and when not (quiet hours in their time zone).

A :class:`MailJob` is one e-mail owed to one person: the notifications it tells of, and its
delivery state (``pending`` until sent, ``dead`` once it failed for good, ``skipped`` when the
person has no e-mail address). Its ``id`` is derived from what it is for (a notification,
or a person's digest window), so recording it again after a crash records it once, and it
becomes the e-mail's ``Message-ID``: an e-mail sent twice is recognisably the same one.
A digest job collects notifications while it is pending and not claimed; a claim (a lease,
as for webhook deliveries) closes it to further notifications until it is saved again.

Two implementations pass one contract suite (tests/unit/test_mail_store_contract.py):
SQLite beside the board store (``persistence/mail_store_sqlite.py``) and MongoDB
(``persistence/mail_store_mongo.py``); ``persistence/mail_store_factory.py`` picks one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from persistence.notification_store import KINDS

MODES: tuple[str, ...] = ("immediate", "hourly", "daily")
JobStatus = Literal["pending", "sent", "dead", "skipped"]
STATUSES: tuple[str, ...] = ("pending", "sent", "dead", "skipped")

#: Attempts kept in a job's log (the newest).
MAX_LOGGED_ATTEMPTS = 20
#: Notifications one job tells of at most; a fuller digest window spills into another job.
MAX_NOTIFICATIONS_PER_JOB = 200


@dataclass(frozen=True, slots=True)
class Preferences:
    """How one person wants to be e-mailed (the defaults: every kind, at once, any time)."""

    user: str
    email: bool = True
    kinds: tuple[str, ...] = KINDS
    mode: str = "immediate"  # one of MODES
    digest_hour: int = 8  # daily digests go out at this local hour
    quiet_start: int | None = None  # local hour quiet hours begin (None: no quiet hours)
    quiet_end: int | None = None  # local hour they end (may be past midnight)
    time_zone: str = "UTC"  # an IANA name
    updated_at: float = 0.0

    def replace(self, **changes: Any) -> Preferences:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """As stored and as the REST API shows it (without the user)."""
        return {
            "email": self.email,
            "kinds": list(self.kinds),
            "mode": self.mode,
            "digest_hour": self.digest_hour,
            "quiet_hours": (
                None
                if self.quiet_start is None or self.quiet_end is None
                else {"start": self.quiet_start, "end": self.quiet_end}
            ),
            "time_zone": self.time_zone,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, user: str, raw: dict[str, Any]) -> Preferences:
        """From :meth:`to_json` (as stored: trusted)."""
        quiet = raw.get("quiet_hours")
        return cls(
            user=user,
            email=bool(raw.get("email", True)),
            kinds=tuple(raw.get("kinds", KINDS)),
            mode=str(raw.get("mode", "immediate")),
            digest_hour=int(raw.get("digest_hour", 8)),
            quiet_start=None if not quiet else int(quiet["start"]),
            quiet_end=None if not quiet else int(quiet["end"]),
            time_zone=str(raw.get("time_zone", "UTC")),
            updated_at=float(raw.get("updated_at", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class MailAttempt:
    """One try to hand an e-mail to the SMTP server: when, and the code or error."""

    at: float
    code: int | None = None  # the SMTP reply code, None with no answer
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {"at": self.at, "code": self.code, "error": self.error}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MailAttempt:
        """From :meth:`to_dict`."""
        return cls(float(raw["at"]), raw.get("code"), raw.get("error"))


@dataclass(frozen=True, slots=True)
class MailJob:
    """One e-mail owed to one person."""

    id: str  # stable for what it is for; the Message-ID's left part
    user: str
    notification_ids: tuple[str, ...]
    created_at: float
    next_attempt_at: float | None  # None once sent, dead or skipped
    kind: str = "immediate"  # "immediate" or "digest"
    status: JobStatus = "pending"
    attempts_made: int = 0
    attempts: tuple[MailAttempt, ...] = field(default_factory=tuple)
    updated_at: float = 0.0

    def replace(self, **changes: Any) -> MailJob:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """As stored."""
        return {
            "id": self.id,
            "user": self.user,
            "notification_ids": list(self.notification_ids),
            "created_at": self.created_at,
            "next_attempt_at": self.next_attempt_at,
            "kind": self.kind,
            "status": self.status,
            "attempts_made": self.attempts_made,
            "attempts": [a.to_dict() for a in self.attempts[-MAX_LOGGED_ATTEMPTS:]],
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MailJob:
        """From :meth:`to_dict`."""
        return cls(
            id=str(raw["id"]),
            user=str(raw["user"]),
            notification_ids=tuple(raw.get("notification_ids") or ()),
            created_at=float(raw["created_at"]),
            next_attempt_at=raw.get("next_attempt_at"),
            kind=str(raw.get("kind", "immediate")),
            status=raw.get("status", "pending"),
            attempts_made=int(raw.get("attempts_made") or 0),
            attempts=tuple(MailAttempt.from_dict(a) for a in raw.get("attempts") or ()),
            updated_at=float(raw.get("updated_at") or 0.0),
        )


@runtime_checkable
class MailStore(Protocol):
    """Where preferences, mail jobs and the cursor live; safe from several processes."""

    async def get_preferences(self, user: str) -> Preferences | None:
        """A person's stored preferences, or None (the defaults apply)."""
        ...

    async def preferences_for(self, users: Sequence[str]) -> dict[str, Preferences]:
        """The stored preferences of these people (those with none are absent)."""
        ...

    async def save_preferences(self, preferences: Preferences) -> None:
        """Store a person's preferences, replacing any."""
        ...

    async def merge_jobs(self, jobs: Sequence[MailJob], *, now: float) -> list[str]:
        """Record each job, or add its notifications to the stored job of that id if it is
        pending and not claimed at ``now`` (up to MAX_NOTIFICATIONS_PER_JOB). The ids of the
        jobs that were closed (sent, dead, skipped, claimed or full): nothing was added."""
        ...

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[MailJob]:
        """Pending jobs due at ``now`` (soonest first), each claimed for ``lease`` seconds:
        no other loop takes it, no notification joins it, and it is due again after it."""
        ...

    async def save_jobs(self, jobs: Sequence[MailJob]) -> None:
        """Replace stored jobs (status, attempts, next attempt), releasing their claims."""
        ...

    async def get_job(self, job_id: str) -> MailJob | None:
        """One job, or None."""
        ...

    async def list_jobs(
        self, status: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[MailJob]:
        """Jobs of one status, most recently updated first; after the one ``before`` names
        (its ``updated_at`` and ``id``) if given."""
        ...

    async def retry_job(self, job_id: str, *, now: float) -> MailJob | None:
        """Make a dead job pending again, due at ``now`` with a fresh attempt count; None
        if there is no dead job of that id."""
        ...

    async def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, 0 if none)."""
        ...

    async def cursor(self) -> int:
        """The last notification seq the e-mail worker has recorded jobs for (0 at first)."""
        ...

    async def set_cursor(self, seq: int) -> None:
        """Move the cursor (never back: a lower seq changes nothing)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
