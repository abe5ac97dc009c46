"""The gateway's limits applied to requests: per-IP rates, open-socket caps, slow clients.

:func:`limits_middleware` runs first for every request. It finds the client's address
(:func:`gateway.limits.client_ip`), takes a token from that address's bucket (REST requests
and WebSocket upgrades have one each), counts the address's open WebSockets, and bounds how
long a request body may take to arrive. Past a limit the client gets an RFC 9457 problem:
429 ``rate-limited`` or ``too-many-connections`` with ``Retry-After``, or 408
``request-timeout``. Per-user limits need to know the user: :func:`admit_user_socket`
and :func:`gateway.limits.check_user` are called after authentication.

A request head that never completes is not seen by any middleware; aiohttp's server closes
it after ``keepalive_timeout``, which :func:`runner_options` sets from
``handshake_timeout_seconds`` (docs/limits.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from crdt.close_codes import CloseCode
from gateway.client_address import address_in
from gateway.limits import Decision, GatewayLimits, LimitsState, client_ip, ip_limit_key
from gateway.rest.problems import Problem

log = logging.getLogger("boardcast.limits")

#: The limits a gateway applies; the defaults (``GatewayLimits()``) when the app has none.
LIMITS = web.AppKey("limits", GatewayLimits)

_STATE = web.RequestKey("boardcast.limits.state", LimitsState)
_CLIENT_IP = web.RequestKey("boardcast.limits.client_ip", str)
_USER_SOCKETS: web.RequestKey[list[str]] = web.RequestKey("boardcast.limits.user_sockets")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(web.HTTPRequestTimeout):
    """The request body did not arrive in time (raised from the handler's read)."""


def open_limits(redis_url: str | None, *, cluster: str = "boardcast") -> LimitsState:
    """A gateway's limiters: in Redis (keys under ``<cluster>:limits:``) if the URL names one.

    ``redis_url`` is the shared state's (``settings.redis``): None or ``memory`` keeps every
    count in this process.
    """
    return LimitsState(redis_url, prefix=f"{cluster}:")


def app_limits(app: web.Application) -> GatewayLimits:
    """The limits ``app`` was given under :data:`LIMITS`, or the defaults."""
    return app.get(LIMITS) or GatewayLimits()


def runner_options(limits: GatewayLimits) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` that bound slow clients below the middleware.

    aiohttp closes a connection whose request head is incomplete ``keepalive_timeout``
    seconds after it was accepted (or after the previous response); bytes trickling in do
    not extend it. Its own default is 3630 s.
    """
    if limits.handshake_timeout_seconds <= 0:
        return {}
    return {"keepalive_timeout": limits.handshake_timeout_seconds}


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    """Whether ``request`` asks to become a WebSocket."""
    return request.headers.get(hdrs.UPGRADE, "").strip().lower() == "websocket"


def retry_after(decision: Decision) -> int:
    """Whole seconds for a ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(decision.retry_after_seconds))


def rate_limited(decision: Decision, detail: str) -> Problem:
    """The 429 ``rate-limited`` problem for a refused ``decision``, with ``Retry-After``."""
    seconds = retry_after(decision)
    found = Problem("rate-limited", f"{detail}; retry in {seconds} s", retry_after=seconds)
    found.headers[hdrs.RETRY_AFTER] = str(seconds)
    return found


def request_client_ip(request: web.Request) -> str:
    """The client address the middleware found for ``request`` (or finds it now)."""
    found: str | None = request.get(_CLIENT_IP)
    if found is None:
        limits = app_limits(request.app)
        found = client_ip(request, limits.trusted_proxies, limits.max_forwarded_for_chars)
    return found


def request_limits_state(request: web.Request) -> LimitsState:
    """The limiters applied to ``request`` (for :func:`gateway.limits.check_user`)."""
    state: LimitsState | None = request.get(_STATE)
    if state is None:
        raise RuntimeError("limits_middleware is not installed on this application")
    return state


async def admit_user_socket(request: web.Request, user_id: str) -> CloseCode | None:
    """After authentication: may ``user_id`` open one more WebSocket with this request?

    None if so (the socket is counted until the handler returns); otherwise the close
    code to end the session with (4430, too many connections).
    """
    state = request_limits_state(request)
    key = f"user:{user_id}"
    if not await state.sockets_per_user.acquire(key):
        _log_refusal(state, "sockets per user", key)
        return CloseCode.TOO_MANY_CONNECTIONS
    held: list[str] | None = request.get(_USER_SOCKETS)
    if held is None:
        held = request[_USER_SOCKETS] = []
    held.append(key)
    return None


def limits_state(app: web.Application) -> LimitsState:
    """The limiters of the :func:`limits_middleware` installed on ``app``."""
    for middleware in app.middlewares:
        if isinstance(middleware, LimitsMiddleware):
            return middleware.state
    raise LookupError("limits_middleware is not installed on this application")


def limits_middleware(state: LimitsState) -> LimitsMiddleware:
    """The middleware applying ``state``'s per-IP limits to every request of an app."""
    return LimitsMiddleware(state)


class LimitsMiddleware:
    """An aiohttp middleware (new style) holding its :class:`LimitsState`."""

    __middleware_version__ = 1

    def __init__(self, state: LimitsState) -> None:
        self.state = state

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse the request if its address is over a limit; otherwise run ``handler``."""
        state = self.state
        if state.limits is None:
            state.configure(app_limits(request.app))
        limits = state.require()
        ip = client_ip(request, limits.trusted_proxies, limits.max_forwarded_for_chars)
        request[_CLIENT_IP] = ip
        request[_STATE] = state
        try:
            if request.path in limits.exempt_paths:
                return await handler(request)
            if address_in(ip, limits.exempt_addresses):
                return await self._with_body_deadline(request, handler, limits)
            key = ip_limit_key(ip, limits.ipv6_prefix_length)
            if is_websocket_upgrade(request):
                return await self._upgrade(request, handler, key)
            decision = await state.rest_per_ip.take(key)
            if not decision.allowed:
                _log_refusal(state, "requests per IP", key)
                refusal = rate_limited(decision, "too many requests from this address")
                return refusal.response(request.path)
            return await self._with_body_deadline(request, handler, limits)
        finally:
            await _release_user_sockets(request, state)

    async def _upgrade(
        self, request: web.Request, handler: Handler, key: str
    ) -> web.StreamResponse:
        state = self.state
        decision = await state.ws_upgrades_per_ip.take(key)
        if not decision.allowed:
            _log_refusal(state, "WebSocket upgrades per IP", key)
            refusal = rate_limited(decision, "too many WebSocket connections opened")
            return refusal.response(request.path)
        if not await state.sockets_per_ip.acquire(key):
            _log_refusal(state, "sockets per IP", key)
            cap = state.require().max_sockets_per_ip
            refused = Problem(
                "too-many-connections",
                f"this address has {cap} WebSockets open already; close one first",
                max_sockets=cap,
            )
            refused.headers[hdrs.RETRY_AFTER] = "10"
            return refused.response(request.path)
        try:
            return await handler(request)
        finally:
            await state.sockets_per_ip.release(key)

    async def _with_body_deadline(
        self, request: web.Request, handler: Handler, limits: GatewayLimits
    ) -> web.StreamResponse:
        timeout = limits.body_timeout_seconds
        if timeout <= 0 or not request.body_exists or request.content.is_eof():
            return await handler(request)
        content = request.content

        def expire() -> None:
            # The handler's next read raises this; it is not an error of the handler's.
            if not content.is_eof():
                content.set_exception(BodyTimeout())

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await handler(request)
        except BodyTimeout:
            _log_refusal(self.state, "slow request bodies", request_client_ip(request))
            refused = Problem("request-timeout", f"the body did not arrive within {timeout:g} s")
            response = refused.response(request.path)
            response.force_close()
            # Sent now, then the connection closed: the rest of the body is never read.
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
            return response
        finally:
            timer.cancel()


async def _release_user_sockets(request: web.Request, state: LimitsState) -> None:
    for key in request.pop(_USER_SOCKETS, ()):
        await state.sockets_per_user.release(key)


def _log_refusal(state: LimitsState, kind: str, key: str) -> None:
    held_back = state.refusals.ready(f"{kind}|{key}")
    if held_back is not None:
        more = f" ({held_back} more since the last line)" if held_back else ""
        log.info("refused %s: %s over its limit%s", kind, key[:200], more)
