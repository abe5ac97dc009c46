"""Mounting the REST API on a gateway: its limits, read model, query cache and routes."""

from __future__ import annotations

from aiohttp import web

from actors.cluster import Cluster
from gateway.auth.guard import Guard
from gateway.files_mount import add_attachments
from gateway.rest.analytics import add_analytics_api
from gateway.rest.cache import QueryCache
from gateway.rest.inputs import RestLimits
from gateway.rest.mail import add_mail_api
from gateway.rest.notifications import add_notification_api
from gateway.rest.problems import problem_middleware
from gateway.rest.resources import Api
from gateway.rest.webhooks import add_webhook_api
from gateway.settings import Settings
from gateway.ws import gateway_extensions
from persistence.factory import open_store
from persistence.read_model import TaskIndex
from shared.state import SharedState


def rest_limits(settings: Settings) -> RestLimits:
    """The REST bounds ``settings`` names (docs/settings.md)."""
    defaults = RestLimits()
    return RestLimits(
        max_body_bytes=getattr(settings, "rest_max_body_bytes", defaults.max_body_bytes),
        max_bulk_items=getattr(settings, "rest_max_bulk_items", defaults.max_bulk_items),
    )


def add_rest_api(
    app: web.Application,
    cluster: Cluster,
    settings: Settings,
    shared: SharedState | None = None,
    *,
    guard: Guard | None = None,
) -> None:
    """Serve the REST API on ``app``; errors under ``/v1`` become problem documents.

    ``shared`` (the gateways' shared state) holds the query cache, if given and
    ``rest_cache_ttl_seconds`` is above 0.
    """
    # Queries read the read model beside the boards; opening it connects to nothing yet.
    store = open_store(settings.store, data_dir=settings.data_dir)
    try:
        index: TaskIndex | None = store.task_index()
    except NotImplementedError:
        index = None
    api = Api(
        cluster,
        gateway_extensions(settings),
        rest_limits(settings),
        call_timeout=settings.store_timeout_seconds,
        max_update_bytes=settings.max_update_bytes,
        index=index,
        cache=(
            QueryCache(shared, index, ttl=settings.rest_cache_ttl_seconds)
            if shared is not None and index is not None and settings.rest_cache_ttl_seconds > 0
            else None
        ),
        guard=guard,
    )
    app.middlewares.append(problem_middleware)
    app.add_routes(api.routes())
    add_webhook_api(app, settings, api.guard, api.extensions, api.limits)
    add_mail_api(app, settings, api.guard)
    add_notification_api(app, settings, api.guard, api.limits)
    add_attachments(app, cluster, settings, api.guard, api.extensions, api.limits)
    add_analytics_api(app, settings, api.guard, api.extensions)

    async def close_index(app: web.Application) -> None:
        if index is not None:
            await index.close()
        await store.close()

    app.on_cleanup.append(close_index)
