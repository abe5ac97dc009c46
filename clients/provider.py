"""A Python client for Boardcast and any y-websocket server.

:class:`BoardClient` pumps :class:`crdt.session.ClientProtocol` (the client
side of the protocol, without I/O) over an aiohttp WebSocket, the way the
JavaScript ``WebsocketProvider`` does: sync on connect, stream local edits,
keep an awareness state alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from pycrdt import Doc

from crdt.awareness import (
    OUTDATED_TIMEOUT_S,
)
from crdt.errors import BoardcastError, InvalidUpdate, ProtocolError
from crdt.protocol import (
    sync_step1,
)
from crdt.session import ClientProtocol

logger = logging.getLogger(__name__)

# The origin of every transaction that applies bytes received from the server.
REMOTE_ORIGIN = "boardcast.remote"
# Like the JavaScript client: renew the own state at half the peers' timeout.
AWARENESS_RENEW_S = OUTDATED_TIMEOUT_S / 2
AWARENESS_CHECK_S = OUTDATED_TIMEOUT_S / 10
CLOSE_ABNORMAL = 1006


class ConnectionLost(BoardcastError, ConnectionError):
    """The connection ended before the awaited condition came true."""


def socket_url(base_url: str, board_id: str, params: Mapping[str, str] | None = None) -> str:
    """The WebSocket URL of a board: ``{base_url}/{board_id}?{params}``."""
    url = f"{base_url.rstrip('/')}/{quote(board_id, safe='')}"
    return f"{url}?{urlencode(params)}" if params else url


class BoardClient:
    """A board's document kept in sync with a server over one WebSocket.

    Use as ``async with BoardClient(url, board) as client: await client.synced()``.
    ``base_url`` is like ``ws://127.0.0.1:8000/ws``; the socket is ``{base_url}/{board_id}``.
    """

    def __init__(
        self,
        base_url: str,
        board_id: str,
        *,
        doc: Doc[Any] | None = None,
        params: dict[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        ack: bool = True,
    ) -> None:
        # ack=1 asks the server for "persisted up to here" messages (docs/protocol.md).
        query = {"ack": "1", **(params or {})} if ack else params
        self.url = socket_url(base_url, board_id, query)
        self.board_id = board_id
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.close_code: int | None = None
        self.error: BoardcastError | None = None
        self._session = session
        self._owns_session = session is None
        self._protocol = ClientProtocol(self.doc, self._enqueue)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> BoardClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client_id(self) -> int:
        """The document's Yjs client id (also the awareness id)."""
        return self.doc.client_id

    @property
    def connected(self) -> bool:
        """True while the socket is open."""
        return self._ws is not None and not self._ws.closed and self._protocol.active

    @property
    def is_synced(self) -> bool:
        """True once the server's sync step 2 of this connection has been applied."""
        return self._protocol.synced

    @property
    def awareness_states(self) -> dict[int, dict[str, Any]]:
        """The other clients' awareness states by client id."""
        return self._protocol.awareness_states

    @property
    def persisted_seq(self) -> int:
        """The highest sequence number the server reported durable (0 if none)."""
        return self._protocol.persisted_seq

    @property
    def updates_sent(self) -> int:
        """Local updates sent on the current connection."""
        return self._protocol.updates_sent

    @property
    def denied_reason(self) -> str | None:
        """The reason of the server's permission-denied message, if it sent one."""
        return self._protocol.denied_reason

    async def connect(self) -> None:
        """Open the socket and start syncing (does not wait for the sync)."""
        if self.connected:
            return
        await self._teardown()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
            )
        except BaseException:
            # ``async with`` never reaches __aexit__ when connecting fails.
            if self._owns_session:
                await self._session.close()
                self._session = None
            raise
        self.close_code = None
        self.error = None
        self._outbox = asyncio.Queue()
        self._protocol.start()
        ws = self._ws
        self._tasks = [
            asyncio.create_task(self._send_loop(ws)),
            asyncio.create_task(self._receive_loop(ws)),
            asyncio.create_task(self._tick_loop()),
        ]

    async def reconnect(self) -> None:
        """Close the current socket if any and connect again with the same document.

        The new connection's sync exchange repairs anything missed or misapplied.
        """
        await self._close_socket()
        await self.connect()

    async def synced(self, timeout: float | None = 10.0) -> None:
        """Wait until the server's sync step 2 has been applied."""
        await self._wait(lambda: self._protocol.synced, timeout)

    async def persisted(self, seq: int | None = None, timeout: float | None = 10.0) -> None:
        """Wait until the server reports this connection's updates durable up to ``seq``.

        Without ``seq``: every update sent on this connection so far.
        """
        target = self._protocol.updates_sent if seq is None else seq
        await self._wait(lambda: self._protocol.persisted_seq >= target, timeout)

    async def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until every queued frame has been written to the socket."""
        async with asyncio.timeout(timeout):
            await self._outbox.join()

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Set (``None``: remove) this client's awareness state and send it."""
        self._protocol.set_awareness(state)

    def resync(self) -> None:
        """Send a fresh sync step 1; the server answers with whatever we lack."""
        if self._protocol.active:
            self._enqueue(sync_step1(self.doc.get_state()))

    async def close(self) -> None:
        """Announce the departure, close the socket cleanly and release resources."""
        await self._close_socket()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def abort(self) -> None:
        """Cut the socket with no closing handshake, like a crashed client."""
        ws = self._ws
        if ws is not None and not ws.closed:
            sock = ws.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # Linger 0: the kernel resets the connection instead of a graceful FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
        self._protocol.stop()
        await self._teardown()
        self.close_code = CLOSE_ABNORMAL
        self._notify()

    async def _close_socket(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed and self._protocol.active:
            self._protocol.leave()
            with contextlib.suppress(TimeoutError):
                await self.flush(timeout=5.0)
        self._protocol.stop()
        if ws is not None and not ws.closed:
            await ws.close()
            self.close_code = ws.close_code
        await self._teardown()
        self._notify()

    async def _teardown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
        self._drain_outbox()

    def _enqueue(self, frame: bytes) -> None:
        self._outbox.put_nowait(frame)

    def _drain_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, condition: Callable[[], bool], timeout: float | None) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if not self.connected:
                    raise ConnectionLost(f"{self.url} closed (code {self.close_code})")
                await self._changed.wait()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                frame = await self._outbox.get()
                try:
                    await ws.send_bytes(frame)
                finally:
                    self._outbox.task_done()
        except (ConnectionError, aiohttp.ClientError):
            # The receive loop sees the same failure and records the close.
            self._drain_outbox()

    async def _receive_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    self._protocol.receive(message.data)
                except (ProtocolError, InvalidUpdate) as exc:
                    logger.warning("closing %s: %s", self.url, exc)
                    self.error = exc
                    await ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
                    break
                self._notify()
        finally:
            self._protocol.stop()
            self.close_code = ws.close_code
            self._drain_outbox()
            self._notify()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(AWARENESS_CHECK_S)
            self._protocol.tick()


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, *, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
