"""Routing client sessions to board hosts over frame streams.

The :class:`Router` asks the cluster where a board lives (cached), keeps one
stream link per host (opened once, even under concurrent first opens), and
fans frames from a host out to this gateway's clients. When a link fails the
host died or moved: its clients are closed with ``SERVICE_RESTART`` (1012),
the cluster is asked to check the host (on Ray the directory drops a dead one
from the membership, so its boards are placed elsewhere), and the clients
reconnect and are routed afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from actors import memory_link
from actors.cluster import Cluster
from actors.handshake import HandshakeRefused, RefusalLog
from actors.memory_link import AnyLink
from actors.messages import (
    PROTOCOL_VERSION,
    Broadcast,
    Close,
    Frame,
    Hello,
    HostMessage,
    Open,
    Persisted,
    Reject,
    Send,
    StreamProtocolError,
    from_host,
)
from actors.stream import DEFAULT_HANDSHAKE_SECONDS, open_stream
from crdt.close_codes import CloseCode
from crdt.protocol import Persisted as PersistedMessage
from crdt.protocol import encode_message
from gateway.connection import ClientConnection
from gateway.frames import binary_frame
from gateway.telemetry import RELAYED_UPDATE, GatewayTelemetry
from shared.state import SharedState, SharedStateUnavailable

log = logging.getLogger("boardcast.gateway")

DIRECTORY_CACHE_TTL_S = 60.0
# Tries to reach a board's host; between two, the cluster checks the host that failed.
ATTACH_ATTEMPTS = 3


@dataclass
class RoutingCounters:
    """What this gateway routed, since it started (read by gateway/metrics.py)."""

    frames_in: int = 0  # client frames forwarded to hosts
    frames_out: int = 0  # frames written to clients (one per recipient)
    acks_out: int = 0  # "persisted" messages written to clients
    link_failures: int = 0  # host links that ended while this gateway was running
    attach_failures: int = 0  # sessions that could not reach their board's host
    closes: Counter[int] = field(default_factory=Counter)  # clients closed by hosts, by code
    telemetry: GatewayTelemetry = field(default_factory=GatewayTelemetry)  # updates, latency


@dataclass(frozen=True, slots=True)
class RoutingLimits:
    """Timeouts and bounds of routing; see docs/settings.md."""

    control_timeout_seconds: float = 10.0  # a directory or endpoint call to the cluster
    connect_timeout_seconds: float = 5.0  # opening a stream to a board host
    stream_handshake_seconds: float = DEFAULT_HANDSHAKE_SECONDS  # then authenticating it
    close_timeout_seconds: float = 5.0  # closing a stream on shutdown
    max_cached_boards: int = 100_000  # board -> host entries kept in memory


class GatewayLink:
    """This gateway's stream to one board host, and the clients routed over it."""

    def __init__(
        self, host_name: str, stream: AnyLink, counters: RoutingCounters | None = None
    ) -> None:
        self.host_name = host_name
        self.stream = stream
        self.counters = counters if counters is not None else RoutingCounters()
        self.boards: dict[str, dict[int, ClientConnection]] = {}
        self.connections: dict[int, ClientConnection] = {}
        self.peer_version: int | None = None  # the host's protocol, once it said hello
        # Every link starts with the protocol this gateway speaks.
        stream.send(Hello(PROTOCOL_VERSION, "gateway"))

    @property
    def closed(self) -> bool:
        """True once the stream is gone."""
        return self.stream.closed

    def open(self, conn: ClientConnection) -> None:
        """Route a new client's board session over this link."""
        self.boards.setdefault(conn.board_id, {})[conn.conn_id] = conn
        self.connections[conn.conn_id] = conn
        self.stream.send(
            Open(conn.board_id, conn.conn_id, conn.wants_acks, conn.read_only, conn.origin)
        )

    def forward(self, conn: ClientConnection, data: bytes) -> None:
        """Pass a client's frame to its board."""
        self.counters.frames_in += 1
        self.stream.send(Frame(conn.board_id, conn.conn_id, data))

    def leave(self, conn: ClientConnection) -> None:
        """The client is gone: tell its board."""
        if self.connections.pop(conn.conn_id, None) is None:
            return
        board = self.boards.get(conn.board_id)
        if board is not None:
            board.pop(conn.conn_id, None)
            if not board:
                del self.boards[conn.board_id]
        self.stream.send(Close(conn.board_id, conn.conn_id))

    async def run(self) -> None:
        """Deliver what the host sends until the stream ends."""
        try:
            while (batch := await self.stream.read_batches()) is not None:
                for message in batch:
                    self._deliver(from_host(message))
        except (ConnectionError, OSError) as exc:
            log.warning("link to host %s failed: %s", self.host_name, exc)
        except StreamProtocolError as exc:
            log.error("host %s sent an unreadable stream: %s", self.host_name, exc)
        finally:
            self.stream.abort()
            for conn in list(self.connections.values()):
                conn.close_soon(CloseCode.SERVICE_RESTART)
            self.connections.clear()
            self.boards.clear()

    def _deliver(self, message: HostMessage) -> None:
        if isinstance(message, Broadcast):
            clients = self.boards.get(message.board_id)
            if not clients:
                return
            exclude = message.exclude
            frame = binary_frame(message.data)
            for conn_id, conn in clients.items():
                if conn_id != exclude:
                    conn.send_encoded(frame)
            recipients = len(clients) - (exclude in clients)
            self.counters.frames_out += recipients
            if message.data.startswith(RELAYED_UPDATE):
                telemetry = self.counters.telemetry
                telemetry.updates_out += recipients
                sender = clients.get(exclude)
                if sender is not None and sender.update_in_at:
                    # The sender is on this gateway: its update has reached the others here.
                    telemetry.fanout.observe(time.monotonic() - sender.update_in_at)
                    sender.update_in_at = 0.0
        elif isinstance(message, Send):
            target = self.connections.get(message.conn)
            if target is not None:
                target.send_encoded(binary_frame(message.data))
                self.counters.frames_out += 1
        elif isinstance(message, Persisted):
            target = self.connections.get(message.conn)
            if target is not None:
                payload = encode_message(PersistedMessage(message.count))
                target.send_encoded(binary_frame(payload))
                self.counters.acks_out += 1
        elif isinstance(message, Reject):
            target = self.connections.get(message.conn)
            if target is not None:
                self.counters.closes[message.code] += 1
                target.close_soon(CloseCode(message.code), message.reason)
        elif isinstance(message, Hello):
            self.peer_version = message.version
        else:
            log.warning("unexpected %s from host %s", type(message).__name__, self.host_name)


class Router:
    """Finds each board's host and keeps one stream link per host."""

    def __init__(
        self,
        cluster: Cluster,
        shared: SharedState | None = None,
        *,
        limits: RoutingLimits | None = None,
    ) -> None:
        self.cluster = cluster
        self._shared = shared
        self.limits = limits or RoutingLimits()
        self._board_hosts: dict[str, str] = {}
        self._links: dict[str, GatewayLink] = {}
        self._connecting: dict[str, asyncio.Future[GatewayLink]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._epoch = cluster.placement_epoch
        self._closing = False
        self.counters = RoutingCounters()
        self._refusals = RefusalLog()  # hosts that failed the handshake, logged sparingly

    @property
    def links(self) -> dict[str, GatewayLink]:
        """The open links, by host name."""
        return dict(self._links)

    async def attach(self, conn: ClientConnection) -> GatewayLink:
        """Route ``conn`` to its board's host and open its session there.

        A host that cannot be reached is reported to the cluster, which checks
        it (and on Ray re-places its boards if it is gone) before the next try.
        """
        for attempt in range(1, ATTACH_ATTEMPTS + 1):
            host_name = await self._host_of(conn.board_id)
            try:
                link = await self._link(host_name)
            except (OSError, TimeoutError):
                self._board_hosts.pop(conn.board_id, None)
                if attempt == ATTACH_ATTEMPTS:
                    self.counters.attach_failures += 1
                    raise
                await self.cluster.host_unreachable(host_name)
                continue
            link.open(conn)
            return link
        raise AssertionError("unreachable")

    async def _host_of(self, board_id: str) -> str:
        if self.cluster.placement_epoch != self._epoch:
            # The hosts changed (one joined, drained or died): place boards afresh.
            self._epoch = self.cluster.placement_epoch
            self._board_hosts.clear()
        host_name = self._board_hosts.get(board_id)
        if host_name is None:
            host_name = await asyncio.wait_for(
                self._locate(board_id), self.limits.control_timeout_seconds
            )
            if len(self._board_hosts) >= self.limits.max_cached_boards:
                # Oldest entry first: dicts keep insertion order.
                del self._board_hosts[next(iter(self._board_hosts))]
            self._board_hosts[board_id] = host_name
        return host_name

    async def _locate(self, board_id: str) -> str:
        # The shared directory cache answers in ~0.1 ms where a Ray call to the
        # directory takes ~1 ms; it is only a cache, so any failure falls through.
        # Only dedicated boards are cached there: shared placement is computed
        # locally and moves when the hosts change, which a shared cache would miss.
        if self._shared is not None and self.cluster.is_dedicated(board_id):
            with contextlib.suppress(SharedStateUnavailable):
                cached = await self._shared.cached_board_host(board_id)
                if cached is not None:
                    return cached
        host_name = await self.cluster.locate(board_id)
        if self._shared is not None and self.cluster.is_dedicated(board_id):
            with contextlib.suppress(SharedStateUnavailable):
                await self._shared.cache_board_host(board_id, host_name, DIRECTORY_CACHE_TTL_S)
        return host_name

    async def _link(self, host_name: str) -> GatewayLink:
        link = self._links.get(host_name)
        if link is not None and not link.closed:
            return link
        pending = self._connecting.get(host_name)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(host_name))
            self._connecting[host_name] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(host_name, None))
        return await asyncio.shield(pending)

    async def _connect(self, host_name: str) -> GatewayLink:
        host, port = await asyncio.wait_for(
            self.cluster.endpoint(host_name), self.limits.control_timeout_seconds
        )
        # A host of this process: the link moves message objects, no socket.
        stream: AnyLink | None = memory_link.dial((host, port))
        if stream is not None:
            return self._start_link(host_name, stream)
        try:
            stream = await open_stream(
                host,
                port,
                secret=self.cluster.stream_secret,
                connect_timeout=self.limits.connect_timeout_seconds,
                handshake_timeout=self.limits.stream_handshake_seconds,
                limit=1024 * 1024,
            )
        except HandshakeRefused as exc:
            # Another cluster's host at a reused address, or a secret that differs.
            line = self._refusals.refused(f"{host}:{port}", exc.refusal, time.monotonic())
            if line is not None:
                # A host that refuses a gateway's proof just closes: it says nothing more.
                log.warning(
                    "board host %s: stream handshake failed (secret differs?), %s", host_name, line
                )
            self.cluster.forget(host_name)
            raise
        except (OSError, TimeoutError):
            # The host may have restarted elsewhere: ask again next time.
            self.cluster.forget(host_name)
            raise
        return self._start_link(host_name, stream)

    def _start_link(self, host_name: str, stream: AnyLink) -> GatewayLink:
        link = GatewayLink(host_name, stream, self.counters)
        self._links[host_name] = link
        task = asyncio.ensure_future(self._run_link(link))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return link

    async def _run_link(self, link: GatewayLink) -> None:
        await link.run()
        if self._links.get(link.host_name) is link:
            del self._links[link.host_name]
        self.cluster.forget(link.host_name)
        stale = [board for board, host in self._board_hosts.items() if host == link.host_name]
        for board in stale:
            del self._board_hosts[board]
        if not self._closing:
            self.counters.link_failures += 1
            # Its clients reconnect at once; have the host checked meanwhile.
            with contextlib.suppress(Exception):
                await self.cluster.host_unreachable(link.host_name)
        if self._shared is not None:
            for board in stale:
                if self.cluster.is_dedicated(board):
                    with contextlib.suppress(SharedStateUnavailable):
                        await self._shared.forget_board_host(board, host_name=link.host_name)

    async def close(self) -> None:
        """Close every link."""
        self._closing = True
        for link in list(self._links.values()):
            try:
                await asyncio.wait_for(link.stream.close(), self.limits.close_timeout_seconds)
            except TimeoutError:
                link.stream.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
