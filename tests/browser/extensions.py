"""The extension the browser tests' server loads: ``?role=viewer`` sessions are read-only.

Until Boardcast has log-in, this is how a viewer exists at all; the server, not the page,
refuses a viewer's edits.
"""

from __future__ import annotations

from actors.extensions import ConnectRequest, Session


class ViewersReadOnly:
    """Clients whose socket URL says ``role=viewer`` may read and be present, not edit."""

    async def on_connect(self, request: ConnectRequest) -> Session | None:
        if request.query.get("role") == "viewer":
            return Session(identity=request.query.get("user"), read_only=True)
        return None
