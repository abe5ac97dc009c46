"""Build the cluster a :class:`Settings` describes: the one place that wires every component.

``boardcast serve`` and the test suite's servers both start board hosts through
:func:`build_cluster`, so a setting (store, history, host limits, dedicated boards) reaches the
hosts the same way in production and under test, on either backend.
"""

from __future__ import annotations

import dataclasses
import os

from actors.board import EventSink
from actors.cluster import Cluster
from actors.local import LocalCluster
from gateway.settings import Settings
from persistence.event_log import Retention
from persistence.factory import open_store
from persistence.history import parse_history_policy
from persistence.store import BoardStore
from workers.runtime import RuntimeSettings
from workers.service import WorkerService, WorkerSettings

#: The values of ``Settings.backend``.
BACKENDS = ("ray", "local")


async def build_cluster(settings: Settings, *, event_sink: EventSink | None = None) -> Cluster:
    """Start the directory and shared board hosts; the caller owns them and closes the cluster.

    Args:
        settings: ``backend`` ``"local"`` runs the hosts in this process; ``"ray"`` runs them as
            Ray actors, joining the Ray cluster at ``settings.address`` (or starting one) if
            this process is not connected yet. Store, data directory, history retention, host
            settings, dedicated boards and cluster name come from here too.
        event_sink: receives the domain events of applied updates; in-process hosts only,
            since a callback cannot reach into Ray actor processes.
    """
    if settings.backend not in BACKENDS:
        raise ValueError(f"BOARDCAST_BACKEND={settings.backend!r}: expected 'ray' or 'local'")
    if event_sink is not None and settings.backend != "local":
        raise ValueError("an event sink needs in-process hosts (backend 'local')")
    os.makedirs(settings.data_dir, exist_ok=True)
    if settings.backend == "local":
        local = _local_cluster(settings, event_sink)
        if settings.workers:
            # In this process, beside the hosts: they share the memory store's log too.
            local.workers = WorkerService.open(
                settings.store, settings.data_dir, worker_settings(settings)
            )
            await local.workers.start()
        return local
    # Imported only here: the local backend runs without starting or importing Ray.
    from actors import ray_backend

    ray_backend.init_ray(settings.address, node_ip=settings.node_ip or None)
    host_settings = settings.host_settings
    if settings.host_bind == "auto" and settings.address:
        # Joined a cluster: other nodes' gateways must reach these hosts.
        host_settings = dataclasses.replace(host_settings, bind_host="node")
    cluster = await ray_backend.RayCluster.launch(
        cluster_name=settings.cluster_name,
        hosts=settings.hosts,
        store_url=settings.store,
        data_dir=settings.data_dir,
        settings=host_settings,
        dedicated=list(settings.dedicated_boards),
        timings=settings.cluster_timings,
        in_gateway=settings.hosts_in_gateway,
    )
    # A memory store's log lives in each process: workers elsewhere would see none of it.
    if settings.workers and settings.store != "memory":
        cluster.workers = await ray_backend.start_workers(
            settings.cluster_name, settings.store, settings.data_dir, worker_settings(settings)
        )
    return cluster


def worker_settings(settings: Settings) -> WorkerSettings:
    """What the worker service needs of the settings (docs/settings.md, *Events and workers*)."""
    return WorkerSettings(
        runtime=RuntimeSettings(
            batch_size=settings.worker_batch_size,
            poll_seconds=settings.worker_poll_seconds,
            backoff_max_seconds=settings.worker_backoff_max_seconds,
            batch_pause_seconds=settings.worker_batch_pause_seconds,
        ),
        retention=Retention(
            max_age_seconds=settings.event_retention_seconds,
            max_count=settings.event_retention_count,
        ),
        plugins=settings.worker_plugins,
        nice=settings.worker_nice,
    )


async def join_cluster(settings: Settings) -> Cluster:
    """Connect to the hosts a ``boardcast serve`` started on the Ray cluster at ``address``."""
    from actors import ray_backend

    ray_backend.init_ray(settings.address, node_ip=settings.node_ip or None)
    # A configured secret that differs from the running deployment's is an error here too.
    return await ray_backend.RayCluster.join(
        cluster_name=settings.cluster_name, cluster_secret=settings.host_settings.cluster_secret
    )


class _LocalClusterWithWorkers(LocalCluster):
    """The in-process cluster, and the worker service that runs beside its hosts."""

    workers: WorkerService | None = None

    async def close(self) -> None:
        """Stop the workers first (a batch in flight comes again next time), then the hosts."""
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        await super().close()


def _local_cluster(settings: Settings, event_sink: EventSink | None) -> _LocalClusterWithWorkers:
    history = parse_history_policy(settings.history)

    async def store_factory() -> BoardStore:
        # One store per host: boards never move between hosts of one process.
        return open_store(settings.store, data_dir=settings.data_dir, history=history)

    return _LocalClusterWithWorkers(
        store_factory,
        host_count=settings.hosts,
        settings=settings.host_settings,
        dedicated=settings.dedicated_boards,
        cluster_name=settings.cluster_name,
        event_sink=event_sink,
    )
