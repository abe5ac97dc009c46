"""Webhook endpoints and deliveries in SQLite: ``webhooks.sqlite3`` in the data directory.

WAL with ``synchronous=FULL``: a delivery recorded is on disk before the event log's offset
moves past its event, so a crash loses none. Calls run in a thread, one at a time per
process; several processes may share the file (SQLite's locks order them, and a claim is
one ``UPDATE ... RETURNING``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from persistence.sqlite_files import SerialFile
from persistence.webhook_store import (
    MAX_LOGGED_ATTEMPTS,
    Attempt,
    Delivery,
    Endpoint,
    Sealer,
)

FILENAME = "webhooks.sqlite3"

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY, project TEXT NOT NULL, created_at REAL NOT NULL, doc TEXT NOT NULL,
    enabled INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_project ON webhook_endpoints (project, created_at);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, status TEXT NOT NULL,
    next_attempt_at REAL, created_at REAL NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint
    ON webhook_deliveries (endpoint_id, created_at);
"""


def endpoint_document(endpoint: Endpoint, sealer: Sealer) -> dict[str, Any]:
    """An endpoint as stored: its secrets sealed."""
    previous = endpoint.previous_secret
    return {
        "id": endpoint.id,
        "project": endpoint.project,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "secret": sealer.seal(endpoint.secret, "webhook-secret", endpoint.id),
        "enabled": endpoint.enabled,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "previous_secret": (
            sealer.seal(previous, "webhook-secret", endpoint.id) if previous else None
        ),
        "previous_until": endpoint.previous_until,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": endpoint.failing_since,
        "failed_in_row": endpoint.failed_in_row,
        "description": endpoint.description,
    }


def endpoint_from(doc: dict[str, Any], sealer: Sealer) -> Endpoint:
    """The endpoint a stored document holds."""
    previous = doc.get("previous_secret")
    return Endpoint(
        id=doc["id"],
        project=doc["project"],
        url=doc["url"],
        events=tuple(doc["events"]),
        secret=sealer.open(doc["secret"], "webhook-secret", doc["id"]),
        enabled=bool(doc["enabled"]),
        created_at=float(doc["created_at"]),
        updated_at=float(doc["updated_at"]),
        previous_secret=sealer.open(previous, "webhook-secret", doc["id"]) if previous else None,
        previous_until=float(doc.get("previous_until") or 0.0),
        disabled_reason=doc.get("disabled_reason"),
        failing_since=doc.get("failing_since"),
        failed_in_row=int(doc.get("failed_in_row") or 0),
        description=doc.get("description") or "",
    )


def delivery_document(delivery: Delivery, sealer: Sealer) -> dict[str, Any]:
    """A delivery as stored: its body sealed."""
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "project": delivery.project,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "body": sealer.seal(delivery.body, "webhook-body", delivery.id),
        "created_at": delivery.created_at,
        "next_attempt_at": delivery.next_attempt_at,
        "status": delivery.status,
        "attempts_made": delivery.attempts_made,
        "attempts": [attempt.to_dict() for attempt in delivery.attempts[-MAX_LOGGED_ATTEMPTS:]],
    }


def delivery_from(doc: dict[str, Any], sealer: Sealer) -> Delivery:
    """The delivery a stored document holds."""
    return Delivery(
        id=doc["id"],
        endpoint_id=doc["endpoint_id"],
        project=doc["project"],
        event_id=doc["event_id"],
        event_type=doc["event_type"],
        body=sealer.open(doc["body"], "webhook-body", doc["id"]),
        created_at=float(doc["created_at"]),
        next_attempt_at=doc.get("next_attempt_at"),
        status=doc["status"],
        attempts_made=int(doc.get("attempts_made") or 0),
        attempts=tuple(Attempt.from_dict(raw) for raw in doc.get("attempts") or ()),
    )


def health_changes(
    doc: dict[str, Any], *, ok: bool, at: float, delivery_failed: bool
) -> dict[str, Any]:
    """The fields of a stored endpoint that one attempt's outcome changes."""
    if ok:
        if doc.get("failing_since") is None and not doc.get("failed_in_row"):
            return {}
        return {"failing_since": None, "failed_in_row": 0}
    changes: dict[str, Any] = {}
    if doc.get("failing_since") is None:
        changes["failing_since"] = at
    if delivery_failed:
        changes["failed_in_row"] = int(doc.get("failed_in_row") or 0) + 1
    return changes


class SqliteWebhookStore:
    """The embedded webhook store (see the module docstring)."""

    def __init__(self, path: str, *, sealer: Sealer | None = None) -> None:
        self.path = path
        self._sealer = sealer or Sealer()
        self._file = SerialFile(path, _SCHEMA)

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._file.run(work)

    # -- endpoints -------------------------------------------------------------------------

    async def add_endpoint(self, endpoint: Endpoint, *, max_per_project: int) -> bool:
        """Store a new endpoint unless its project is full."""
        doc = json.dumps(endpoint_document(endpoint, self._sealer))

        def add(db: sqlite3.Connection) -> bool:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM webhook_endpoints WHERE project = ?", (endpoint.project,)
            ).fetchone()
            if count >= max_per_project:
                return False
            db.execute(
                "INSERT INTO webhook_endpoints (id, project, created_at, doc, enabled)"
                " VALUES (?, ?, ?, ?, ?)",
                (endpoint.id, endpoint.project, endpoint.created_at, doc, int(endpoint.enabled)),
            )
            return True

        return await self._run(add)

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
            ).fetchall()
        )
        return endpoint_from(json.loads(rows[0][0]), self._sealer) if rows else None

    async def list_endpoints(self, project: str) -> list[Endpoint]:
        """A project's endpoints, oldest first."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc FROM webhook_endpoints WHERE project = ? ORDER BY created_at, id",
                (project,),
            ).fetchall()
        )
        return [endpoint_from(json.loads(doc), self._sealer) for (doc,) in rows]

    async def endpoints_for(self, projects: Sequence[str]) -> list[Endpoint]:
        """The enabled endpoints of these projects."""
        wanted = sorted(set(projects))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT doc FROM webhook_endpoints WHERE enabled = 1 AND project IN ({marks})",
                wanted,
            ).fetchall()
        )
        return [endpoint_from(json.loads(doc), self._sealer) for (doc,) in rows]

    async def save_endpoint(self, endpoint: Endpoint) -> None:
        """Replace the endpoint; pause or resume its deliveries with it."""
        doc = json.dumps(endpoint_document(endpoint, self._sealer))

        def save(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE webhook_endpoints SET doc = ?, enabled = ? WHERE id = ?",
                (doc, int(endpoint.enabled), endpoint.id),
            )
            _follow_enabled(db, endpoint)

        await self._run(save)

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint and its deliveries."""

        def delete(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))
            db.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
            return gone.rowcount > 0

        return await self._run(delete)

    async def record_health(
        self, endpoint_id: str, *, ok: bool, at: float, delivery_failed: bool = False
    ) -> Endpoint | None:
        """Note an attempt's outcome on the endpoint."""

        def record(db: sqlite3.Connection) -> Endpoint | None:
            rows = db.execute(
                "SELECT doc FROM webhook_endpoints WHERE id = ?", (endpoint_id,)
            ).fetchall()
            if not rows:
                return None
            doc = json.loads(rows[0][0])
            changed = health_changes(doc, ok=ok, at=at, delivery_failed=delivery_failed)
            if changed:
                doc.update(changed)
                db.execute(
                    "UPDATE webhook_endpoints SET doc = ? WHERE id = ?",
                    (json.dumps(doc), endpoint_id),
                )
            return endpoint_from(doc, self._sealer)

        return await self._run(record)

    async def disable_endpoint(self, endpoint_id: str, *, reason: str, at: float) -> bool:
        """Disable the endpoint if enabled, pausing its deliveries."""

        def disable(db: sqlite3.Connection) -> bool:
            rows = db.execute(
                "SELECT doc FROM webhook_endpoints WHERE id = ? AND enabled = 1", (endpoint_id,)
            ).fetchall()
            if not rows:
                return False
            doc = json.loads(rows[0][0])
            doc.update(enabled=False, disabled_reason=reason, updated_at=at)
            db.execute(
                "UPDATE webhook_endpoints SET doc = ?, enabled = 0 WHERE id = ?",
                (json.dumps(doc), endpoint_id),
            )
            _follow_enabled(db, endpoint_from(doc, self._sealer))
            return True

        return await self._run(disable)

    # -- deliveries ------------------------------------------------------------------------

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> int:
        """Record the deliveries not recorded yet."""
        rows = [
            (
                d.id,
                d.endpoint_id,
                d.status,
                d.next_attempt_at,
                d.created_at,
                json.dumps(delivery_document(d, self._sealer)),
            )
            for d in deliveries
        ]

        def add(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO webhook_deliveries"
                " (id, endpoint_id, status, next_attempt_at, created_at, doc)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

        return await self._run(add) if rows else 0

    async def claim_due(self, now: float, *, lease: float, limit: int) -> list[Delivery]:
        """Take due pending deliveries, postponing each by ``lease``."""

        def claim(db: sqlite3.Connection) -> list[str]:
            found = db.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id IN ("
                " SELECT id FROM webhook_deliveries WHERE status = 'pending'"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at LIMIT ?)"
                " RETURNING doc",
                (now + lease, now, limit),
            ).fetchall()
            return [doc for (doc,) in found]

        docs = await self._run(claim)
        claimed = [delivery_from(json.loads(doc), self._sealer) for doc in docs]
        return sorted(
            (d.replace(next_attempt_at=now + lease) for d in claimed),
            key=lambda d: (d.created_at, d.id),
        )

    async def save_delivery(self, delivery: Delivery) -> None:
        """Replace the delivery."""
        await self.save_deliveries([delivery])

    async def save_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Replace the deliveries, in one transaction."""
        rows = [
            (d.status, d.next_attempt_at, json.dumps(delivery_document(d, self._sealer)), d.id)
            for d in deliveries
        ]
        if rows:
            await self._run(
                lambda db: db.executemany(
                    "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, doc = ?"
                    " WHERE id = ?",
                    rows,
                )
            )

    async def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None:
        """One delivery of the endpoint."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc, status, next_attempt_at FROM webhook_deliveries"
                " WHERE id = ? AND endpoint_id = ?",
                (delivery_id, endpoint_id),
            ).fetchall()
        )
        return _with_due(rows[0], self._sealer) if rows else None

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""
        at, last = before if before is not None else (float("inf"), "")
        rows = await self._run(
            lambda db: db.execute(
                "SELECT doc, status, next_attempt_at FROM webhook_deliveries"
                " WHERE endpoint_id = ? AND (created_at < ? OR (created_at = ? AND id < ?))"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                (endpoint_id, at, at, last, limit),
            ).fetchall()
        )
        return [_with_due(row, self._sealer) for row in rows]

    async def close(self) -> None:
        """Close the connection."""
        self._file.close()


def _with_due(row: tuple[str, str, float | None], sealer: Sealer) -> Delivery:
    # The columns are the truth for status and next attempt: a claim, a pause or a resume
    # moves them without rewriting the document.
    doc, status, next_attempt_at = row
    return delivery_from(json.loads(doc), sealer).replace(
        status=status, next_attempt_at=next_attempt_at
    )


def _follow_enabled(db: sqlite3.Connection, endpoint: Endpoint) -> None:
    if endpoint.enabled:
        db.execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?"
            " WHERE endpoint_id = ? AND status = 'paused'",
            (endpoint.updated_at, endpoint.id),
        )
    else:
        db.execute(
            "UPDATE webhook_deliveries SET status = 'paused' WHERE endpoint_id = ?"
            " AND status = 'pending'",
            (endpoint.id,),
        )
