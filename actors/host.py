"""A board host: many board actors in one process, reachable over frame streams.

The host accepts stream connections from gateways (:mod:`actors.stream`),
activates a board on its first message (loading it from the store), routes
every frame to the board's actor, group-commits the updates of all its boards
in one store write at a time, snapshots and compacts, and passivates boards
that stayed idle. It is a plain asyncio class: :mod:`actors.ray_backend` wraps
it in a Ray actor, and tests run it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from actors import memory_link
from actors.board import BoardActor, BoardOutput, BoardPhase, EventSink, Link
from actors.control import is_control_hello, serve_control
from actors.event_logging import EventAppender, logged_events, project_of
from actors.extensions import Change, Extensions
from actors.handshake import new_cluster_secret
from actors.indexing import index_write, whole_board
from actors.memory_link import MemoryLink
from actors.messages import (
    PROTOCOL_VERSION,
    Close,
    Frame,
    GatewayMessage,
    Hello,
    Open,
    Persisted,
    from_gateway,
    reject,
)
from actors.stream import (
    DEFAULT_HANDSHAKE_SECONDS,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    StreamGuard,
    StreamLink,
)
from actors.transactions import Outcome
from crdt.board import Board
from crdt.close_codes import CloseCode
from crdt.errors import BoardcastError
from crdt.events import DomainEvent, decode_events, encode_events
from crdt.room import RoomLimits
from crdt.updates import build_document, snapshot_loads
from persistence.coverage import Coverage
from persistence.history import DEFAULT_HISTORY
from persistence.read_model import IndexWrite, TaskIndex
from persistence.store import BoardStore, LogEntry, Record, StoredBoard
from shared import tracing
from shared.logs import BOARD_ID, use_json_logs

log = logging.getLogger("boardcast.host")

T = TypeVar("T")

#: Read-model writes a host queues at most; past it the oldest are dropped.
MAX_QUEUED_INDEX_WRITES = 100_000
# A read-model write that fails (SQLite's "database is locked" while another host holds a
# long write) is tried this many times, with the store's retry delays, before it is dropped.
INDEX_WRITE_ATTEMPTS = 5
# A read-model catch-up starts only once no board has loaded for this long: the opens of a
# burst come in waves, and a catch-up (a walk over every task) between two would delay the
# second.
CATCH_UP_QUIET_SECONDS = 0.5
#: Boards a host reads and builds at once. A load is milliseconds to tens of milliseconds
#: of CPU on the host's loop (a 1,000-task board: ~15 ms); hundreds at once, as when every
#: client comes back after a restart, queued seconds of work ahead of the host's heartbeat,
#: the directory dropped the host as dead and its clients were sent away. In turns, the
#: first boards are also served first instead of every board late.
LOAD_CONCURRENCY = 4


class BoardUnavailable(BoardcastError):
    """A board could not be loaded from the store (the store is failing)."""


@dataclass(frozen=True, slots=True)
class HostSettings:
    """How a board host behaves; see docs/settings.md."""

    bind_host: str = "127.0.0.1"
    # The address gateways dial, if not ``bind_host`` (which may be 0.0.0.0 or
    # another node's view of this one): on a multi-node cluster, the node's IP.
    advertise_host: str | None = None
    idle_seconds: float = 30.0
    snapshot_every: int = 500
    sweep_seconds: float = 5.0
    store_retry_seconds: float = 0.5  # first retry after a failed store write; doubles
    store_retry_max_seconds: float = 5.0
    max_unsaved_bytes: int = 64 * 1024 * 1024  # past this, writes are refused (4503)
    drain_seconds: float = 5.0  # on stop, how long to wait for gateways to close their links
    snapshot_every_bytes: int = 8 * 1024 * 1024  # also snapshot once the log tail is this big
    store_timeout_seconds: float = 30.0  # one store call; past it the call counts as failed
    # After the first update of a group commit arrives, wait this long for more before
    # committing: fewer, larger commits (each one a thread hand-off and an fsync) for a
    # bounded delay of the Persisted acknowledgements. Deliveries never wait for it.
    commit_window_seconds: float = 0.01
    max_inbox_bytes: int = 64 * 1024 * 1024  # frames queued for one loading board (1013 past)
    limits: RoomLimits = field(default_factory=RoomLimits)
    history: str = str(DEFAULT_HISTORY)  # retention of past versions (persistence/history.py)
    extensions: tuple[str, ...] = ()  # ``module:factory`` specs whose host hooks run here
    max_queued_hooks: int = 10_000  # extension calls waiting; past it one is logged and skipped
    max_remembered_transactions: int = 10_000  # idempotency keys kept (oldest forgotten)
    read_model: bool = True  # keep the store's task index current (persistence/read_model.py)
    # Gateways of this process reach the host without a socket (actors/memory_link.py).
    in_process_links: bool = True
    # A board stored as one snapshot (with its state vector) is served from the
    # snapshot's bytes until a change needs its document (crdt/document.py).
    build_on_demand: bool = True
    # What gateways prove knowledge of when they open a frame stream (actors/handshake.py).
    # None: this host makes up its own, and only whoever reads it from here can connect;
    # the process that starts a cluster sets one and hands it to every host.
    cluster_secret: bytes | None = field(default=None, repr=False)
    stream_handshake_seconds: float = DEFAULT_HANDSHAKE_SECONDS  # a new stream proves itself
    max_pending_handshakes: int = DEFAULT_MAX_PENDING_HANDSHAKES  # more waiting are dropped
    log_format: str = "text"  # "json": this process logs one JSON object per line
    trace_endpoint: str = ""  # OTLP/HTTP traces URL; "" traces nothing
    store_probe_seconds: float = 2.0  # each sweep checks the store within this


@dataclass(slots=True)
class _Unsaved:
    """An update waiting to be committed, and the domain events it yields."""

    record: Record
    events: list[DomainEvent] = field(default_factory=list)


def _stored_events(board_id: str, entry: LogEntry) -> list[DomainEvent]:
    """The domain events stored with a log entry (none if they do not decode: logged)."""
    try:
        return decode_events(entry.events) if entry.events else []
    except ValueError:
        log.exception("board %s seq %d: stored events unreadable", board_id, entry.seq)
        return []


def _changes(board_id: str, first_seq: int, entries: list[_Unsaved]) -> list[Change]:
    """The committed entries (numbered from ``first_seq``) as changes, one per run of one origin."""
    changes: list[Change] = []
    start = 0
    for i, entry in enumerate(entries):
        if i + 1 < len(entries) and entries[i + 1].record.origin == entry.record.origin:
            continue
        run = entries[start : i + 1]
        events = tuple(event for unsaved in run for event in unsaved.events)
        changes.append(Change(board_id, first_seq + i, len(run), events, entry.record.origin))
        start = i + 1
    return changes


class HostLink(StreamLink):
    """A gateway's connection, seen from the host."""

    number: int
    peer_version: int | None = None  # the protocol the gateway speaks, once known


class HostMemoryLink(MemoryLink):
    """A gateway of this process, linked without a socket (:mod:`actors.memory_link`)."""

    number: int
    peer_version: int | None = None


AnyHostLink = HostLink | HostMemoryLink


class BoardHost:
    """Hosts board actors and serves them to gateways over frame streams."""

    def __init__(
        self,
        name: str,
        store: BoardStore,
        settings: HostSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        event_sink: EventSink | None = None,
    ) -> None:
        """Create a host; nothing runs until :meth:`start`.

        Args:
            name: the host's name in the directory.
            store: where boards are persisted; the host closes it on stop.
            settings: timings and limits.
            clock: monotonic seconds (tests pass a fake one).
            event_sink: receives the domain events of updates once they are
                durable; without it (and without an ``on_change`` extension) no
                events are derived at all.
        """
        self.name = name
        self._event_sink = event_sink
        self.store = store
        self.settings = settings or HostSettings()
        if self.settings.cluster_secret is None:
            self.settings = replace(self.settings, cluster_secret=new_cluster_secret())
        assert self.settings.cluster_secret is not None
        self._guard = StreamGuard(
            self.settings.cluster_secret,
            timeout=self.settings.stream_handshake_seconds,
            max_pending=self.settings.max_pending_handshakes,
        )
        self.extensions = Extensions.from_specs(self.settings.extensions)
        if self.settings.log_format == "json":
            use_json_logs()
        tracing.configure_tracing(self.settings.trace_endpoint, service_name="boardcast-host")
        # For /metrics: boards loaded and passivated, the oldest update not yet durable
        # (clock seconds) and the one in the write under way, the store's last check.
        self._activations = 0
        self._passivations = 0
        self._unsaved_since: float | None = None
        self._writing_since: float | None = None
        self.store_reachable = True
        # Contexts of the transactions whose updates wait for the next group commit.
        self._commit_parents: list[Any] = []
        self._index: TaskIndex | None = None
        if self.settings.read_model:
            with contextlib.suppress(NotImplementedError):
                self._index = store.task_index()
        self._index_queue: list[IndexWrite] = []
        self._index_ready = asyncio.Event()
        # Boards loading now; read-model catch-ups wait until none is (opens come first).
        self._loading = 0
        self._loads_idle = asyncio.Event()
        self._loads_idle.set()
        self._last_load_ended = float("-inf")  # on the event loop's clock
        self._catch_up_turn = asyncio.Lock()
        # The deployment's event log (persistence/event_log.py), beside the store.
        self._event_log = EventAppender.for_store(
            store,
            retry_seconds=self.settings.store_retry_seconds,
            retry_max_seconds=self.settings.store_retry_max_seconds,
        )
        self._derive_events = (
            event_sink is not None
            or self.extensions.defines("on_change")
            or self._index is not None
            or self._event_log is not None
        )
        # Committed changes for the extensions' on_change, in commit order.
        # Extension hooks waiting to run (on_load, on_change, on_store), in order.
        self._hooks: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(
            self.settings.max_queued_hooks
        )
        self._clock = clock
        self._boards: dict[str, BoardActor] = {}
        self._links: set[AnyHostLink] = set()
        self._link_numbers = itertools.count(1)
        # Updates to commit, per board, in order, each with the events it yields.
        self._pending: dict[str, list[_Unsaved]] = {}
        self._pending_acks: dict[tuple[Link, int], int] = {}
        # Boards being loaded: resolved with True once active, False if loading failed.
        self._loaded: dict[str, asyncio.Future[bool]] = {}
        self._load_slots = asyncio.Semaphore(LOAD_CONCURRENCY)
        # Server-side transactions by idempotency key: their version once durable.
        self._transactions: dict[tuple[str, str], asyncio.Future[int]] = {}
        self._unsaved_bytes = 0
        self._dirty = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._endpoint: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link_tasks: set[asyncio.Task[Any]] = set()
        self._started = asyncio.Lock()
        # Which boards are placed here (None: every board); opens of others are refused.
        self._placed_here: Callable[[str], bool] | None = None
        # Boards handed over to another host and not opened here since.
        self._handed_over: set[str] = set()
        self.snapshots_refused = 0  # the store found a snapshot missing another host's entries
        #: What answers control links (actors/control.py): set for a host with no Ray actor.
        self.control_target: object | None = None
        self._control_links: set[AnyHostLink] = set()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Start serving (idempotent); return the stream endpoint (host, port)."""
        async with self._started:
            if self._endpoint is None:
                self._server = await asyncio.start_server(
                    self._serve_link, self.settings.bind_host, 0, limit=1024 * 1024
                )
                port = self._server.sockets[0].getsockname()[1]
                advertised = self.settings.advertise_host or self.settings.bind_host
                self._endpoint = (advertised, port)
                if self.settings.in_process_links:
                    memory_link.listen(self._endpoint, self._accept_in_process)
                self._spawn(self._flush_loop())
                self._spawn(self._sweep_loop())
                if self.extensions:
                    self._spawn(self._hook_loop())
                if self._index is not None:
                    self._spawn(self._index_loop())
                log.info("board host %s serving frames on %s:%d", self.name, *self._endpoint)
            return self._endpoint

    async def stop(self) -> None:
        """Stop serving; persist and snapshot every board, then close the store.

        Waits up to ``drain_seconds`` for gateways to close their links first, unless
        every board was handed over (:meth:`hand_over`): their clients are gone already.
        """
        if self._server is not None:
            self._server.close()
        if self._endpoint is not None:
            memory_link.unlisten(self._endpoint, self._accept_in_process)
        # Gateways close their links first when they shut down; read what they
        # sent up to that point before committing, so no received frame is lost.
        serving = [task for task in self._link_tasks if not task.done()]
        if serving and not self.everything_handed_over:
            await asyncio.wait(serving, timeout=self.settings.drain_seconds)
        for link in [*self._links, *self._control_links]:
            link.abort()
        await self.flush()
        # Let on_change see what was committed, within the drain bound: what it
        # has not seen stays in the log, and is delivered when the board loads.
        await self._caught_up()
        for board in list(self._boards.values()):
            if board.phase is not BoardPhase.LOADING:
                await self._snapshot(board)
            board.release()
        self._boards.clear()
        if self.extensions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hooks.join(), self.settings.drain_seconds)
        await self._cancel_tasks()
        if self._index is not None and self._index_queue:
            # What the last commits queued, written before the index closes (bounded).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._index.write(self._index_queue), self.settings.drain_seconds
                )
            self._index_queue = []
        if self._index is not None:
            with contextlib.suppress(Exception):
                await self._index.close()
        await self.store.close()

    async def _cancel_tasks(self) -> None:
        """Cancel the host's background tasks and wait until they are over.

        A cancellation can be lost (Python 3.11's ``wait_for`` drops it when the awaited
        call finishes at the same moment), leaving a loop waiting forever: so what is
        still running after a moment is cancelled again.
        """
        while pending := {task for task in self._tasks if not task.done()}:
            for task in pending:
                task.cancel()
            done, _ = await asyncio.wait(pending, timeout=0.5)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a failed loop was logged where it failed

    def stats(self) -> dict[str, Any]:
        """Counts for health checks and the bench."""
        return {
            "name": self.name,
            "boards": len(self._boards),
            "boards_built": sum(1 for b in self._boards.values() if b.room.document.built),
            "connections": sum(b.connection_count for b in self._boards.values()),
            "gateways": len(self._links),
            "pending_updates": sum(len(u) for u in self._pending.values()),
            "unsaved_bytes": self._unsaved_bytes,
            "handshakes_pending": self._guard.pending,
            "handshakes_refused": self._guard.refused,
            "activations": self._activations,
            "passivations": self._passivations,
            "persistence_lag_seconds": self._persistence_lag(),
            "store_reachable": self.store_reachable,
            "handed_over": len(self._handed_over),
            "snapshots_refused": self.snapshots_refused,
        }

    def _persistence_lag(self) -> float:
        """How long the oldest update not yet durable has waited (0 when all are)."""
        oldest = [t for t in (self._unsaved_since, self._writing_since) if t is not None]
        return max(0.0, self._clock() - min(oldest)) if oldest else 0.0

    def board_ids(self) -> list[str]:
        """Boards currently in memory."""
        return sorted(self._boards)

    # -- placement: handing boards over, refusing the ones placed elsewhere ------

    def set_placement(self, placed_here: Callable[[str], bool] | None) -> None:
        """Say which boards are placed on this host; ``None`` takes every board.

        An open of a board ``placed_here`` rejects is refused with 1012 (service
        restart): the client reconnects, and its gateway routes it to the owner.
        Boards already in memory stay until :meth:`hand_over` moves them.
        """
        self._placed_here = placed_here

    def placed_elsewhere(self, board_id: str) -> bool:
        """True if the placement given to :meth:`set_placement` puts ``board_id`` elsewhere."""
        return self._placed_here is not None and not self._placed_here(board_id)

    @property
    def everything_handed_over(self) -> bool:
        """True once boards were handed over and none is left in memory."""
        return bool(self._handed_over) and not self._boards

    async def hand_over(self, board_id: str) -> bool:
        """Let another host serve a board: close its clients, make it durable, drop it.

        Its clients are closed with 1012 (service restart), so they reconnect and
        their gateways route them to the board's new owner; what they sent before is
        flushed, and the board is snapshotted (unless the store refuses: the log then
        stays whole for the new owner) before it leaves memory. A board still loading
        is handed over once loaded. Returns False if the board is not in memory.
        """
        loading = self._loaded.get(board_id)
        if loading is not None:
            await asyncio.shield(loading)
        board = self._boards.get(board_id)
        if board is None or board.phase is not BoardPhase.ACTIVE:
            return False
        board.phase = BoardPhase.RELEASING
        try:
            self._apply(board, board.reject_all(CloseCode.SERVICE_RESTART))
            await self.flush()
            await self._caught_up()
            await self._snapshot(board)
        finally:
            board.phase = BoardPhase.ACTIVE
        if self._boards.get(board_id) is not board:
            return True  # the store refused the snapshot, and the board was reloaded
        # Whoever opened it during the snapshot write is sent on too.
        self._apply(board, board.reject_all(CloseCode.SERVICE_RESTART))
        del self._boards[board_id]
        board.release()
        self._handed_over.add(board_id)
        # What arrived between the snapshot and the last close is in the log after it.
        await self.flush()
        log.info("board %s handed over", board_id)
        return True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the frame stream ---------------------------------------------------

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Not one frame is read from a peer that has not proved it knows the cluster secret.
        if not await self._guard.admit(reader, writer):
            return
        if self._server is None or not self._server.is_serving():
            writer.transport.abort()  # the host stopped during the handshake
            return
        await self._serve(HostLink(reader, writer))

    def _accept_in_process(self, peer: str) -> MemoryLink | None:
        # memory_link.dial: a gateway of this process, which no other peer can reach.
        if self._server is None or not self._server.is_serving():
            return None
        link = HostMemoryLink(name=peer)
        task = asyncio.ensure_future(self._serve(link))
        self._link_tasks.add(task)
        task.add_done_callback(self._link_tasks.discard)
        return link

    async def _serve(self, link: AnyHostLink) -> None:
        link.number = next(self._link_numbers)
        self._links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._link_tasks.add(task)
            task.add_done_callback(self._link_tasks.discard)
        try:
            batch = await link.read_batches()
            if batch and is_control_hello(batch[0]):
                # Not a gateway's board link: stop() does not wait for it to close.
                self._links.discard(link)
                if task is not None:
                    self._link_tasks.discard(task)
                if self.control_target is None:
                    log.warning("%s opened a control link; %s takes none", link.peer, self.name)
                    return
                self._control_links.add(link)
                try:
                    await serve_control(link, batch[1:], self.control_target)
                finally:
                    self._control_links.discard(link)
                return
            log.info("gateway %s connected to host %s", link.peer, self.name)
            while batch is not None:
                for received in batch:
                    message = from_gateway(received)
                    if link.peer_version is None:
                        self._greet(link, message)
                        if isinstance(message, Hello):
                            continue
                    try:
                        self._dispatch(link, message)
                    except Exception:
                        # A bug hit by one client's message must not take down the
                        # link, and with it every client of this gateway.
                        log.exception("failed to handle a message from %s", link.peer)
                        self._reject_after_failure(link, message)
                # Backpressure: while this gateway is slow to take our replies
                # (a burst of opens each answered with a whole board), read no
                # more of its requests rather than buffer without bound.
                if link.needs_drain():
                    await link.drain()
                batch = await link.read_batches()
        except (ConnectionError, OSError) as exc:
            log.info("gateway link %s lost: %s", link.peer, exc)
        except Exception:
            log.exception("gateway link %s sent an unreadable stream", link.peer)
        finally:
            self._links.discard(link)
            link.abort()
            for board in list(self._boards.values()):
                self._apply(board, board.drop_link(link))

    def _greet(self, link: AnyHostLink, message: GatewayMessage) -> None:
        """Learn the gateway's protocol from its first message, and answer a hello."""
        if isinstance(message, Hello):
            link.peer_version = message.version
            link.send(Hello(PROTOCOL_VERSION, "host"))
            if message.version > PROTOCOL_VERSION:
                log.warning(
                    "gateway %s speaks protocol %d, newer than this host's %d",
                    link.peer,
                    message.version,
                    PROTOCOL_VERSION,
                )
        else:
            # Gateways from before versioning send no hello; their messages are the same.
            link.peer_version = 0
            log.info("gateway %s speaks the unversioned protocol 0", link.peer)

    def _reject_after_failure(self, link: AnyHostLink, message: GatewayMessage) -> None:
        if isinstance(message, Hello):
            return
        with contextlib.suppress(Exception):
            link.send(reject(message.conn, CloseCode.INTERNAL_ERROR))
            board = self._boards.get(message.board_id)
            if board is not None:
                self._apply(board, board.close(link, message.conn))

    def _dispatch(self, link: AnyHostLink, message: GatewayMessage) -> None:
        if isinstance(message, Hello):
            log.warning("gateway %s sent a second hello; ignored", link.peer)
            return
        board_id, conn = message.board_id, message.conn
        if isinstance(message, Open) and self.placed_elsewhere(board_id):
            link.send(reject(conn, CloseCode.SERVICE_RESTART, "the board is on another host"))
            return
        board = self._boards.get(board_id)
        if board is None:
            if not isinstance(message, Open):
                # The client's board went away under it (host restart): make it resync.
                link.send(reject(conn, CloseCode.SERVICE_RESTART))
                return
            board = self._new_board(board_id)
        if board.phase is BoardPhase.LOADING:
            if board.inbox_bytes > self.settings.max_inbox_bytes and isinstance(message, Frame):
                # The board is slow to load and this client keeps sending: it must
                # wait outside rather than in our memory.
                link.send(reject(conn, CloseCode.TRY_AGAIN_LATER))
                board.queue(link, Close(board_id, conn))
                return
            board.queue(link, message)
            return
        self._handle(board, link, message)

    def _handle(self, board: BoardActor, link: Link, message: Open | Frame | Close) -> None:
        if isinstance(message, Frame):
            # While the store has been failing long enough to fill the backlog,
            # writes are refused (4503) rather than accepted without a way to
            # persist them; reading the board and presence keep working.
            writable = self._unsaved_bytes <= self.settings.max_unsaved_bytes
            self._apply(board, board.receive(link, message.conn, message.data, writable=writable))
        elif isinstance(message, Open):
            opened = board.open(
                link,
                message.conn,
                ack=message.ack,
                read_only=message.read_only,
                origin=message.origin,
            )
            self._apply(board, opened)
        else:
            self._apply(board, board.close(link, message.conn))

    def _apply(self, board: BoardActor, out: BoardOutput) -> None:
        """Carry out what a board asked for: the only place board output meets links and store."""
        for link, message in out.messages:
            link.send(message)
        board_id = board.board_id
        if out.updates:
            unsaved = [_Unsaved(record) for record in out.updates]
            if out.events and self._derive_events:
                # Stored with the last update they come from, so that a crash
                # before they are delivered cannot lose them; delivered once
                # that update is durable, never before.
                last = unsaved[-1]
                last.events = out.events
                last.record = replace(last.record, events=encode_events(out.events))
            self._pending.setdefault(board_id, []).extend(unsaved)
            self._unsaved_bytes += sum(len(record.update) for record in out.updates)
            if self._unsaved_since is None:
                self._unsaved_since = self._clock()
        for key, count in out.acks:
            self._pending_acks[key] = count
        if out.updates or out.acks:
            self._dirty.set()
        if out.corrupted:
            log.error("board %s cannot be rebuilt; reloading it", board_id)
            self._spawn(self._reload(board))

    async def _reload(self, board: BoardActor) -> None:
        """Take a board whose document cannot be trusted out of memory; it reloads on demand."""
        if self._boards.get(board.board_id) is not board:
            return
        self._apply(board, board.reject_all(CloseCode.SERVICE_RESTART))
        del self._boards[board.board_id]
        board.release()
        with contextlib.suppress(Exception):
            await self.flush()

    def _new_board(self, board_id: str) -> BoardActor:
        """Create a board actor and start loading it; messages wait in its inbox."""
        board = BoardActor(
            board_id,
            clock=self._clock,
            derive_events=self._derive_events,
            limits=self.settings.limits,
            build_on_demand=self.settings.build_on_demand,
        )
        self._boards[board_id] = board
        self._handed_over.discard(board_id)
        self._loaded[board_id] = asyncio.get_running_loop().create_future()
        self._spawn(self._activate(board))
        return board

    async def _activate(self, board: BoardActor) -> None:
        # The future stays in _loaded until the load is over: a server-side call that
        # arrives meanwhile (a REST read while a socket's open is loading the board)
        # waits for it rather than running on a board that is not loaded yet.
        loaded = self._loaded.get(board.board_id)
        try:
            await self._load(board)
        finally:
            if loaded is not None:
                if not loaded.done():
                    loaded.set_result(board.phase is BoardPhase.ACTIVE)
                if self._loaded.get(board.board_id) is loaded:
                    del self._loaded[board.board_id]

    async def _load(self, board: BoardActor) -> None:
        self._loading += 1
        self._loads_idle.clear()
        try:
            await self._load_board(board)
        finally:
            self._loading -= 1
            self._last_load_ended = asyncio.get_running_loop().time()
            if not self._loading:
                self._loads_idle.set()

    async def _load_board(self, board: BoardActor) -> None:
        BOARD_ID.set(board.board_id)  # this task's log lines are about this board
        try:
            async with self._load_slots:
                with tracing.span("board load", attributes={"boardcast.board_id": board.board_id}):
                    stored = await asyncio.wait_for(
                        self.store.load(board.board_id), self.settings.store_timeout_seconds
                    )
                board.load(stored)
            # Still loading for whoever sends meanwhile: their messages wait in the
            # inbox, behind the ones already there (a client's Open before its frames).
            board.phase = BoardPhase.LOADING
            if self.extensions:
                self._hook(partial(self.extensions.on_load, board.board_id))
            self._spawn(self._catch_up_index(board, stored))
            if self._derive_events:
                # Before any new change of the board can be delivered.
                await self._redeliver(board, stored)
            board.phase = BoardPhase.ACTIVE
            self._activations += 1
            log.info("board %s activated (%d stored updates)", board.board_id, len(stored.updates))
        except Exception:
            log.exception("board %s could not be loaded", board.board_id)
            code = CloseCode.TRY_AGAIN_LATER
            self._apply(board, board.reject_all(code))
            self._boards.pop(board.board_id, None)
            board.release()
            return
        for link, message in board.take_inbox():
            if not link.closed:
                self._handle(board, link, message)

    # -- server-side transactions ----------------------------------------------

    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> int:
        """Run ``change`` on a board (loaded if need be) as one transaction.

        Every client of the board sees it as one update; it is stored like a
        client's, with ``origin`` (who made it). Returns the board's version
        (store sequence number) once the change is durable. A retry with the
        same ``idempotency_key`` applies nothing and returns the first call's
        version: while this host remembers the key (the last
        ``max_remembered_transactions``), or else while the store retains the
        update it was stored with (``BoardStore.find_key``), across restarts.

        Raises:
            BoardcastError: the change raised or would make the board too large;
                nothing of it was kept.
            BoardUnavailable: the board could not be loaded.
        """
        outcome = await self.run(board_id, change, idempotency_key=idempotency_key, origin=origin)
        return outcome.version

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> Outcome[T]:
        """Run ``function`` on a board as one transaction; return its value and version.

        What :meth:`transact` does, and ``function``'s return value besides. A
        function that changes nothing is a read: it sees the board as every
        client does, and the version returned is one where everything it saw is
        durable. A retry of an applied idempotency key does not run
        ``function`` (``Outcome.applied`` is False, ``value`` None).
        """
        key = (board_id, idempotency_key) if idempotency_key is not None else None
        if key is not None and key in self._transactions:
            version = await asyncio.shield(self._transactions[key])
            return Outcome(version, None, applied=False)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._transactions[key] = done
            if len(self._transactions) > self.settings.max_remembered_transactions:
                del self._transactions[next(iter(self._transactions))]
        try:
            with tracing.span(
                "board transaction",
                carrier=tracing.trace_context_of(function),
                attributes={"boardcast.board_id": board_id},
            ):
                outcome = await self._run(board_id, function, idempotency_key, origin)
        except BaseException as exc:
            if key is not None:
                # A failed transaction may be retried for real.
                self._transactions.pop(key, None)
            done.set_exception(exc)
            done.exception()  # retrieved: the caller gets it below
            raise
        done.set_result(outcome.version)
        return outcome

    async def _run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        idempotency_key: str | None,
        origin: str | None,
    ) -> Outcome[T]:
        board = self._boards.get(board_id) or self._new_board(board_id)
        loaded = self._loaded.get(board_id)
        if loaded is not None and not await asyncio.shield(loaded):
            raise BoardUnavailable(f"board {board_id!r} could not be loaded")
        if idempotency_key is not None:
            # Applied before this host knew the key (another host, or before a restart)?
            # Each board runs on one host at a time, so the store is the whole truth.
            stored = await asyncio.wait_for(
                self.store.find_key(board_id, idempotency_key),
                self.settings.store_timeout_seconds,
            )
            if stored is not None:
                return Outcome(stored, None, applied=False)
            if any(
                unsaved.record.key == idempotency_key for unsaved in self._pending.get(board_id, ())
            ):
                # Only a forgotten first call leaves its update uncommitted here.
                await self.flush()
                return Outcome(board.persisted_seq, None, applied=False)
        values: list[T] = []
        out = board.transact(
            lambda view: values.append(function(view)), origin=origin, key=idempotency_key
        )
        self._apply(board, out)
        if out.error is not None:
            raise out.error
        if out.updates and (context := tracing.current_context()) is not None:
            self._commit_parents.append(context)
        # A read waits too: what it saw (others' updates included) is then durable.
        await self.flush()
        return Outcome(board.persisted_seq, values[0] if values else None)

    # -- persistence ---------------------------------------------------------

    async def flush(self) -> None:
        """Return once every update received so far is durable in the store."""
        # Always take the write lock once: a write already in flight holds
        # updates that are no longer in _pending but are not durable yet.
        await self._write_pending()
        while self._pending or self._pending_acks:
            await self._write_pending()

    async def _flush_loop(self) -> None:
        delay = self.settings.store_retry_seconds
        window = self.settings.commit_window_seconds
        while True:
            await self._dirty.wait()
            if window > 0:
                await asyncio.sleep(window)
            self._dirty.clear()
            try:
                await self._write_pending()
            except Exception as exc:
                log.warning(
                    "store write failed (%s); %d bytes unsaved, retrying in %.1f s",
                    exc,
                    self._unsaved_bytes,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.store_retry_max_seconds)
                self._dirty.set()
            else:
                delay = self.settings.store_retry_seconds

    async def _write_pending(self) -> None:
        async with self._write_lock:
            if not self._pending and not self._pending_acks:
                return
            batch, self._pending = self._pending, {}
            acks, self._pending_acks = self._pending_acks, {}
            self._writing_since, self._unsaved_since = self._unsaved_since, None
            parents, self._commit_parents = self._commit_parents, []
            records = {
                board_id: [unsaved.record for unsaved in entries]
                for board_id, entries in batch.items()
            }
            try:
                # A transaction's own flush runs in its span; else the first one kept parents it.
                inside = tracing.current_context() is not None
                with tracing.span(
                    "store commit",
                    parent=None if inside or not parents else parents[0],
                    links=tuple(parents[1:]),
                    attributes={
                        "boardcast.boards": len(records),
                        "boardcast.updates": sum(len(r) for r in records.values()),
                    },
                ):
                    seqs = (
                        await asyncio.wait_for(
                            self.store.append(records), self.settings.store_timeout_seconds
                        )
                        if records
                        else {}
                    )
            except BaseException:
                # Put everything back in front of what arrived meanwhile.
                for board_id, entries in self._pending.items():
                    batch.setdefault(board_id, []).extend(entries)
                self._pending = batch
                self._pending_acks = {**acks, **self._pending_acks}
                self._commit_parents = parents + self._commit_parents
                if self._writing_since is not None:
                    self._unsaved_since = self._writing_since
                self._writing_since = None
                self.store_reachable = False
                raise
            self._writing_since = None
            self.store_reachable = True
            self._unsaved_bytes -= sum(
                len(record.update) for entries in records.values() for record in entries
            )
            # Everything each client sent before the batch was taken is durable now.
            for (link, conn), count in acks.items():
                link.send(Persisted(conn, count))
            for board_id, seq in seqs.items():
                board = self._boards.get(board_id)
                if board is None:
                    continue
                board.persisted_seq = seq
                board.log_since_snapshot += len(batch[board_id])
            if self._index is not None:
                await self._update_index(batch, seqs)
            if self._derive_events:
                await self._log_events(
                    (board_id, seqs[board_id] - len(entries) + 1 + n, unsaved)
                    for board_id, entries in batch.items()
                    for n, unsaved in enumerate(entries)
                )
                for board_id, entries in batch.items():
                    first = seqs[board_id] - len(entries) + 1
                    for change in _changes(board_id, first, entries):
                        await self._deliver(change)
            for board_id in seqs:
                board = self._boards.get(board_id)
                if board is not None and (
                    board.log_since_snapshot >= self.settings.snapshot_every
                    or board.room.size_estimate - board.room.base_size
                    >= self.settings.snapshot_every_bytes
                ):
                    await self._snapshot(board)

    # -- the read model ------------------------------------------------------------

    async def _update_index(self, batch: dict[str, list[_Unsaved]], seqs: dict[str, int]) -> None:
        """Write the tasks a group commit's events touched to the read model, in one batch.

        A failure is logged, not retried: those rows are rewritten by the next
        change of their tasks, when the board next loads, or by ``boardcast reindex``.
        """
        assert self._index is not None
        writes: list[IndexWrite] = []
        for board_id, entries in batch.items():
            board = self._boards.get(board_id)
            events = [event for unsaved in entries for event in unsaved.events]
            if board is None or not events:
                continue
            write = index_write(board_id, Board(board.room.doc), seqs[board_id], events)
            if write is not None:
                writes.append(write)
        if writes:
            self._queue_index(writes)

    def _queue_index(self, writes: list[IndexWrite]) -> None:
        """Hand writes to the background index writer: commits never wait for the read model.

        Rows are versioned, so their order does not matter. Past ``MAX_QUEUED_INDEX_WRITES``
        the oldest are dropped (logged): their rows come back as above.
        """
        queue = self._index_queue
        queue.extend(writes)
        if len(queue) > MAX_QUEUED_INDEX_WRITES:
            dropped = len(queue) - MAX_QUEUED_INDEX_WRITES
            del queue[:dropped]
            log.warning("the read model is %d writes behind: the oldest dropped", dropped)
        self._index_ready.set()

    async def _index_loop(self) -> None:
        """Write what the commits queued for the read model, as few batches as it can."""
        assert self._index is not None
        failures = 0
        while True:
            await self._index_ready.wait()
            self._index_ready.clear()
            writes, self._index_queue = self._index_queue, []
            if not writes:
                continue
            try:
                await asyncio.wait_for(
                    self._index.write(writes), self.settings.store_timeout_seconds
                )
                failures = 0
            except asyncio.CancelledError:
                # Stopping: the stop writes what is queued, this batch first (rows are
                # versioned, so writing again what may have landed is harmless). Dropped,
                # every board of the batch would be rewritten whole at its next load.
                self._index_queue[:0] = writes
                raise
            except Exception as exc:
                failures += 1
                if failures >= INDEX_WRITE_ATTEMPTS:
                    failures = 0
                    log.warning(
                        "the read model was not updated for %d writes after %d attempts: %r",
                        len(writes),
                        INDEX_WRITE_ATTEMPTS,
                        exc,
                    )
                    continue
                # Dropped, each board of the batch would be rewritten whole at its next
                # load: try again after a pause, behind nothing (rows are versioned).
                delay = min(
                    self.settings.store_retry_seconds * 2 ** (failures - 1),
                    self.settings.store_retry_max_seconds,
                )
                log.info(
                    "the read model did not take %d writes (%r); again in %.1f s",
                    len(writes),
                    exc,
                    delay,
                )
                self._index_queue[:0] = writes
                await asyncio.sleep(delay)
                self._index_ready.set()

    async def _catch_up_index(self, board: BoardActor, stored: StoredBoard) -> None:
        """Rewrite a loaded board's rows if the read model is behind what the store holds.

        Runs beside the board (spawned when it loads): the board serves meanwhile. One
        board at a time, and only once no board is loading: a board's rows are a walk over
        every task (tens of milliseconds for 1,000 tasks), which must not delay the opens
        of a burst. A board not built yet is read from a document of its own, dropped
        after, so that it stays unbuilt.
        """
        if self._index is None:
            return
        async with self._catch_up_turn:
            await self._loads_quiet()
            if self._boards.get(board.board_id) is not board:
                return  # released meanwhile: its next load catches it up
            try:
                behind = await self._index.board_version(board.board_id) < stored.last_seq
            except Exception as exc:
                log.warning("board %s: the read model could not be asked: %s", board.board_id, exc)
                return
            if not behind or self._boards.get(board.board_id) is not board:
                return
            document = board.room.document
            try:
                doc = document.doc if document.built else build_document(document.state(), ())
            except Exception as exc:
                log.warning("board %s: its read-model rows not rebuilt: %s", board.board_id, exc)
                return
            self._queue_index([whole_board(board.board_id, Board(doc), stored.last_seq)])

    async def _loads_quiet(self) -> None:
        """Return once no board is loading and none has for ``CATCH_UP_QUIET_SECONDS``."""
        loop = asyncio.get_running_loop()
        while True:
            await self._loads_idle.wait()
            left = self._last_load_ended + CATCH_UP_QUIET_SECONDS - loop.time()
            if left <= 0 and self._loads_idle.is_set():
                return
            await asyncio.sleep(max(left, 0.0))

    # -- domain events and on_change, at least once ------------------------------

    async def _log_events(self, updates: Iterable[tuple[str, int, _Unsaved | LogEntry]]) -> None:
        """Append the events of stored updates ``(board, seq, update)`` to the event log.

        Before their changes are delivered: a snapshot covers only delivered changes, so
        the log holds every event a snapshot covers. Retries until the log takes them.
        """
        if self._event_log is None:
            return
        records = []
        for board_id, seq, entry in updates:
            board = self._boards.get(board_id)
            if isinstance(entry, _Unsaved):
                origin, events = entry.record.origin, entry.events
            else:
                origin, events = entry.origin, _stored_events(board_id, entry)
            if events:
                project = project_of(board_id, board.room.doc if board is not None else None)
                records += logged_events(board_id, project, seq, origin, events)
        await self._event_log.append(records)

    async def _deliver(self, change: Change) -> None:
        """Hand one durable change to the event sink and the ``on_change`` hooks.

        The board's ``delivered_seq`` moves once every consumer has had it; a
        snapshot never covers what was not delivered, so after a crash the
        stored log tail is delivered again (:meth:`_redeliver`). When the hooks
        are ``max_queued_hooks`` behind, commits wait for them rather than drop
        a change.
        """
        if self._event_sink is not None and change.events:
            try:
                self._event_sink(list(change.events))
            except Exception:
                log.exception("the event sink failed on board %s", change.board_id)
        if self.extensions.defines("on_change"):
            await self._hooks.put(partial(self._on_change, change))
        else:
            self._delivered(change)

    async def _on_change(self, change: Change) -> None:
        await self.extensions.on_change(change)
        self._delivered(change)

    def _delivered(self, change: Change) -> None:
        board = self._boards.get(change.board_id)
        if board is not None and change.version > board.delivered_seq:
            board.delivered_seq = change.version

    async def _redeliver(self, board: BoardActor, stored: StoredBoard) -> None:
        """Deliver again the changes of the stored log tail: a crash may have cut them off.

        Each entry goes as a change of its own, so a consumer that keeps the
        highest version it handled (changes arrive in order) drops exactly the
        ones it already had.
        """
        board.delivered_seq = stored.snapshot_seq
        await self._log_events((board.board_id, entry.seq, entry) for entry in stored.updates)
        for entry in stored.updates:
            events = _stored_events(board.board_id, entry)
            change = Change(board.board_id, entry.seq, 1, tuple(events), entry.origin)
            await self._deliver(change)

    async def _caught_up(self) -> None:
        """Wait until every change committed so far has been delivered (bounded)."""
        if self.extensions.defines("on_change"):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hooks.join(), self.settings.drain_seconds)

    def _hook(self, call: Callable[[], Awaitable[None]]) -> None:
        """Queue an extension hook; hooks run one at a time, in the order they were queued."""
        try:
            self._hooks.put_nowait(call)
        except asyncio.QueueFull:
            log.error(
                "extension hooks are %d calls behind; one skipped", self.settings.max_queued_hooks
            )

    async def _hook_loop(self) -> None:
        while True:
            call = await self._hooks.get()
            try:
                await call()
            finally:
                self._hooks.task_done()

    async def _snapshot(self, board: BoardActor) -> None:
        if board.room.rebuild_due:
            # A dropped held update may still sit in pycrdt: clear it first.
            try:
                self._apply(board, board.rebuild())
            except Exception:
                log.exception("board %s cannot be rebuilt; reloading it", board.board_id)
                await self._reload(board)
                return
        if board.log_since_snapshot == 0 or board.room.holding:
            # While updates are held, the encoding would carry their pending
            # parts into the snapshot; the next commit or sweep tries again.
            return
        # The document holds at least everything up to persisted_seq; the
        # snapshot covers no change its consumers have not had (the log tail
        # after it is what a crash makes the host deliver again).
        upto = board.persisted_seq
        if self._derive_events:
            upto = min(upto, board.delivered_seq)
        if upto <= board.persisted_seq - board.log_since_snapshot:
            return
        room = board.room
        state, state_vector = room.state(), room.document.state_vector()
        position = room.journal_position
        # Nothing is trimmed under a snapshot that does not load back into the
        # same document: the log stays the board's truth, and the live document
        # is rebuilt from what the room trusts.
        if not await asyncio.to_thread(snapshot_loads, state, state_vector):
            log.error(
                "board %s: its snapshot does not load back; the log is kept untrimmed",
                board.board_id,
            )
            try:
                self._apply(board, board.rebuild())
            except Exception:
                log.exception("board %s cannot be rebuilt; reloading it", board.board_id)
                await self._reload(board)
            return
        written = await asyncio.wait_for(
            self.store.write_snapshot(
                board.board_id, state, upto, covers=Coverage(bytes(state_vector))
            ),
            self.settings.store_timeout_seconds,
        )
        if not written:
            # The log holds entries this document lacks: another host appended to the
            # board while both held it. The log stays whole; the board reloads from it.
            self.snapshots_refused += 1
            log.warning(
                "board %s: the store refused a snapshot up to %d that misses another"
                " host's entries; reloading the board from the log",
                board.board_id,
                upto,
            )
            self._spawn(self._reload(board))
            return
        room.checkpoint(state, position)
        # Updates committed while the snapshot was being written are not in it.
        board.log_since_snapshot = board.persisted_seq - upto
        if self.extensions:
            self._hook(partial(self.extensions.on_store, board.board_id, upto))

    # -- passivation and presence expiry -------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            await self._probe_store()
            now = self._clock()
            for board in list(self._boards.values()):
                if board.phase is not BoardPhase.ACTIVE:
                    continue
                self._apply(board, board.expire_awareness())
                idle_since = board.idle_since
                if idle_since is not None and now - idle_since >= self.settings.idle_seconds:
                    with contextlib.suppress(Exception):
                        await self.release(board.board_id)

    async def _probe_store(self) -> None:
        """Check that the store answers (for readiness); a failing write says so too."""
        try:
            await asyncio.wait_for(self.store.exists(), self.settings.store_probe_seconds)
        except Exception as exc:
            if self.store_reachable:
                log.warning("store check failed: %s", exc)
            self.store_reachable = False
        else:
            self.store_reachable = True

    async def release(self, board_id: str) -> bool:
        """Passivate an idle board: make it durable, snapshot it, drop it from memory.

        Returns False if a client arrived meanwhile and the board stays active.
        """
        board = self._boards.get(board_id)
        if board is None or board.phase is not BoardPhase.ACTIVE or board.subscribers:
            return False
        board.phase = BoardPhase.RELEASING
        try:
            await self.flush()
            await self._caught_up()
            await self._snapshot(board)
            # A client may have come, edited and gone during the snapshot write:
            # its updates must be committed and covered before the board may go.
            await self.flush()
        finally:
            board.phase = BoardPhase.ACTIVE
        if board.subscribers or board_id in self._pending or board.log_since_snapshot:
            return False
        del self._boards[board_id]
        board.release()
        self._passivations += 1
        log.info("board %s passivated", board_id)
        return True
