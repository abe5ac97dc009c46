"""What a snapshot holds, so that a store never trims a log entry the snapshot lacks.

While a board moves between hosts (a node joined, or a host was dropped while alive), two
hosts can hold it for a moment and both append to its log. A snapshot written by one of
them, covering ``seq <= upto_seq``, would take the other's interleaved entries below that
seq out of the log although its document never saw them. So a host passes the state vector
of the document the snapshot was encoded from (:class:`Coverage`), and the store checks,
in the same transaction that trims, that every entry it would trim is held by it; if one is
not, the snapshot is refused and the log stays whole (the board's next load replays it).

The check is on inserts: ``pycrdt.get_update(entry, state_vector)`` is empty of structs
exactly when the document holds every insert of the entry. An entry that only deletes
carries no clock a state vector can cover, so it always passes; a delete made by the other
host in that moment can still be lost (its task comes back, nothing typed is lost).
Pure functions over bytes: stores call them from worker threads too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pycrdt

from crdt.updates import refused_as_invalid

#: How a v1 update without structs begins: varUint(0) clients.
_NO_STRUCTS = b"\x00"


@dataclass(frozen=True, slots=True)
class Coverage:
    """The state vector of the document a snapshot was encoded from.

    Attributes:
        state_vector: the document's encoded Yjs state vector (``Doc.get_state()``).
        opener: turns a stored entry into the Yjs update it holds; stores that seal
            entries (``persistence/encrypted.py``) wrap the coverage with their opener.
    """

    state_vector: bytes
    opener: Callable[[int, bytes], bytes] | None = None

    def holds(self, seq: int, stored: bytes) -> bool:
        """True if the document holds every insert of the entry stored at ``seq``.

        An entry that cannot be read (or opened) is not held: refusing a snapshot
        keeps the log whole, which is never wrong.
        """
        try:
            update = self.opener(seq, stored) if self.opener is not None else stored
            with refused_as_invalid():
                rest: bytes = pycrdt.get_update(update, self.state_vector)
        except Exception:
            return False
        return rest[:1] == _NO_STRUCTS

    def first_missing(self, entries: Iterable[tuple[int, bytes]]) -> int | None:
        """The seq of the first entry (seq, stored bytes) not held, or None if all are."""
        for seq, stored in entries:
            if not self.holds(seq, stored):
                return seq
        return None

    def opened_with(self, opener: Callable[[int, bytes], bytes]) -> Coverage:
        """The same coverage, reading stored entries through ``opener`` first."""
        inner = self.opener
        if inner is None:
            return Coverage(self.state_vector, opener)
        return Coverage(self.state_vector, lambda seq, stored: inner(seq, opener(seq, stored)))
