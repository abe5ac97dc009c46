"""A board's document as the room trusts it: what pycrdt holds, checked against what is stored.

:class:`BoardDocument` owns the pycrdt ``Doc`` of one board together with its
*base* (the state it was loaded or last checkpointed at) and its *journal*
(every change emitted since, which is exactly what was broadcast and handed to
the store). Base plus journal is the truth the document is rebuilt from when
pycrdt cannot be trusted:

- **All or nothing.** A failed apply (decode error, panic) discards what the
  failed transaction emitted and, since pycrdt may have integrated part of the
  update, rebuilds the document from base and journal.
- **Two paths.** While no update is held (see ``BoardRoom``), pycrdt's state
  vector is trusted and an update is integrated when nothing of it is missing
  from the document (the fast path). Once updates are held, pycrdt may keep
  parts of them pending, and crafted ones can make it claim clocks it cannot
  encode or emit changes that do not replay. Then the document tracks the
  clocks its journal really holds (from the changes' own bytes), and checks the
  whole board (encode, load, replay) after any update that touches what is
  pending (the careful path).
- **Built on demand.** A board loaded from a snapshot whose state vector is known
  (stored beside it) and no log tail is not built at load: its step 1 is that state
  vector, a new client's step 2 is the snapshot's bytes, and the pycrdt document is
  built from them only when something needs it (an update that changes the board, a
  server-side change, a returning client's state vector). A board that is only
  opened and read costs a store read, not a document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent

from crdt.errors import BoardCorrupted, InvalidUpdate, ProtocolError, TransactionFailed
from crdt.update_format import UpdateRanges, read_ranges
from crdt.updates import (
    EMPTY_UPDATE,
    apply_update,
    build_document,
    decode_state_vector,
    encode_state,
    missing_past,
    snapshot_loads,
    state_vectors_match,
)


class _LocalOrigin:
    """Transaction origin of changes made on the server (not received from a client)."""


LOCAL = _LocalOrigin()


class BoardDocument:
    """One board's pycrdt document, its base and journal, and the checks between them."""

    def __init__(self, board_id: str, held_updates: Callable[[], Iterable[bytes]] = tuple) -> None:
        """Start empty.

        Args:
            board_id: for error messages.
            held_updates: the updates the room currently holds; after a rebuild
                their clients are marked pending again.
        """
        self.board_id = board_id
        self._held_updates = held_updates
        self._doc: Doc[Any] | None = Doc()
        # While the document is not built (see load): the state vector of the base.
        self._vector: bytes | None = None
        self._base: bytes | None = None
        self._journal: list[bytes] = []
        self._journal_start = 0  # journal position of _journal[0]
        self._journal_bytes = 0
        self._changes: list[bytes] = []
        # Per client, the clock up to which the base and journal hold its inserts
        # without a gap, and the ranges already held beyond a gap, sorted.
        self._clocks: dict[int, int] = {}
        self._gaps: dict[int, list[tuple[int, int]]] = {}
        # Clients whose inserts pycrdt may keep pending inside the document; None
        # stands for an update that could not be read. Non-empty: careful path.
        self._pending: set[int | None] = set()
        self._parsed: list[tuple[bytes, UpdateRanges]] = []
        self.rebuild_due = False  # a held update was dropped: clear what pycrdt keeps
        self.rebuilt = False  # set on every rebuild; the room reads and resets it
        self.checks = 0  # whole-board checks run; the room reads and resets it
        # Clients whose stored clocks moved since the room last reset this (None: unknown).
        self.advanced: set[int | None] = set()
        #: Called right before an update or a local change touches the document (observers
        #: that keep a value from before a change read it there, not at load).
        self.before_change: Callable[[], None] | None = None
        self._subscription: Subscription | None = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        # Fired only when a transaction changed the document, so duplicates of
        # known updates never reach other clients or the log. The transaction's
        # own update also carries anything that was pending on a missing
        # dependency and got integrated now.
        update = event.update
        if update != EMPTY_UPDATE:
            self._changes.append(update)

    # -- base, journal and rebuilds --------------------------------------------

    def load(
        self,
        snapshot: bytes | None,
        updates: Sequence[bytes] = (),
        *,
        state_vector: bytes | None = None,
    ) -> None:
        """Rebuild the document from stored state (a snapshot, then the log in order).

        ``state_vector`` is the snapshot's, as stored with it: given for a snapshot
        with no log tail, the document is built only when first needed (see the
        module's docstring). A snapshot that then does not load makes that first
        need fail with :class:`BoardCorrupted` (the host reloads the board).

        Raises:
            InvalidUpdate: the stored state does not load.
        """
        lazy = (
            state_vector is not None
            and snapshot is not None
            and not updates
            and not list(self._held_updates())
        )
        if lazy:
            self.close()
            self._doc = None
            self._vector = state_vector
            self._changes.clear()
            self._clocks = {}
            self._gaps = {}
            self._pending = set()
            self.rebuild_due = False
        else:
            self._replace_doc(build_document(snapshot, updates))
        self._base = snapshot
        self._journal = list(updates)
        self._journal_start = 0
        self._journal_bytes = sum(len(update) for update in updates)

    @property
    def doc(self) -> Doc[Any]:
        """The board's pycrdt document, built first if it was not yet (see :meth:`load`).

        Raises:
            BoardCorrupted: the stored state it is built from does not load.
        """
        doc = self._doc
        if doc is None:
            try:
                doc = build_document(self._base, self._journal)
            except InvalidUpdate as exc:
                raise BoardCorrupted(f"board {self.board_id!r} does not load: {exc}") from exc
            self._replace_doc(doc)
        return doc

    @property
    def built(self) -> bool:
        """Whether the pycrdt document exists (False for a board only opened and read)."""
        return self._doc is not None

    def state_vector(self) -> bytes:
        """The document's encoded state vector (known without building it)."""
        if self._vector is not None:  # set exactly while the document is not built
            return self._vector
        state_vector: bytes = self.doc.get_state()
        return state_vector

    @property
    def size_estimate(self) -> int:
        """An upper bound of the board's encoded size: base plus every change since."""
        return self.base_size + self._journal_bytes

    @property
    def base_size(self) -> int:
        """The encoded size of the base (the last checkpointed state)."""
        return len(self._base) if self._base is not None else 0

    @property
    def journal_position(self) -> int:
        """How many changes were emitted or loaded, ever (a checkpoint's marker)."""
        return self._journal_start + len(self._journal)

    def state(self) -> bytes:
        """The whole document as one update; rebuilt first if pycrdt cannot encode it.

        Raises:
            BoardCorrupted: not even the rebuilt document encodes.
        """
        if self._doc is None and self._base is not None:
            # Not built: the snapshot is the whole board (and was checked to load); any
            # change would have built the document first.
            return self._base
        try:
            return encode_state(self.doc)
        except InvalidUpdate:
            self.rebuild_or_fail()
        try:
            return encode_state(self.doc)
        except InvalidUpdate as exc:
            raise BoardCorrupted(f"board {self.board_id!r} does not encode: {exc}") from exc

    def diff(self, state_vector: bytes) -> bytes:
        """What a peer at ``state_vector`` lacks.

        Raises:
            InvalidUpdate: the state vector is invalid.
        """
        if self._doc is None and self._base is not None and _claims_nothing(state_vector):
            # A new client lacks everything: the snapshot's bytes are the board.
            return self._base
        try:
            return encode_state(self.doc, state_vector)
        except InvalidUpdate:
            pass
        # Either the state vector is bad or the document is: rebuild and try again.
        self.rebuild_or_fail()
        try:
            return encode_state(self.doc, state_vector)
        except InvalidUpdate as exc:
            raise InvalidUpdate(f"invalid state vector: {exc}") from exc

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
            InvalidUpdate: the base and journal do not load.
        """
        self._replace_doc(build_document(self._base, self._journal))
        self.rebuilt = True

    def undo_to(self, position: int) -> None:
        """Forget the journal's changes after ``position`` and rebuild without them.

        Only for changes nobody has seen (a server-side change refused before it
        was broadcast or stored).
        """
        if position < self._journal_start:
            raise ValueError("cannot undo past the base")
        self._journal = self._journal[: position - self._journal_start]
        self._journal_bytes = sum(len(update) for update in self._journal)
        self.rebuild_or_fail()

    def rebuild_or_fail(self) -> None:
        """:meth:`rebuild`, or :class:`BoardCorrupted` (the board must be reloaded)."""
        try:
            self.rebuild()
        except InvalidUpdate as exc:
            raise BoardCorrupted(f"board {self.board_id!r} cannot be rebuilt: {exc}") from exc

    def close(self) -> None:
        """Stop observing the document (idempotent: a board may be released twice when a
        passivation and a stop meet, and pycrdt raises on a second unobserve)."""
        if self._subscription is not None and self._doc is not None:
            self._doc.unobserve(self._subscription)
        self._subscription = None

    def _replace_doc(self, doc: Doc[Any]) -> None:
        self.close()
        self._doc = doc
        self._vector = None
        self._changes.clear()
        self._subscription = doc.observe(self._on_transaction)
        self._clocks = decode_state_vector(doc.get_state())
        self._gaps = {}
        self.rebuild_due = False
        # The new document keeps nothing pending; held updates are retried into it.
        self._pending = set()
        for update in self._held_updates():
            self._pending |= self.insert_clients(update)

    # -- applying --------------------------------------------------------------

    def apply(self, update: bytes, *, from_held: bool = False) -> list[bytes]:
        """Apply ``update`` whole or not at all; return the changes, now in the journal.

        Raises:
            InvalidUpdate: pycrdt refused it, or it left the document inconsistent;
                the document was rebuilt and holds nothing of it.
            BoardCorrupted: the document could not even be rebuilt.
        """
        if self._doc is None and update == EMPTY_UPDATE:
            # A new client's empty step 2 changes nothing: no reason to build the board.
            return []
        touches = self._touches_pending(update)
        if self.before_change is not None and update != EMPTY_UPDATE:
            # Not for the empty step 2 every new client answers the server's step 1 with.
            self.before_change()
        try:
            apply_update(self.doc, update)
        except InvalidUpdate:
            # Whatever the failed transaction emitted must go nowhere, and the
            # document may hold part of the update: rebuild it from what we trust.
            self._changes.clear()
            self.rebuild_or_fail()
            raise
        changes, self._changes = self._changes, []
        if changes:
            suspect = touches or from_held or self._integrates_pending(update, changes)
        else:
            # Retrying a held update that still cannot integrate is a no-op; an
            # update of the sender's own touching what is pending may not be.
            suspect = touches and not from_held
        if suspect:
            repairs = self.verify(changes)
            if repairs is None:
                # Integrating what pycrdt kept pending broke the document (a crafted
                # update can do that): none of it counts, the document is rebuilt.
                self.rebuild_or_fail()
                raise InvalidUpdate("the update left the document inconsistent")
            changes += repairs
        self._record(changes)
        return changes

    def transact(self, change: Callable[[Doc[Any]], object]) -> list[bytes]:
        """Run ``change`` on the document as one local transaction; return its changes.

        Raises:
            TransactionFailed: ``change`` raised; whatever it had done was undone
                by a rebuild, so the board is as it was.
        """
        if self.before_change is not None:
            self.before_change()
        try:
            with self.doc.transaction(origin=LOCAL):
                change(self.doc)
        except Exception as exc:
            # Yjs has no rollback: what ran before the error was committed. Rebuild.
            self._changes.clear()
            self.rebuild_or_fail()
            raise TransactionFailed(f"the change raised {type(exc).__name__}: {exc}") from exc
        changes, self._changes = self._changes, []
        self._record(changes)
        return changes

    def _record(self, changes: list[bytes]) -> None:
        for change in changes:
            self._journal.append(change)
            self._journal_bytes += len(change)
            if self.careful:
                self._advance_clocks(change)

    def integrated(self, update: bytes) -> bool:
        """True if everything ``update`` inserts is in what is stored.

        On the careful path this is checked against the clocks of the journal,
        not against pycrdt's state vector, which a crafted update can advance
        past what the document encodes. Deletions are not required: a deletion
        of clocks nobody holds (which a crafted update can spread to every
        client's document) would otherwise hold every client's next step 2.
        """
        if not self.careful:
            return missing_past(update, self.state_vector()) is None
        try:
            ranges = self.ranges(update)
        except ProtocolError:
            return missing_past(update, self.state_vector()) is None
        clocks = self._clocks
        return all(clocks.get(client, 0) >= end for client, (_, end) in ranges.inserts.items())

    # -- the careful path --------------------------------------------------------

    @property
    def careful(self) -> bool:
        """Whether pycrdt may keep parts of updates pending inside the document."""
        return bool(self._pending)

    def hold(self, update: bytes) -> list[bytes] | None:
        """The room holds ``update``: take the careful path for its clients.

        Entering the careful path first checks the whole board. Returns the
        repair changes that check added to the journal (to broadcast and store),
        or ``None`` if the document had to be rebuilt.
        """
        repairs: list[bytes] | None = []
        if not self.careful:
            # The document must be sound now: its state vector is where the
            # tracked clocks start.
            repairs = self.verify()
            if repairs is None:
                self.rebuild_or_fail()
            else:
                self._record(repairs)
            self._clocks = decode_state_vector(self.doc.get_state())
            self._gaps = {}
        self._pending |= self.insert_clients(update)
        return repairs

    def settled(self) -> None:
        """Every held update was integrated: nothing stays pending in pycrdt."""
        if not self.rebuild_due:
            self._pending.clear()

    def dropped(self) -> None:
        """A held update was dropped unintegrated: pycrdt may still keep parts of it."""
        self.rebuild_due = True

    def waits_for(self, update: bytes) -> set[int] | None:
        """The clients whose inserts ``update`` still needs (None: unknown)."""
        try:
            waits = self.ranges(update).waits_for(self._clocks)
        except ProtocolError:
            return None
        # Held without a missing dependency in sight (pycrdt dropped it): any change.
        return waits or None

    def verify(self, pending_changes: Sequence[bytes] = ()) -> list[bytes] | None:
        """Check the document against itself and against base and journal.

        Returns ``None`` if the document is unsound (its encoding does not load
        back to its state vector). Otherwise the changes to add so that base and
        journal (with ``pending_changes``, about to join it) replay to the
        document: pycrdt can integrate what it kept pending yet emit a change
        that does not replay on its own; the repair is the document's own diff
        against the replay. Costs an encode, a load and a replay of the board.
        """
        self.checks += 1
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

    def ranges(self, update: bytes) -> UpdateRanges:
        """``read_ranges(update)``, remembered for the last few updates.

        On the careful path one update is read up to four times (does it touch
        what is pending, what did it change, what do the clocks hold now, is it
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

    def insert_clients(self, update: bytes) -> set[int | None]:
        """The clients ``update`` inserts for (``{None}`` if it cannot be read)."""
        try:
            return set(self.ranges(update).inserts)
        except ProtocolError:
            return {None}

    def _advance_clocks(self, change: bytes) -> None:
        try:
            inserted = self.ranges(change).spans
        except ProtocolError:
            # Not expected of pycrdt's own output; fall back to its state vector.
            self._clocks = decode_state_vector(self.doc.get_state())
            self.advanced.add(None)
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
                self.advanced.add(client)

    def _integrates_pending(self, update: bytes, changes: list[bytes]) -> bool:
        """True if ``changes`` insert anything ``update`` itself does not (pending parts)."""
        if not self.careful or (len(changes) == 1 and changes[0] == update):
            # Nothing pending in pycrdt, or a change that is the update itself:
            # nothing else came in.
            return False
        try:
            own = self.ranges(update).inserts
            for change in changes:
                for client, (start, end) in self.ranges(change).inserts.items():
                    first, last = own.get(client, (0, 0))
                    if start < first or end > last:
                        return True
        except ProtocolError:
            return True
        return False

    def _touches_pending(self, update: bytes) -> bool:
        """True if ``update`` inserts for a client whose inserts pycrdt may keep pending."""
        pending = self._pending
        if not pending:
            return False
        if None in pending:
            return True
        return not pending.isdisjoint(self.insert_clients(update))


def _claims_nothing(state_vector: bytes) -> bool:
    """True for a valid state vector that holds no client's inserts (a new client's)."""
    try:
        clocks = decode_state_vector(state_vector)
    except ProtocolError:
        return False
    return not any(clocks.values())
