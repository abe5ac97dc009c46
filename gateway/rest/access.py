"""Who is calling the REST API, and what they may do: the same decision as for a socket.

A REST request on a board is asked of the extensions' ``on_connect``, exactly as a
WebSocket session on that board would be (``ConnectRequest`` with the request's
headers, query and address): a :class:`~actors.extensions.Refused` answers 401 or
403, a read-only session may read but not write (403 ``read-only``), and the
session's identity is the origin stored with every change the request makes.
Requests on projects ask about the project directory board. Without extensions
(``--auth none``), every caller acts as the local administrator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from actors.extensions import ConnectRequest, Extensions, Refused
from crdt.close_codes import CloseCode
from gateway.rest.problems import Problem

log = logging.getLogger("boardcast.rest")

#: Who made a change when no extension names the caller.
LOCAL_ADMIN = "local-admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """What the extensions decided about one request."""

    identity: str
    read_only: bool

    def require_write(self) -> None:
        """Refuse a change from a caller who may only read."""
        if self.read_only:
            raise Problem("read-only", f"{self.identity} may read this board but not change it")


async def caller_for(request: web.Request, board_id: str, extensions: Extensions) -> Caller:
    """Ask the extensions about a request on ``board_id``."""
    if not extensions:
        return Caller(LOCAL_ADMIN, read_only=False)
    try:
        session = await extensions.on_connect(
            ConnectRequest(board_id, request.headers, request.query, request.remote)
        )
    except Refused as refused:
        name = "unauthorized" if refused.close_code == CloseCode.UNAUTHORIZED else "forbidden"
        problem = Problem(name, str(refused))
        if name == "unauthorized":
            problem.headers["WWW-Authenticate"] = "Bearer"
        raise problem from None
    return Caller(session.identity or "anonymous", session.read_only)
