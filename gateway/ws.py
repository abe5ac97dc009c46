"""The WebSocket pump: ``GET /ws/{board_id}`` speaking the y-websocket protocol.

It reads frames and hands them to the board's host; it never parses them. The
host decides whether a frame is bad and answers with a named close code. What
the host sends back is written by :class:`gateway.routing.GatewayLink`.
"""

from __future__ import annotations

import itertools
import logging
import re
import weakref
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from actors.extensions import ConnectRequest, Extensions, Refused, Session
from auth.roles import Role, read_only
from auth.service import AuthRefused
from crdt.close_codes import REASONS, CloseCode
from crdt.projects import DIRECTORY_BOARD
from gateway.auth.guard import Guard
from gateway.auth.watch import SessionWatch, WatchedSession
from gateway.connection import ClientConnection
from gateway.limits_middleware import admit_user_socket
from gateway.routing import Router
from gateway.sessions import SessionRegistry
from gateway.settings import Settings

log = logging.getLogger("boardcast.gateway")

# Any URL path segment a y-websocket room name can become, without control characters.
BOARD_ID = re.compile(r"^[^/\x00-\x1f\x7f]{1,200}$")

_connection_ids = itertools.count(1)


def problem(status: int, title: str, detail: str) -> web.Response:
    """An RFC 9457 problem response."""
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page at ``origin`` may open a session on a gateway at ``host``.

    The gateway's own pages (same host and port) always may; others only if listed
    in ``allowed_origins`` (exact ``scheme://host[:port]``), or if it holds ``*``.
    """
    if "*" in allowed or origin in allowed:
        return True
    parsed = urlsplit(origin)
    return parsed.scheme in {"http", "https"} and parsed.netloc.lower() == host.lower()


async def board_socket(
    request: web.Request,
    router: Router,
    settings: Settings,
    sockets: weakref.WeakSet[web.WebSocketResponse],
    sessions: SessionRegistry,
    guard: Guard,
    watch: SessionWatch,
) -> web.StreamResponse:
    """Serve one client's session on one board."""
    board_id = request.match_info["board_id"]
    if not BOARD_ID.match(board_id):
        return problem(400, "Invalid board id", "a board id is 1-200 characters, no '/'")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request.host, settings.allowed_origins):
        # A page on another site would ride on the user's network position (and,
        # with sessions, their cookies): browsers send Origin, so refuse it here.
        log.info("refused a WebSocket for board %s from origin %s", board_id, origin[:200])
        return problem(403, "Origin not allowed", "this origin may not open board sessions")
    if board_id.startswith("boardcast.") and board_id != DIRECTORY_BOARD:
        # The server's own documents (calendar feeds, ...) are never served to clients.
        return problem(403, "Reserved board id", f"{board_id!r} is the server's own document")
    extensions = gateway_extensions(settings)
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_seconds,
        max_msg_size=settings.max_frame_bytes,
        compress=False,
    )
    await ws.prepare(request)
    # After the upgrade, so a refusal reaches a browser as a close code (a refused
    # upgrade shows only as a failed connection there).
    try:
        principal = await guard.socket_principal(
            board_id, request.query, request.headers, request.cookies
        )
        access = await guard.board_access(principal, board_id)
    except AuthRefused as refused:
        log.info("refused a session on board %s: %s", board_id, refused.reason)
        await ws.close(code=int(CloseCode.UNAUTHORIZED), message=str(refused)[:120].encode())
        return ws
    except Exception:
        log.exception("access check failed for board %s", board_id)
        code = CloseCode.TRY_AGAIN_LATER
        await ws.close(code=code, message=REASONS[code].encode())
        return ws
    if access.role is Role.NONE:
        log.info("refused %s on board %s: not a member", principal.user_id, board_id)
        code = CloseCode.FORBIDDEN
        await ws.close(code=code, message=REASONS[code].encode())
        return ws
    if guard.required:
        capped = await admit_user_socket(request, principal.user_id)
        if capped is not None:
            await ws.close(code=int(capped), message=REASONS[capped].encode())
            return ws
    session = Session(
        identity=principal.user_id if guard.required else None,
        read_only=read_only(access.role),
    )
    if extensions:
        try:
            decided = await extensions.on_connect(
                ConnectRequest(board_id, request.headers, request.query, request.remote)
            )
        except Refused as refused:
            await ws.close(code=int(refused.close_code), message=str(refused)[:120].encode())
            return ws
        except Exception:
            log.exception("on_connect failed for board %s", board_id)
            code = CloseCode.INTERNAL_ERROR
            await ws.close(code=code, message=REASONS[code].encode())
            return ws
        # Extensions may narrow what the guard allowed, never widen it.
        session = Session(
            identity=decided.identity if decided.identity is not None else session.identity,
            read_only=session.read_only or decided.read_only,
        )
    sockets.add(ws)
    transport = request.transport
    if transport is None:
        return ws
    conn = ClientConnection(
        next(_connection_ids),
        board_id,
        ws,
        transport,
        send_limit=settings.send_buffer_bytes,
        wants_acks=request.query.get("ack") in {"1", "true"},
        read_only=session.read_only,
        origin=session.identity,
    )
    try:
        link = await router.attach(conn)
    except Exception as exc:
        log.warning("board %s unavailable: %s", board_id, exc)
        code = CloseCode.TRY_AGAIN_LATER
        await ws.close(code=code, message=REASONS[code].encode())
        return ws
    sessions.joined(board_id, conn.conn_id)
    watched = WatchedSession(ws, board_id, principal, access.role)
    watch.add(watched)
    # Only a gateway whose extensions look at frames pays for an await per frame.
    inspect_frames = extensions.defines("on_message")
    try:
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                if conn.closing or link.closed:
                    break
                if inspect_frames:
                    try:
                        await extensions.on_message(board_id, session, message.data)
                    except Refused as refused:
                        code = refused.close_code
                        await ws.close(code=int(code), message=str(refused)[:120].encode())
                        break
                link.forward(conn, message.data)
                if link.stream.needs_drain():
                    await link.stream.drain()
            elif message.type is WSMsgType.TEXT:
                code = CloseCode.UNSUPPORTED_DATA
                await ws.close(code=code, message=REASONS[code].encode())
                break
            elif message.type is WSMsgType.ERROR:
                log.info("client on board %s: %s", board_id, ws.exception())
                break
    except ConnectionError:
        pass
    finally:
        link.leave(conn)
        watch.remove(watched)
        sessions.left(board_id, conn.conn_id)
        if extensions:
            await extensions.on_disconnect(board_id, session)
    return ws


_LOADED: dict[tuple[str, ...], Extensions] = {}


def gateway_extensions(settings: Settings) -> Extensions:
    """The extensions named in ``settings``, loaded once per process."""
    loaded = _LOADED.get(settings.extensions)
    if loaded is None:
        loaded = _LOADED[settings.extensions] = Extensions.from_specs(settings.extensions)
    return loaded
