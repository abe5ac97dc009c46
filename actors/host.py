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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from actors.board import BoardActor, BoardOutput, BoardPhase, EventSink, Link
from actors.extensions import Change, Extensions
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
from actors.stream import StreamLink
from crdt.board import Board
from crdt.close_codes import CloseCode
from crdt.errors import BoardcastError
from crdt.events import DomainEvent
from crdt.room import RoomLimits
from crdt.updates import snapshot_loads
from persistence.history import DEFAULT_HISTORY
from persistence.store import BoardStore

log = logging.getLogger("boardcast.host")


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
    max_inbox_bytes: int = 64 * 1024 * 1024  # frames queued for one loading board (1013 past)
    limits: RoomLimits = field(default_factory=RoomLimits)
    history: str = str(DEFAULT_HISTORY)  # retention of past versions (persistence/history.py)
    extensions: tuple[str, ...] = ()  # ``module:factory`` specs whose host hooks run here
    max_queued_hooks: int = 10_000  # extension calls waiting; past it one is logged and skipped
    max_remembered_transactions: int = 10_000  # idempotency keys kept (oldest forgotten)


class HostLink(StreamLink):
    """A gateway's connection, seen from the host."""

    number: int
    peer_version: int | None = None  # the protocol the gateway speaks, once known


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
        self.extensions = Extensions.from_specs(self.settings.extensions)
        self._derive_events = event_sink is not None or self.extensions.defines("on_change")
        # Committed changes for the extensions' on_change, in commit order.
        # Extension hooks waiting to run (on_load, on_change, on_store), in order.
        self._hooks: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(
            self.settings.max_queued_hooks
        )
        self._clock = clock
        self._boards: dict[str, BoardActor] = {}
        self._links: set[HostLink] = set()
        self._link_numbers = itertools.count(1)
        self._pending: dict[str, list[bytes]] = {}
        self._pending_acks: dict[tuple[Link, int], int] = {}
        self._pending_events: dict[str, list[DomainEvent]] = {}
        # Boards being loaded: resolved with True once active, False if loading failed.
        self._loaded: dict[str, asyncio.Future[bool]] = {}
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
                self._spawn(self._flush_loop())
                self._spawn(self._sweep_loop())
                if self.extensions:
                    self._spawn(self._hook_loop())
                log.info("board host %s serving frames on %s:%d", self.name, *self._endpoint)
            return self._endpoint

    async def stop(self) -> None:
        """Stop serving; persist and snapshot every board, then close the store."""
        if self._server is not None:
            self._server.close()
        # Gateways close their links first when they shut down; read what they
        # sent up to that point before committing, so no received frame is lost.
        serving = [task for task in self._link_tasks if not task.done()]
        if serving:
            await asyncio.wait(serving, timeout=self.settings.drain_seconds)
        for link in list(self._links):
            link.abort()
        await self.flush()
        for board in list(self._boards.values()):
            if board.phase is not BoardPhase.LOADING:
                await self._snapshot(board)
            board.release()
        self._boards.clear()
        if self.extensions:
            # Let on_change see what was committed, within the drain bound.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hooks.join(), self.settings.drain_seconds)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()

    def stats(self) -> dict[str, Any]:
        """Counts for health checks and the bench."""
        return {
            "name": self.name,
            "boards": len(self._boards),
            "connections": sum(b.connection_count for b in self._boards.values()),
            "gateways": len(self._links),
            "pending_updates": sum(len(u) for u in self._pending.values()),
            "unsaved_bytes": self._unsaved_bytes,
        }

    def board_ids(self) -> list[str]:
        """Boards currently in memory."""
        return sorted(self._boards)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the frame stream ---------------------------------------------------

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = HostLink(reader, writer)
        link.number = next(self._link_numbers)
        self._links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._link_tasks.add(task)
            task.add_done_callback(self._link_tasks.discard)
        log.info("gateway %s connected to host %s", link.peer, self.name)
        try:
            while (batch := await link.read_batches()) is not None:
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
        except (ConnectionError, OSError) as exc:
            log.info("gateway link %s lost: %s", link.peer, exc)
        except Exception:
            log.exception("gateway link %s sent an unreadable stream", link.peer)
        finally:
            self._links.discard(link)
            link.abort()
            for board in list(self._boards.values()):
                self._apply(board, board.drop_link(link))

    def _greet(self, link: HostLink, message: GatewayMessage) -> None:
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

    def _reject_after_failure(self, link: HostLink, message: GatewayMessage) -> None:
        if isinstance(message, Hello):
            return
        with contextlib.suppress(Exception):
            link.send(reject(message.conn, CloseCode.INTERNAL_ERROR))
            board = self._boards.get(message.board_id)
            if board is not None:
                self._apply(board, board.close(link, message.conn))

    def _dispatch(self, link: HostLink, message: GatewayMessage) -> None:
        if isinstance(message, Hello):
            log.warning("gateway %s sent a second hello; ignored", link.peer)
            return
        board_id, conn = message.board_id, message.conn
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
            opened = board.open(link, message.conn, ack=message.ack, read_only=message.read_only)
            self._apply(board, opened)
        else:
            self._apply(board, board.close(link, message.conn))

    def _apply(self, board: BoardActor, out: BoardOutput) -> None:
        """Carry out what a board asked for: the only place board output meets links and store."""
        for link, message in out.messages:
            link.send(message)
        board_id = board.board_id
        if out.updates:
            self._pending.setdefault(board_id, []).extend(out.updates)
            self._unsaved_bytes += sum(len(update) for update in out.updates)
        if out.events:
            # Delivered once the updates they come from are durable.
            self._pending_events.setdefault(board_id, []).extend(out.events)
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
        )
        self._boards[board_id] = board
        self._loaded[board_id] = asyncio.get_running_loop().create_future()
        self._spawn(self._activate(board))
        return board

    async def _activate(self, board: BoardActor) -> None:
        loaded = self._loaded.pop(board.board_id, None)
        try:
            await self._load(board)
        finally:
            if loaded is not None and not loaded.done():
                loaded.set_result(board.phase is BoardPhase.ACTIVE)

    async def _load(self, board: BoardActor) -> None:
        try:
            stored = await asyncio.wait_for(
                self.store.load(board.board_id), self.settings.store_timeout_seconds
            )
            board.load(stored)
            if self.extensions:
                self._hook(partial(self.extensions.on_load, board.board_id))
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
    ) -> int:
        """Run ``change`` on a board (loaded if need be) as one transaction.

        Every client of the board sees it as one update; it is stored like a
        client's. Returns the board's version (store sequence number) once the
        change is durable. A retry with the same ``idempotency_key`` (while this
        host remembers it: the last ``max_remembered_transactions``) applies
        nothing and returns the first call's version.

        Raises:
            BoardcastError: the change raised or would make the board too large;
                nothing of it was kept.
            BoardUnavailable: the board could not be loaded.
        """
        key = (board_id, idempotency_key) if idempotency_key is not None else None
        if key is not None and key in self._transactions:
            return await asyncio.shield(self._transactions[key])
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if key is not None:
            self._transactions[key] = done
            if len(self._transactions) > self.settings.max_remembered_transactions:
                del self._transactions[next(iter(self._transactions))]
        try:
            done.set_result(await self._transact(board_id, change))
        except BaseException as exc:
            if key is not None:
                # A failed transaction may be retried for real.
                self._transactions.pop(key, None)
            done.set_exception(exc)
            done.exception()  # retrieved: the caller gets it below
            raise
        return done.result()

    async def _transact(self, board_id: str, change: Callable[[Board], object]) -> int:
        board = self._boards.get(board_id) or self._new_board(board_id)
        loaded = self._loaded.get(board_id)
        if loaded is not None and not await asyncio.shield(loaded):
            raise BoardUnavailable(f"board {board_id!r} could not be loaded")
        out = board.transact(change)
        self._apply(board, out)
        if out.error is not None:
            raise out.error
        await self.flush()
        return board.persisted_seq

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
        while True:
            await self._dirty.wait()
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
            events, self._pending_events = self._pending_events, {}
            try:
                seqs = (
                    await asyncio.wait_for(
                        self.store.append(batch), self.settings.store_timeout_seconds
                    )
                    if batch
                    else {}
                )
            except BaseException:
                # Put everything back in front of what arrived meanwhile.
                for board_id, updates in self._pending.items():
                    batch.setdefault(board_id, []).extend(updates)
                self._pending = batch
                self._pending_acks = {**acks, **self._pending_acks}
                for board_id, derived in self._pending_events.items():
                    events.setdefault(board_id, []).extend(derived)
                self._pending_events = events
                raise
            self._unsaved_bytes -= sum(len(u) for updates in batch.values() for u in updates)
            # Everything each client sent before the batch was taken is durable now.
            for (link, conn), count in acks.items():
                link.send(Persisted(conn, count))
            self._deliver_events(events, seqs, batch)
            for board_id, seq in seqs.items():
                board = self._boards.get(board_id)
                if board is None:
                    continue
                board.persisted_seq = seq
                board.log_since_snapshot += len(batch[board_id])
                if (
                    board.log_since_snapshot >= self.settings.snapshot_every
                    or board.room.size_estimate - board.room.base_size
                    >= self.settings.snapshot_every_bytes
                ):
                    await self._snapshot(board)

    def _deliver_events(
        self,
        events: dict[str, list[DomainEvent]],
        seqs: dict[str, int],
        batch: dict[str, list[bytes]],
    ) -> None:
        """Hand a durable batch's changes to the sink and the extensions, never before."""
        if self._event_sink is not None:
            for derived in events.values():
                try:
                    self._event_sink(derived)
                except Exception:
                    log.exception("the event sink failed; the events of that batch are dropped")
        if not self.extensions:
            return
        for board_id, seq in seqs.items():
            change = Change(board_id, seq, len(batch[board_id]), tuple(events.get(board_id, ())))
            self._hook(partial(self.extensions.on_change, change))

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
        # The document holds at least everything up to persisted_seq.
        upto = board.persisted_seq
        room = board.room
        state, state_vector, position = room.state(), room.doc.get_state(), room.journal_position
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
        await asyncio.wait_for(
            self.store.write_snapshot(board.board_id, state, upto),
            self.settings.store_timeout_seconds,
        )
        room.checkpoint(state, position)
        # Updates committed while the snapshot was being written are not in it.
        board.log_since_snapshot = board.persisted_seq - upto
        if self.extensions:
            self._hook(partial(self.extensions.on_store, board.board_id, upto))

    # -- passivation and presence expiry -------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            now = self._clock()
            for board in list(self._boards.values()):
                if board.phase is not BoardPhase.ACTIVE:
                    continue
                self._apply(board, board.expire_awareness())
                idle_since = board.idle_since
                if idle_since is not None and now - idle_since >= self.settings.idle_seconds:
                    with contextlib.suppress(Exception):
                        await self.release(board.board_id)

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
        log.debug("board %s passivated", board_id)
        return True
