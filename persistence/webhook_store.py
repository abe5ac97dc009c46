"""Webhook endpoints and their deliveries: the records, and the store interface.

An :class:`Endpoint` is a project's registered URL with its event filter and signing
secrets; a :class:`Delivery` is one event owed to one endpoint, keyed by its ``webhook-id``
(derived from the endpoint and the event id), so recording it twice records it once. A
delivery is ``pending`` until an attempt succeeds (``delivered``) or the last attempt fails
(``failed``); while its endpoint is disabled it is ``paused``.

Two implementations pass one contract suite (tests/unit/test_webhook_store_contract.py):
SQLite in the data directory (``persistence/webhook_store_sqlite.py``) and MongoDB
(``persistence/webhook_store_mongo.py``); ``persistence/webhook_store_factory.py`` picks one
by the store URL. Secrets (and delivery bodies) are sealed at rest when encryption is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from crdt.events import EVENT_TYPES
from persistence.encrypted import KeySource, context

#: Every event type an endpoint can ask for; ``"*"`` asks for all of them.
KNOWN_EVENTS: frozenset[str] = frozenset(EVENT_TYPES)
ALL_EVENTS = "*"

DeliveryStatus = Literal["pending", "delivered", "failed", "paused"]

#: Attempts kept in a delivery's log (the newest); older ones are dropped.
MAX_LOGGED_ATTEMPTS = 30


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A project's webhook endpoint.

    ``previous_secret`` still signs (beside ``secret``) until ``previous_until``: a rotation's
    grace period, in which receivers move to the new secret.
    """

    id: str
    project: str
    url: str
    events: tuple[str, ...]
    secret: str
    enabled: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0
    previous_secret: str | None = None
    previous_until: float = 0.0
    disabled_reason: str | None = None
    failing_since: float | None = None  # first failed attempt since the last success
    failed_in_row: int = 0  # deliveries failed in a row (after their last attempt)
    description: str = ""

    def wants(self, event_type: str) -> bool:
        """Whether events of ``event_type`` go to this endpoint."""
        return ALL_EVENTS in self.events or event_type in self.events

    def secrets_at(self, now: float) -> tuple[str, ...]:
        """The secrets that sign an attempt made at ``now``, newest first."""
        if self.previous_secret and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)

    def replace(self, **changes: Any) -> Endpoint:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try: when, how long, and the status code or the error."""

    at: float
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {"at": self.at, "status": self.status, "error": self.error, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Attempt:
        """From :meth:`to_dict`."""
        return cls(
            float(raw["at"]), raw.get("status"), raw.get("error"), float(raw.get("seconds", 0))
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event owed to one endpoint."""

    id: str  # the webhook-id
    endpoint_id: str
    project: str
    event_id: str
    event_type: str
    body: str  # the JSON body, as signed
    created_at: float
    next_attempt_at: float | None  # None once delivered or failed
    status: DeliveryStatus = "pending"
    attempts_made: int = 0  # scheduled attempts so far (a redelivery sets it to the last)
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)

    def replace(self, **changes: Any) -> Delivery:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


@runtime_checkable
class WebhookStore(Protocol):
    """Where endpoints and deliveries live; every method is safe from several processes."""

    async def add_endpoint(self, endpoint: Endpoint, *, max_per_project: int) -> bool:
        """Store a new endpoint; False (nothing stored) if its project has ``max_per_project``."""
        ...

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None."""
        ...

    async def list_endpoints(self, project: str) -> list[Endpoint]:
        """A project's endpoints, oldest first."""
        ...

    async def endpoints_for(self, projects: Sequence[str]) -> list[Endpoint]:
        """The enabled endpoints of these projects."""
        ...

    async def save_endpoint(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint (by id); its paused or pending deliveries follow
        ``enabled``: disabling pauses them, enabling makes them due now."""
        ...

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove an endpoint and its deliveries; False if there was none."""
        ...

    async def record_health(
        self, endpoint_id: str, *, ok: bool, at: float, delivery_failed: bool = False
    ) -> Endpoint | None:
        """Note one attempt's outcome on its endpoint, atomically (a change made through the
        API meanwhile is kept): success clears ``failing_since`` and ``failed_in_row``; a
        failure sets ``failing_since`` if unset, and a delivery that failed for good adds
        one to ``failed_in_row``. The endpoint as it is now, or None if it is gone."""
        ...

    async def disable_endpoint(self, endpoint_id: str, *, reason: str, at: float) -> bool:
        """Disable an enabled endpoint and pause its deliveries; False if it was not enabled."""
        ...

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Record deliveries not recorded yet (by id); how many were new."""
        ...

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Pending deliveries due at ``now`` (oldest first), each postponed by ``lease`` so no
        other loop takes it meanwhile; a claim whose holder died is due again after it."""
        ...

    async def save_delivery(self, delivery: Delivery) -> None:
        """Replace a stored delivery (its attempts, status, next attempt)."""
        ...

    async def save_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Replace several stored deliveries at once (one transaction where there are any)."""
        ...

    async def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None:
        """One delivery of an endpoint, or None."""
        ...

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """An endpoint's deliveries, newest first; after the one ``before`` names
        (its ``created_at`` and ``id``) if given."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Sealer:
    """Seals secrets and bodies before a store writes them, when encryption is on.

    Text sealed before stays readable after encryption is turned off (as long as the key
    file is there); plaintext written before it was on is read as it is.
    """

    def __init__(self, keys: KeySource | None = None, *, encrypt: bool = False) -> None:
        self._keys = keys  # None: plaintext
        self._encrypt = encrypt and keys is not None

    def seal(self, text: str, kind: str, record_id: str) -> str:
        """``text`` as stored."""
        if not self._encrypt or self._keys is None:
            return text
        return self._keys.seal_text(text, context(kind, record_id))

    def open(self, stored: str, kind: str, record_id: str) -> str:
        """The text a stored value holds."""
        if self._keys is None:
            return stored
        return self._keys.open_text(stored, context(kind, record_id))
