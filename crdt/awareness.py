"""Server-side awareness for one board: who is here, and what changed.

Stock Yjs clients re-send every awareness update they receive. Relaying frames
blindly therefore multiplies traffic by the room size. :class:`Awareness` keeps
the last (clock, state) of every client id, drops anything that is not newer,
and hands back an update holding only the real changes. States are compared as
JSON text, never parsed: an echo is rejected by a clock comparison alone.

Presence is also hostile input, so it is owned and bounded:

- the connection that introduces a client id owns it: only that connection may
  change or remove its state, until the state is removed, expires or the
  connection ends (entries about ids owned by others are echoes: ignored);
- a message may hold at most ``max_entries`` entries (checked before decoding
  them), a state at most ``max_state_bytes``, and a connection may own at most
  ``max_clients_per_connection`` ids; past that, :class:`AwarenessLimit`;
- clocks of departed clients are remembered (so their late echoes are dropped)
  up to ``max_remembered`` ids per board, oldest departures forgotten first.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from crdt.encoding import Decoder, write_var_string, write_var_uint
from crdt.errors import AwarenessLimit, ProtocolError

NULL_STATE = "null"
# Clients renew their state every 15 s and drop peers silent for 30 s.
OUTDATED_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class AwarenessLimits:
    """Bounds on what one board's presence accepts; see docs/settings.md."""

    max_entries: int = 64  # entries in one awareness message
    max_state_bytes: int = 32 * 1024  # one client's JSON state, in UTF-8 bytes
    max_clients_per_connection: int = 8  # client ids one connection may own
    max_remembered: int = 4096  # clocks kept for client ids that left


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's announced state: ``state`` is JSON text, ``"null"`` for gone."""

    client_id: int
    clock: int
    state: str


def decode_awareness(
    payload: bytes, *, max_entries: int | None = None, max_state_bytes: int | None = None
) -> list[AwarenessEntry]:
    """Decode an awareness update payload into its entries, within the given limits."""
    decoder = Decoder(payload)
    count = decoder.read_var_uint()
    if count > len(payload):
        raise ProtocolError("awareness update announces more entries than it holds")
    if max_entries is not None and count > max_entries:
        # Refused before decoding anything: a million entries must cost nothing.
        raise AwarenessLimit(f"awareness update with {count} entries (limit {max_entries})")
    entries: list[AwarenessEntry] = []
    for _ in range(count):
        client_id = decoder.read_var_uint()
        clock = decoder.read_var_uint()
        raw = decoder.read_var_bytes()
        if max_state_bytes is not None and len(raw) > max_state_bytes:
            raise AwarenessLimit(f"awareness state of {len(raw)} bytes (limit {max_state_bytes})")
        try:
            state = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("awareness state is not UTF-8") from exc
        entries.append(AwarenessEntry(client_id, clock, state))
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

    def __init__(self, limits: AwarenessLimits | None = None) -> None:
        self.limits = limits or AwarenessLimits()
        self._clocks: dict[int, int] = {}
        self._states: dict[int, str] = {}
        self._updated_at: dict[int, float] = {}
        self._owner: dict[int, Hashable] = {}
        self._by_connection: dict[Hashable, set[int]] = {}
        # Client ids with a clock but no state, oldest departure first.
        self._departed: dict[int, None] = {}

    @property
    def states(self) -> dict[int, str]:
        """Present client ids and their JSON states (a copy)."""
        return dict(self._states)

    @property
    def remembered(self) -> int:
        """How many client ids have a clock on record (present or departed)."""
        return len(self._clocks)

    def apply(self, payload: bytes, connection: Hashable, now: float) -> bytes | None:
        """Apply an update sent by ``connection``.

        Returns:
            An update payload holding only the entries that changed something,
            or ``None`` if it was all echoes, stale clocks and others' ids.

        Raises:
            AwarenessLimit: the update is over a limit; nothing of it was applied.
            ProtocolError: the payload does not decode.
        """
        limits = self.limits
        entries = decode_awareness(
            payload, max_entries=limits.max_entries, max_state_bytes=limits.max_state_bytes
        )
        owned = self._by_connection.get(connection, set())
        introduced = {
            entry.client_id
            for entry in entries
            if entry.state != NULL_STATE
            and entry.client_id not in self._owner
            and self._is_newer(entry)
        }
        if len(owned) + len(introduced) > limits.max_clients_per_connection:
            raise AwarenessLimit(
                f"a connection may announce {limits.max_clients_per_connection} client ids"
            )
        changed: list[AwarenessEntry] = []
        for entry in entries:
            owner = self._owner.get(entry.client_id)
            if owner is not None and owner != connection:
                # Someone else's presence: an echo from a stock client, or an attempt
                # to overwrite or remove it. Either way it changes nothing.
                continue
            if not self._is_newer(entry):
                continue
            present = entry.client_id in self._states
            self._clocks[entry.client_id] = entry.clock
            if entry.state == NULL_STATE:
                if present:
                    self._forget(entry.client_id)
                    changed.append(entry)
                else:
                    # Nobody was shown this client, so there is nothing to take away.
                    self._departed.pop(entry.client_id, None)
                    self._departed[entry.client_id] = None
                continue
            self._departed.pop(entry.client_id, None)
            self._states[entry.client_id] = entry.state
            self._updated_at[entry.client_id] = now
            self._claim(entry.client_id, connection)
            changed.append(entry)
        self._prune()
        return encode_awareness(changed) if changed else None

    def _is_newer(self, entry: AwarenessEntry) -> bool:
        current = self._clocks.get(entry.client_id)
        if current is None:
            return True
        if entry.clock != current:
            return entry.clock > current
        # At the same clock only a removal of a present state changes anything.
        return entry.state == NULL_STATE and entry.client_id in self._states

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
        self._prune()
        return encode_awareness(removed) if removed else None

    def _claim(self, client_id: int, connection: Hashable) -> None:
        self._owner[client_id] = connection
        self._by_connection.setdefault(connection, set()).add(client_id)

    def _forget(self, client_id: int) -> None:
        self._states.pop(client_id, None)
        self._updated_at.pop(client_id, None)
        self._departed[client_id] = None
        owner = self._owner.pop(client_id, None)
        if owner is not None:
            owned = self._by_connection.get(owner)
            if owned is not None:
                owned.discard(client_id)
                if not owned:
                    del self._by_connection[owner]

    def _prune(self) -> None:
        # Forgetting a departed client's clock only means a very late echo of its
        # old state could show it again, until that state expires.
        excess = len(self._departed) - self.limits.max_remembered
        if excess <= 0:
            return
        for cid in list(self._departed)[:excess]:
            del self._departed[cid]
            self._clocks.pop(cid, None)
