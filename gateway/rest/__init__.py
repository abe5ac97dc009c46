"""The REST API under ``/v1`` (docs/rest.md): resources, bulk writes, the Yjs document."""

from __future__ import annotations

from aiohttp import web

from actors.cluster import Cluster
from gateway.rest.inputs import RestLimits
from gateway.rest.problems import problem_middleware
from gateway.rest.resources import Api
from gateway.settings import Settings
from gateway.ws import gateway_extensions


def rest_limits(settings: Settings) -> RestLimits:
    """The REST bounds ``settings`` names (docs/settings.md)."""
    defaults = RestLimits()
    return RestLimits(
        max_body_bytes=getattr(settings, "rest_max_body_bytes", defaults.max_body_bytes),
        max_bulk_items=getattr(settings, "rest_max_bulk_items", defaults.max_bulk_items),
    )


def add_rest_api(app: web.Application, cluster: Cluster, settings: Settings) -> None:
    """Serve the REST API on ``app``; errors under ``/v1`` become problem documents."""
    api = Api(
        cluster,
        gateway_extensions(settings),
        rest_limits(settings),
        call_timeout=settings.store_timeout_seconds,
        max_update_bytes=settings.max_update_bytes,
    )
    app.middlewares.append(problem_middleware)
    app.add_routes(api.routes())
