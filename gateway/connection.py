"""One client's WebSocket, as the gateway's fan-out sees it.

Outgoing frames are written straight to the socket's transport. The transport
buffer is the connection's send queue, and it is bounded: a client that has
more than ``send_limit`` bytes waiting for it when the next frame is due is
closed with ``SLOW_CONSUMER`` (4408). The y-websocket client then reconnects and
resyncs by state vector, so nothing is dropped silently. The bound is checked
before a frame is written, not after: one frame larger than the limit (a whole
board sent to a joiner) is delivered, so a board of any allowed size can be
opened; the queue holds at most ``send_limit`` plus one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from crdt.close_codes import REASONS, CloseCode
from gateway.frames import WsFrame
from gateway.telemetry import GatewayTelemetry

log = logging.getLogger("boardcast.gateway")

# Long enough for a slow but live client to read what is queued and see the close code.
_CLOSE_GRACE_S = 10.0


class ClientConnection:
    """A client connected to one board through this gateway."""

    __slots__ = (
        "_close_task",
        "_transport",
        "board_id",
        "closing",
        "conn_id",
        "origin",
        "read_only",
        "send_limit",
        "telemetry",
        "update_in_at",
        "wants_acks",
        "ws",
    )

    def __init__(
        self,
        conn_id: int,
        board_id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        send_limit: int,
        wants_acks: bool = False,
        read_only: bool = False,
        origin: str | None = None,
        telemetry: GatewayTelemetry | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.board_id = board_id
        self.ws = ws
        self._transport = transport
        self.send_limit = send_limit
        # Only clients that ask get "persisted" messages: stock clients would
        # choke on a message type they do not know.
        self.wants_acks = wants_acks
        # An extension made this session read-only: its board refuses its edits.
        self.read_only = read_only
        # Who the client is (from ``on_connect``); its stored updates carry it.
        self.origin = origin
        self.closing = False
        self._close_task: asyncio.Task[None] | None = None
        # Where this connection's closes are counted (by code), and when its latest
        # update arrived (monotonic seconds; 0 once its relay was timed).
        self.telemetry = telemetry
        self.update_in_at = 0.0

    def send_encoded(self, ws_frame: WsFrame) -> None:
        """Write an already encoded WebSocket frame (see :mod:`gateway.frames`)."""
        if self.closing:
            return
        transport = self._transport
        if transport.is_closing():
            return
        waiting = transport.get_write_buffer_size()
        if waiting > self.send_limit:
            log.info("closing slow client on board %s: %d bytes unsent", self.board_id, waiting)
            self.close_soon(CloseCode.SLOW_CONSUMER)
            return
        if isinstance(ws_frame, bytes):
            transport.write(ws_frame)
        else:
            transport.writelines(ws_frame)

    def close_soon(self, code: CloseCode, reason: str | None = None) -> None:
        """Close with ``code`` without waiting; cut the socket if the close stalls."""
        if self.closing:
            return
        self.closing = True
        if self.telemetry is not None:
            self.telemetry.closes[int(code)] += 1
        text = (reason or REASONS[code])[:120]
        self._close_task = asyncio.ensure_future(self._close(int(code), text))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()), _CLOSE_GRACE_S
            )
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            if not self._transport.is_closing():
                with contextlib.suppress(Exception):
                    self._transport.abort()
