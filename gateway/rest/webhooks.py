"""The webhook endpoints of a project over REST (docs/webhooks.md).

Project admins and owners manage them; others with a role in the project are refused 403,
anyone else answered 404. Making a secret (creating an endpoint, rotating its secret) is
as sensitive as making an API token: it needs a fresh second factor. A secret is shown
once, in the answer that made it; later reads never show it.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

from actors.extensions import Extensions
from auth.roles import Action, Role
from gateway.auth.guard import Guard
from gateway.rest.access import Caller, project_caller, require_second_factor
from gateway.rest.inputs import RestLimits, an_id, an_object, only_keys, read_json, text
from gateway.rest.problems import Problem
from gateway.settings import Settings
from persistence.webhook_store import (
    ALL_EVENTS,
    KNOWN_EVENTS,
    Delivery,
    Endpoint,
    WebhookStore,
)
from workers.webhooks_http import url_refusal
from workers.webhooks_policy import AddressPolicy
from workers.webhooks_retry import parse_schedule
from workers.webhooks_signing import new_secret

MAX_DESCRIPTION_CHARS = 1000
_SAFE = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    """What one project's endpoints may be (docs/settings.md)."""

    max_endpoints: int = 20
    max_url_chars: int = 2000
    rotation_grace_seconds: float = 86400.0
    scheduled_attempts: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookLimits:
        """The limits ``settings`` name."""
        return cls(
            max_endpoints=settings.webhook_max_endpoints,
            max_url_chars=settings.webhook_max_url_chars,
            rotation_grace_seconds=settings.webhook_rotation_grace_seconds,
            scheduled_attempts=len(parse_schedule(settings.webhook_retry_schedule)),
        )


def iso(at: float | None) -> str | None:
    """Unix seconds as ISO-8601 UTC, or None."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def endpoint_view(endpoint: Endpoint, *, secret: bool = False) -> dict[str, Any]:
    """An endpoint as the API shows it (the secret only when just made)."""
    view: dict[str, Any] = {
        "id": endpoint.id,
        "project_id": endpoint.project,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "description": endpoint.description,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": iso(endpoint.failing_since),
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }
    if secret:
        view["secret"] = endpoint.secret
        view["previous_secret_valid_until"] = (
            iso(endpoint.previous_until) if endpoint.previous_secret else None
        )
    return view


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery and its attempts as the API shows them."""
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "attempts": [
            {
                "at": iso(attempt.at),
                "status": attempt.status,
                "error": attempt.error,
                "seconds": round(attempt.seconds, 4),
            }
            for attempt in delivery.attempts
        ],
    }


def checked_url(value: Any, limits: WebhookLimits, policy: AddressPolicy) -> str:
    """A receiver's URL: http or https, a host, no credentials, not too long."""
    if not isinstance(value, str) or not value:
        raise Problem("validation", "'url' must be a non-empty string")
    if len(value) > limits.max_url_chars:
        raise Problem("validation", f"'url' is over {limits.max_url_chars} characters")
    if any(ord(char) < 33 or ord(char) == 127 for char in value):
        raise Problem("validation", "'url' holds spaces or control characters")
    try:
        parsed = URL(value)
    except (ValueError, TypeError):
        raise Problem("validation", "'url' is not a URL") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise Problem("validation", "'url' must be an http or https URL with a host")
    if parsed.user is not None or parsed.password is not None:
        raise Problem("validation", "'url' must not hold a user name or password")
    refused = url_refusal(value, policy)
    if refused is not None:
        raise Problem("validation", f"'url': {refused} (BOARDCAST_WEBHOOK_ALLOW_NETWORKS)")
    return value


def checked_events(value: Any) -> tuple[str, ...]:
    """An event filter: known event types, or ``"*"``; at least one, duplicates dropped."""
    if not isinstance(value, list) or not value or len(value) > len(KNOWN_EVENTS) + 1:
        raise Problem(
            "validation", f"'events' must be a list of 1-{len(KNOWN_EVENTS) + 1} event types"
        )
    chosen: list[str] = []
    for item in value:
        if not isinstance(item, str) or (item not in KNOWN_EVENTS and item != ALL_EVENTS):
            shown = item[:60] if isinstance(item, str) else type(item).__name__
            raise Problem(
                "validation",
                f"'events': {shown!r} is not an event type;"
                f" known: {', '.join(sorted(KNOWN_EVENTS))}, or '*'",
            )
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def _cursor(delivery: Delivery) -> str:
    raw = json.dumps([delivery.created_at, delivery.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[float, str]:
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        at, last = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(at, int | float) or not isinstance(last, str):
            raise ValueError("not a cursor")
        return float(at), last
    except (binascii.Error, ValueError, TypeError):
        raise Problem("bad-request", "the cursor is not one this list gave") from None


class WebhookApi:
    """Handlers of ``/v1/projects/{project_id}/webhooks``."""

    def __init__(
        self,
        store: WebhookStore | None,
        guard: Guard,
        extensions: Extensions,
        rest_limits: RestLimits,
        limits: WebhookLimits,
        policy: AddressPolicy,
    ) -> None:
        self._store = store
        self.guard = guard
        self.extensions = extensions
        self.rest_limits = rest_limits
        self.limits = limits
        self.policy = policy

    def routes(self) -> list[web.RouteDef]:
        """Every webhook route."""
        base = "/v1/projects/{project_id}/webhooks"
        one = base + "/{webhook_id}"
        return [
            web.get(base, self.list_endpoints),
            web.post(base, self.create_endpoint),
            web.get(one, self.get_endpoint),
            web.patch(one, self.update_endpoint),
            web.delete(one, self.delete_endpoint),
            web.post(one + "/rotate-secret", self.rotate_secret),
            web.get(one + "/deliveries", self.list_deliveries),
            web.post(one + "/deliveries/{delivery_id}/redeliver", self.redeliver),
        ]

    @property
    def store(self) -> WebhookStore:
        """The store (set when mounted)."""
        assert self._store is not None
        return self._store

    async def _caller(self, request: web.Request) -> tuple[str, Caller]:
        project = an_id(request.match_info["project_id"], "the project id")
        caller = await project_caller(request, project, Action.READ, self.guard, self.extensions)
        if caller.role < Role.ADMIN:
            raise Problem("forbidden", "webhooks are managed by the project's admins and owners")
        if request.method not in _SAFE and caller.read_only:
            raise Problem("read-only", f"{caller.identity} may not change this project")
        return project, caller

    async def _endpoint(self, request: web.Request, project: str) -> Endpoint:
        raw = request.match_info["webhook_id"]
        found = await self.store.get_endpoint(raw[:100])
        if found is None or found.project != project:
            raise Problem("not-found", "no such webhook")
        return found

    async def list_endpoints(self, request: web.Request) -> web.Response:
        """The project's endpoints (no secrets)."""
        project, _ = await self._caller(request)
        found = await self.store.list_endpoints(project)
        return web.json_response({"items": [endpoint_view(e) for e in found]})

    async def create_endpoint(self, request: web.Request) -> web.Response:
        """Register ``{"url", "events", "description"?}``; the answer holds the secret, once."""
        project, caller = await self._caller(request)
        body = an_object(await read_json(request, self.rest_limits))
        only_keys(body, {"url", "events", "description"})
        url = checked_url(body.get("url"), self.limits, self.policy)
        events = checked_events(body.get("events"))
        description = (
            text(body, "description", MAX_DESCRIPTION_CHARS, required=False, allow_empty=True) or ""
        )
        await require_second_factor(request, self.guard, caller.principal)
        now = time.time()
        endpoint = Endpoint(
            id="wh_" + secrets.token_urlsafe(12),
            project=project,
            url=url,
            events=events,
            secret=new_secret(),
            created_at=now,
            updated_at=now,
            description=description,
        )
        if not await self.store.add_endpoint(endpoint, max_per_project=self.limits.max_endpoints):
            raise Problem(
                "too-many-webhooks",
                f"project {project!r} has {self.limits.max_endpoints} webhooks already",
            )
        return web.json_response(endpoint_view(endpoint, secret=True), status=201)

    async def get_endpoint(self, request: web.Request) -> web.Response:
        """One endpoint (no secret)."""
        project, _ = await self._caller(request)
        return web.json_response(endpoint_view(await self._endpoint(request, project)))

    async def update_endpoint(self, request: web.Request) -> web.Response:
        """Change ``url``, ``events``, ``description`` or ``enabled``."""
        project, _ = await self._caller(request)
        body = an_object(await read_json(request, self.rest_limits))
        only_keys(body, {"url", "events", "enabled", "description"})
        endpoint = await self._endpoint(request, project)
        changes: dict[str, Any] = {"updated_at": time.time()}
        if "url" in body:
            changes["url"] = checked_url(body["url"], self.limits, self.policy)
        if "events" in body:
            changes["events"] = checked_events(body["events"])
        if "description" in body:
            changes["description"] = (
                text(body, "description", MAX_DESCRIPTION_CHARS, required=False, allow_empty=True)
                or ""
            )
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                raise Problem("validation", "'enabled' must be true or false")
            changes["enabled"] = body["enabled"]
            if body["enabled"] and not endpoint.enabled:
                # Enabled again by hand: its failures so far no longer count.
                changes.update(disabled_reason=None, failing_since=None, failed_in_row=0)
            elif not body["enabled"] and endpoint.enabled:
                changes["disabled_reason"] = "disabled through the API"
        updated = endpoint.replace(**changes)
        await self.store.save_endpoint(updated)
        return web.json_response(endpoint_view(updated))

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        """Remove the endpoint and its deliveries."""
        project, _ = await self._caller(request)
        endpoint = await self._endpoint(request, project)
        await self.store.delete_endpoint(endpoint.id)
        return web.Response(status=204)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        """A new secret, shown once; the old one still signs for the grace period."""
        project, caller = await self._caller(request)
        endpoint = await self._endpoint(request, project)
        await require_second_factor(request, self.guard, caller.principal)
        now = time.time()
        rotated = endpoint.replace(
            secret=new_secret(),
            previous_secret=endpoint.secret,
            previous_until=now + self.limits.rotation_grace_seconds,
            updated_at=now,
        )
        await self.store.save_endpoint(rotated)
        return web.json_response(endpoint_view(rotated, secret=True))

    async def list_deliveries(self, request: web.Request) -> web.Response:
        """The endpoint's delivery log, newest first: ``?limit=&cursor=``."""
        project, _ = await self._caller(request)
        endpoint = await self._endpoint(request, project)
        raw_limit = request.query.get("limit", str(self.rest_limits.default_page))
        try:
            limit = int(raw_limit)
        except ValueError:
            raise Problem("bad-request", "limit must be an integer") from None
        if not 1 <= limit <= self.rest_limits.max_page:
            raise Problem("bad-request", f"limit must be 1-{self.rest_limits.max_page}")
        cursor = request.query.get("cursor")
        before = _read_cursor(cursor) if cursor else None
        found = await self.store.list_deliveries(endpoint.id, limit=limit + 1, before=before)
        page = found[:limit]
        return web.json_response(
            {
                "items": [delivery_view(d) for d in page],
                "next_cursor": _cursor(page[-1]) if len(found) > limit else None,
            }
        )

    async def redeliver(self, request: web.Request) -> web.Response:
        """Send a delivery again now (one attempt); 409 while the endpoint is disabled."""
        project, _ = await self._caller(request)
        endpoint = await self._endpoint(request, project)
        delivery = await self.store.get_delivery(
            endpoint.id, request.match_info["delivery_id"][:100]
        )
        if delivery is None:
            raise Problem("not-found", "no such delivery")
        if not endpoint.enabled:
            raise Problem("conflict", "the webhook is disabled; enable it first")
        again = delivery.replace(
            status="pending",
            next_attempt_at=time.time(),
            attempts_made=max(0, self.limits.scheduled_attempts - 1),
        )
        await self.store.save_delivery(again)
        return web.json_response(delivery_view(again), status=202)


def add_webhook_api(
    app: web.Application,
    settings: Settings,
    guard: Guard,
    extensions: Extensions,
    rest_limits: RestLimits,
) -> None:
    """Serve the webhook routes on ``app``, over the store beside the boards."""
    from persistence.webhook_store_factory import open_webhook_store

    store = open_webhook_store(settings.store, data_dir=settings.data_dir)
    api = WebhookApi(
        store,
        guard,
        extensions,
        rest_limits,
        WebhookLimits.from_settings(settings),
        AddressPolicy.from_specs(settings.webhook_allow_networks),
    )
    app.add_routes(api.routes())

    async def close_store(app: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(close_store)
