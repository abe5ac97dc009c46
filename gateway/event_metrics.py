"""Event log gauges for ``/metrics``: each consumer's lag and committed offset.

The gateway opens the event log beside its store (``gateway/rest/analytics.py`` puts it in
the app under :data:`EVENT_LOG`); any process can compute a consumer's lag from the log alone,
so the figures are the same whichever gateway is scraped.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from persistence.event_log import ManagedEventLog

log = logging.getLogger("boardcast.metrics")

#: The gateway's view of the event log, if its store has one.
EVENT_LOG = web.AppKey("boardcast_event_log", ManagedEventLog)

# A scrape waits this long for the log at most; then the gauges are left out.
EVENT_LOG_TIMEOUT_S = 2.0


async def event_gauges(event_log: ManagedEventLog) -> list[GaugeMetricFamily]:
    """The gauges for one scrape."""
    last = await event_log.last_offset()
    consumers = await event_log.consumers()
    lag = GaugeMetricFamily(
        "boardcast_event_consumer_lag",
        "Events logged that the consumer has not committed (how far its effects are behind)",
        labels=["consumer"],
    )
    committed = GaugeMetricFamily(
        "boardcast_event_consumer_committed_offset",
        "The offset up to which the consumer has handled the log",
        labels=["consumer"],
    )
    for name, offset in sorted(consumers.items()):
        lag.add_metric([name], float(max(0, last - offset)))
        committed.add_metric([name], float(offset))
    newest = GaugeMetricFamily("boardcast_event_log_last_offset", "The newest offset logged")
    newest.add_metric([], float(last))
    return [lag, committed, newest]


class _Families:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families


async def event_metrics_text(app: web.Application) -> bytes:
    """The event log's gauges as Prometheus text (empty without a log, or if it is slow)."""
    event_log = app.get(EVENT_LOG)
    if event_log is None:
        return b""
    try:
        families = await asyncio.wait_for(event_gauges(event_log), EVENT_LOG_TIMEOUT_S)
    except Exception as exc:
        log.warning("event log gauges left out of /metrics: %r", exc)
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
