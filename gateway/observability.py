"""Request ids, REST spans, and the trace context a REST call carries to the board's host.

Every HTTP response gets an ``X-Request-Id``: the client's own if it sent a
sane one (bounded, a safe character set), else a new one. The id is in the
context of every log line the request causes (:mod:`shared.logs`), and with
tracing on, each request is a span whose context goes with the functions the
REST API runs on boards (:class:`TracingCluster`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from actors.cluster import Cluster
from actors.transactions import Outcome
from crdt.board import Board
from shared import tracing
from shared.logs import BOARD_ID, REQUEST_ID

T = TypeVar("T")

REQUEST_ID_HEADER = "X-Request-Id"

# Letters, digits and the punctuation ids are usually made of: nothing that could
# split a log line or a header.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]+")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_from(header: str | None, *, max_chars: int) -> str:
    """The client's request id if it is sane, else a new one."""
    if header is not None and 0 < len(header) <= max_chars and _SAFE_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def request_middleware(*, max_request_id_chars: int) -> Any:
    """A middleware giving every request an id (and, when tracing, a span)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_from(
            request.headers.get(REQUEST_ID_HEADER), max_chars=max_request_id_chars
        )
        board_id = request.match_info.get("board_id")
        request_token = REQUEST_ID.set(request_id)
        board_token = BOARD_ID.set(board_id[:200] if board_id else None)
        try:
            with tracing.span(
                f"{request.method} {_route_of(request)}",
                attributes={
                    "http.request.method": request.method,
                    "boardcast.request_id": request_id,
                },
            ) as span:
                try:
                    response = await handler(request)
                except web.HTTPException as exc:
                    exc.headers[REQUEST_ID_HEADER] = request_id
                    if span is not None:
                        span.set_attribute("http.response.status_code", exc.status)
                    raise
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status)
                if not response.prepared:
                    # A WebSocket or streamed response has sent its headers already.
                    response.headers[REQUEST_ID_HEADER] = request_id
                return response
        finally:
            BOARD_ID.reset(board_token)
            REQUEST_ID.reset(request_token)

    return middleware


def _route_of(request: web.Request) -> str:
    """The route's pattern (``/v1/boards/{board_id}``), never the raw path with its ids."""
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


class TracingCluster(Cluster):
    """A cluster whose board functions carry the caller's trace context to the host.

    Everything else is the wrapped cluster's; the REST API gets this one.
    """

    def __init__(self, inner: Cluster) -> None:
        self.inner = inner

    async def locate(self, board_id: str) -> str:
        """See :meth:`Cluster.locate`."""
        return await self.inner.locate(board_id)

    async def endpoint(self, host_name: str) -> tuple[str, int]:
        """See :meth:`Cluster.endpoint`."""
        return await self.inner.endpoint(host_name)

    def forget(self, host_name: str) -> None:
        """See :meth:`Cluster.forget`."""
        self.inner.forget(host_name)

    async def host_unreachable(self, host_name: str) -> None:
        """See :meth:`Cluster.host_unreachable`."""
        await self.inner.host_unreachable(host_name)

    async def drain(self) -> int:
        """See :meth:`Cluster.drain`."""
        return await self.inner.drain()

    @property
    def stream_secret(self) -> bytes:
        """See :attr:`Cluster.stream_secret`."""
        return self.inner.stream_secret

    @property
    def placement_epoch(self) -> int:
        """See :attr:`Cluster.placement_epoch`."""
        return self.inner.placement_epoch

    def is_dedicated(self, board_id: str) -> bool:
        """See :meth:`Cluster.is_dedicated`."""
        return self.inner.is_dedicated(board_id)

    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """See :meth:`Cluster.transact`; ``change`` carries the trace context."""
        return await self.inner.transact(
            board_id, tracing.with_trace_context(change), idempotency_key=idempotency_key
        )

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> Outcome[T]:
        """See :meth:`Cluster.run`; ``function`` carries the trace context."""
        return await self.inner.run(
            board_id,
            tracing.with_trace_context(function),
            idempotency_key=idempotency_key,
            origin=origin,
        )

    async def stats(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.stats`."""
        return await self.inner.stats()

    async def close(self) -> None:
        """See :meth:`Cluster.close`."""
        await self.inner.close()
