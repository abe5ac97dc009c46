"""The in-process cluster: board hosts running in the gateway's own event loop.

The gateway and host code paths are the same as on Ray: frames travel over
in-process links (:mod:`actors.memory_link`), or over loopback streams with
``BOARDCAST_IN_PROCESS_LINKS=false``; only the control plane is a direct call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar

from actors.board import EventSink
from actors.cluster import Cluster
from actors.directory import Directory
from actors.handshake import new_cluster_secret
from actors.host import BoardHost, HostSettings
from actors.transactions import Outcome
from crdt.board import Board
from persistence.store import BoardStore

T = TypeVar("T")

StoreFactory = Callable[[], Awaitable[BoardStore]]


class LocalCluster(Cluster):
    """Board hosts and directory as plain objects in this process."""

    def __init__(
        self,
        store_factory: StoreFactory,
        *,
        host_count: int = 2,
        settings: HostSettings | None = None,
        dedicated: Iterable[str] = (),
        cluster_name: str = "boardcast",
        event_sink: EventSink | None = None,
    ) -> None:
        self._store_factory = store_factory
        self._settings = settings or HostSettings()
        if self._settings.cluster_secret is None:
            # Made here, once: every host of this cluster, and its gateway, share it.
            self._settings = replace(self._settings, cluster_secret=new_cluster_secret())
        self._event_sink = event_sink
        self.hosts: dict[str, BoardHost] = {}
        self._dedicated = frozenset(dedicated)
        names = [f"{cluster_name}-host-{index}" for index in range(host_count)]
        self.directory = Directory(
            names,
            cluster_name=cluster_name,
            dedicated=self._dedicated,
            create_dedicated_host=self._create_host,
        )

    async def _create_host(self, name: str) -> None:
        if name not in self.hosts:
            self.hosts[name] = BoardHost(
                name, await self._store_factory(), self._settings, event_sink=self._event_sink
            )

    @property
    def stream_secret(self) -> bytes:
        """See :attr:`Cluster.stream_secret`."""
        assert self._settings.cluster_secret is not None
        return self._settings.cluster_secret

    async def locate(self, board_id: str) -> str:
        """See :meth:`Cluster.locate`."""
        return await self.directory.locate(board_id)

    async def endpoint(self, host_name: str) -> tuple[str, int]:
        """See :meth:`Cluster.endpoint`."""
        await self._create_host(host_name)
        return await self.hosts[host_name].start()

    def forget(self, host_name: str) -> None:
        """Nothing is cached: hosts in this process cannot move."""

    def is_dedicated(self, board_id: str) -> bool:
        """See :meth:`Cluster.is_dedicated`."""
        return board_id in self._dedicated

    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """See :meth:`Cluster.transact`."""
        host_name = await self.locate(board_id)
        await self._create_host(host_name)
        host = self.hosts[host_name]
        await host.start()
        return await host.transact(board_id, change, idempotency_key=idempotency_key)

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> Outcome[T]:
        """See :meth:`Cluster.run`."""
        host_name = await self.locate(board_id)
        await self._create_host(host_name)
        host = self.hosts[host_name]
        await host.start()
        return await host.run(board_id, function, idempotency_key=idempotency_key, origin=origin)

    async def stats(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.stats`."""
        return [{**host.stats(), "board_ids": host.board_ids()} for host in self.hosts.values()]

    async def close(self) -> None:
        """Stop every host: each flushes and snapshots its boards first."""
        for host in self.hosts.values():
            await host.stop()
        self.hosts.clear()
