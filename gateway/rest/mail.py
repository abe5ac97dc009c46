"""E-mail over REST (docs/email.md): a person's own preferences, and the administrators'
view of e-mail that failed for good (dead letters) and of the worker's counts.

``/v1/me/notification-preferences`` is the caller's own (read and replaced with ``PUT``; a
field left out takes its default). The ``/v1/admin/mail/...`` routes are for server
administrators only (403 for anyone else), as ``/v1/admin/audit`` is.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
import zoneinfo
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from auth.service import Principal
from gateway.auth.guard import Guard
from gateway.rest.access import authenticate
from gateway.rest.inputs import RestLimits, an_object, only_keys, read_json
from gateway.rest.problems import Problem
from gateway.rest.webhooks import iso
from gateway.settings import Settings
from persistence.mail_store import MODES, MailJob, MailStore, Preferences
from persistence.notification_store import KINDS

MAX_ZONE_CHARS = 64
_FIELDS = {"email", "kinds", "mode", "digest_hour", "quiet_hours", "time_zone"}


@functools.cache
def known_zones() -> frozenset[str]:
    """The IANA time zone names this machine knows."""
    return frozenset(zoneinfo.available_timezones())


def _hour(value: Any, where: str) -> int:
    # 3.0 is an integer to JSON Schema (and to the OpenAPI description), so it is one here.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 23:
        raise Problem("validation", f"{where} must be an hour, 0-23")
    return value


def checked_preferences(user: str, body: Mapping[str, Any], *, now: float) -> Preferences:
    """The preferences a ``PUT`` body asks for; 422 ``validation`` for anything else."""
    only_keys(body, _FIELDS)
    chosen = Preferences(user, updated_at=now)
    changes: dict[str, Any] = {}
    if "email" in body:
        if not isinstance(body["email"], bool):
            raise Problem("validation", "'email' must be true or false")
        changes["email"] = body["email"]
    if "kinds" in body:
        kinds = body["kinds"]
        if not isinstance(kinds, list) or len(kinds) > len(KINDS):
            raise Problem("validation", f"'kinds' must be a list of at most {len(KINDS)} kinds")
        for kind in kinds:
            if not isinstance(kind, str) or kind not in KINDS:
                shown = kind[:60] if isinstance(kind, str) else type(kind).__name__
                raise Problem(
                    "validation", f"'kinds': {shown!r} is not a kind; known: {', '.join(KINDS)}"
                )
        changes["kinds"] = tuple(kind for kind in KINDS if kind in kinds)
    if "mode" in body:
        if body["mode"] not in MODES:
            raise Problem("validation", f"'mode' must be one of {', '.join(MODES)}")
        changes["mode"] = body["mode"]
    if "digest_hour" in body:
        changes["digest_hour"] = _hour(body["digest_hour"], "'digest_hour'")
    if "quiet_hours" in body and body["quiet_hours"] is not None:
        quiet = an_object(body["quiet_hours"], "'quiet_hours'")
        only_keys(quiet, {"start", "end"}, "'quiet_hours'")
        start = _hour(quiet.get("start"), "'quiet_hours.start'")
        end = _hour(quiet.get("end"), "'quiet_hours.end'")
        if start != end:  # the same hour: no quiet hours
            changes.update(quiet_start=start, quiet_end=end)
    if "time_zone" in body:
        zone = body["time_zone"]
        if not isinstance(zone, str) or len(zone) > MAX_ZONE_CHARS or zone not in known_zones():
            raise Problem("validation", "'time_zone' must be an IANA time zone name")
        changes["time_zone"] = zone
    return chosen.replace(**changes)


def job_view(job: MailJob) -> dict[str, Any]:
    """A mail job as administrators see it (no addresses, no content)."""
    return {
        "id": job.id,
        "user": job.user,
        "kind": job.kind,
        "status": job.status,
        "notification_ids": list(job.notification_ids),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "next_attempt_at": iso(job.next_attempt_at),
        "attempts": [
            {"at": iso(attempt.at), "code": attempt.code, "error": attempt.error}
            for attempt in job.attempts
        ],
    }


def _cursor(job: MailJob) -> str:
    raw = json.dumps([job.updated_at, job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[float, str]:
    try:
        if len(cursor) > 512:
            raise ValueError("too long")
        at, last = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(last, str):
            raise ValueError("not a cursor")
        return float(at), last
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise Problem("bad-request", "the cursor is not one this list gave") from None


class MailApi:
    """Handlers of ``/v1/me/notification-preferences`` and ``/v1/admin/mail``."""

    def __init__(
        self, store: MailStore, guard: Guard, limits: RestLimits, *, smtp_configured: bool
    ) -> None:
        self.store = store
        self.guard = guard
        self.limits = limits
        self.smtp_configured = smtp_configured

    def routes(self) -> list[web.RouteDef]:
        """Every e-mail route."""
        dead = "/v1/admin/mail/dead-letters"
        return [
            web.get("/v1/me/notification-preferences", self.get_preferences),
            web.put("/v1/me/notification-preferences", self.put_preferences),
            web.get(dead, self.dead_letters),
            web.post(dead + "/{job_id}/retry", self.retry),
            web.get("/v1/admin/mail/stats", self.stats),
        ]

    async def _admin(self, request: web.Request) -> Principal:
        principal = await authenticate(request, self.guard)
        if not principal.admin:
            raise Problem("forbidden", "server administrators only")
        return principal

    async def get_preferences(self, request: web.Request) -> web.Response:
        """The caller's preferences (the defaults until they saved some)."""
        principal = await authenticate(request, self.guard)
        found = await self.store.get_preferences(principal.user_id)
        return web.json_response((found or Preferences(principal.user_id)).to_json())

    async def put_preferences(self, request: web.Request) -> web.Response:
        """Replace the caller's preferences; fields left out take their defaults."""
        principal = await authenticate(request, self.guard)
        body = an_object(await read_json(request, self.limits))
        chosen = checked_preferences(principal.user_id, body, now=time.time())
        await self.store.save_preferences(chosen)
        return web.json_response(chosen.to_json())

    async def dead_letters(self, request: web.Request) -> web.Response:
        """E-mail that failed for good, most recent first: ``?limit=&cursor=``."""
        await self._admin(request)
        raw_limit = request.query.get("limit", str(self.limits.default_page))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= self.limits.max_page:
            raise Problem("bad-request", f"limit must be 1-{self.limits.max_page}")
        limit = int(raw_limit)
        cursor = request.query.get("cursor")
        before = _read_cursor(cursor) if cursor else None
        found = await self.store.list_jobs("dead", limit=limit + 1, before=before)
        page = found[:limit]
        return web.json_response(
            {
                "items": [job_view(job) for job in page],
                "next_cursor": _cursor(page[-1]) if len(found) > limit else None,
            }
        )

    async def retry(self, request: web.Request) -> web.Response:
        """Make a dead letter pending again, due now, with a fresh count of attempts."""
        await self._admin(request)
        job = await self.store.retry_job(request.match_info["job_id"][:100], now=time.time())
        if job is None:
            raise Problem("not-found", "no such dead letter")
        return web.json_response(job_view(job), status=202)

    async def stats(self, request: web.Request) -> web.Response:
        """E-mail jobs per status, and how far the worker has read the notifications."""
        await self._admin(request)
        return web.json_response(
            {
                "smtp_configured": self.smtp_configured,
                "jobs": await self.store.counts(),
                "cursor": await self.store.cursor(),
            }
        )


def add_mail_api(app: web.Application, settings: Settings, guard: Guard) -> None:
    """Serve the e-mail routes on ``app``, over the mail store beside the boards."""
    from persistence.mail_store_factory import open_mail_store

    store = open_mail_store(settings.store, data_dir=settings.data_dir)
    limits = RestLimits(max_body_bytes=settings.mail_max_preferences_bytes)
    api = MailApi(store, guard, limits, smtp_configured=bool(settings.smtp_host))
    app.add_routes(api.routes())

    async def close_store(app: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(close_store)
