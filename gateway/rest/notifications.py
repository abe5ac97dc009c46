"""A person's notifications over REST, and their live push (docs/notifications.md).

* ``GET /v1/notifications?limit=&before=&unread=``: the caller's own, newest first, with
  ``unread_count`` and a ``next`` cursor (pass it as ``before``);
* ``POST /v1/notifications/read``: ``{"ids": [...]}`` or ``{"all": true}`` marks the caller's
  notifications read (other people's ids change nothing);
* ``GET /v1/notifications/stream``: Server-Sent Events, one ``notification`` event per new
  notification (``id:`` its seq, so ``Last-Event-ID`` resumes), a comment as heartbeat.

Any authenticated user reaches these, and only ever their own notifications. A token scoped
to one board or project does not (403): an inbox spans every project.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from auth.service import Principal
from gateway.auth.guard import Guard
from gateway.notification_push import NotificationHub, PushSettings, StreamRefused
from gateway.rest.access import authenticate
from gateway.rest.inputs import RestLimits, an_object, only_keys, read_json
from gateway.rest.problems import Problem
from gateway.settings import Settings
from persistence.notification_store import Notification, NotificationStore

MAX_ID_CHARS = 100
MAX_SEQ = 2**53  # what a JSON number keeps exactly
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}

HUB_KEY = web.AppKey("notification_hub", NotificationHub)


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """What one request may ask for (docs/settings.md)."""

    page_max: int = 100
    read_max_ids: int = 500

    @property
    def page_default(self) -> int:
        """The page size when none is asked for."""
        return min(20, self.page_max)


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One inbox page asked for."""

    limit: int
    before: int | None
    unread_only: bool


def page_query(query: Mapping[str, str], limits: InboxLimits) -> PageQuery:
    """The page a query string asks for; 400 ``bad-request`` for anything else."""
    unknown = sorted(set(query) - {"limit", "before", "unread"})
    if unknown:
        raise Problem("bad-request", f"unknown parameters: {', '.join(unknown)[:200]}")
    raw_limit = query.get("limit", str(limits.page_default))
    if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 6):
        raise Problem("bad-request", f"limit must be 1-{limits.page_max}")
    limit = int(raw_limit)
    if not 1 <= limit <= limits.page_max:
        raise Problem("bad-request", f"limit must be 1-{limits.page_max}")
    before: int | None = None
    if "before" in query:
        before = a_seq(query["before"], "before")
    unread = query.get("unread", "false").lower()
    if unread not in _TRUE | _FALSE:
        raise Problem("bad-request", "unread must be true or false")
    return PageQuery(limit, before, unread in _TRUE)


def a_seq(raw: str, what: str) -> int:
    """A notification seq given as text (a cursor, a ``Last-Event-ID``)."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 16) or int(raw) > MAX_SEQ:
        raise Problem("bad-request", f"{what} must be a notification seq (digits)")
    return int(raw)


def read_request(body: Any, limits: InboxLimits) -> list[str] | None:
    """The ids a ``POST /v1/notifications/read`` body names (None: all of them)."""
    body = an_object(body)
    only_keys(body, {"ids", "all"})
    if "all" in body:
        if body["all"] is not True or "ids" in body:
            raise Problem("validation", 'send {"all": true} or {"ids": [...]}, not both')
        return None
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise Problem("validation", "'ids' must be a list of notification ids")
    if len(ids) > limits.read_max_ids:
        raise Problem("validation", f"'ids' may name at most {limits.read_max_ids} notifications")
    for item in ids:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_ID_CHARS:
            raise Problem("validation", f"each id must be a string of 1-{MAX_ID_CHARS} characters")
    return list(dict.fromkeys(ids))


def sse_event(notification: Notification) -> bytes:
    """One Server-Sent Event for a notification."""
    data = json.dumps(notification.to_json(), separators=(",", ":"), ensure_ascii=True)
    return f"id: {notification.seq}\nevent: notification\ndata: {data}\n\n".encode()


class NotificationApi:
    """Handlers of ``/v1/notifications``."""

    def __init__(
        self,
        store: NotificationStore,
        hub: NotificationHub,
        guard: Guard,
        rest_limits: RestLimits,
        limits: InboxLimits,
    ) -> None:
        self.store = store
        self.hub = hub
        self.guard = guard
        self.rest_limits = rest_limits
        self.limits = limits

    def routes(self) -> list[web.RouteDef]:
        """Every notification route."""
        return [
            web.get("/v1/notifications", self.list_notifications),
            web.post("/v1/notifications/read", self.mark_read),
            web.get("/v1/notifications/stream", self.stream),
        ]

    async def _caller(self, request: web.Request) -> Principal:
        principal = await authenticate(request, self.guard)
        if principal.scope:
            raise Problem("forbidden", "a token scoped to a board or project has no inbox")
        return principal

    async def list_notifications(self, request: web.Request) -> web.Response:
        """The caller's notifications, newest first."""
        principal = await self._caller(request)
        asked = page_query(request.query, self.limits)
        found = await self.store.inbox(
            principal.user_id,
            limit=asked.limit + 1,
            before=asked.before,
            unread_only=asked.unread_only,
        )
        page = found[: asked.limit]
        return web.json_response(
            {
                "items": [n.to_json() for n in page],
                "unread_count": await self.store.unread(principal.user_id),
                "next": str(page[-1].seq) if len(found) > asked.limit else None,
            }
        )

    async def mark_read(self, request: web.Request) -> web.Response:
        """Mark the caller's notifications read: these ids, or all."""
        principal = await self._caller(request)
        ids = read_request(await read_json(request, self.rest_limits), self.limits)
        changed = await self.store.mark_read(principal.user_id, ids, at=time.time())
        return web.json_response(
            {"marked": changed, "unread_count": await self.store.unread(principal.user_id)}
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events of the caller's new notifications."""
        principal = await self._caller(request)
        raw = request.headers.get("Last-Event-ID", "").strip()
        after = a_seq(raw, "Last-Event-ID") if raw else None
        try:
            stream = self.hub.open(principal.user_id)
        except StreamRefused as refused:
            raise Problem("too-many-connections", str(refused)) from None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # proxies: pass each event on at once
            }
        )
        try:
            await response.prepare(request)
            await response.write(b"retry: 3000\n: connected\n\n")
            sent = after if after is not None else 0
            if after is not None:
                # What the browser missed while away: the newest page of it, oldest first.
                missed = await self.store.inbox(principal.user_id, limit=self.limits.page_max)
                for notification in sorted(missed, key=lambda n: n.seq):
                    if notification.seq > after:
                        await response.write(sse_event(notification))
                        sent = notification.seq
            await self._pump(response, stream.queue, principal, sent)
        except ConnectionResetError:
            pass  # the browser went away
        finally:
            self.hub.close(stream)
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        queue: asyncio.Queue[Notification | None],
        principal: Principal,
        sent: int,
    ) -> None:
        heartbeat = self.hub.settings.heartbeat_seconds
        while True:
            if principal.expires_at is not None and time.time() >= principal.expires_at:
                return  # the credential ended: the browser reconnects with a fresh one
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if item is None:
                return  # too far behind, or the gateway is stopping
            if item.seq > sent:
                await response.write(sse_event(item))
                sent = item.seq


def push_settings(settings: Settings) -> PushSettings:
    """The hub's cadence and caps from the settings."""
    return PushSettings(
        poll_seconds=settings.notification_push_poll_seconds,
        heartbeat_seconds=settings.notification_heartbeat_seconds,
        streams_per_user=settings.notification_streams_per_user,
        streams_max=settings.notification_streams_max,
    )


def add_notification_api(
    app: web.Application, settings: Settings, guard: Guard, rest_limits: RestLimits
) -> None:
    """Serve the notification routes on ``app``, over the store beside the boards, with
    this gateway's tail loop started and stopped with the app."""
    from persistence.notification_store_factory import open_notification_store

    store = open_notification_store(settings.store, data_dir=settings.data_dir)
    hub = NotificationHub(store, push_settings(settings))
    app[HUB_KEY] = hub
    limits = InboxLimits(
        page_max=settings.notification_page_max, read_max_ids=settings.notification_read_max_ids
    )
    app.add_routes(NotificationApi(store, hub, guard, rest_limits, limits).routes())

    async def start(app: web.Application) -> None:
        hub.start()

    async def end_streams(app: web.Application) -> None:
        await hub.stop()  # open streams end, so the server stops at once

    async def close_store(app: web.Application) -> None:
        await store.close()

    app.on_startup.append(start)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(close_store)
