"""Server-side awareness for one board: who is here, and what changed.

Stock Yjs clients re-send every awareness update they receive. Relaying frames
blindly therefore multiplies traffic by the room size. :class:`Awareness` keeps
the last (clock, state) of every client id, drops anything that is not newer,
and hands back an update holding only the real changes. States are compared as
JSON text, never parsed: an echo is rejected by a clock comparison alone.

It also remembers which connection announced which client ids, so that when a
connection ends, cleanly or not, their states can be removed for everyone.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from crdt.encoding import Decoder, write_var_string, write_var_uint
from crdt.errors import ProtocolError

NULL_STATE = "null"
# Clients renew their state every 15 s and drop peers silent for 30 s.
OUTDATED_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's announced state: ``state`` is JSON text, ``"null"`` for gone."""

    client_id: int
    clock: int
    state: str


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Decode an awareness update payload into its entries."""
    decoder = Decoder(payload)
    count = decoder.read_var_uint()
    if count > len(payload):
        raise ProtocolError("awareness update announces more entries than it holds")
    entries = [
        AwarenessEntry(decoder.read_var_uint(), decoder.read_var_uint(), decoder.read_var_string())
        for _ in range(count)
    ]
    if not decoder.at_end():
        raise ProtocolError("trailing bytes after awareness update")
    return entries


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """Encode entries as an awareness update payload."""
    items = list(entries)
    out = bytearray()
    write_var_uint(out, len(items))
    for entry in items:
        write_var_uint(out, entry.client_id)
        write_var_uint(out, entry.clock)
        write_var_string(out, entry.state)
    return bytes(out)


class Awareness:
    """The awareness states of one board, owned by the board's actor."""

    def __init__(self) -> None:
        self._clocks: dict[int, int] = {}
        self._states: dict[int, str] = {}
        self._updated_at: dict[int, float] = {}
        self._owner: dict[int, Hashable] = {}
        self._by_connection: dict[Hashable, set[int]] = {}

    @property
    def states(self) -> dict[int, str]:
        """Present client ids and their JSON states (a copy)."""
        return dict(self._states)

    def apply(self, payload: bytes, connection: Hashable, now: float) -> bytes | None:
        """Apply an update sent by ``connection``.

        Returns:
            An update payload holding only the entries that changed something,
            or ``None`` if it was all echoes and stale clocks.
        """
        changed: list[AwarenessEntry] = []
        for entry in decode_awareness(payload):
            current_clock = self._clocks.get(entry.client_id)
            present = entry.client_id in self._states
            is_removal = entry.state == NULL_STATE
            if current_clock is not None and (
                entry.clock < current_clock
                or (entry.clock == current_clock and not (is_removal and present))
            ):
                continue
            if is_removal and not present:
                # Nobody was shown this client, so there is nothing to take away.
                self._clocks[entry.client_id] = entry.clock
                continue
            self._clocks[entry.client_id] = entry.clock
            if is_removal:
                self._forget(entry.client_id)
            else:
                self._states[entry.client_id] = entry.state
                self._updated_at[entry.client_id] = now
                self._claim(entry.client_id, connection)
            changed.append(entry)
        return encode_awareness(changed) if changed else None

    def remove_connection(self, connection: Hashable) -> bytes | None:
        """Remove every state announced over ``connection``; return the removal update."""
        client_ids = self._by_connection.pop(connection, set())
        return self._remove(sorted(client_ids))

    def expire(self, now: float, timeout: float = OUTDATED_TIMEOUT_S) -> bytes | None:
        """Remove states not renewed within ``timeout`` seconds; return the removal update."""
        stale = [cid for cid, at in self._updated_at.items() if now - at >= timeout]
        return self._remove(stale)

    def full_update(self) -> bytes | None:
        """An update announcing every present state (for a newcomer), or ``None``."""
        if not self._states:
            return None
        return encode_awareness(
            AwarenessEntry(cid, self._clocks[cid], state) for cid, state in self._states.items()
        )

    def _remove(self, client_ids: Iterable[int]) -> bytes | None:
        removed: list[AwarenessEntry] = []
        for cid in client_ids:
            if cid not in self._states:
                continue
            # The clock stays: peers accept a removal at the clock they hold (as
            # y-protocols' removeAwarenessStates sends it), and a client that
            # reconnects is seen again on its next clock instead of two later.
            self._forget(cid)
            removed.append(AwarenessEntry(cid, self._clocks[cid], NULL_STATE))
        return encode_awareness(removed) if removed else None

    def _claim(self, client_id: int, connection: Hashable) -> None:
        previous = self._owner.get(client_id)
        if previous is not None and previous != connection:
            self._by_connection.get(previous, set()).discard(client_id)
        self._owner[client_id] = connection
        self._by_connection.setdefault(connection, set()).add(client_id)

    def _forget(self, client_id: int) -> None:
        self._states.pop(client_id, None)
        self._updated_at.pop(client_id, None)
        owner = self._owner.pop(client_id, None)
        if owner is not None:
            owned = self._by_connection.get(owner)
            if owned is not None:
                owned.discard(client_id)
                if not owned:
                    del self._by_connection[owner]
