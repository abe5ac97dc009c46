"""An extension for the browser tests: the first sockets of some boards are refused.

A board named ``close-CODE-anything`` has its first two sockets closed with ``CODE`` right
after the upgrade, as the server does when it sends a close code of its own; the third is
let in. It shows what the board app does with each close code.
"""

from __future__ import annotations

from actors.extensions import ConnectRequest, Refused, Session
from crdt.close_codes import CloseCode

REFUSED_SOCKETS = 2


class ClosesFirstSockets:
    """Refuses the first sockets of ``close-CODE-*`` boards with ``CODE``."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    async def on_connect(self, request: ConnectRequest) -> Session | None:
        parts = request.board_id.split("-")
        if len(parts) < 3 or parts[0] != "close" or not parts[1].isdigit():
            return None
        count = self.seen.get(request.board_id, 0)
        self.seen[request.board_id] = count + 1
        if count < REFUSED_SOCKETS:
            raise Refused(CloseCode(int(parts[1])))
        return None
