"""The client side of one y-websocket connection, without I/O.

:class:`ClientProtocol` takes the frames a client receives and hands the frames
it must send to a callback: the sync handshake, local edits as updates, an
awareness state kept alive, and Boardcast's "persisted" acknowledgements. The
asyncio client in ``clients/provider.py`` pumps it over a WebSocket; tests feed
it bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Subscription, TransactionEvent

from crdt.awareness import (
    NULL_STATE,
    OUTDATED_TIMEOUT_S,
    AwarenessEntry,
    decode_awareness,
    encode_awareness,
)
from crdt.errors import InvalidUpdate, ProtocolError
from crdt.protocol import (
    AwarenessUpdate,
    PermissionDenied,
    Persisted,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    awareness_frame,
    decode_frame,
    sync_step1,
    sync_step2,
    sync_update,
)

# The origin of every transaction that applies bytes received from the server.
REMOTE_ORIGIN = "boardcast.remote"
# Like the JavaScript client: renew the own state at half the peers' timeout.
AWARENESS_RENEW_S = OUTDATED_TIMEOUT_S / 2


class ClientProtocol:
    """The client side of one y-websocket connection: frames in, frames out.

    Local changes to ``doc`` are sent while the protocol is active; changes
    applied from received frames are not sent back.
    """

    def __init__(
        self,
        doc: Doc[Any],
        send: Callable[[bytes], None],
        *,
        renew_after: float = AWARENESS_RENEW_S,
        peer_timeout: float = OUTDATED_TIMEOUT_S,
    ) -> None:
        self.doc = doc
        self.active = False
        self.synced = False
        self.persisted_seq = 0
        self.denied_reason: str | None = None
        self.updates_sent = 0
        self._send = send
        self._renew_after = renew_after
        self._peer_timeout = peer_timeout
        # pycrdt cannot tell an observer the origin of the committing
        # transaction, so remote applies are flagged while they run.
        self._applying_remote = False
        self._subscription: Subscription | None = None
        self._clock = 0
        self._state: dict[str, Any] | None = None
        self._state_set_at = 0.0
        self._peer_clocks: dict[int, int] = {}
        self._peers: dict[int, dict[str, Any]] = {}
        self._peer_seen: dict[int, float] = {}

    @property
    def client_id(self) -> int:
        """The Yjs client id of the document, also used for awareness."""
        return self.doc.client_id

    @property
    def awareness_states(self) -> dict[int, dict[str, Any]]:
        """The awareness states of the other clients (a copy)."""
        return dict(self._peers)

    @property
    def awareness_state(self) -> dict[str, Any] | None:
        """This client's own awareness state."""
        return self._state

    def start(self, now: float | None = None) -> None:
        """Begin a connection: send sync step 1 and the own awareness state."""
        self.active = True
        self.synced = False
        # Acknowledgements count this connection's update messages from zero.
        self.updates_sent = 0
        self.persisted_seq = 0
        if self._subscription is None:
            self._subscription = self.doc.observe(self._on_transaction)
        self._send(sync_step1(self.doc.get_state()))
        if self._state is not None:
            # The server may remember a removal at the current clock.
            self._announce(self._state, _now(now))

    def leave(self) -> None:
        """Announce that this client is gone, then stop sending."""
        if self.active:
            self._clock += 1
            self._send_own_entry(NULL_STATE)
        self.stop()

    def stop(self) -> None:
        """The connection is gone: forget the peers, send nothing more."""
        self.active = False
        self.synced = False
        self._peer_clocks.clear()
        self._peers.clear()
        self._peer_seen.clear()
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None

    def set_awareness(self, state: dict[str, Any] | None, now: float | None = None) -> None:
        """Set (or with ``None`` remove) the own awareness state and announce it."""
        self._state = state
        if self.active:
            self._announce(state, _now(now))
        else:
            self._clock += 1

    def tick(self, now: float | None = None) -> None:
        """Renew the own state and drop peers that went silent; call every few seconds."""
        at = _now(now)
        if self.active and self._state is not None and at - self._state_set_at >= self._renew_after:
            self._announce(self._state, at)
        for client_id, seen in list(self._peer_seen.items()):
            if at - seen >= self._peer_timeout:
                self._peers.pop(client_id, None)
                del self._peer_seen[client_id]

    def receive(self, frame: bytes, now: float | None = None) -> None:
        """Handle every message of one received frame, in order.

        Raises:
            ProtocolError: the frame does not decode.
            InvalidUpdate: pycrdt refused an update.
        """
        for message in decode_frame(frame):
            if isinstance(message, SyncUpdate):
                self._apply_remote(message.update)
            elif isinstance(message, SyncStep1):
                try:
                    missing = self.doc.get_update(message.state_vector)
                except ValueError as exc:
                    raise ProtocolError("sync step 1 holds an invalid state vector") from exc
                self._send(sync_step2(missing))
                # The server counts a step 2 like an update: it may carry offline edits.
                self.updates_sent += 1
            elif isinstance(message, SyncStep2):
                self._apply_remote(message.update)
                self.synced = True
            elif isinstance(message, AwarenessUpdate):
                self._receive_awareness(message.payload, _now(now))
            elif isinstance(message, QueryAwareness):
                # Only the own state: echoing the peers' states multiplies traffic.
                if self.active and self._state is not None:
                    self._send_own_entry(_to_json(self._state))
            elif isinstance(message, PermissionDenied):
                self.denied_reason = message.reason
            elif isinstance(message, Persisted):
                self.persisted_seq = max(self.persisted_seq, message.seq)

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            with self.doc.transaction(origin=REMOTE_ORIGIN):
                self.doc.apply_update(update)
        except ValueError as exc:
            raise InvalidUpdate(str(exc)) from exc
        finally:
            self._applying_remote = False

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._applying_remote or not self.active:
            # Offline edits reach the server in the step 2 of the next connection.
            return
        self._send(sync_update(event.update))
        self.updates_sent += 1

    def _receive_awareness(self, payload: bytes, now: float) -> None:
        for entry in decode_awareness(payload):
            if entry.client_id == self.client_id:
                # Someone (the server, on a timeout) removed us while we are here.
                if entry.state == NULL_STATE and self._state is not None:
                    self._clock = max(self._clock, entry.clock)
                    self._announce(self._state, now)
                continue
            known = self._peer_clocks.get(entry.client_id)
            is_removal = entry.state == NULL_STATE
            if known is not None and (
                entry.clock < known
                or (entry.clock == known and not (is_removal and entry.client_id in self._peers))
            ):
                continue
            self._peer_clocks[entry.client_id] = entry.clock
            state = None if is_removal else _parse_state(entry.state)
            if state is None:
                self._peers.pop(entry.client_id, None)
                self._peer_seen.pop(entry.client_id, None)
            else:
                self._peers[entry.client_id] = state
                self._peer_seen[entry.client_id] = now

    def _announce(self, state: dict[str, Any] | None, now: float) -> None:
        self._clock += 1
        self._state_set_at = now
        self._send_own_entry(NULL_STATE if state is None else _to_json(state))

    def _send_own_entry(self, state_json: str) -> None:
        entry = AwarenessEntry(self.client_id, self._clock, state_json)
        self._send(awareness_frame(encode_awareness([entry])))


def _now(now: float | None) -> float:
    return time.monotonic() if now is None else now


def _to_json(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"))


def _parse_state(state_json: str) -> dict[str, Any] | None:
    try:
        state = json.loads(state_json)
    except ValueError:
        return None
    # Boardcast states are JSON objects; anything else is treated as absent.
    return state if isinstance(state, dict) else None
