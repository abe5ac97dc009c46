"""One board's collaboration state machine: frames in, frames and updates out.

:class:`BoardRoom` owns a board's pycrdt ``Doc`` and its :class:`Awareness`. It
knows nothing about sockets, actors or storage: the caller feeds it frames
received from a connection and gets back what to send to that connection, what
to send to everyone else on the board, and which update bytes to persist.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, TransactionEvent

from crdt.awareness import Awareness
from crdt.errors import BoardcastError, InvalidUpdate
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


@dataclass(slots=True)
class RoomOutput:
    """What the caller must do after one frame was received.

    Attributes:
        reply: frames for the connection that sent the frame, in order.
        broadcast: frames for every other connection on the board, in order.
        updates: Yjs updates that changed the document, to be persisted in order.
        update_messages: sync step 2 and update messages applied, changing the
            document or not (what a client counts to match acknowledgements).
        error: set when the frame was bad; the messages before the bad one were
            processed and their output above must still be delivered, then the
            connection closed.
    """

    reply: list[bytes] = field(default_factory=list)
    broadcast: list[bytes] = field(default_factory=list)
    updates: list[bytes] = field(default_factory=list)
    update_messages: int = 0
    error: BoardcastError | None = None


class _ApplyOrigin:
    """Transaction origin marking updates applied on behalf of a connection."""


_REMOTE = _ApplyOrigin()


def apply_update(doc: Doc[Any], update: bytes) -> None:
    """Apply ``update`` to ``doc``, raising :class:`InvalidUpdate` if pycrdt refuses it."""
    try:
        with doc.transaction(origin=_REMOTE):
            doc.apply_update(update)
    except Exception as exc:
        raise InvalidUpdate(f"cannot apply update: {exc}") from exc
    except BaseException as exc:
        # A panic inside Yrs surfaces as pyo3's PanicException, a BaseException.
        if type(exc).__name__ == "PanicException":
            raise InvalidUpdate(f"cannot apply update: {exc}") from exc
        raise


class BoardRoom:
    """The live state of one board: document, awareness and the sync protocol."""

    def __init__(self, board_id: str, doc: Doc[Any] | None = None) -> None:
        self.board_id = board_id
        self.doc = doc if doc is not None else Doc()
        self.awareness = Awareness()
        self._changes: list[bytes] = []
        self._subscription = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        # Fired only when a transaction changed the document, so duplicates of
        # known updates never reach other clients or the log. The transaction's
        # own update also carries anything that was pending on a missing
        # dependency and got integrated now.
        self._changes.append(event.update)

    def load(self, update: bytes) -> None:
        """Apply stored state (snapshot or log entry) without producing output."""
        apply_update(self.doc, update)
        self._changes.clear()

    def join(self) -> list[bytes]:
        """Frames a newly connected client must receive: our state vector, then presence."""
        frames = [sync_step1(self.doc.get_state())]
        present = self.awareness.full_update()
        if present is not None:
            frames.append(awareness_frame(present))
        return frames

    def receive(self, connection: Hashable, frame: bytes, now: float) -> RoomOutput:
        """Process one frame from ``connection``; a bad frame sets ``output.error``."""
        output = RoomOutput()
        try:
            self._process(connection, frame, now, output)
        except BoardcastError as exc:
            output.error = exc
        return output

    def _process(self, connection: Hashable, frame: bytes, now: float, output: RoomOutput) -> None:
        for message in iter_frame(frame):
            if isinstance(message, SyncStep1):
                output.reply.append(sync_step2(self._diff(message.state_vector)))
            elif isinstance(message, SyncStep2 | SyncUpdate):
                self._apply(message.update, output)
                output.update_messages += 1
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
        """Forget ``connection``; return the awareness frame announcing its departure."""
        removed = self.awareness.remove_connection(connection)
        return awareness_frame(removed) if removed is not None else None

    def expire_awareness(self, now: float) -> bytes | None:
        """Drop presence not renewed in time; return the frame announcing it."""
        removed = self.awareness.expire(now)
        return awareness_frame(removed) if removed is not None else None

    def state(self) -> bytes:
        """The whole document as one update (for snapshots)."""
        return self.doc.get_update()

    def close(self) -> None:
        """Stop observing the document."""
        self.doc.unobserve(self._subscription)

    def _diff(self, state_vector: bytes) -> bytes:
        try:
            return self.doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidUpdate(f"invalid state vector: {exc}") from exc

    def _apply(self, update: bytes, output: RoomOutput) -> None:
        apply_update(self.doc, update)
        if self._changes:
            for change in self._changes:
                output.broadcast.append(sync_update(change))
                output.updates.append(change)
            self._changes.clear()
