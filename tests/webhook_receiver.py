"""A webhook receiver for tests: a real HTTP server on loopback that checks what it gets
as an integration would, with the ``standardwebhooks`` library from PyPI.

Each call is verified against the endpoint's secret(s) (signature over id, timestamp and
body; a timestamp older or newer than five minutes is refused), and a replay (the same
``webhook-id`` with the same timestamp again) is refused too. What it answers is scripted:
a list of statuses used in turn, then ``default_status``. A replay is refused only once a
call with that id and timestamp was accepted (answered 2xx): a sender's retry within the
same second of a failed attempt carries the same pair legitimately.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One call that passed verification."""

    webhook_id: str
    timestamp: int
    body: dict[str, Any]
    headers: dict[str, str]
    path: str


@dataclass
class Receiver:
    """The receiver's state: secrets it accepts, what it got, what it answers."""

    secrets: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # statuses used in turn
    default_status: int = 200
    delay_seconds: float = 0.0
    endless_body: bool = False  # answer 200 with a body that never ends
    redirect_to: str | None = None  # answer 302 with this Location
    received: list[Received] = field(default_factory=list)
    calls: int = 0
    refused: list[str] = field(default_factory=list)  # why calls failed verification
    paths: list[str] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self.port}/hooks"

    def ids(self) -> list[str]:
        """The webhook-ids received, in order (repeats included)."""
        return [call.webhook_id for call in self.received]

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` verified calls have arrived (bounded)."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def verify(self, body: bytes, headers: dict[str, str]) -> str | None:
        """Why the call fails verification, or None."""
        key = (headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""))
        if key in self._seen:
            return "replayed"
        errors = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError as exc:
                errors.append(str(exc))
                continue
            return None
        return "; ".join(errors) or "no secret"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Verify, record, answer as scripted."""
        self.calls += 1
        self.paths.append(request.path)
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        refusal = self.verify(body, headers)
        if refusal is not None:
            self.refused.append(refusal)
            return web.Response(status=401, text=refusal)
        status = self.answers.pop(0) if self.answers else self.default_status
        if 200 <= status < 300 and self.redirect_to is None:
            self._seen.add((headers["webhook-id"], headers["webhook-timestamp"]))
        self.received.append(
            Received(
                headers["webhook-id"],
                int(headers["webhook-timestamp"]),
                json.loads(body),
                headers,
                request.path,
            )
        )
        self.arrived.set()
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        if self.endless_body and status == 200:
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                for _ in range(100_000):  # bounded: ~800 MB at most, if nobody hangs up
                    await response.write(b"x" * 8192)
            return response
        return web.Response(status=status, text="ok" if status < 300 else "no")


@contextlib.asynccontextmanager
async def webhook_receiver(port: int = 0, **options: Any) -> AsyncIterator[Receiver]:
    """Run a :class:`Receiver` on 127.0.0.1 (``port`` 0: a free one)."""
    receiver = Receiver(**options)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
