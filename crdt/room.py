"""One board's collaboration state machine: frames in, frames and updates out.

:class:`BoardRoom` owns a board's pycrdt ``Doc`` and its :class:`Awareness`. It
knows nothing about sockets, actors or storage: the caller feeds it frames
received from a connection and gets back what to send to that connection, what
to send to everyone else on the board, and which update bytes to persist.

It is also where untrusted updates meet the document, so it guarantees:

- **All or nothing.** An update pycrdt refuses changes nothing (see
  :class:`~crdt.document.BoardDocument`, which owns the document, its base and
  its journal, and rebuilds it when pycrdt cannot be trusted).
- **Integrated means covered.** After each apply the room checks that what is
  stored holds every insert of the update. One that pycrdt keeps pending (a
  dependency is missing) or dropped (pycrdt's out-of-order bug) is *held*, the
  sender is asked to resync, and the held bytes are retried once a client they
  wait for advances. ``RoomOutput.integrated`` counts, per connection, how many
  of its update messages are integrated: only those may ever be acknowledged.
- **Bounded.** Update size, board size, held updates (count, bytes, time) and
  presence have limits (:class:`RoomLimits`); past one, the frame fails with a
  named error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc

from crdt.awareness import Awareness, AwarenessLimits
from crdt.document import BoardDocument
from crdt.errors import (
    BoardcastError,
    BoardCorrupted,
    BoardFull,
    InvalidUpdate,
    OutOfSync,
    UpdateTooLarge,
    WritesRefused,
)
from crdt.protocol import (
    AwarenessUpdate,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    encode_message,
    iter_frame,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.updates import merge, missing_from

_MIB = 1024 * 1024

#: What a read-only session is told when it sends an edit.
READ_ONLY_REASON = "read-only session: edits are not accepted"


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """What one board accepts; every field is a setting (docs/settings.md)."""

    max_update_bytes: int = 16 * _MIB  # one update (sync step 2 or update message)
    max_board_bytes: int = 64 * _MIB  # the whole board, encoded
    max_held_updates: int = 64  # per connection, waiting for their dependencies
    max_held_bytes: int = 4 * _MIB  # per connection
    max_consistency_checks: int = 32  # per connection: whole-board checks its held updates cause
    max_held_seconds: float = 30.0  # how long an update may wait for its dependencies
    awareness: AwarenessLimits = field(default_factory=AwarenessLimits)


@dataclass(slots=True)
class RoomOutput:
    """What the caller must do after one frame was received.

    Attributes:
        reply: frames for the connection that sent the frame, in order.
        broadcast: frames for every other connection on the board, in order.
        updates: Yjs updates that changed the document, to be persisted in order.
        sources: for each of ``updates``, the connection whose update it came
            from (a held update integrates on another's frame), None for a
            server-side change.
        update_messages: sync step 2 and update messages read from the frame.
        integrated: for each connection whose count moved, how many of its
            update messages (counted from 1 on that connection) are now all in
            the document; a held message stops the count until it is integrated.
        closed: other connections to close, with the error each earned (a held
            update of theirs turned out to be invalid).
        rebuilt: the document was rebuilt after a failed apply: ``doc`` is a new
            object, and anything observing the old one must observe it instead.
        error: set when the frame was bad; the messages before the bad one were
            processed and their output above must still be delivered, then the
            connection closed. Nothing of the bad message is in this output.
    """

    reply: list[bytes] = field(default_factory=list)
    broadcast: list[bytes] = field(default_factory=list)
    updates: list[bytes] = field(default_factory=list)
    sources: list[Hashable | None] = field(default_factory=list)
    update_messages: int = 0
    integrated: dict[Hashable, int] = field(default_factory=dict)
    closed: dict[Hashable, BoardcastError] = field(default_factory=dict)
    rebuilt: bool = False
    error: BoardcastError | None = None


@dataclass(slots=True)
class _Held:
    index: int  # the message's number on its connection
    update: bytes
    since: float  # when it was received
    # Clients whose inserts it still needs (None: unknown, retry after any change).
    waits: set[int] | None = None


@dataclass(slots=True)
class _Peer:
    """What the room tracks per connection that sent updates."""

    received: int = 0
    integrated: int = 0
    held: list[_Held] = field(default_factory=list)
    held_bytes: int = 0
    resync_asked: bool = False
    checks: int = 0  # whole-board consistency checks its updates caused
    denied: bool = False  # a read-only connection was told its updates are refused


class BoardRoom:
    """The live state of one board: document, awareness and the sync protocol."""

    def __init__(self, board_id: str, *, limits: RoomLimits | None = None) -> None:
        self.board_id = board_id
        self.limits = limits or RoomLimits()
        self.awareness = Awareness(self.limits.awareness)
        self._peers: dict[Hashable, _Peer] = {}
        self._holders: set[Hashable] = set()  # connections with held updates
        self.document = BoardDocument(board_id, self._held_update_bytes)

    def _held_update_bytes(self) -> list[bytes]:
        return [held.update for c in self._holders for held in self._peers[c].held]

    # -- the document ----------------------------------------------------------

    @property
    def doc(self) -> Doc[Any]:
        """The board's pycrdt document (a new object after a rebuild)."""
        return self.document.doc

    def load(
        self,
        snapshot: bytes | None,
        updates: Sequence[bytes] = (),
        *,
        state_vector: bytes | None = None,
    ) -> None:
        """Rebuild the document from stored state (a snapshot, then the log in order).

        With the snapshot's ``state_vector`` and no log tail the document is built on
        first need (``BoardDocument.load``).

        Raises:
            InvalidUpdate: the stored state does not load.
        """
        self.document.load(snapshot, updates, state_vector=state_vector)

    @property
    def size_estimate(self) -> int:
        """An upper bound of the board's encoded size: base plus every change since."""
        return self.document.size_estimate

    @property
    def base_size(self) -> int:
        """The encoded size of the base (the last checkpointed state)."""
        return self.document.base_size

    @property
    def journal_position(self) -> int:
        """How many changes the room has emitted or loaded, ever (a checkpoint's marker)."""
        return self.document.journal_position

    def state(self) -> bytes:
        """The whole document as one update (for snapshots and exports).

        Raises:
            BoardCorrupted: the document neither encodes nor can be rebuilt.
        """
        return self.document.state()

    def checkpoint(self, state: bytes, position: int) -> None:
        """Make ``state`` the base (see ``BoardDocument.checkpoint``)."""
        self.document.checkpoint(state, position)

    def rebuild(self) -> None:
        """Rebuild the document from its base and journal.

        Raises:
            InvalidUpdate: they do not load (the caller must reload the board).
        """
        self.document.rebuild()

    def close(self) -> None:
        """Stop observing the document."""
        self.document.close()

    # -- sessions --------------------------------------------------------------

    def join(self) -> list[bytes]:
        """Frames a newly connected client must receive: our state vector, then presence."""
        frames = [sync_step1(self.document.state_vector())]
        present = self.awareness.full_update()
        if present is not None:
            frames.append(awareness_frame(present))
        return frames

    def receive(
        self,
        connection: Hashable,
        frame: bytes,
        now: float,
        *,
        writable: bool = True,
        read_only: bool = False,
    ) -> RoomOutput:
        """Process one frame from ``connection``; a bad frame sets ``output.error``.

        With ``writable`` false (the store is down and its backlog full) reading
        and presence still work; an update that would add to the board fails
        with :class:`WritesRefused`. A ``read_only`` connection's updates are
        never applied: the first one that would change the board is answered
        with a permission-denied message, and the connection stays open.
        """
        output = RoomOutput()
        document = self.document
        document.rebuilt = False
        if self._holders:
            self._expire_held(now, output)
            if connection in output.closed:
                output.error = output.closed.pop(connection)
                return output
        try:
            self._process(connection, frame, now, output, writable, read_only)
        except BoardcastError as exc:
            output.error = exc
        if document.rebuild_due:
            try:
                document.rebuild_or_fail()
            except BoardCorrupted as exc:
                output.error = exc
        output.rebuilt = document.rebuilt
        return output

    def _process(
        self,
        connection: Hashable,
        frame: bytes,
        now: float,
        output: RoomOutput,
        writable: bool,
        read_only: bool,
    ) -> None:
        # A client sends one step 1 and the odd query per connection; a frame of
        # thousands would make the room encode the board (or presence) thousands
        # of times. Only the first of each in a frame is answered.
        answered = queried = False
        for message in iter_frame(frame):
            if isinstance(message, SyncStep1):
                if not answered:
                    answered = True
                    output.reply.append(sync_step2(self.document.diff(message.state_vector)))
            elif isinstance(message, SyncStep2 | SyncUpdate):
                output.update_messages += 1
                if read_only:
                    self._refuse_update(connection, message.update, output)
                else:
                    self._receive_update(connection, message.update, output, writable, now)
            elif isinstance(message, AwarenessUpdate):
                changed = self.awareness.apply(message.payload, connection, now)
                if changed is not None:
                    change = awareness_frame(changed)
                    # The sender gets its change back too, as from the reference server:
                    # stock clients take their own 15 s renewals coming back as proof the
                    # connection is alive, and reconnect after 30 s without any message.
                    output.reply.append(change)
                    output.broadcast.append(change)
            elif isinstance(message, QueryAwareness) and not queried:
                queried = True
                present = self.awareness.full_update()
                if present is not None:
                    output.reply.append(awareness_frame(present))
            # Auth and persisted messages are server-to-client only: ignore them.

    def transact(self, change: Callable[[Doc[Any]], object]) -> RoomOutput:
        """Run a server-side change as one transaction: everyone sees one update.

        A change that would take the board past its size limit is undone and
        fails with :class:`BoardFull`; one that raises fails with
        :class:`TransactionFailed`. Either way the board is as it was.
        """
        output = RoomOutput()
        document = self.document
        document.rebuilt = False
        try:
            position = document.journal_position
            changes = document.transact(change)
            limit = self.limits.max_board_bytes
            if document.size_estimate > limit and len(document.state()) > limit:
                # Nobody has seen the change yet: take it back out of the journal.
                document.undo_to(position)
                raise BoardFull(f"the change would take the board past {limit} bytes")
            self._emit(changes, output, None)
        except BoardcastError as exc:
            output.error = exc
        output.rebuilt = document.rebuilt
        return output

    def leave(self, connection: Hashable) -> bytes | None:
        """Forget ``connection`` (and its held updates); return its presence removal frame."""
        peer = self._peers.pop(connection, None)
        if peer is not None and peer.held:
            self._drop_held(connection, peer)
        removed = self.awareness.remove_connection(connection)
        return awareness_frame(removed) if removed is not None else None

    @property
    def holding(self) -> bool:
        """True while some connection's updates wait for their dependencies.

        Then pycrdt keeps parts of them pending, and its encoding of the board
        includes them: the host takes no snapshot until the holds are resolved
        (integrated, or dropped after at most ``max_held_seconds``).
        """
        return bool(self._holders) or self.document.careful

    @property
    def rebuild_due(self) -> bool:
        """True if a held update was dropped and a rebuild would clear what pycrdt keeps."""
        return self.document.rebuild_due

    def held_updates(self, connection: Hashable) -> int:
        """How many of ``connection``'s updates wait for their dependencies."""
        peer = self._peers.get(connection)
        return len(peer.held) if peer is not None else 0

    def expire_awareness(self, now: float) -> bytes | None:
        """Drop presence not renewed in time; return the frame announcing it."""
        removed = self.awareness.expire(now)
        return awareness_frame(removed) if removed is not None else None

    # -- updates ---------------------------------------------------------------

    def _refuse_update(self, connection: Hashable, update: bytes, output: RoomOutput) -> None:
        """A read-only connection sent an update: nothing of it is applied."""
        peer = self._peers.get(connection)
        if peer is None:
            peer = self._peers[connection] = _Peer()
        peer.received += 1
        if self.document.integrated(update):
            # Nothing the board lacks (a reconnecting viewer's step 2): harmless, and
            # as much in the document as it will ever be, so it is acknowledged, up
            # to the first refused one.
            if peer.integrated == peer.received - 1:
                peer.integrated = peer.received
                output.integrated[connection] = peer.received
            return
        if not peer.denied:
            peer.denied = True
            output.reply.append(encode_message(PermissionDenied(READ_ONLY_REASON)))

    def _receive_update(
        self,
        connection: Hashable,
        update: bytes,
        output: RoomOutput,
        writable: bool,
        now: float,
    ) -> None:
        document = self.document
        peer = self._peers.get(connection)
        if peer is None:
            peer = self._peers[connection] = _Peer()
        peer.received += 1
        index = peer.received
        limits = self.limits
        if len(update) > limits.max_update_bytes:
            raise UpdateTooLarge(f"update of {len(update)} bytes (limit {limits.max_update_bytes})")
        if not writable and not document.integrated(update):
            raise WritesRefused("the store is unavailable: this update is refused")
        if document.size_estimate + len(update) > limits.max_board_bytes:
            # The estimate only grows between checkpoints: measure before refusing,
            # unless updates are held (the encoding would hold their pending parts).
            if not document.careful:
                document.checkpoint(document.state(), document.journal_position)
            if document.size_estimate + len(update) > limits.max_board_bytes:
                raise BoardFull(
                    f"the board holds {document.size_estimate} bytes; this update of"
                    f" {len(update)} would pass its limit of {limits.max_board_bytes}"
                )
        document.checks = 0
        document.advanced = set()
        changes = self._apply(update, output, connection)
        # The common case costs nothing: the change pycrdt emitted is the update
        # itself, so everything in it is in what the room stores.
        if (len(changes) == 1 and changes[0] == update) or document.integrated(update):
            if not peer.held:
                peer.integrated = index
                output.integrated[connection] = index
        else:
            self._hold(connection, peer, _Held(index, update, now), output)
        if changes and self._holders:
            self._retry_held(output)
        if document.checks:
            self._charge_checks(connection, document.checks, output)

    def _charge_checks(self, sender: Hashable, checks: int, output: RoomOutput) -> None:
        """Count whole-board checks against the connections whose held updates caused them.

        Checks run because pycrdt keeps held updates pending; any update touching
        them pays one, whoever sent it (a crafted update can use a victim's
        client id). So the holders are charged, not the sender, and a holder past
        its budget is closed, which takes the board off the careful path.
        """
        limit = self.limits.max_consistency_checks
        charged = list(self._holders) or [sender]
        for connection in charged:
            peer = self._peers.get(connection)
            if peer is None:
                continue
            peer.checks += checks
            if peer.checks > limit:
                self._drop_held(connection, peer)
                error = OutOfSync("too many updates waiting on what pycrdt keeps pending")
                if connection == sender:
                    raise error
                output.closed[connection] = error

    def _apply(
        self,
        update: bytes,
        output: RoomOutput,
        source: Hashable,
        *,
        from_held: bool = False,
    ) -> list[bytes]:
        """Apply ``source``'s update whole or not at all; emit and return the changes it made."""
        changes = self.document.apply(update, from_held=from_held)
        self._emit(changes, output, source)
        return changes

    @staticmethod
    def _emit(changes: list[bytes], output: RoomOutput, source: Hashable | None) -> None:
        for change in changes:
            output.broadcast.append(sync_update(change))
            output.updates.append(change)
            output.sources.append(source)

    # -- held updates ------------------------------------------------------------

    def _hold(self, connection: Hashable, peer: _Peer, held: _Held, output: RoomOutput) -> None:
        peer.held.append(held)
        peer.held_bytes += len(held.update)
        self._holders.add(connection)
        repairs = self.document.hold(held.update)
        if repairs:
            self._emit(repairs, output, connection)
        held.waits = self.document.waits_for(held.update)
        limits = self.limits
        if len(peer.held) > limits.max_held_updates or peer.held_bytes > limits.max_held_bytes:
            self._drop_held(connection, peer)
            raise OutOfSync(
                f"more than {limits.max_held_updates} updates or {limits.max_held_bytes}"
                " bytes wait for updates they depend on"
            )
        if not peer.resync_asked:
            # The sender has what we lack: its answer (a sync step 2 of everything
            # past our state vector) carries the missing dependencies.
            peer.resync_asked = True
            output.reply.append(sync_step1(self.doc.get_state()))

    def _retry_held(self, output: RoomOutput) -> None:
        """Integrate what became integrable; the repair also undoes pycrdt's dropped updates.

        A held update is retried only once a client it waits for has advanced, so
        an update that stays held costs the board's other updates nothing.
        """
        advanced = self.document.advanced
        tried: dict[Hashable, int] = {}
        for _ in range(len(self._holders) + 1):
            progress = False
            for connection in list(self._holders):
                peer = self._peers[connection]
                if tried.get(connection) == len(advanced) or not _may_integrate(peer, advanced):
                    continue
                tried[connection] = len(advanced)
                before = len(advanced)
                try:
                    rest = missing_from(self.doc, merge(held.update for held in peer.held))
                    if rest is not None:
                        self._apply(rest, output, connection, from_held=True)
                except InvalidUpdate as exc:
                    # A held update that cannot be integrated was bad all along.
                    self._drop_held(connection, peer)
                    output.closed[connection] = exc
                    continue
                self._release_covered(connection, peer, output)
                progress = progress or len(advanced) > before
            if not progress:
                return

    def _release_covered(self, connection: Hashable, peer: _Peer, output: RoomOutput) -> None:
        still: list[_Held] = []
        for held in peer.held:
            try:
                integrated = self.document.integrated(held.update)
            except InvalidUpdate:
                integrated = False
            if not integrated:
                held.waits = self.document.waits_for(held.update)
                still.append(held)
        peer.held = still
        peer.held_bytes = sum(len(held.update) for held in still)
        count = still[0].index - 1 if still else peer.received
        if count > peer.integrated:
            peer.integrated = count
            output.integrated[connection] = count
        if not still:
            peer.resync_asked = False
            self._holders.discard(connection)
            if not self._holders:
                self.document.settled()

    def _expire_held(self, now: float, output: RoomOutput) -> None:
        # A held update normally integrates within one resync round trip. One
        # that waits longer waits for something that may never come, and keeps
        # every update of the board on the careful (slower) path meanwhile.
        limit = self.limits.max_held_seconds
        for connection in list(self._holders):
            peer = self._peers[connection]
            if peer.held and now - peer.held[0].since > limit:
                self._drop_held(connection, peer)
                output.closed[connection] = OutOfSync(
                    f"an update waited more than {limit:g} s for what it depends on"
                )

    def _drop_held(self, connection: Hashable, peer: _Peer) -> None:
        if peer.held:
            self.document.dropped()
        peer.held.clear()
        peer.held_bytes = 0
        peer.resync_asked = False
        self._holders.discard(connection)


def _may_integrate(peer: _Peer, advanced: set[int | None]) -> bool:
    """True if a client one of ``peer``'s held updates waits for has advanced."""
    if None in advanced:
        return True
    return any(held.waits is None or not held.waits.isdisjoint(advanced) for held in peer.held)
