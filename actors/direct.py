"""Direct connections: a session on a board without a WebSocket.

REST handlers, workers and tests sometimes need what a client has: the board's
document, kept current as others edit it, and a way to write that is broadcast
and acknowledged like anyone's. :class:`DirectConnection` is that client. It
opens the same frame stream a gateway does to the board's host (in-process or
on Ray), runs the sans-I/O client protocol of :mod:`crdt.session` over it, and
skips only the WebSocket framing, which belongs to the gateway alone.

For a single change that must be one transaction, prefer
:meth:`actors.cluster.Cluster.transact`; a direct connection is for reading,
observing and editing over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from pycrdt import Doc

from actors import memory_link
from actors.cluster import Cluster
from actors.memory_link import AnyLink
from actors.messages import (
    PROTOCOL_VERSION,
    Broadcast,
    Close,
    Frame,
    Hello,
    Open,
    Persisted,
    Reject,
    Send,
    from_host,
)
from actors.stream import open_stream
from crdt.protocol import sync_update
from crdt.session import ClientProtocol

# Connection ids are per link; a counter keeps them distinct in logs.
_connection_ids = itertools.count(2**40)


class DirectConnectionClosed(ConnectionError):
    """The board's host closed the direct connection (its code and reason)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"direct connection closed ({code}): {reason}")
        self.code = code


class DirectConnection:
    """A client of one board over the frame stream, with a live pycrdt document."""

    def __init__(
        self,
        cluster: Cluster,
        board_id: str,
        *,
        doc: Doc[Any] | None = None,
        origin: str | None = None,
    ) -> None:
        """Prepare a session on ``board_id``; ``origin`` names who its updates are from."""
        self.board_id = board_id
        self.origin = origin
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self._cluster = cluster
        self._conn = next(_connection_ids)
        self._link: AnyLink | None = None
        self._pump: asyncio.Task[None] | None = None
        self._protocol = ClientProtocol(self.doc, self._send)
        self._changed = asyncio.Event()
        self.closed: DirectConnectionClosed | None = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self, *, timeout: float = 10.0) -> None:
        """Join the board and return once the document is synced with it."""
        host, port = await self._cluster.endpoint(await self._cluster.locate(self.board_id))
        # A host of this process is linked without a socket (actors/memory_link.py).
        link: AnyLink | None = memory_link.dial((host, port), name="direct connection")
        if link is None:
            link = await open_stream(
                host,
                port,
                secret=self._cluster.stream_secret,
                connect_timeout=timeout,
                handshake_timeout=timeout,
            )
        self._link = link
        link.send(Hello(PROTOCOL_VERSION, "gateway"))
        link.send(Open(self.board_id, self._conn, True, origin=self.origin))
        self._pump = asyncio.create_task(self._read(link))
        self._protocol.start()
        await self._until(lambda: self._protocol.synced, timeout)

    @property
    def persisted_seq(self) -> int:
        """How many update messages sent on this connection are integrated and durable."""
        return self._protocol.persisted_seq

    async def persisted(self, *, timeout: float = 10.0) -> None:
        """Return once everything written so far is integrated and durable."""
        sent = self._protocol.updates_sent
        await self._until(lambda: self._protocol.persisted_seq >= sent, timeout)

    def send_update(self, update: bytes) -> None:
        """Send a Yjs update made elsewhere, as is, without applying it to ``doc``.

        The board checks it as it checks any client's (a bad one closes the
        session: :meth:`persisted` then raises :class:`DirectConnectionClosed`).
        """
        self._send(sync_update(update))
        self._protocol.updates_sent += 1

    async def changed(self, *, timeout: float | None = None) -> None:
        """Wait for the next message from the board (an edit, presence...)."""
        self._changed.clear()
        await asyncio.wait_for(self._changed.wait(), timeout)

    async def close(self) -> None:
        """Leave the board."""
        self._protocol.stop()
        link = self._link
        if link is not None and not link.closed:
            link.send(Close(self.board_id, self._conn))
            await link.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._pump

    def _send(self, frame: bytes) -> None:
        if self._link is not None and self.closed is None:
            self._link.send(Frame(self.board_id, self._conn, frame))

    async def _read(self, link: AnyLink) -> None:
        try:
            while (batch := await link.read_batches()) is not None:
                for raw in batch:
                    message = from_host(raw)
                    if isinstance(message, Send | Broadcast):
                        if not isinstance(message, Broadcast) or message.exclude != self._conn:
                            self._protocol.receive(message.data)
                    elif isinstance(message, Persisted) and message.conn == self._conn:
                        self._protocol.persisted_seq = message.count
                    elif isinstance(message, Reject) and message.conn == self._conn:
                        self.closed = DirectConnectionClosed(message.code, message.reason)
                        return
                self._changed.set()
            self.closed = DirectConnectionClosed(None, "the board's host closed the stream")
        finally:
            self._changed.set()

    async def _until(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if self.closed is not None:
                    raise self.closed
                self._changed.clear()
                await self._changed.wait()
