"""The WebSocket pump: ``GET /ws/{board_id}`` speaking the y-websocket protocol.

It reads frames and hands them to the board's host; it never parses them. The
host decides whether a frame is bad and answers with a named close code. What
the host sends back is written by :class:`gateway.routing.GatewayLink`.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import weakref
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from actors.extensions import ConnectRequest, Extensions, Refused, Session
from auth.roles import Role, read_only
from auth.service import AuthRefused
from crdt.close_codes import REASONS, CloseCode
from crdt.project_doc import served_read_only
from gateway.auth.guard import Guard
from gateway.auth.watch import SessionWatch, WatchedSession
from gateway.connection import ClientConnection
from gateway.limits_middleware import admit_user_socket
from gateway.routing import Router
from gateway.sessions import SessionRegistry
from gateway.settings import Settings
from gateway.telemetry import UPDATE_PREFIXES, GatewayTelemetry
from shared.logs import BOARD_ID as LOGGED_BOARD_ID
from shared.logs import CONNECTION_ID, USER_ID

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


async def close_socket(
    ws: web.WebSocketResponse,
    code: CloseCode | int,
    telemetry: GatewayTelemetry,
    reason: str | None = None,
) -> None:
    """Close a client's socket with ``code``, counted in ``/metrics`` by code."""
    telemetry.closes[int(code)] += 1
    text = REASONS[CloseCode(code)] if reason is None else reason[:120]
    await ws.close(code=int(code), message=text.encode())


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
    # Every line logged for this session names its board (and later its connection
    # and user); cleared after, whatever else runs on this task next.
    LOGGED_BOARD_ID.set(request.match_info["board_id"][:200])
    try:
        return await _serve_session(request, router, settings, sockets, sessions, guard, watch)
    finally:
        LOGGED_BOARD_ID.set(None)
        CONNECTION_ID.set(None)
        USER_ID.set(None)


async def _serve_session(
    request: web.Request,
    router: Router,
    settings: Settings,
    sockets: weakref.WeakSet[web.WebSocketResponse],
    sessions: SessionRegistry,
    guard: Guard,
    watch: SessionWatch,
) -> web.StreamResponse:
    board_id = request.match_info["board_id"]
    telemetry = router.counters.telemetry
    if not BOARD_ID.match(board_id):
        return problem(400, "Invalid board id", "a board id is 1-200 characters, no '/'")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request.host, settings.allowed_origins):
        # A page on another site would ride on the user's network position (and,
        # with sessions, their cookies): browsers send Origin, so refuse it here.
        log.info("refused a WebSocket for board %s from origin %s", board_id, origin[:200])
        return problem(403, "Origin not allowed", "this origin may not open board sessions")
    if board_id.startswith("boardcast.") and not served_read_only(board_id):
        # The server's own documents (calendar feeds, ...) are never served to clients;
        # the directory, project documents and lists of projects are, read-only.
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
        await close_socket(ws, CloseCode.UNAUTHORIZED, telemetry, str(refused))
        return ws
    except Exception:
        log.exception("access check failed for board %s", board_id)
        await close_socket(ws, CloseCode.TRY_AGAIN_LATER, telemetry)
        return ws
    if guard.required:
        USER_ID.set(principal.user_id)
    if access.role is Role.NONE:
        log.info("refused %s on board %s: not a member", principal.user_id, board_id)
        await close_socket(ws, CloseCode.FORBIDDEN, telemetry)
        return ws
    if guard.required:
        capped = await admit_user_socket(request, principal.user_id)
        if capped is not None:
            await close_socket(ws, capped, telemetry)
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
            await close_socket(ws, refused.close_code, telemetry, str(refused))
            return ws
        except Exception:
            log.exception("on_connect failed for board %s", board_id)
            await close_socket(ws, CloseCode.INTERNAL_ERROR, telemetry)
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
        telemetry=telemetry,
    )
    CONNECTION_ID.set(conn.conn_id)
    try:
        link = await router.attach(conn)
    except Exception as exc:
        log.warning("board %s unavailable: %s", board_id, exc)
        await close_socket(ws, CloseCode.TRY_AGAIN_LATER, telemetry)
        return ws
    log.info("session opened on board %s", board_id)
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
                        await close_socket(ws, refused.close_code, telemetry, str(refused))
                        break
                data = message.data
                if data.startswith(UPDATE_PREFIXES):
                    telemetry.updates_in += 1
                    conn.update_in_at = time.monotonic()
                link.forward(conn, data)
                if link.stream.needs_drain():
                    await link.stream.drain()
            elif message.type is WSMsgType.TEXT:
                await close_socket(ws, CloseCode.UNSUPPORTED_DATA, telemetry)
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
        log.info("session closed on board %s (code %s)", board_id, ws.close_code)
    return ws


_LOADED: dict[tuple[str, ...], Extensions] = {}


def gateway_extensions(settings: Settings) -> Extensions:
    """The extensions named in ``settings``, loaded once per process."""
    loaded = _LOADED.get(settings.extensions)
    if loaded is None:
        loaded = _LOADED[settings.extensions] = Extensions.from_specs(settings.extensions)
    return loaded
