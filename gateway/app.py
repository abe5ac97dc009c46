"""The gateway's aiohttp application: routes, typed app state, start and stop."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from actors.cluster import Cluster
from crdt.close_codes import REASONS, CloseCode
from gateway.routing import Router
from gateway.settings import Settings
from gateway.ws import board_socket

log = logging.getLogger("boardcast.gateway")

SETTINGS = web.AppKey("settings", Settings)
CLUSTER = web.AppKey("cluster", Cluster)
ROUTER = web.AppKey("router", Router)
SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("sockets")


def create_app(
    settings: Settings, cluster: Cluster, *, own_cluster: bool = True
) -> web.Application:
    """Build the gateway application for ``cluster``.

    Args:
        settings: the process settings.
        cluster: where boards live (in-process or Ray).
        own_cluster: close the cluster (flushing every board) when the app stops.
    """
    app = web.Application(client_max_size=settings.max_frame_bytes)
    app[SETTINGS] = settings
    app[CLUSTER] = cluster
    app[ROUTER] = Router(cluster)
    app[SOCKETS] = weakref.WeakSet()

    async def socket_route(request: web.Request) -> web.StreamResponse:
        response = await board_socket(request, app[ROUTER], settings, app[SOCKETS])
        return response

    app.router.add_get("/ws/{board_id}", socket_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

    async def close_sockets(app: web.Application) -> None:
        # Runs before aiohttp waits for handlers to finish: ending the sessions
        # here lets every WebSocket handler return at once.
        sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
        code = CloseCode.GOING_AWAY
        await asyncio.gather(
            *(ws.close(code=code, message=REASONS[code].encode()) for ws in list(sockets)),
            return_exceptions=True,
        )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[ROUTER].close()
        if own_cluster:
            await cluster.close()

    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(lifecycle)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the gateway process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the board hosts answer too."""
    try:
        hosts = await request.app[CLUSTER].stats()
    except Exception as exc:
        return web.json_response({"status": "unavailable", "detail": str(exc)}, status=503)
    return web.json_response({"status": "ready", "hosts": hosts})
