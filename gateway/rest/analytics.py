"""``GET /v1/boards/{id}/analytics`` and ``GET /v1/projects/{id}/analytics``.

Read from what the analytics worker materialised (``workers/analytics.py``), never from the
boards. Any member may read (the ``read`` action of the board or project). Each answer says
how fresh it is: ``staleness`` gives the worker's lag in events and the age of the oldest
event it has not handled yet (0 when it is caught up). ``?days=N`` (1-366, default 30) picks
how many days up to today (UTC) the series cover.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from actors.extensions import Extensions
from auth.roles import Action
from gateway.auth.guard import Guard
from gateway.event_metrics import EVENT_LOG
from gateway.rest.access import board_caller, project_caller
from gateway.rest.problems import Problem
from gateway.settings import Settings
from persistence.event_log import ManagedEventLog
from persistence.event_log_factory import event_log_for
from persistence.factory import open_store
from workers.analytics import ANALYTICS_CONSUMER
from workers.analytics_model import MAX_REPORT_DAYS, BoardMetrics, board_report, project_report
from workers.analytics_store import AnalyticsStore, analytics_store_for

DEFAULT_DAYS = 30


class AnalyticsApi:
    """The two analytics routes over one analytics store and the event log."""

    def __init__(
        self,
        metrics: AnalyticsStore,
        event_log: ManagedEventLog,
        guard: Guard,
        extensions: Extensions,
    ) -> None:
        self.metrics = metrics
        self.event_log = event_log
        self.guard = guard
        self.extensions = extensions

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the app."""
        return [
            web.get("/v1/boards/{board_id}/analytics", self.board),
            web.get("/v1/projects/{project_id}/analytics", self.project),
        ]

    async def board(self, request: web.Request) -> web.Response:
        """One board's metrics."""
        board_id = request.match_info["board_id"]
        await board_caller(request, board_id, Action.READ, self.guard, self.extensions)
        days = _days(request)
        found = await self.metrics.load([board_id])
        metrics = found.get(board_id) or BoardMetrics(board_id)
        report = board_report(metrics, today=_today(), days=days)
        return web.json_response(
            {"board_id": board_id, "staleness": await self._staleness(), **report}
        )

    async def project(self, request: web.Request) -> web.Response:
        """Every board of a project, summed (flow columns named ``<board>/<column>``)."""
        project_id = request.match_info["project_id"]
        await project_caller(request, project_id, Action.READ, self.guard, self.extensions)
        days = _days(request)
        boards = await self.metrics.of_project(project_id)
        report = project_report(boards, today=_today(), days=days)
        return web.json_response(
            {
                "project_id": project_id,
                "boards": [board.board_id for board in boards],
                "staleness": await self._staleness(),
                **report,
            }
        )

    async def _staleness(self) -> dict[str, Any]:
        committed = await self.event_log.committed(ANALYTICS_CONSUMER)
        last = await self.event_log.last_offset()
        oldest = await self.event_log.read(committed, 1)
        age = max(0.0, time.time() - oldest[0].at) if oldest else 0.0
        return {
            "lag_events": max(0, last - committed),
            "oldest_unhandled_seconds": round(age, 3),
            "handled_offset": committed,
            "last_offset": last,
        }


def _days(request: web.Request) -> int:
    raw = request.query.get("days", str(DEFAULT_DAYS))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPORT_DAYS:
        raise Problem("bad-request", f"days must be a whole number from 1 to {MAX_REPORT_DAYS}")
    return int(raw)


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def add_analytics_api(
    app: web.Application, settings: Settings, guard: Guard, extensions: Extensions
) -> None:
    """Serve the analytics routes, if the store has an analytics store beside it."""
    store = open_store(settings.store, data_dir=settings.data_dir)
    try:
        api = AnalyticsApi(analytics_store_for(store), event_log_for(store), guard, extensions)
    except NotImplementedError:
        return
    app.add_routes(api.routes())
    app[EVENT_LOG] = api.event_log  # for the lag gauges of /metrics

    async def close(app: web.Application) -> None:
        with contextlib.suppress(Exception):
            await api.metrics.close()
        with contextlib.suppress(Exception):
            await api.event_log.close()
        await store.close()

    app.on_cleanup.append(close)
