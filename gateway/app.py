"""The gateway's aiohttp application: routes, typed app state, start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from actors.cluster import Cluster
from actors.local import LocalCluster
from auth.oidc import OidcVerifier
from auth.roles import Role
from auth.service import AuthRefused
from crdt.close_codes import REASONS, CloseCode
from gateway.auth import open_auth_service
from gateway.auth.guard import Guard
from gateway.auth.role_cache import RoleCache
from gateway.auth.routes import AuthRoutes
from gateway.auth.watch import SessionWatch
from gateway.limits_middleware import LIMITS, limits_middleware, open_limits
from gateway.metrics import metrics_handler
from gateway.observability import TracingCluster, request_middleware
from gateway.project_split import START_WAIT_SECONDS, split_until_done
from gateway.rest.mount import add_rest_api, rest_limits
from gateway.routing import Router
from gateway.sessions import SessionRegistry
from gateway.settings import Settings
from gateway.webapp import add_web_app
from gateway.ws import board_socket, gateway_extensions, problem
from shared.factory import open_shared_state
from shared.state import SharedState, SharedStateUnavailable, keep_gateway_alive
from shared.tracing import configure_tracing

log = logging.getLogger("boardcast.gateway")

SETTINGS = web.AppKey("settings", Settings)
CLUSTER = web.AppKey("cluster", Cluster)
ROUTER = web.AppKey("router", Router)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")
SHARED = web.AppKey("shared", SharedState)
GUARD = web.AppKey("guard", Guard)


def create_app(
    settings: Settings,
    cluster: Cluster,
    *,
    own_cluster: bool = True,
    shared: SharedState | None = None,
) -> web.Application:
    """Build the gateway application for ``cluster``.

    Args:
        settings: the process settings.
        cluster: where boards live (in-process or Ray).
        own_cluster: close the cluster (flushing every board) when the app stops.
        shared: state shared with other gateways; default from ``settings.redis``.
    """
    limits = open_limits(settings.redis, cluster=settings.cluster_name)
    configure_tracing(settings.trace_endpoint, service_name="boardcast-gateway")
    app = web.Application(
        client_max_size=settings.max_frame_bytes,
        middlewares=[
            # Outermost: a refusal of the limits has a request id too.
            request_middleware(max_request_id_chars=settings.max_request_id_chars),
            limits_middleware(limits),
        ],
    )
    app[LIMITS] = settings.gateway_limits
    shared_state = (
        shared
        if shared is not None
        else open_shared_state(settings.redis, prefix=f"{settings.cluster_name}:")
    )
    gateway_id = settings.resolved_gateway_id
    sessions = SessionRegistry(shared_state, gateway_id, max_queued=settings.max_queued_sessions)
    # Loaded now, so a misnamed extension stops the gateway at start, not at a first client.
    gateway_extensions(settings)
    app[SETTINGS] = settings
    app[CLUSTER] = cluster
    app[SHARED] = shared_state
    app[ROUTER] = Router(cluster, shared_state, limits=settings.routing_limits)
    app[SOCKETS] = weakref.WeakSet()
    service = (
        open_auth_service(
            settings.data_dir,
            settings.auth_settings,
            store_url=settings.store,
            mongo=settings.accounts_mongo,
        )
        if settings.auth == "required"
        else None
    )
    oidc = settings.oidc_settings
    verifier = OidcVerifier(oidc) if oidc is not None and service is not None else None
    roles = RoleCache(
        max_entries=settings.auth_role_cache_entries, ttl_seconds=settings.auth_role_cache_seconds
    )
    guard = app[GUARD] = Guard(service, cluster, oidc=verifier, roles=roles)
    watch = SessionWatch(guard, poll_seconds=settings.auth_revocation_poll_seconds)

    async def socket_route(request: web.Request) -> web.StreamResponse:
        response = await board_socket(
            request, app[ROUTER], settings, app[SOCKETS], sessions, guard, watch
        )
        return response

    app.router.add_get("/ws/{board_id}", socket_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(ROUTER, CLUSTER, SOCKETS))
    app.router.add_get("/boards/{board_id}/sessions", board_sessions)
    add_web_app(app)
    app.add_routes(
        AuthRoutes(
            guard,
            rest_limits(settings),
            secure_cookies=bool(settings.tls_cert),
            code_flow=settings.oidc_code_flow,
            shared=shared_state,
        ).routes()
    )
    # Its calls to boards carry the request's trace context to the board's host.
    add_rest_api(app, TracingCluster(cluster), settings, shared_state, guard=guard)

    async def close_sockets(app: web.Application) -> None:
        # Runs before aiohttp waits for handlers to finish: ending the sessions
        # here lets every WebSocket handler return at once.
        sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
        code = CloseCode.GOING_AWAY
        app[ROUTER].counters.telemetry.closes[int(code)] += len(sockets)
        await asyncio.gather(
            *(ws.close(code=code, message=REASONS[code].encode()) for ws in list(sockets)),
            return_exceptions=True,
        )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ttl = settings.presence_ttl_seconds
        with contextlib.suppress(SharedStateUnavailable):
            await shared_state.refresh_gateway(gateway_id, ttl)
        keepalive = asyncio.ensure_future(keep_gateway_alive(shared_state, gateway_id, ttl_s=ttl))
        await watch.start()
        # A directory of the older layout becomes project documents before serving.
        splitting = asyncio.ensure_future(split_until_done(cluster))
        await asyncio.wait({splitting}, timeout=START_WAIT_SECONDS)
        yield
        splitting.cancel()
        await asyncio.gather(splitting, return_exceptions=True)
        await watch.stop()
        keepalive.cancel()
        await asyncio.gather(keepalive, return_exceptions=True)
        await sessions.drain()
        with contextlib.suppress(SharedStateUnavailable):
            await shared_state.drop_gateway(gateway_id)
        await shared_state.close()
        await app[ROUTER].close()
        if own_cluster:
            await cluster.close()
        await limits.close()
        if verifier is not None:
            await verifier.close()
        if service is not None:
            service.store.close()

    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(lifecycle)
    return app


#: Bound on the hosts' answer to a readiness check.
READY_TIMEOUT_S = 5.0


def _not_ready(reason: str) -> web.Response:
    return web.json_response({"status": "unavailable", "reason": reason}, status=503)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the gateway process answers."""
    return web.json_response({"status": "ok"})


async def _may_inspect(request: web.Request, board_id: str | None) -> bool:
    """Whether the caller may see operational details (of a board, or of the deployment)."""
    guard = request.app[GUARD]
    if not guard.required:
        return True
    try:
        principal = await guard.principal(request.headers, request.cookies)
    except AuthRefused:
        return False
    if board_id is None:
        return principal.admin
    access = await guard.board_access(principal, board_id)
    return access.role is not Role.NONE


async def board_sessions(request: web.Request) -> web.Response:
    """Everyone connected to a board, through any gateway sharing this state."""
    board_id = request.match_info["board_id"]
    if not await _may_inspect(request, board_id):
        return problem(404, "Not found", "no such board")
    try:
        found = await request.app[SHARED].board_sessions(board_id)
    except SharedStateUnavailable as exc:
        return problem(503, "Shared state unavailable", str(exc))
    return web.json_response(
        {
            "board": board_id,
            "sessions": [
                {"gateway": s.gateway_id, "session": s.session_id, **s.info} for s in found
            ],
        }
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness: board hosts answer, at least one is live, and their store is reachable.

    A failure says which of these in ``reason``, never how (no pids, no exception texts:
    those go to the log).
    """
    detailed = await _may_inspect(request, None)
    try:
        hosts = await asyncio.wait_for(request.app[CLUSTER].stats(), READY_TIMEOUT_S)
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        return _not_ready("board hosts not answering")
    if not hosts and not isinstance(request.app[CLUSTER], LocalCluster):
        # In-process hosts start with their first board; on Ray, none is a fault.
        return _not_ready("no board host is live")
    if not all(host.get("store_reachable", True) for host in hosts):
        return _not_ready("store unreachable")
    if not detailed:
        # Host names, pids and addresses are for administrators only.
        return web.json_response({"status": "ready", "hosts": len(hosts)})
    return web.json_response({"status": "ready", "hosts": hosts})
