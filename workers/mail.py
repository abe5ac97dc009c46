"""The e-mail worker: follows the notification store, records mail jobs, sends them.

:meth:`MailWorker.follow_once` reads the notifications after its stored cursor
(:meth:`NotificationStore.since`), plans each with its person's preferences
(``workers/mail_rules.py``), records the jobs (a digest job collects several), and only then
moves the cursor: a crash in between reads the same notifications again, and their jobs,
keyed by what they are for, are recorded once.

:meth:`MailWorker.send_once` claims due jobs (a lease: a loop killed mid-send leaves the job
due again soon, under the same Message-ID), looks up each person's address, composes the
e-mail from the notifications and sends it (``workers/mail_smtp.py``). Sent ends a job; a
5xx refusal or the last allowed attempt makes it dead (read and retried through
``/v1/admin/mail/dead-letters``); anything else is tried again after a backoff with jitter.
A person with no e-mail address: the job is ``skipped``, and counted.

Delivery is at least once: a crash after the SMTP server accepted a message and before the
job was saved sends it again, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from persistence.mail_store import MailAttempt, MailJob, MailStore, Preferences
from persistence.notification_store import Notification, NotificationStore
from workers.mail_rules import after_quiet_hours, late_job_id, plan, retry_wait
from workers.mail_smtp import SendResult, SmtpSender, compose

log = logging.getLogger("boardcast.mail")

#: A person's e-mail address by account id (None: they have none, or no such account).
AddressBook = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class MailSettings:
    """How the e-mail worker paces, retries and bounds itself (docs/settings.md)."""

    sender: str = "boardcast@localhost"  # the From address
    public_url: str = ""  # links to boards in e-mail start with this; "": no links
    batch_size: int = 200  # notifications read per round
    poll_seconds: float = 1.0  # how often the store is read for notifications and due jobs
    concurrency: int = 4  # e-mails being sent at once
    lease_seconds: float = 70.0  # a claimed job is due again after this if not saved
    max_attempts: int = 8  # then the job is dead
    retry_base_seconds: float = 30.0  # the first wait after a failed attempt; doubles
    retry_max_seconds: float = 3600.0  # the longest wait
    retry_jitter: float = 0.2  # each wait changes by up to this share of itself


class MailWorker:
    """The e-mail worker over a notification store and a mail store (module docstring)."""

    def __init__(
        self,
        notifications: NotificationStore,
        store: MailStore,
        sender: SmtpSender,
        addresses: AddressBook,
        settings: MailSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rand: random.Random | None = None,
    ) -> None:
        self.notifications = notifications
        self.store = store
        self.sender = sender
        self.addresses = addresses
        self.settings = settings or MailSettings()
        self._clock = clock
        self._rand = rand or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.attempts = 0  # attempts made by this worker (for logs and tests)

    # -- following the notification store --------------------------------------------------

    async def follow_once(self) -> int:
        """Record the jobs of the next batch of notifications; how many were read."""
        cursor = await self.store.cursor()
        batch = await self.notifications.since(cursor, limit=self.settings.batch_size)
        if not batch:
            return 0
        await self.record(batch)
        # Only now: a crash before this line reads the batch again, recording nothing twice.
        await self.store.set_cursor(batch[-1].seq)
        return len(batch)

    async def record(self, batch: Sequence[Notification]) -> None:
        """Record the jobs these notifications cause (idempotent: ids are stable)."""
        preferences = await self.store.preferences_for(sorted({n.user for n in batch}))
        now = self._clock()
        jobs: list[MailJob] = []
        planned: dict[str, list[Notification]] = {}
        for notification in batch:
            chosen = preferences.get(notification.user) or Preferences(notification.user)
            found = plan(notification, chosen)
            if found is not None:
                jobs.append(found.job(notification, now=now))
                planned.setdefault(found.job_id, []).append(notification)
        closed = await self.store.merge_jobs(jobs, now=now)
        if closed:
            # Their digest went out (or filled up) before they were read: an e-mail each.
            late = [
                MailJob(
                    id=late_job_id(notification),
                    user=notification.user,
                    notification_ids=(notification.id,),
                    created_at=now,
                    # Still not inside the person's quiet hours.
                    next_attempt_at=after_quiet_hours(
                        preferences.get(notification.user) or Preferences(notification.user), now
                    ),
                    updated_at=now,
                )
                for job_id in dict.fromkeys(closed)
                for notification in planned[job_id]
            ]
            await self.store.merge_jobs(late, now=now)

    # -- sending ---------------------------------------------------------------------------

    async def send_once(self) -> int:
        """Claim the jobs due now and attempt each; how many were attempted."""
        chosen = self.settings
        due = await self.store.claim_due(
            self._clock(), lease=chosen.lease_seconds, limit=chosen.concurrency
        )
        if not due:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(job) for job in due))
        # One write for the round; a crash before it leaves the jobs claimed, due again
        # after the lease, under the same Message-IDs.
        await self.store.save_jobs(outcomes)
        return len(due)

    async def _attempt(self, job: MailJob) -> MailJob:
        address = await self.addresses(job.user)
        now = self._clock()
        if not address:
            log.info("mail job %s skipped: user %s has no e-mail address", job.id, job.user)
            return job.replace(status="skipped", next_attempt_at=None, updated_at=now)
        found = await self.notifications.get(job.notification_ids)
        if not found:
            return job.replace(status="skipped", next_attempt_at=None, updated_at=now)
        message = compose(
            job, found, to=address, sender=self.settings.sender, public_url=self.settings.public_url
        )
        result = await self.sender.send(message)
        self.attempts += 1
        return self._outcome(job, result, started=now)

    def _outcome(self, job: MailJob, result: SendResult, *, started: float) -> MailJob:
        now = self._clock()
        made = job.attempts_made + 1
        attempts = (*job.attempts, MailAttempt(started, result.code, result.error))
        if result.sent:
            return job.replace(
                status="sent", next_attempt_at=None, attempts_made=made, attempts=attempts,
                updated_at=now,
            )  # fmt: skip
        if result.permanent or made >= self.settings.max_attempts:
            log.warning("mail job %s dead after %d attempts: %s", job.id, made, result.error)
            return job.replace(
                status="dead", next_attempt_at=None, attempts_made=made, attempts=attempts,
                updated_at=now,
            )  # fmt: skip
        wait = retry_wait(
            made,
            base_seconds=self.settings.retry_base_seconds,
            max_seconds=self.settings.retry_max_seconds,
            jitter=self.settings.retry_jitter,
            rand=self._rand,
        )
        return job.replace(
            status="pending", next_attempt_at=now + wait, attempts_made=made, attempts=attempts,
            updated_at=now,
        )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Follow the notifications until caught up, then send what is due; work done."""
        work = 0
        for _ in range(1000):  # bounded: the rest waits for the next round
            read = await self.follow_once()
            work += read
            if read < self.settings.batch_size:
                break
        return work + await self.send_once()

    def wake(self) -> None:
        """Look for notifications and due jobs now."""
        self._wakeup.set()

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop; an e-mail being sent is abandoned (its lease makes it due again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                work = await self.run_once()
            except Exception:
                log.exception("e-mail round failed; retrying")
                work = 0
            if work:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_seconds)
            self._wakeup.clear()
