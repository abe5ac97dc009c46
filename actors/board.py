"""The board actor: one board's room, its subscribers and its persistence bookkeeping.

A :class:`BoardActor` is a plain object owned by a :class:`~actors.host.BoardHost`,
which runs many of them in one process (or just one, for a board given a Ray
actor of its own). All of its methods run on the host's event loop, one at a
time, so a board processes its messages strictly in arrival order: the order
each client sent them in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from actors.messages import (
    NO_CONNECTION,
    Broadcast,
    Close,
    Frame,
    HostMessage,
    Open,
    Send,
    reject,
)
from crdt.board import Board
from crdt.close_codes import CloseCode
from crdt.errors import BoardcastError, BoardCorrupted
from crdt.events import BoardEventRecorder, DomainEvent
from crdt.room import BoardRoom, RoomLimits
from persistence.store import Record, StoredBoard

EventSink = Callable[[list[DomainEvent]], None]
"""Receives the domain events of each applied frame (task created, moved...)."""


class Link(Protocol):
    """The host side of a gateway connection, as a board sees it."""

    number: int
    closed: bool

    @property
    def peer(self) -> str:
        """The gateway's address, for logs."""

    def send(self, message: HostMessage) -> None:
        """Queue a message to the gateway."""


class BoardPhase(enum.Enum):
    """Where a board is in its life on a host."""

    LOADING = "loading"  # reading snapshot and log; messages wait in the inbox
    ACTIVE = "active"
    RELEASING = "releasing"  # flushing and snapshotting before leaving memory


def close_code_for(error: BoardcastError) -> CloseCode:
    """The close code a client gets for sending what raised ``error``."""
    return error.close_code


Acks = list[tuple[tuple[Link, int], int]]
"""(link, connection) and how many of its update messages may be acknowledged once durable."""


@dataclass(slots=True)
class BoardOutput:
    """What the host must do after one input to a board; the board itself does no I/O.

    Attributes:
        messages: stream messages for gateways, in order.
        updates: Yjs updates that changed the document, to be persisted in order,
            each with who made it (the origin its connection or transaction named).
        acks: for each client that asked for acknowledgements and whose count
            moved, the count to acknowledge once ``updates`` are durable.
        events: domain events derived from ``updates``, to be stored with the
            last of them and delivered once they are durable.
        corrupted: the document could not be rebuilt; the host reloads the board.
    """

    messages: list[tuple[Link, HostMessage]] = field(default_factory=list)
    updates: list[Record] = field(default_factory=list)
    acks: Acks = field(default_factory=list)
    events: list[DomainEvent] = field(default_factory=list)
    corrupted: bool = False
    error: BoardcastError | None = None  # why a server-side change was refused

    def send(self, link: Link, message: HostMessage) -> None:
        """Queue ``message`` for the gateway behind ``link``."""
        self.messages.append((link, message))


class BoardActor:
    """One board, live: serves sync and awareness, and collects updates to persist."""

    def __init__(
        self,
        board_id: str,
        *,
        clock: Callable[[], float],
        derive_events: bool = False,
        limits: RoomLimits | None = None,
        build_on_demand: bool = True,
    ) -> None:
        self.board_id = board_id
        self.phase = BoardPhase.LOADING
        self.room = BoardRoom(board_id, limits=limits)
        self.subscribers: dict[Link, set[int]] = {}
        # Per connection that asked for acknowledgements: its update messages integrated.
        self.acked_connections: dict[tuple[Link, int], int] = {}
        self.inbox: list[tuple[Link, GatewayBoardMessage]] = []
        self.inbox_bytes = 0
        self.persisted_seq = 0
        self.log_since_snapshot = 0
        # Changes up to here were handed to every event consumer (host bookkeeping).
        self.delivered_seq = 0
        self.idle_since: float | None = None
        self._clock = clock
        self._derive_events = derive_events
        self._build_on_demand = build_on_demand
        self._recorder: BoardEventRecorder | None = None
        # The room names connections by key; this maps a key back to its client.
        self._connections: dict[Hashable, tuple[Link, int]] = {}
        self._read_only: set[Hashable] = set()  # connections whose updates are refused
        self._origins: dict[Hashable, str] = {}  # who each named connection is

    @property
    def connection_count(self) -> int:
        """How many client connections, over all gateways, are on this board."""
        return sum(len(conns) for conns in self.subscribers.values())

    def load(self, stored: StoredBoard) -> None:
        """Rebuild the document from the store: snapshot, then the log tail in order.

        A board stored as one snapshot with its state vector (and
        ``build_on_demand``) is served from the snapshot's bytes until something
        needs its document (``crdt.document.BoardDocument``).

        Raises:
            InvalidUpdate: the stored state does not load.
        """
        vector = stored.snapshot_vector if self._build_on_demand else None
        self.room.load(
            stored.snapshot, [entry.update for entry in stored.updates], state_vector=vector
        )
        self.persisted_seq = stored.last_seq
        self.log_since_snapshot = len(stored.updates)
        if self._derive_events:
            # Observed from the board's first change on: loading stored state is not
            # news, and a board that is only opened and read never builds its document
            # nor walks its tasks (see _prime_recorder).
            self.room.document.before_change = self._prime_recorder
        self.phase = BoardPhase.ACTIVE
        self.idle_since = self._clock()

    def open(
        self,
        link: Link,
        conn: int,
        *,
        ack: bool = False,
        read_only: bool = False,
        origin: str | None = None,
    ) -> BoardOutput:
        """A client joined through ``link``: start its sync.

        ``origin`` names the client; it is stored with every update it makes.
        """
        out = BoardOutput()
        self.subscribers.setdefault(link, set()).add(conn)
        self._connections[_key(link, conn)] = (link, conn)
        if read_only:
            self._read_only.add(_key(link, conn))
        if origin is not None:
            self._origins[_key(link, conn)] = origin
        if ack:
            self.acked_connections[(link, conn)] = 0
        self.idle_since = None
        for frame in self.room.join():
            out.send(link, Send(conn, frame))
        return out

    def receive(self, link: Link, conn: int, data: bytes, *, writable: bool = True) -> BoardOutput:
        """Process a frame from a client.

        Frames from a client that is no longer on the board (it was closed for
        an earlier bad frame, and more were already on their way) are ignored.
        """
        out = BoardOutput()
        conns = self.subscribers.get(link)
        if conns is None or conn not in conns:
            return out
        key = _key(link, conn)
        output = self.room.receive(
            key, data, self._clock(), writable=writable, read_only=key in self._read_only
        )
        for key, count in output.integrated.items():
            target = self._connections.get(key)
            if target is not None and target in self.acked_connections:
                self.acked_connections[target] = count
                out.acks.append((target, count))
        for frame in output.reply:
            out.send(link, Send(conn, frame))
        for frame in output.broadcast:
            self._broadcast(frame, link, conn, out)
        # A held update of another connection may have integrated on this frame.
        origins = self._origins
        out.updates = [
            Record(update, origins.get(source) if source is not None else None)
            for update, source in zip(output.updates, output.sources, strict=True)
        ]
        if output.rebuilt:
            self._observe_new_document(out)
        elif output.updates and self._recorder is not None:
            out.events = self._recorder.drain()
        for key, error in output.closed.items():
            target = self._connections.get(key)
            if target is not None:
                self._reject(target[0], target[1], error, out)
        if output.error is not None:
            if isinstance(output.error, BoardCorrupted):
                # Not this client's fault alone: the host reloads the board.
                out.corrupted = True
            self._reject(link, conn, output.error, out)
        return out

    def transact(
        self,
        change: Callable[[Board], object],
        *,
        origin: str | None = None,
        key: str | None = None,
    ) -> BoardOutput:
        """Run a server-side change through the typed board API, as one transaction.

        Every client of the board gets it as one update; it is stored like a
        client's, with ``origin`` (who made it) and the idempotency ``key``. If
        the change raises (or would make the board too large), nothing of it is
        kept and ``BoardOutput.error`` says why.
        """
        out = BoardOutput()
        output = self.room.transact(lambda doc: change(Board(doc)))
        for frame in output.broadcast:
            self._broadcast(frame, None, NO_CONNECTION, out)
        out.updates = [Record(update, origin, key) for update in output.updates]
        if output.rebuilt:
            self._observe_new_document(out)
        elif output.updates and self._recorder is not None:
            out.events = self._recorder.drain()
        if isinstance(output.error, BoardCorrupted):
            out.corrupted = True
        out.error = output.error
        return out

    def rebuild(self) -> BoardOutput:
        """Rebuild the room's document from what it trusts (see ``BoardRoom.rebuild``)."""
        out = BoardOutput()
        self.room.rebuild()
        self._observe_new_document(out)
        return out

    def _observe_new_document(self, out: BoardOutput) -> None:
        if self._recorder is not None:
            # What the old document saw before the rebuild is still news.
            out.events += self._recorder.drain()
            self._recorder.close()
            self._recorder = BoardEventRecorder(self.room.doc, self.board_id, lazy=True)

    def _prime_recorder(self) -> None:
        # The room calls this before any update or server-side change reaches the document.
        if self._recorder is None:
            self._recorder = BoardEventRecorder(self.room.doc, self.board_id, lazy=True)
        self._recorder.prime()

    def _reject(self, link: Link, conn: int, error: BoardcastError, out: BoardOutput) -> None:
        """Close one client with the code its error earned."""
        out.send(link, reject(conn, close_code_for(error), str(error)))
        self._close(link, conn, out)

    def close(self, link: Link, conn: int) -> BoardOutput:
        """A client left: forget it and tell the others its presence is gone."""
        out = BoardOutput()
        self._close(link, conn, out)
        return out

    def _close(self, link: Link, conn: int, out: BoardOutput) -> None:
        conns = self.subscribers.get(link)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        self.acked_connections.pop((link, conn), None)
        self._connections.pop(_key(link, conn), None)
        self._read_only.discard(_key(link, conn))
        self._origins.pop(_key(link, conn), None)
        if not conns:
            del self.subscribers[link]
        removal = self.room.leave(_key(link, conn))
        if removal is not None:
            self._broadcast(removal, None, NO_CONNECTION, out)
        if not self.subscribers:
            self.idle_since = self._clock()

    def drop_link(self, link: Link) -> BoardOutput:
        """A gateway went away: every client it carried has left."""
        out = BoardOutput()
        for conn in sorted(self.subscribers.get(link, ())):
            self._close(link, conn, out)
        self.inbox = [(queued, message) for queued, message in self.inbox if queued is not link]
        self.inbox_bytes = sum(
            len(message.data) for _, message in self.inbox if isinstance(message, Frame)
        )
        return out

    def _broadcast(self, frame: bytes, origin: Link | None, exclude: int, out: BoardOutput) -> None:
        """Send ``frame`` to every gateway with clients here, skipping one client.

        Every gateway but the sender's gets the same message object, so the
        stream packs it once for all of them (:func:`actors.stream.pack_message`).
        """
        to_all: Broadcast | None = None
        for link in self.subscribers:
            if link is not origin:
                if to_all is None:
                    to_all = Broadcast(self.board_id, NO_CONNECTION, frame)
                out.send(link, to_all)
        # The sender's gateway last, so the shared message is packed once.
        conns = self.subscribers.get(origin) if origin is not None else None
        if origin is not None and conns is not None and (len(conns) > 1 or exclude not in conns):
            out.send(origin, Broadcast(self.board_id, exclude, frame))

    def expire_awareness(self) -> BoardOutput:
        """Remove presence that was not renewed in time."""
        out = BoardOutput()
        removal = self.room.expire_awareness(self._clock())
        if removal is not None:
            self._broadcast(removal, None, NO_CONNECTION, out)
        return out

    def release(self) -> None:
        """Stop observing the document; the board is leaving memory."""
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        self.room.close()

    def reject_all(self, code: CloseCode) -> BoardOutput:
        """Close every client of this board (used when it cannot be served)."""
        out = BoardOutput()
        targets = {(link, conn) for link, conns in self.subscribers.items() for conn in conns}
        targets |= {(link, message.conn) for link, message in self.inbox}
        for link, conn in sorted(targets, key=lambda target: (target[0].number, target[1])):
            out.send(link, reject(conn, code))
        self.subscribers.clear()
        self._connections.clear()
        self._origins.clear()
        self._read_only.clear()
        self.inbox.clear()
        self.inbox_bytes = 0
        return out

    def queue(self, link: Link, message: GatewayBoardMessage) -> None:
        """Keep a message until the board has loaded."""
        self.inbox.append((link, message))
        if isinstance(message, Frame):
            self.inbox_bytes += len(message.data)

    def take_inbox(self) -> list[tuple[Link, GatewayBoardMessage]]:
        """The messages queued while loading, in arrival order; the inbox is left empty."""
        inbox, self.inbox = self.inbox, []
        self.inbox_bytes = 0
        return inbox


GatewayBoardMessage = Open | Frame | Close
"""What a gateway sends about one client of one board."""


def _key(link: Link, conn: int) -> Hashable:
    return (link.number, conn)
