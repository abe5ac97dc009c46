"""Prometheus metrics at ``/metrics``: this gateway's traffic, and every board host's load.

Read at scrape time, never per frame: the gateway's counters are plain integers the
router already keeps (:class:`gateway.routing.RoutingCounters`, with the update counts,
close codes and fan-out latency buckets of :class:`gateway.telemetry.GatewayTelemetry`),
and the hosts' figures come from one ``stats`` call per host (bounded, as ``/readyz``).
When a host does not answer, ``boardcast_hosts_up`` is 0 and no host figures are shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sized
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.cluster import Cluster
from actors.memory_link import MemoryLink
from gateway.event_metrics import event_metrics_text
from gateway.routing import Router, RoutingCounters

STATS_TIMEOUT_S = 5.0

# Per-host figures of BoardHost.stats(): metric name suffix, stats key, help.
HOST_GAUGES = (
    ("boards", "boards", "Boards in memory on the host"),
    (
        "boards_built",
        "boards_built",
        "Boards in memory whose document is built (the rest are served from their snapshot)",
    ),
    ("connections", "connections", "Client sessions on the host's boards, through any gateway"),
    ("gateways", "gateways", "Gateways with a frame stream to the host"),
    ("pending_updates", "pending_updates", "Updates received but not yet committed to the store"),
    ("unsaved_bytes", "unsaved_bytes", "Bytes of updates not yet durable (persistence lag)"),
    (
        "persistence_lag_seconds",
        "persistence_lag_seconds",
        "How long the oldest update not yet durable has waited",
    ),
    ("store_reachable", "store_reachable", "1 if the host's last store check or write succeeded"),
)

# Per-host counters of BoardHost.stats(): metric name suffix, stats key, help.
HOST_COUNTERS = (
    ("activations", "activations", "Boards loaded from the store into memory"),
    ("passivations", "passivations", "Idle boards snapshotted and dropped from memory"),
)


class _Snapshot(Collector):
    """One scrape's figures, exposed as Prometheus metric families."""

    def __init__(
        self,
        counters: RoutingCounters,
        *,
        sockets: int,
        links: int,
        in_process_links: int,
        epoch: int,
        hosts: list[dict[str, Any]] | None,
    ) -> None:
        self._counters = counters
        self._sockets = sockets
        self._links = links
        self._in_process_links = in_process_links
        self._epoch = epoch
        self._hosts = hosts

    def collect(self) -> Iterator[Metric]:
        counters = self._counters
        yield GaugeMetricFamily(
            "boardcast_gateway_connections", "WebSocket clients on this gateway", self._sockets
        )
        yield GaugeMetricFamily(
            "boardcast_gateway_host_links", "Open frame streams to board hosts", self._links
        )
        yield GaugeMetricFamily(
            "boardcast_gateway_in_process_links",
            "Of those, links to hosts of this process, without a socket",
            self._in_process_links,
        )
        for name, value, text in (
            ("frames_in", counters.frames_in, "Client frames forwarded to board hosts"),
            ("frames_out", counters.frames_out, "Frames written to clients, one per recipient"),
            ("acks_out", counters.acks_out, "Persisted acknowledgements written to clients"),
            ("link_failures", counters.link_failures, "Host links that failed"),
            ("attach_failures", counters.attach_failures, "Sessions whose host was unreachable"),
        ):
            yield CounterMetricFamily(f"boardcast_gateway_{name}", text, value)
        telemetry = counters.telemetry
        yield CounterMetricFamily(
            "boardcast_gateway_updates_in",
            "Client frames carrying a document update",
            telemetry.updates_in,
        )
        yield CounterMetricFamily(
            "boardcast_gateway_updates_out",
            "Relayed updates written to clients, one per recipient",
            telemetry.updates_out,
        )
        fanout = telemetry.fanout
        yield HistogramMetricFamily(
            "boardcast_gateway_fanout_seconds",
            "From a client's update arriving at this gateway to its relay written to the "
            "board's other clients here",
            buckets=fanout.cumulative(),
            sum_value=fanout.total,
        )
        sent = CounterMetricFamily(
            "boardcast_gateway_closes",
            "WebSocket closes this gateway sent, by close code (refusals, limits, host requests)",
            labels=["code"],
        )
        for code, count in sorted(telemetry.closes.items()):
            sent.add_metric([str(code)], count)
        yield sent
        closes = CounterMetricFamily(
            "boardcast_gateway_host_closes",
            "Clients closed at a board host's request, by WebSocket close code",
            labels=["code"],
        )
        for code, count in sorted(counters.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        yield GaugeMetricFamily(
            "boardcast_membership_epoch", "Host membership changes seen here", self._epoch
        )
        up = GaugeMetricFamily(
            "boardcast_hosts_up", "1 if every board host answered this scrape", labels=[]
        )
        up.add_metric([], 0 if self._hosts is None else 1)
        yield up
        for suffix, key, text in HOST_GAUGES:
            family = GaugeMetricFamily(f"boardcast_host_{suffix}", text, labels=["host", "node"])
            for host in self._hosts or []:
                family.add_metric(
                    [str(host.get("name", "")), str(host.get("node_ip", ""))],
                    float(host.get(key, 0)),
                )
            yield family
        for suffix, key, text in HOST_COUNTERS:
            counted = CounterMetricFamily(f"boardcast_host_{suffix}", text, labels=["host", "node"])
            for host in self._hosts or []:
                counted.add_metric(
                    [str(host.get("name", "")), str(host.get("node_ip", ""))],
                    float(host.get(key, 0)),
                )
            yield counted


async def render(router: Router, cluster: Cluster, sockets: Sized) -> bytes:
    """The metrics text of one scrape."""
    try:
        hosts: list[dict[str, Any]] | None = await asyncio.wait_for(
            cluster.stats(), STATS_TIMEOUT_S
        )
    except Exception:
        hosts = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Snapshot(
            router.counters,
            sockets=len(sockets),
            links=len(router.links),
            in_process_links=sum(
                isinstance(link.stream, MemoryLink) for link in router.links.values()
            ),
            epoch=cluster.placement_epoch,
            hosts=hosts,
        )
    )
    return generate_latest(registry)


def metrics_handler(
    router: web.AppKey[Router],
    cluster: web.AppKey[Cluster],
    sockets: web.AppKey[Any],
) -> Any:
    """The ``GET /metrics`` handler for an app holding these keys."""

    async def metrics(request: web.Request) -> web.Response:
        app = request.app
        body = await render(app[router], app[cluster], app[sockets])
        body += await event_metrics_text(app)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics
