"""One board's collaboration state machine: frames in, frames and updates out.

:class:`BoardRoom` owns a board's pycrdt ``Doc`` and its :class:`Awareness`. It
knows nothing about sockets, actors or storage: the caller feeds it frames
received from a connection and gets back what to send to that connection, what
to send to everyone else on the board, and which update bytes to persist.

It is also where untrusted updates meet the document, so it guarantees:

- **All or nothing.** An update pycrdt refuses changes nothing: what a failed
  transaction emitted is discarded, and if pycrdt may have integrated part of
  it the document is rebuilt from the room's *base* (the state it was loaded or
  last checkpointed at) and its *journal* (every change emitted since).
- **Integrated means covered.** After each apply the room checks that the
  document holds every insert of the update. One that pycrdt keeps pending (a
  dependency is missing) or dropped (pycrdt's out-of-order bug) is *held*, the
  sender is asked to resync, and the held bytes are retried after each later
  change. ``RoomOutput.integrated`` counts, per connection, how many of its
  update messages are integrated: only those may ever be acknowledged.
- **Bounded.** Update size, board size, held updates and presence have limits
  (:class:`RoomLimits`); past one, the frame fails with a named error.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, TransactionEvent

from crdt.awareness import Awareness, AwarenessLimits
from crdt.errors import (
    BoardcastError,
    BoardCorrupted,
    BoardFull,
    InvalidUpdate,
    OutOfSync,
    ProtocolError,
    UpdateTooLarge,
    WritesRefused,
)
from crdt.protocol import (
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    iter_frame,
    sync_step1,
    sync_step2,
    sync_update,
)
from crdt.update_format import UpdateRanges, read_ranges
from crdt.updates import (
    EMPTY_UPDATE,
    apply_update,
    build_document,
    decode_state_vector,
    encode_state,
    merge,
    missing_from,
    snapshot_loads,
    state_vectors_match,
)

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """What one board accepts; every field is a setting (docs/settings.md)."""

    max_update_bytes: int = 16 * _MIB  # one update (sync step 2 or update message)
    max_board_bytes: int = 64 * _MIB  # the whole board, encoded
    max_held_updates: int = 64  # per connection, waiting for their dependencies
    max_held_bytes: int = 4 * _MIB  # per connection
    max_consistency_checks: int = 32  # per connection: whole-board checks its updates cause
    max_held_seconds: float = 30.0  # how long an update may wait for its dependencies
    awareness: AwarenessLimits = field(default_factory=AwarenessLimits)


@dataclass(slots=True)
class RoomOutput:
    """What the caller must do after one frame was received.

    Attributes:
        reply: frames for the connection that sent the frame, in order.
        broadcast: frames for every other connection on the board, in order.
        updates: Yjs updates that changed the document, to be persisted in order.
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


class BoardRoom:
    """The live state of one board: document, awareness and the sync protocol."""

    def __init__(
        self, board_id: str, doc: Doc[Any] | None = None, *, limits: RoomLimits | None = None
    ) -> None:
        self.board_id = board_id
        self.limits = limits or RoomLimits()
        self.doc: Doc[Any] = doc if doc is not None else Doc()
        self.awareness = Awareness(self.limits.awareness)
        self._base: bytes | None = self.doc.get_update() if doc is not None else None
        self._journal: list[bytes] = []
        self._journal_start = 0  # journal position of _journal[0]
        self._journal_bytes = 0
        self._changes: list[bytes] = []
        self._peers: dict[Hashable, _Peer] = {}
        # Per client, the clock up to which the base and journal hold its inserts.
        self._clocks: dict[int, int] = decode_state_vector(self.doc.get_state())
        self._holders: set[Hashable] = set()  # connections with held updates
        # Clients whose inserts pycrdt may keep pending inside the document (those
        # of held updates, also after they were dropped); ``None`` in it stands for
        # a held update that could not be read. Updates touching them are checked.
        self._pending_clients: set[int | None] = set()
        # A held update was dropped unintegrated: rebuild to clear pycrdt's pending.
        self._rebuild_due = False
        self._checks = 0  # consistency checks run for the frame being processed
        self._parsed: list[tuple[bytes, UpdateRanges]] = []
        # Per client, inserted ranges beyond a gap in its clocks, sorted.
        self._gaps: dict[int, list[tuple[int, int]]] = {}
        # Clients whose stored clocks moved during this update (None: unknown).
        self._advanced: set[int | None] = set()
        self._subscription = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        # Fired only when a transaction changed the document, so duplicates of
        # known updates never reach other clients or the log. The transaction's
        # own update also carries anything that was pending on a missing
        # dependency and got integrated now.
        update = event.update
        if update != EMPTY_UPDATE:
            self._changes.append(update)

    # -- loading and checkpoints ---------------------------------------------

    def load(self, snapshot: bytes | None, updates: Sequence[bytes] = ()) -> None:
        """Rebuild the document from stored state (a snapshot, then the log in order).

        Raises:
            InvalidUpdate: the stored state does not load.
        """
        doc = build_document(snapshot, updates)
        self._replace_doc(doc)
        self._base = snapshot
        self._journal = list(updates)
        self._journal_start = 0
        self._journal_bytes = sum(len(update) for update in updates)

    @property
    def size_estimate(self) -> int:
        """An upper bound of the board's encoded size: base plus every change since."""
        return (len(self._base) if self._base is not None else 0) + self._journal_bytes

    @property
    def base_size(self) -> int:
        """The encoded size of the base (the last checkpointed state)."""
        return len(self._base) if self._base is not None else 0

    @property
    def journal_position(self) -> int:
        """How many changes the room has emitted or loaded, ever (a checkpoint's marker)."""
        return self._journal_start + len(self._journal)

    def state(self) -> bytes:
        """The whole document as one update (for snapshots and exports).

        If pycrdt cannot encode the document (a crafted update broke it), the
        document is rebuilt from the base and journal first.

        Raises:
            BoardCorrupted: not even the rebuilt document encodes.
        """
        try:
            return encode_state(self.doc)
        except InvalidUpdate:
            self._rebuild_or_fail()
        try:
            return encode_state(self.doc)
        except InvalidUpdate as exc:
            raise BoardCorrupted(f"board {self.board_id!r} does not encode: {exc}") from exc

    def _rebuild_or_fail(self) -> None:
        try:
            self.rebuild()
        except InvalidUpdate as exc:
            raise BoardCorrupted(f"board {self.board_id!r} cannot be rebuilt: {exc}") from exc

    def checkpoint(self, state: bytes, position: int) -> None:
        """Make ``state`` the base: it holds every change up to journal ``position``.

        Call with a state that was checked to load (``crdt.updates.snapshot_loads``)
        or just taken, and the :attr:`journal_position` read when it was taken. A
        checkpoint older than the current base is ignored.
        """
        if position <= self._journal_start:
            return
        rest = self._journal[position - self._journal_start :]
        self._base = state
        self._journal = rest
        self._journal_start = position
        self._journal_bytes = sum(len(update) for update in rest)

    def rebuild(self) -> None:
        """Replace the document by one built from the base and the journal.

        Raises:
            InvalidUpdate: the base and journal do not load (the caller must
                reload the board from its store).
        """
        self._replace_doc(build_document(self._base, self._journal))

    def _replace_doc(self, doc: Doc[Any]) -> None:
        self.doc.unobserve(self._subscription)
        self.doc = doc
        self._changes.clear()
        self._subscription = doc.observe(self._on_transaction)
        self._clocks = decode_state_vector(doc.get_state())
        self._gaps = {}
        self._rebuild_due = False
        # The new document holds nothing pending; held updates are retried into it.
        self._pending_clients = set()
        for connection in self._holders:
            for held in self._peers[connection].held:
                self._pending_clients |= self._insert_clients(held.update)

    @property
    def _pending_in_doc(self) -> bool:
        """Whether pycrdt may hold parts of updates pending inside the document.

        Only then are clocks tracked by the room and updates checked against them
        (the careful path); otherwise pycrdt's own state vector is trusted (fast).
        """
        return bool(self._pending_clients)

    def _record(self, change: bytes) -> None:
        """Advance the clocks the room stores by what ``change`` inserts."""
        try:
            inserted = self._ranges(change).spans
        except ProtocolError:
            # Not expected of pycrdt's own output; fall back to its state vector.
            self._clocks = decode_state_vector(self.doc.get_state())
            self._advanced.add(None)
            return
        clocks = self._clocks
        for client, carried in inserted.items():
            if max(end for _, end in carried) <= clocks.get(client, 0):
                continue
            # Clocks count a client's inserts from 0 without a gap; a range past a
            # gap (pycrdt can emit one) waits until the gap is filled.
            spans = self._gaps.setdefault(client, [])
            spans.extend(carried)
            spans.sort()
            clock = clocks.get(client, 0)
            while spans and spans[0][0] <= clock:
                clock = max(clock, spans.pop(0)[1])
            if not spans:
                del self._gaps[client]
            if clock > clocks.get(client, 0):
                clocks[client] = clock
                self._advanced.add(client)

    def _integrated(self, update: bytes, *, deletes: bool = True) -> bool:
        """True if everything ``update`` inserts (and deletes) is in what the room stores.

        Checked against the clocks of the changes the room emitted, not against
        pycrdt's state vector, which a crafted update can advance past what the
        document encodes.
        """
        if not self._pending_in_doc:
            return missing_from(self.doc, update) is None
        try:
            ranges = self._ranges(update)
        except ProtocolError:
            return missing_from(self.doc, update) is None
        clocks = self._clocks
        for client, (_, end) in ranges.inserts.items():
            if clocks.get(client, 0) < end:
                return False
        if deletes:
            for client, clock, length in ranges.deletes:
                if clocks.get(client, 0) < clock + length:
                    return False
        return True

    # -- sessions --------------------------------------------------------------

    def join(self) -> list[bytes]:
        """Frames a newly connected client must receive: our state vector, then presence."""
        frames = [sync_step1(self.doc.get_state())]
        present = self.awareness.full_update()
        if present is not None:
            frames.append(awareness_frame(present))
        return frames

    def receive(
        self, connection: Hashable, frame: bytes, now: float, *, writable: bool = True
    ) -> RoomOutput:
        """Process one frame from ``connection``; a bad frame sets ``output.error``.

        With ``writable`` false (the store is down and its backlog full) reading
        and presence still work; an update that would add to the board fails
        with :class:`WritesRefused`.
        """
        output = RoomOutput()
        if self._holders:
            self._expire_held(now, output)
            if connection in output.closed:
                output.error = output.closed.pop(connection)
                return output
        try:
            self._process(connection, frame, now, output, writable)
        except BoardcastError as exc:
            output.error = exc
        if self._rebuild_due:
            try:
                self._rebuild_or_fail()
                output.rebuilt = True
            except BoardCorrupted as exc:
                output.error = exc
        return output

    def _process(
        self,
        connection: Hashable,
        frame: bytes,
        now: float,
        output: RoomOutput,
        writable: bool,
    ) -> None:
        for message in iter_frame(frame):
            if isinstance(message, SyncStep1):
                output.reply.append(sync_step2(self._diff(message.state_vector, output)))
            elif isinstance(message, SyncStep2 | SyncUpdate):
                output.update_messages += 1
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
            elif isinstance(message, QueryAwareness):
                present = self.awareness.full_update()
                if present is not None:
                    output.reply.append(awareness_frame(present))
            # Auth and persisted messages are server-to-client only: ignore them.

    def leave(self, connection: Hashable) -> bytes | None:
        """Forget ``connection`` (and its held updates); return its presence removal frame."""
        peer = self._peers.pop(connection, None)
        if peer is not None and peer.held:
            self._drop_held(connection, peer)
        removed = self.awareness.remove_connection(connection)
        return awareness_frame(removed) if removed is not None else None

    def held_updates(self, connection: Hashable) -> int:
        """How many of ``connection``'s updates wait for their dependencies."""
        peer = self._peers.get(connection)
        return len(peer.held) if peer is not None else 0

    def expire_awareness(self, now: float) -> bytes | None:
        """Drop presence not renewed in time; return the frame announcing it."""
        removed = self.awareness.expire(now)
        return awareness_frame(removed) if removed is not None else None

    def close(self) -> None:
        """Stop observing the document."""
        self.doc.unobserve(self._subscription)

    # -- updates ---------------------------------------------------------------

    def _diff(self, state_vector: bytes, output: RoomOutput) -> bytes:
        try:
            return encode_state(self.doc, state_vector)
        except InvalidUpdate:
            pass
        # Either the state vector is bad or the document is: rebuild and try again.
        self._rebuild_or_fail()
        output.rebuilt = True
        try:
            return encode_state(self.doc, state_vector)
        except InvalidUpdate as exc:
            raise InvalidUpdate(f"invalid state vector: {exc}") from exc

    def _receive_update(
        self,
        connection: Hashable,
        update: bytes,
        output: RoomOutput,
        writable: bool,
        now: float,
    ) -> None:
        peer = self._peers.get(connection)
        if peer is None:
            peer = self._peers[connection] = _Peer()
        peer.received += 1
        index = peer.received
        limits = self.limits
        if len(update) > limits.max_update_bytes:
            raise UpdateTooLarge(f"update of {len(update)} bytes (limit {limits.max_update_bytes})")
        if not writable and not self._integrated(update, deletes=False):
            raise WritesRefused("the store is unavailable: this update is refused")
        if self.size_estimate + len(update) > limits.max_board_bytes:
            # The estimate only grows between checkpoints: measure before refusing.
            self.checkpoint(self.state(), self.journal_position)
            if self.size_estimate + len(update) > limits.max_board_bytes:
                raise BoardFull(
                    f"the board holds {self.size_estimate} bytes; this update of"
                    f" {len(update)} would pass its limit of {limits.max_board_bytes}"
                )
        self._checks = 0
        self._advanced = set()
        changes = self._apply(update, output)
        # The common case costs nothing: the change pycrdt emitted is the update
        # itself, so everything in it is in what the room stores.
        if (len(changes) == 1 and changes[0] == update) or self._integrated(update):
            if not peer.held:
                peer.integrated = index
                output.integrated[connection] = index
        else:
            self._hold(connection, peer, _Held(index, update, now), output)
        if changes and self._holders:
            self._retry_held(output)
        peer.checks += self._checks
        if peer.checks > limits.max_consistency_checks:
            # Each check encodes and reloads the whole board: a connection that
            # keeps causing them is closed before it can make the board slow.
            self._drop_held(connection, peer)
            raise OutOfSync("too many updates waiting on what pycrdt keeps pending")

    def _apply(self, update: bytes, output: RoomOutput, *, from_held: bool = False) -> list[bytes]:
        """Apply one update whole or not at all; emit and return the changes it made."""
        touches = self._touches_pending(update)
        try:
            apply_update(self.doc, update)
        except InvalidUpdate:
            # Whatever the failed transaction emitted must go nowhere, and the
            # document may hold part of the update: rebuild it from what we trust.
            self._changes.clear()
            self._rebuild_or_fail()
            output.rebuilt = True
            raise
        changes, self._changes = self._changes, []
        if changes:
            suspect = touches or from_held or self._integrates_pending(update, changes)
        else:
            # Retrying a held update that still cannot integrate is a no-op; an
            # update of the sender's own touching what is pending may not be.
            suspect = touches and not from_held
        if suspect:
            repairs = self._verify(changes)
            if repairs is None:
                # Integrating what pycrdt kept pending broke the document (a crafted
                # update can do that): none of it counts, the document is rebuilt.
                self._rebuild_or_fail()
                output.rebuilt = True
                raise InvalidUpdate("the update left the document inconsistent")
            changes += repairs
        if changes:
            self._emit(changes, output)
        return changes

    def _emit(self, changes: list[bytes], output: RoomOutput) -> None:
        for change in changes:
            output.broadcast.append(sync_update(change))
            output.updates.append(change)
            self._journal.append(change)
            if self._pending_in_doc:
                self._record(change)
            self._journal_bytes += len(change)

    def _ranges(self, update: bytes) -> UpdateRanges:
        """``read_ranges(update)``, remembered for the last few updates.

        On the careful path one update is read up to four times (is it touching
        what is pending, what did it change, what does the room now store, is it
        integrated), and its emitted change is usually the same bytes.
        """
        cache = self._parsed
        for known, ranges in cache:
            if known is update or known == update:
                return ranges
        ranges = read_ranges(update)
        cache.append((update, ranges))
        if len(cache) > 4:
            del cache[0]
        return ranges

    def _insert_clients(self, update: bytes) -> set[int | None]:
        """The clients ``update`` inserts for (``{None}`` if it cannot be read)."""
        try:
            return set(self._ranges(update).inserts)
        except ProtocolError:
            return {None}

    def _integrates_pending(self, update: bytes, changes: list[bytes]) -> bool:
        """True if ``changes`` insert anything ``update`` itself does not (pending parts)."""
        if not self._pending_in_doc or (len(changes) == 1 and changes[0] == update):
            # Nothing held since the last rebuild means nothing pending in pycrdt;
            # a change that is the update itself brought nothing else in.
            return False
        try:
            own = self._ranges(update).inserts
            for change in changes:
                for client, (start, end) in self._ranges(change).inserts.items():
                    first, last = own.get(client, (0, 0))
                    if start < first or end > last:
                        return True
        except ProtocolError:
            return True
        return False

    def _touches_pending(self, update: bytes) -> bool:
        """True if ``update`` inserts for a client whose inserts pycrdt may keep pending."""
        pending = self._pending_clients
        if not pending:
            return False
        if None in pending:
            return True
        return not pending.isdisjoint(self._insert_clients(update))

    def _verify(self, pending_changes: Sequence[bytes] = ()) -> list[bytes] | None:
        """Check the document against itself and against what the room stores.

        Returns ``None`` if the document is unsound (its encoding does not load
        back to its state vector: a crafted update broke it). Otherwise the
        changes to add so that base and journal (with ``pending_changes``, about
        to join it) replay to the document: pycrdt can integrate what it kept
        pending yet emit a change that does not replay on its own; the repair is
        the document's own diff against the replay. Costs an encode, a load and
        a replay of the board.
        """
        self._checks += 1
        try:
            state_vector = self.doc.get_state()
            if not snapshot_loads(encode_state(self.doc), state_vector):
                return None
            replayed = build_document(self._base, [*self._journal, *pending_changes])
            replayed_vector = replayed.get_state()
            if state_vectors_match(replayed_vector, state_vector):
                return []
            return [encode_state(self.doc, replayed_vector)]
        except InvalidUpdate:
            return None

    def _hold(self, connection: Hashable, peer: _Peer, held: _Held, output: RoomOutput) -> None:
        peer.held.append(held)
        peer.held_bytes += len(held.update)
        if not self._pending_in_doc:
            # Entering the careful path: the document must be sound now, and its
            # state vector is where the room's own clocks start.
            self._check_consistent(output)
            self._clocks = decode_state_vector(self.doc.get_state())
        self._holders.add(connection)
        self._pending_clients |= self._insert_clients(held.update)
        held.waits = self._waits_for(held.update)
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

    def _check_consistent(self, output: RoomOutput) -> None:
        # Some crafted updates leave pycrdt claiming clocks it cannot encode, or
        # integrated content that the emitted changes do not carry. An update that
        # did not integrate is the sign; this check is paid when the room starts
        # holding updates.
        repairs = self._verify()
        if repairs is None:
            self._rebuild_or_fail()
            output.rebuilt = True
        elif repairs:
            self._emit(repairs, output)

    def _retry_held(self, output: RoomOutput) -> None:
        """Integrate what became integrable; the repair also undoes pycrdt's dropped updates.

        A held update is retried only once a client it waits for has advanced, so
        an update that stays held costs the board's other updates nothing.
        """
        tried: dict[Hashable, int] = {}
        for _ in range(len(self._holders) + 1):
            progress = False
            for connection in list(self._holders):
                peer = self._peers[connection]
                if tried.get(connection) == len(self._advanced) or not self._may_integrate(peer):
                    continue
                tried[connection] = len(self._advanced)
                before = len(self._advanced)
                try:
                    rest = missing_from(self.doc, merge(held.update for held in peer.held))
                    if rest is not None:
                        self._apply(rest, output, from_held=True)
                except InvalidUpdate as exc:
                    # A held update that cannot be integrated was bad all along.
                    self._drop_held(connection, peer)
                    output.closed[connection] = exc
                    continue
                self._release_covered(connection, peer, output)
                progress = progress or len(self._advanced) > before
            if not progress:
                return

    def _may_integrate(self, peer: _Peer) -> bool:
        advanced = self._advanced
        if None in advanced:
            return True
        return any(held.waits is None or not held.waits.isdisjoint(advanced) for held in peer.held)

    def _release_covered(self, connection: Hashable, peer: _Peer, output: RoomOutput) -> None:
        still: list[_Held] = []
        for held in peer.held:
            try:
                integrated = self._integrated(held.update)
            except InvalidUpdate:
                integrated = False
            if not integrated:
                held.waits = self._waits_for(held.update)
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
            if not self._holders and not self._rebuild_due:
                # Everything held was integrated: nothing stays pending in pycrdt.
                self._pending_clients.clear()

    def _waits_for(self, update: bytes) -> set[int] | None:
        try:
            waits = self._ranges(update).waits_for(self._clocks)
        except ProtocolError:
            return None
        # Held without a missing dependency in sight (pycrdt dropped it): any change.
        return waits or None

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
            self._rebuild_due = True
        peer.held.clear()
        peer.held_bytes = 0
        peer.resync_asked = False
        self._holders.discard(connection)


