"""A read-only connection: nothing it sends changes the board; what the board already holds
is acknowledged, up to its first refused update, and never past it."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from crdt.protocol import PermissionDenied, decode_frame, sync_step2, sync_update
from crdt.room import BoardRoom


def an_update(key: str) -> bytes:
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("tasks", type=Map)[key] = key
    return updates[0]


def test_a_viewers_harmless_updates_are_acknowledged_and_its_edits_never() -> None:
    room = BoardRoom("b")
    room.load(None, [])
    held = an_update("t1")
    writer = room.receive("writer", sync_update(held), 0.0)
    assert writer.integrated == {"writer": 1}

    # The viewer's step 2 on (re)connect carries only what the board has.
    out = room.receive("viewer", sync_step2(held), 0.0, read_only=True)
    assert out.integrated == {"viewer": 1} and not out.updates and not out.broadcast

    out = room.receive("viewer", sync_update(an_update("t2")), 0.0, read_only=True)
    assert out.integrated == {} and not out.updates
    assert any(isinstance(m, PermissionDenied) for f in out.reply for m in decode_frame(f))
    assert "t2" not in room.doc.get("tasks", type=Map)

    # Past a refused update nothing is acknowledged again, whatever follows.
    out = room.receive("viewer", sync_update(held), 0.0, read_only=True)
    assert out.integrated == {}
