"""The one module that imports Ray: board hosts and the directory as Ray actors.

Board hosts are async Ray actors restarted by Ray after a crash
(``max_restarts=-1``); a restarted host starts empty and loads each board from
the store on its next use. The directory is a Ray actor too, but holds no state
worth saving: shared placement is a pure function of the host names.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# A local cluster uses Ray's token auth with the token in ~/.ray/auth_token; a
# process joining it must opt in, and Ray reads the mode when it is imported.
if os.path.exists(os.path.expanduser("~/.ray/auth_token")):
    os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray

from actors.cluster import Cluster
from actors.directory import Directory, rendezvous_host
from actors.host import BoardHost, HostSettings
from crdt.board import Board
from persistence.factory import open_store
from persistence.history import parse_history_policy

log = logging.getLogger("boardcast.ray")

NAMESPACE = "boardcast"


def directory_name(cluster_name: str) -> str:
    """The Ray actor name of a deployment's directory."""
    return f"{cluster_name}-directory"


def shared_host_names(cluster_name: str, count: int) -> list[str]:
    """Names of a deployment's shared board hosts."""
    return [f"{cluster_name}-host-{index}" for index in range(count)]


class HostActor:
    """A :class:`BoardHost` living in a Ray actor; started lazily on first use."""

    def __init__(self, name: str, store_url: str, data_dir: str, settings: HostSettings) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self._name = name
        self._store_url = store_url
        self._data_dir = data_dir
        self._settings = settings
        self._host: BoardHost | None = None
        self._lock = asyncio.Lock()

    async def _running(self) -> BoardHost:
        async with self._lock:
            if self._host is None:
                store = open_store(
                    self._store_url,
                    data_dir=self._data_dir,
                    history=parse_history_policy(self._settings.history),
                )
                self._host = BoardHost(self._name, store, self._settings)
            await self._host.start()
            return self._host

    async def endpoint(self) -> tuple[str, int]:
        """Where gateways connect their frame streams."""
        host = await self._running()
        return await host.start()

    async def stats(self) -> dict[str, Any]:
        """Counts, plus the process id (for operators and crash tests)."""
        host = await self._running()
        return {**host.stats(), "pid": os.getpid()}

    async def transact(
        self, board_id: str, change: Callable[[Board], object], idempotency_key: str | None
    ) -> int:
        """See :meth:`BoardHost.transact`."""
        host = await self._running()
        return await host.transact(board_id, change, idempotency_key=idempotency_key)

    async def release(self, board_id: str) -> bool:
        """Passivate one board now, if idle."""
        host = await self._running()
        return await host.release(board_id)

    async def stop(self) -> None:
        """Flush, snapshot and close; the actor can then be killed without loss."""
        if self._host is not None:
            await self._host.stop()
            self._host = None


RemoteHost = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(HostActor)


class DirectoryActor:
    """The :class:`Directory` in a Ray actor; creates dedicated hosts as Ray actors."""

    def __init__(
        self,
        cluster_name: str,
        host_names: list[str],
        dedicated: list[str],
        store_url: str,
        data_dir: str,
        settings: HostSettings,
    ) -> None:
        self._store_url = store_url
        self._data_dir = data_dir
        self._settings = settings
        self._dedicated_handles: dict[str, Any] = {}
        self._directory = Directory(
            host_names,
            cluster_name=cluster_name,
            dedicated=dedicated,
            create_dedicated_host=self._create_host,
        )

    async def _create_host(self, name: str) -> None:
        # Owned by this directory actor: it goes when the deployment goes.
        handle: Any = RemoteHost.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(
            name, self._store_url, self._data_dir, self._settings
        )
        # Ray collects an actor once no handle to it is left, even a named one.
        self._dedicated_handles[name] = handle
        await handle.endpoint.remote()

    async def locate(self, board_id: str) -> str:
        """The host serving ``board_id``."""
        return await self._directory.locate(board_id)

    def host_names(self) -> list[str]:
        """The shared hosts."""
        return self._directory.host_names

    def dedicated_boards(self) -> list[str]:
        """Boards served by a host of their own."""
        return self._directory.dedicated_boards


RemoteDirectory = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(DirectoryActor)


def init_ray(address: str | None, *, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address``, or start a local one; return its address."""
    if not ray.is_initialized():
        if address:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
        else:
            ray.init(
                namespace=NAMESPACE,
                include_dashboard=False,
                num_cpus=num_cpus,
                logging_level=logging.WARNING,
            )
    return str(ray.get_runtime_context().gcs_address)


def shutdown_ray() -> None:
    """Disconnect; a local cluster this process started stops with it."""
    if ray.is_initialized():
        ray.shutdown()


class RayCluster(Cluster):
    """Gateways' view of board hosts running as Ray actors."""

    def __init__(
        self, directory: Any, host_names: list[str], dedicated: list[str], *, owner: bool
    ) -> None:
        """Use :meth:`launch` or :meth:`join` rather than this."""
        self._directory = directory
        self._host_names = host_names
        self._dedicated = frozenset(dedicated)
        self._owner = owner
        self._handles: dict[str, Any] = {}
        self._endpoints: dict[str, tuple[str, int]] = {}

    @classmethod
    async def launch(
        cls,
        *,
        cluster_name: str,
        hosts: int,
        store_url: str,
        data_dir: str,
        settings: HostSettings,
        dedicated: list[str],
    ) -> RayCluster:
        """Create the directory and shared hosts (this process owns them)."""
        names = shared_host_names(cluster_name, hosts)
        data_dir = os.path.abspath(data_dir)
        handles = {}
        for name in names:
            handles[name] = RemoteHost.options(name=name, get_if_exists=True).remote(
                name, store_url, data_dir, settings
            )
        directory = RemoteDirectory.options(
            name=directory_name(cluster_name), get_if_exists=True
        ).remote(cluster_name, names, dedicated, store_url, data_dir, settings)
        cluster = cls(directory, names, dedicated, owner=True)
        cluster._handles.update(handles)
        # Start every host now, so the first client does not wait for it.
        await asyncio.gather(*(cluster.endpoint(name) for name in names))
        return cluster

    @classmethod
    async def join(cls, *, cluster_name: str) -> RayCluster:
        """Find the directory and hosts started by ``boardcast serve`` on this Ray cluster."""
        directory = ray.get_actor(directory_name(cluster_name), namespace=NAMESPACE)
        names: list[str] = await directory.host_names.remote()
        dedicated: list[str] = await directory.dedicated_boards.remote()
        return cls(directory, list(names), list(dedicated), owner=False)

    def _handle(self, host_name: str) -> Any:
        handle = self._handles.get(host_name)
        if handle is None:
            handle = ray.get_actor(host_name, namespace=NAMESPACE)
            self._handles[host_name] = handle
        return handle

    async def locate(self, board_id: str) -> str:
        """See :meth:`Cluster.locate`.

        Shared placement is a pure function of the host names, so it is computed
        here; only dedicated boards need the directory (it creates their host).
        A thousand first opens then cost no Ray call at all.
        """
        if board_id not in self._dedicated:
            return rendezvous_host(board_id, self._host_names)
        return str(await self._directory.locate.remote(board_id))

    async def endpoint(self, host_name: str) -> tuple[str, int]:
        """See :meth:`Cluster.endpoint`."""
        cached = self._endpoints.get(host_name)
        if cached is None:
            host, port = await self._handle(host_name).endpoint.remote()
            cached = (str(host), int(port))
            self._endpoints[host_name] = cached
        return cached

    def forget(self, host_name: str) -> None:
        """See :meth:`Cluster.forget`."""
        self._endpoints.pop(host_name, None)

    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """See :meth:`Cluster.transact`."""
        host_name = await self.locate(board_id)
        version = await self._handle(host_name).transact.remote(board_id, change, idempotency_key)
        return int(version)

    async def stats(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.stats`."""
        names = sorted(set(self._host_names) | set(self._handles))
        results = await asyncio.gather(*(self._handle(name).stats.remote() for name in names))
        return [dict(result) for result in results]

    async def close(self) -> None:
        """If this process launched the hosts, stop them: each flushes and snapshots."""
        if not self._owner:
            return
        for name, handle in list(self._handles.items()):
            try:
                await asyncio.wait_for(handle.stop.remote(), 30)
            except Exception as exc:
                log.warning("host %s did not stop cleanly: %s", name, exc)
            ray.kill(handle, no_restart=True)
        ray.kill(self._directory, no_restart=True)
        self._handles.clear()
