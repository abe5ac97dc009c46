"""Webhooks as a worker: ``handle()`` records deliveries, a delivery loop sends them.

:class:`WebhookWorker` is the event log's consumer (``workers/runtime.py``). For each event
of a project it records one pending :class:`~persistence.webhook_store.Delivery` per enabled
endpoint whose filter matches, keyed by the ``webhook-id`` (endpoint and event id), and
returns: it never calls out, and a batch handled twice records nothing new. The runtime
commits the log offset only after ``handle()`` returned, so an event is either recorded or
comes again.

:class:`DeliveryLoop` claims due deliveries (each claim postpones the delivery by a lease,
so a loop killed mid-attempt leaves it due again soon, with the same ``webhook-id``), sends
them signed (``workers/webhooks_signing.py``) and records each attempt: a 2xx ends it, 410
disables the endpoint, anything else is tried again on the schedule
(``workers/webhooks_retry.py``) until the last attempt, when the delivery has failed. An
endpoint whose deliveries keep failing (``disable_after_failures`` in a row, or none
delivered for ``disable_after_seconds``) is disabled and ``on_disabled`` is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from persistence.event_log import LoggedEvent
from persistence.webhook_store import Attempt, Delivery, Endpoint, WebhookStore
from workers.webhooks_http import SendResult, WebhookSender
from workers.webhooks_retry import Outcome, RetryPolicy, classify
from workers.webhooks_signing import encode_body, message_id, payload, signed_headers

log = logging.getLogger("boardcast.webhooks")

#: Told when an endpoint is disabled: the endpoint (as it was) and why.
DisabledHook = Callable[[Endpoint, str], Awaitable[None]]


class WebhookWorker:
    """The event log's webhook consumer: records what is owed, sends nothing."""

    name = "webhooks"

    def __init__(
        self,
        store: WebhookStore,
        *,
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wake = wake

    async def handle(self, events: Sequence[LoggedEvent]) -> None:
        """Record one pending delivery per (matching endpoint, event); idempotent."""
        projects = sorted({event.project for event in events if event.project})
        if not projects:
            return
        endpoints = await self._store.endpoints_for(projects)
        now = self._clock()
        owed = [
            Delivery(
                id=message_id(endpoint.id, event.id),
                endpoint_id=endpoint.id,
                project=endpoint.project,
                event_id=event.id,
                event_type=event.type,
                body=encode_body(payload(event)),
                created_at=now,
                next_attempt_at=now,
            )
            for event in events
            for endpoint in endpoints
            if endpoint.project == event.project and endpoint.wants(event.type)
        ]
        if owed and await self._store.add_deliveries(owed) and self._wake is not None:
            self._wake()


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How the delivery loop retries, disables and paces itself (docs/settings.md)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    disable_after_failures: int = 20  # deliveries failed in a row
    disable_after_seconds: float = 5 * 24 * 3600.0  # no attempt succeeded for this long
    poll_seconds: float = 1.0  # how often the store is read for due deliveries
    concurrency: int = 16  # attempts in flight
    lease_seconds: float = 60.0  # a claimed delivery is due again after this if not saved


class DeliveryLoop:
    """Sends due deliveries and records every attempt (see the module docstring)."""

    def __init__(
        self,
        store: WebhookStore,
        sender: WebhookSender,
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_disabled: DisabledHook | None = None,
        rand: random.Random | None = None,
    ) -> None:
        self._store = store
        self.sender = sender
        self._settings = settings or DeliverySettings()
        self._clock = clock
        self._on_disabled = on_disabled
        self._rand = rand or random.Random()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.attempts = 0  # attempts made by this loop (for the bench and logs)

    def wake(self) -> None:
        """Look for due deliveries now (new ones were recorded)."""
        self._wakeup.set()

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop; an attempt in flight is abandoned (its lease makes it due again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("webhook delivery round failed; retrying")
                sent = 0
            if sent:
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.poll_seconds)
            self._wakeup.clear()

    async def run_once(self) -> int:
        """Claim what is due now and attempt it; how many attempts were made."""
        bounds = self._settings
        due = await self._store.claim_due(
            self._clock(), lease=bounds.lease_seconds, limit=bounds.concurrency
        )
        if not due:
            return 0
        endpoints: dict[str, Endpoint | None] = {}
        for delivery in due:
            if delivery.endpoint_id not in endpoints:
                endpoints[delivery.endpoint_id] = await self._store.get_endpoint(
                    delivery.endpoint_id
                )
        outcomes: list[Delivery] = []
        await asyncio.gather(*(self._attempt(d, endpoints[d.endpoint_id], outcomes) for d in due))
        # One transaction for the round's outcomes; a crash before it leaves them claimed,
        # due again after the lease, with the same webhook-id.
        await self._store.save_deliveries(outcomes)
        return len(due)

    async def _attempt(
        self, delivery: Delivery, endpoint: Endpoint | None, outcomes: list[Delivery]
    ) -> None:
        if endpoint is None:
            return  # deleted with its deliveries; a stale claim
        if not endpoint.enabled:
            outcomes.append(delivery.replace(status="paused"))
            return
        started = self._clock()
        headers = signed_headers(
            endpoint.secrets_at(started), delivery.id, int(started), delivery.body
        )
        result = await self.sender.send(endpoint.url, headers, delivery.body)
        self.attempts += 1
        await self._record(delivery, endpoint, started, result, outcomes)

    async def _record(
        self,
        delivery: Delivery,
        endpoint: Endpoint,
        started: float,
        result: SendResult,
        outcomes: list[Delivery],
    ) -> None:
        now = self._clock()
        made = delivery.attempts_made + 1
        attempts = (
            *delivery.attempts,
            Attempt(started, result.status, result.error, result.seconds),
        )
        outcome = classify(result.status)
        if outcome is Outcome.DELIVERED:
            outcomes.append(
                delivery.replace(
                    status="delivered", next_attempt_at=None, attempts_made=made, attempts=attempts
                )
            )
            await self._store.record_health(endpoint.id, ok=True, at=now)
            return
        if outcome is Outcome.GONE:
            outcomes.append(
                delivery.replace(
                    status="failed", next_attempt_at=None, attempts_made=made, attempts=attempts
                )
            )
            await self._disable(endpoint, "the receiver answered 410 Gone", now)
            return
        wait = self._settings.retry.next_wait(made, self._rand)
        failed = wait is None
        outcomes.append(
            delivery.replace(
                status="failed" if failed else "pending",
                next_attempt_at=None if wait is None else now + wait,
                attempts_made=made,
                attempts=attempts,
            )
        )
        health = await self._store.record_health(
            endpoint.id, ok=False, at=started, delivery_failed=failed
        )
        if failed and health is not None:
            reason = self._disable_reason(health, now)
            if reason is not None:
                await self._disable(endpoint, reason, now)

    def _disable_reason(self, endpoint: Endpoint, now: float) -> str | None:
        bounds = self._settings
        if endpoint.failed_in_row >= bounds.disable_after_failures:
            return f"{endpoint.failed_in_row} deliveries in a row failed"
        since = endpoint.failing_since
        if since is not None and now - since >= bounds.disable_after_seconds:
            return f"no delivery succeeded for {int(now - since)} s"
        return None

    async def _disable(self, endpoint: Endpoint, reason: str, now: float) -> None:
        if not await self._store.disable_endpoint(endpoint.id, reason=reason, at=now):
            return  # already disabled (by another attempt, or by hand): told once
        log.warning(
            "webhook endpoint %s of project %s disabled: %s", endpoint.id, endpoint.project, reason
        )
        if self._on_disabled is not None:
            try:
                await self._on_disabled(endpoint, reason)
            except Exception:
                log.exception("telling about disabled webhook endpoint %s failed", endpoint.id)
