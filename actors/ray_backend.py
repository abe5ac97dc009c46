"""The one module that imports Ray: board hosts and the directory as Ray actors.

Every node of a deployment runs ``boardcast serve``, which starts that node's
shared board hosts pinned to it (``max_restarts=-1``: a crashed host restarts
in place, starts empty and loads each board from the store on its next use).
Each host binds and advertises an address other nodes can reach (the node's Ray
IP), registers with the directory and beats every ``heartbeat_seconds``.

The directory is one detached actor on the head node. It holds the host
membership (:class:`~actors.directory.HostRegistry`); gateways and hosts watch
it, so a host that joins takes its share of the boards, and a host that drains,
stops, or dies (silent, or unreachable when a gateway reports a failed link)
has its boards placed over the others within about a second. Placement over the
members stays a pure function every gateway computes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's token auth: a process joining a cluster must opt in, and Ray reads the
# mode when it is imported. The token comes from RAY_AUTH_TOKEN, the file named
# by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (where a local cluster keeps it).
if (
    os.environ.get("RAY_AUTH_TOKEN")
    or os.environ.get("RAY_AUTH_TOKEN_PATH")
    or os.path.exists(os.path.expanduser("~/.ray/auth_token"))
):
    os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.cluster import Cluster
from actors.control import ControlHandle, InProcessHandle
from actors.directory import ClusterTimings, Directory, HostRecord, HostRegistry, Membership
from actors.handshake import new_cluster_secret
from actors.host import BoardHost, HostSettings
from actors.ray_start import METRICS_OFF, lean_head
from actors.transactions import Outcome
from crdt.board import Board
from persistence.factory import open_store
from persistence.history import parse_history_policy
from workers.service import WorkerSettings

log = logging.getLogger("boardcast.ray")

NAMESPACE = "boardcast"
# A resource only the head node has: the directory lives there, also after a head restart.
HEAD_RESOURCE = "node:__internal_head__"
# How long one control call may take before the caller gives up on it.
CALL_TIMEOUT_S = 5.0
WATCH_TIMEOUT_S = 5.0
# How long a live actor may take to answer a ping while the deployment stops.
PING_TIMEOUT_S = 1.0

T = TypeVar("T")


def directory_name(cluster_name: str) -> str:
    """The Ray actor name of a deployment's directory."""
    return f"{cluster_name}-directory"


def node_host_names(cluster_name: str, node_id: str, count: int) -> list[str]:
    """Names of the shared board hosts one node runs."""
    return [f"{cluster_name}-host-{node_id[:12]}-{index}" for index in range(count)]


def _node_ip() -> str:
    """The Ray IP of the node this process runs on."""
    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _bounded(call: Awaitable[T], timeout: float) -> T:
    return await asyncio.wait_for(call, timeout)


def resolve_addresses(settings: HostSettings, node_ip: str) -> HostSettings:
    """Bind and advertise addresses for a host on the node whose Ray IP is ``node_ip``.

    ``bind_host`` ``"node"`` binds the node's IP; a wildcard (``0.0.0.0``) binds
    every interface and advertises the node's IP; any other address is used as
    given. ``advertise_host``, if set, always wins.
    """
    bind = node_ip if settings.bind_host == "node" else settings.bind_host
    advertise = settings.advertise_host or (node_ip if bind in {"0.0.0.0", "::", ""} else bind)
    return dataclasses.replace(settings, bind_host=bind, advertise_host=advertise)


class HostActor:
    """A :class:`BoardHost` living in a Ray actor; started lazily on first use.

    Given a ``cluster_name`` it joins that deployment's membership: it registers,
    beats, and hands over boards that the membership places elsewhere.
    """

    def __init__(
        self,
        name: str,
        store_url: str,
        data_dir: str,
        settings: HostSettings,
        cluster_name: str | None = None,
        shared: bool = True,
        timings: ClusterTimings | None = None,
        in_gateway: bool = False,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self._name = name
        self._store_url = store_url
        self._data_dir = data_dir
        self._settings = settings
        self._cluster_name = cluster_name
        self._shared = shared
        self._timings = timings or ClusterTimings()
        self._in_gateway = in_gateway
        self._host: BoardHost | None = None
        self._lock = asyncio.Lock()
        self._record: HostRecord | None = None
        self._membership = Membership()
        self._checked: set[str] = set()  # boards found in place at the current epoch
        self._draining = False
        self._beating: asyncio.Task[None] | None = None

    async def _running(self) -> BoardHost:
        async with self._lock:
            if self._host is None:
                # Its snapshots carry their state vector: the store refuses one that
                # would trim entries another host appended while both held a board.
                store = open_store(
                    self._store_url,
                    data_dir=self._data_dir,
                    history=parse_history_policy(self._settings.history),
                )
                settings = resolve_addresses(self._settings, _node_ip())
                self._host = BoardHost(self._name, store, settings)
                if self._in_gateway:
                    # No Ray actor to call: the cluster's other processes use control links.
                    self._host.control_target = self
            endpoint = await self._host.start()
            if self._cluster_name is not None and self._beating is None:
                node_id = ray.get_runtime_context().get_node_id()
                self._record = HostRecord(
                    self._name, endpoint, node_id, self._shared, in_gateway=self._in_gateway
                )
                self._membership = await self._directory().register.remote(self._record)
                self._follow_placement()
                self._beating = asyncio.create_task(self._keep_membership())
            return self._host

    def _directory(self) -> Any:
        assert self._cluster_name is not None
        return ray.get_actor(directory_name(self._cluster_name), namespace=NAMESPACE)

    async def _keep_membership(self) -> None:
        directory = self._directory()
        while True:
            await asyncio.sleep(self._timings.heartbeat_seconds)
            try:
                alive, epoch, settled = await _bounded(
                    directory.heartbeat.remote(self._name), self._timings.host_timeout_seconds
                )
                if not alive and self._record is not None and not self._draining:
                    # Declared dead while alive (a pause, a partition), or the directory
                    # restarted: join again. Boards others took meanwhile come back here
                    # by the placement, and the hosts holding them hand them over.
                    log.warning("host %s is not in the membership; registering again", self._name)
                    self._membership = await directory.register.remote(self._record)
                    self._checked.clear()
                elif epoch != self._membership.epoch or settled != self._membership.settled:
                    self._membership = await directory.membership.remote()
                    self._checked.clear()
                self._follow_placement()
                await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("host %s: membership heartbeat failed: %s", self._name, exc)
                directory = self._directory_or(directory)

    def _directory_or(self, fallback: Any) -> Any:
        try:
            return self._directory()
        except Exception:
            return fallback

    def _follow_placement(self) -> None:
        """Have the host refuse opens of boards the membership places on another host.

        Only a shared host, over a settled membership: a restarted directory that has not
        heard from every host yet would send clients away from the boards' real owners.
        """
        if self._host is None:
            return
        membership = self._membership
        if self._draining:
            self._host.set_placement(lambda board_id: False)
        elif not self._shared or not membership.settled or not membership.placement():
            self._host.set_placement(None)
        else:
            name = self._name
            self._host.set_placement(lambda board_id: membership.owner(board_id) == name)

    def _board_ids(self) -> list[str]:
        return self._host.board_ids() if self._host is not None else []

    async def _reconcile(self) -> None:
        """Hand over the boards the membership places on another host."""
        membership = self._membership
        if not self._shared or self._draining or not membership.settled:
            # A restarted directory hears from the hosts one by one: moving boards over
            # a partial membership would move them twice.
            return
        if not membership.placement():
            return
        misplaced = []
        for board_id in self._board_ids():
            if board_id in self._checked:
                continue
            if self._membership.owner(board_id) == self._name:
                self._checked.add(board_id)
            else:
                misplaced.append(board_id)
        if misplaced:
            moved = await self._hand_over(misplaced)
            log.info("host %s handed %d boards over to their new hosts", self._name, moved)

    async def _hand_over(self, board_ids: list[str]) -> int:
        """Hand boards over to their new hosts (:meth:`BoardHost.hand_over`); how many moved."""
        host = self._host
        if host is None:
            return 0
        moved = 0
        for board_id in board_ids:
            self._checked.discard(board_id)
            if await host.hand_over(board_id):
                moved += 1
        return moved

    async def endpoint(self) -> tuple[str, int]:
        """Where gateways connect their frame streams."""
        host = await self._running()
        return await host.start()

    async def stats(self) -> dict[str, Any]:
        """Counts, plus the process id and node (for operators and crash tests)."""
        host = await self._running()
        return {
            **host.stats(),
            "endpoint": list(await host.start()),
            "pid": os.getpid(),
            "node_ip": _node_ip(),
            "board_ids": host.board_ids(),
        }

    async def transact(
        self, board_id: str, change: Callable[[Board], object], idempotency_key: str | None
    ) -> int:
        """See :meth:`BoardHost.transact`."""
        host = await self._running()
        return await host.transact(board_id, change, idempotency_key=idempotency_key)

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], Any],
        idempotency_key: str | None,
        origin: str | None,
    ) -> Outcome[Any]:
        """See :meth:`BoardHost.run`."""
        host = await self._running()
        return await host.run(board_id, function, idempotency_key=idempotency_key, origin=origin)

    async def release(self, board_id: str) -> bool:
        """Passivate one board now, if idle."""
        host = await self._running()
        return await host.release(board_id)

    async def drain(self) -> int:
        """Leave the placement and hand every board over; returns how many moved."""
        if self._host is None or self._record is None:
            return 0
        self._draining = True
        self._follow_placement()  # no new board opens here from now on
        with contextlib.suppress(Exception):
            self._membership = await _bounded(
                self._directory().drain.remote(self._name), CALL_TIMEOUT_S
            )
        # Gateways learn the new membership within milliseconds (they watch it);
        # the grace covers one watch answer in flight.
        await asyncio.sleep(self._timings.handover_grace_seconds)
        # Every board goes: BoardHost.stop then skips its wait for gateways' links,
        # whose clients were just sent on.
        return await self._hand_over(self._board_ids())

    async def stop(self) -> None:
        """Flush, snapshot and close; the actor can then be killed without loss."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._record is not None:
            with contextlib.suppress(Exception):
                await _bounded(self._directory().remove.remote(self._name), CALL_TIMEOUT_S)
            self._record = None
        if self._host is not None:
            await self._host.stop()
            self._host = None


RemoteHost = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(HostActor)


class DirectoryActor:
    """The :class:`Directory` and the host membership in a Ray actor.

    Creates dedicated hosts as Ray actors, drops hosts that stop beating, and
    checks a host a gateway reports unreachable by connecting to it.
    """

    def __init__(
        self,
        cluster_name: str,
        dedicated: list[str],
        store_url: str,
        data_dir: str,
        settings: HostSettings,
        timings: ClusterTimings | None = None,
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self._cluster_name = cluster_name
        self._store_url = store_url
        self._data_dir = data_dir
        self._settings = settings
        self._timings = timings or ClusterTimings()
        self._registry = HostRegistry(timeout_seconds=self._timings.host_timeout_seconds)
        self._dedicated_handles: dict[str, Any] = {}
        self._probes: dict[str, asyncio.Future[bool]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._directory = Directory(
            [],
            cluster_name=cluster_name,
            dedicated=dedicated,
            create_dedicated_host=self._create_host,
        )

    def _changed(self) -> Membership:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep())
        membership = self._registry.membership
        self._directory.set_hosts(membership.placement())
        return membership

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._timings.heartbeat_seconds / 2)
            gone = self._registry.expire()
            if gone:
                log.warning("hosts stopped beating, their boards move: %s", ", ".join(gone))
                self._changed()
                for name in gone:
                    self._wake(name)

    async def _create_host(self, name: str) -> None:
        # Owned by this directory actor: it goes when the deployment goes.
        handle: Any = RemoteHost.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(
            name, self._store_url, self._data_dir, self._settings, self._cluster_name, False
        )
        # Ray collects an actor once no handle to it is left, even a named one.
        self._dedicated_handles[name] = handle
        await handle.endpoint.remote()

    async def register(self, record: HostRecord) -> Membership:
        """A host started serving (or restarted, with a new endpoint)."""
        known = self._registry.membership.record(record.name)
        membership = self._registry.register(record)
        if known != record:
            log.info("host %s joined at %s:%d", record.name, *record.endpoint)
        return self._changed() if known != record else membership

    async def heartbeat(self, name: str) -> tuple[bool, int, bool]:
        """A host is alive; answers whether it is a member, the epoch, and if settled."""
        if self._sweeper is None:
            self._changed()
        membership = self._registry.membership
        return self._registry.heartbeat(name), membership.epoch, membership.settled

    async def membership(self) -> Membership:
        """The members now."""
        return self._registry.membership

    async def watch(self, epoch: int, timeout: float) -> Membership:
        """The members once the epoch moved past ``epoch``, or after ``timeout`` s."""
        return await self._registry.watch(epoch, timeout)

    async def drain(self, name: str) -> Membership:
        """Place no more boards on ``name``."""
        self._registry.drain(name)
        log.info("host %s is draining", name)
        return self._changed()

    async def remove(self, name: str) -> Membership:
        """``name`` stopped."""
        if self._registry.remove(name):
            log.info("host %s left", name)
        return self._changed()

    async def suspect(self, name: str) -> Membership:
        """A gateway could not reach ``name``: connect to it; drop it if that fails too."""
        record = self._registry.membership.record(name)
        if record is None:
            return self._registry.membership
        probe = self._probes.get(name)
        if probe is None:
            probe = asyncio.ensure_future(self._reachable(record.endpoint))
            self._probes[name] = probe
            probe.add_done_callback(lambda _: self._probes.pop(name, None))
        if not await asyncio.shield(probe) and self._registry.membership.record(name) == record:
            log.warning("host %s is unreachable at %s:%d; its boards move", name, *record.endpoint)
            self._registry.remove(name)
            self._wake(name)
        return self._changed()

    def _wake(self, name: str) -> None:
        """Call a dropped host once: if Ray is restarting it, it starts and registers again."""
        with contextlib.suppress(Exception):
            ray.get_actor(name, namespace=NAMESPACE).endpoint.remote()

    async def _reachable(self, endpoint: tuple[str, int]) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(*endpoint), self._timings.probe_timeout_seconds
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True

    async def locate(self, board_id: str) -> str:
        """The host serving ``board_id``."""
        return await self._directory.locate(board_id)

    def cluster_secret(self) -> bytes:
        """The secret the deployment's frame streams prove; Ray callers are trusted with it.

        The node that created this actor chose it (configured, or made up); nodes
        and gateways joining later ask for it here, so all of them share one.
        """
        secret = self._settings.cluster_secret
        assert secret is not None, "the directory is created with the cluster secret"
        return secret

    def host_names(self) -> list[str]:
        """The shared hosts boards are placed over now."""
        return self._registry.membership.placement()

    def dedicated_boards(self) -> list[str]:
        """Boards served by a host of their own."""
        return self._directory.dedicated_boards


RemoteDirectory = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(DirectoryActor)


class WorkerActor:
    """Every worker of a deployment (``workers/service.py``) in one actor process.

    One process for all of them: an actor process costs about 43 MB. Restarted by Ray after
    a crash, it opens the log again and each worker resumes from its committed offset.
    """

    def __init__(self, store_url: str, data_dir: str, settings: WorkerSettings) -> None:
        from workers.service import WorkerService

        if settings.nice > 0:
            # This process is the workers' alone: behind a backlog (the events of a bulk
            # import, say) they must not slow the hosts' opens and edits on the node.
            lower_priority(settings.nice)
        self._service = WorkerService.open(store_url, data_dir, settings)
        # Started here, not by a call: after a restart nobody would make that call.
        self._started = asyncio.get_event_loop().create_task(self._service.start())

    async def stats(self) -> dict[str, Any]:
        """Lag per consumer, this process's id and its event loop's CPU priority."""
        await self._started
        stats = await self._service.stats()
        return {**stats, "nice": os.getpriority(os.PRIO_PROCESS, threading.get_native_id())}

    async def stop(self) -> None:
        """Stop the workers; a batch in flight comes again at the next start."""
        await self._service.stop()


def lower_priority(by: int) -> None:
    """Lower the CPU priority of every thread of this process by ``by`` (up to 19).

    Linux keeps a nice value per thread, and Ray runs an actor's methods on threads
    other than the one that builds it: ``os.nice`` alone would lower only one. Threads
    started later inherit the value of the thread that starts them.
    """
    tasks = "/proc/self/task"
    threads = [int(name) for name in os.listdir(tasks)] if os.path.isdir(tasks) else [0]
    for thread in threads:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(current + by, 19))


RemoteWorkers = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(WorkerActor)


def workers_name(cluster_name: str) -> str:
    """The Ray actor name of a deployment's worker process."""
    return f"{cluster_name}-workers"


async def start_workers(
    cluster_name: str, store_url: str, data_dir: str, settings: WorkerSettings
) -> Any:
    """The deployment's worker actor (created once, on the head node); returns its handle."""
    handle: Any = RemoteWorkers.options(
        name=workers_name(cluster_name),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        resources={HEAD_RESOURCE: 0.001},
    ).remote(store_url, os.path.abspath(data_dir), settings)
    await handle.stats.remote()
    return handle


def init_ray(
    address: str | None, *, num_cpus: int | None = None, node_ip: str | None = None
) -> str:
    """Join the Ray cluster at ``address``, or start a local one; return its address.

    ``node_ip`` picks the Ray node this process attaches to when a machine runs
    several (or has several addresses); by default Ray picks the machine's IP.
    """
    if not ray.is_initialized():
        extra: dict[str, Any] = {"_node_ip_address": node_ip} if node_ip else {}
        if address:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, **extra)
        else:
            # Only the processes Boardcast uses: no autoscaler, no API server, no metrics export.
            with lean_head():
                ray.init(
                    namespace=NAMESPACE,
                    include_dashboard=False,
                    num_cpus=num_cpus,
                    logging_level=logging.WARNING,
                    _system_config=METRICS_OFF,
                    **extra,
                )
    return str(ray.get_runtime_context().gcs_address)


def _agreed_secret(running: bytes, configured: bytes | None) -> bytes:
    """The running deployment's secret; a different one configured here is an error."""
    if configured is not None and not hmac.compare_digest(running, configured):
        raise ValueError(
            "cluster_secret differs from the one the running deployment was started with"
            " (BOARDCAST_CLUSTER_SECRET must be the same on every node, or unset on joiners)"
        )
    return running


def shutdown_ray() -> None:
    """Disconnect; a local cluster this process started stops with it."""
    if ray.is_initialized():
        ray.shutdown()


class RayCluster(Cluster):
    """Gateways' view of board hosts running as Ray actors, on any node."""

    def __init__(
        self,
        directory: Any,
        membership: Membership,
        dedicated: list[str],
        *,
        own_hosts: dict[str, Any] | None = None,
        secret: bytes,
    ) -> None:
        """Use :meth:`launch` or :meth:`join` rather than this."""
        self._directory = directory
        self._secret = secret
        self._membership = membership
        self._dedicated = frozenset(dedicated)
        self._own_hosts = dict(own_hosts or {})
        self._handles: dict[str, Any] = dict(self._own_hosts)
        self._endpoints: dict[str, tuple[str, int]] = {}
        self._watching: asyncio.Task[None] | None = None
        self._closed = False
        self._membership_changed = asyncio.Event()
        self._pids: dict[Any, int] = {}  # own hosts' process ids, once they answered
        #: Set by :meth:`close` when the directory did not answer: Ray is going down.
        self.ray_lost = False
        #: The worker actor (:func:`start_workers`), stopped with the deployment's last node.
        self.workers: Any = None

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
        timings: ClusterTimings | None = None,
        in_gateway: bool = False,
    ) -> RayCluster:
        """Start this node's shared hosts (this process owns them), and the directory if absent.

        With ``in_gateway`` the shared hosts run in this process rather than as Ray
        actors: a client of a board placed on one of them crosses no process
        boundary. They take part in the membership like any host; the cluster's
        other processes reach them over control links (:mod:`actors.control`), and
        they die with this process (their boards then move, as from a dead node).
        """
        timings = timings or ClusterTimings()
        data_dir = os.path.abspath(data_dir)
        node_id = ray.get_runtime_context().get_node_id()
        # The first node makes the directory, with its secret (configured, or made up now);
        # a node joining a running deployment gets the directory that exists, and its secret.
        first = dataclasses.replace(
            settings, cluster_secret=settings.cluster_secret or new_cluster_secret()
        )
        directory: Any = RemoteDirectory.options(
            name=directory_name(cluster_name),
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            resources={HEAD_RESOURCE: 0.001},
        ).remote(cluster_name, dedicated, store_url, data_dir, first, timings)
        secret = _agreed_secret(await directory.cluster_secret.remote(), settings.cluster_secret)
        settings = dataclasses.replace(settings, cluster_secret=secret)
        names = node_host_names(cluster_name, node_id, hosts)
        handles: dict[str, Any]
        if in_gateway:
            handles = {
                name: InProcessHandle(
                    HostActor(
                        name, store_url, data_dir, settings, cluster_name, True, timings, True
                    )
                )
                for name in names
            }
        else:
            pinned = NodeAffinitySchedulingStrategy(node_id, soft=False)
            handles = {
                name: RemoteHost.options(
                    name=name, namespace=NAMESPACE, get_if_exists=True, scheduling_strategy=pinned
                ).remote(name, store_url, data_dir, settings, cluster_name, True, timings)
                for name in names
            }
        # Start every host now (each registers), so the first client does not wait.
        await asyncio.gather(*(handle.endpoint.remote() for handle in handles.values()))
        membership = await directory.membership.remote()
        known: list[str] = await directory.dedicated_boards.remote()
        cluster = cls(directory, membership, known, own_hosts=handles, secret=secret)
        # Their process ids now: at stop, a host too busy to answer a ping at once (flushing
        # and snapshotting under load) is still stopped cleanly if its process is alive.
        await cluster._answering(list(handles.values()))
        cluster._watch()
        return cluster

    @classmethod
    async def join(cls, *, cluster_name: str, cluster_secret: bytes | None = None) -> RayCluster:
        """Find the directory and hosts started by ``boardcast serve`` on this Ray cluster.

        The frame streams' secret comes from the directory (Ray's own token auth
        guards that call); a ``cluster_secret`` given here must be the same.
        """
        directory = ray.get_actor(directory_name(cluster_name), namespace=NAMESPACE)
        membership: Membership = await directory.membership.remote()
        dedicated: list[str] = await directory.dedicated_boards.remote()
        secret = _agreed_secret(await directory.cluster_secret.remote(), cluster_secret)
        cluster = cls(directory, membership, list(dedicated), secret=secret)
        cluster._watch()
        return cluster

    def _watch(self) -> None:
        self._watching = asyncio.get_running_loop().create_task(self._follow_membership())

    async def _follow_membership(self) -> None:
        while not self._closed:
            try:
                membership = await _bounded(
                    self._directory.watch.remote(self._membership.epoch, WATCH_TIMEOUT_S),
                    WATCH_TIMEOUT_S + CALL_TIMEOUT_S,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The directory is restarting (or the head is down): keep the last view.
                log.warning("cannot watch the host membership: %s", exc)
                await asyncio.sleep(0.5)
                continue
            self._adopt(membership)

    def _adopt(self, membership: Membership) -> None:
        if membership.epoch != self._membership.epoch:
            log.info("host membership %d: %s", membership.epoch, membership.placement())
            self._endpoints.clear()
            # A host that left or came back (a replaced node's new actor has the old
            # name) is looked up again: a cached handle would name the dead actor.
            now = {record.name: record for record in membership.hosts}
            for record in self._membership.hosts:
                if record.name not in self._own_hosts and now.get(record.name) != record:
                    self._drop_handle(record.name)
            self._membership_changed.set()
            self._membership_changed = asyncio.Event()
        self._membership = membership

    @property
    def stream_secret(self) -> bytes:
        """See :attr:`Cluster.stream_secret`."""
        return self._secret

    @property
    def membership(self) -> Membership:
        """The host membership as this gateway last heard it."""
        return self._membership

    @property
    def placement_epoch(self) -> int:
        """See :meth:`Cluster.placement_epoch`."""
        return self._membership.epoch

    def is_dedicated(self, board_id: str) -> bool:
        """See :meth:`Cluster.is_dedicated`."""
        return board_id in self._dedicated

    def _handle(self, host_name: str) -> Any:
        handle = self._handles.get(host_name)
        if handle is None:
            record = self._membership.record(host_name)
            if record is not None and record.in_gateway:
                # Another gateway's own host: no actor to call, a control link instead.
                handle = ControlHandle(record.endpoint, self._secret)
            else:
                handle = ray.get_actor(host_name, namespace=NAMESPACE)
            self._handles[host_name] = handle
        return handle

    def _drop_handle(self, host_name: str) -> None:
        handle = self._handles.pop(host_name, None)
        if isinstance(handle, ControlHandle):
            asyncio.get_running_loop().create_task(handle.close())

    async def locate(self, board_id: str) -> str:
        """See :meth:`Cluster.locate`.

        Shared placement is a pure function of the member hosts, so it is
        computed here; only dedicated boards need the directory (it creates
        their host). A thousand first opens then cost no Ray call at all.
        """
        if board_id in self._dedicated:
            return str(await self._directory.locate.remote(board_id))
        owner = self._membership.owner(board_id)
        while owner is None:
            # Every host is gone for the moment (one host restarting, a node being
            # replaced): wait for one to register; the caller bounds the wait.
            await self._membership_changed.wait()
            owner = self._membership.owner(board_id)
        return owner

    async def endpoint(self, host_name: str) -> tuple[str, int]:
        """See :meth:`Cluster.endpoint`: from the membership, else asked of the host."""
        record = self._membership.record(host_name)
        if record is not None:
            return record.endpoint
        cached = self._endpoints.get(host_name)
        if cached is None:
            host, port = await self._handle(host_name).endpoint.remote()
            cached = (str(host), int(port))
            self._endpoints[host_name] = cached
        return cached

    def forget(self, host_name: str) -> None:
        """See :meth:`Cluster.forget`."""
        self._endpoints.pop(host_name, None)
        if host_name not in self._own_hosts:
            # A restarted actor is found again by name.
            self._drop_handle(host_name)

    async def host_unreachable(self, host_name: str) -> None:
        """See :meth:`Cluster.host_unreachable`: the directory probes it, and drops it if dead."""
        self.forget(host_name)
        try:
            membership = await _bounded(self._directory.suspect.remote(host_name), CALL_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not report host %s unreachable: %s", host_name, exc)
            return
        self._adopt(membership)

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
        outcome: Outcome[T] = await self._handle(host_name).run.remote(
            board_id, function, idempotency_key, origin
        )
        return outcome

    async def stats(self) -> list[dict[str, Any]]:
        """See :meth:`Cluster.stats`: every member host, and this node's own."""
        names = sorted({h.name for h in self._membership.hosts} | set(self._own_hosts))
        results = await asyncio.gather(
            *(_bounded(self._handle(name).stats.remote(), CALL_TIMEOUT_S) for name in names),
            return_exceptions=True,
        )
        stats: list[dict[str, Any]] = []
        for name, result in zip(names, results, strict=True):
            answer: Any = result
            if isinstance(answer, BaseException):
                # Perhaps a handle to an actor since replaced: look it up again, once.
                self.forget(name)
                try:
                    answer = await _bounded(self._handle(name).stats.remote(), CALL_TIMEOUT_S)
                except Exception as exc:
                    raise RuntimeError(f"board host {name} does not answer: {exc}") from exc
            stats.append(dict(answer))
        return stats

    async def drain(self, timeout: float = 10.0) -> int:
        """Hand this node's boards to the other nodes' hosts; returns how many moved.

        With no other node's host to take them, nothing moves: the boards are
        flushed and snapshotted by :meth:`close` as on a single node.
        """
        others = set(self._membership.placement()) - set(self._own_hosts)
        if not self._own_hosts or not others:
            return 0
        alive = await self._answering(list(self._own_hosts.values()))
        results = await asyncio.gather(
            *(self._while_alive(h, h.drain.remote(), timeout) for h in alive),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("a host did not drain: %r", result)
        return sum(result for result in results if isinstance(result, int))

    async def _answering(self, handles: list[Any]) -> list[Any]:
        """The hosts that answer within a second.

        When every process of the deployment got SIGTERM at once, this node's
        hosts are gone already (Ray's workers exit on SIGTERM) and calls to them
        would be retried until Ray gives up: only live ones are asked to stop.
        """
        answers = await asyncio.gather(
            *(_bounded(h.stats.remote(), PING_TIMEOUT_S) for h in handles),
            return_exceptions=True,
        )
        alive = []
        for handle, answer in zip(handles, answers, strict=True):
            if isinstance(answer, dict):
                alive.append(handle)
                if answer.get("node_ip") == _node_ip():
                    self._pids[handle] = int(answer["pid"])
            elif (pid := self._pids.get(handle)) is not None and _process_alive(pid):
                # Busy, not gone: a host snapshotting many boards answers late. Stopping it
                # is still bounded (_while_alive gives up when the process exits).
                alive.append(handle)
        if len(alive) < len(handles):
            log.warning("%d of this node's hosts do not answer", len(handles) - len(alive))
        return alive

    async def _while_alive(self, handle: Any, call: Awaitable[T], timeout: float) -> T:
        """``call`` on ``handle``, abandoned if the host's process (on this node) exits."""
        pid = self._pids.get(handle)
        task = asyncio.ensure_future(call)
        deadline = asyncio.get_running_loop().time() + timeout
        while not task.done():
            if pid is not None and not _process_alive(pid):
                task.cancel()
                raise ProcessLookupError(f"board host process {pid} exited")
            if asyncio.get_running_loop().time() > deadline:
                task.cancel()
                raise TimeoutError
            await asyncio.wait({task}, timeout=0.1)
        return task.result()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop this node's hosts (each flushes and snapshots); the last node stops the rest.

        Every Ray call is bounded: when Ray itself is going down (every process
        of the deployment got SIGTERM) this returns within seconds, and
        :attr:`ray_lost` says so.
        """
        if self._closed:
            return
        self._closed = True
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        for handle in list(self._handles.values()):
            if isinstance(handle, ControlHandle):
                await handle.close()
        if not self._own_hosts:
            return
        started = asyncio.get_running_loop().time()
        alive = await self._answering(list(self._own_hosts.values()))
        await self._stop_hosts(alive, timeout)
        log.info(
            "%d board hosts flushed and stopped in %.1f s",
            len(alive),
            asyncio.get_running_loop().time() - started,
        )
        try:
            membership: Membership = await _bounded(
                self._directory.membership.remote(), PING_TIMEOUT_S
            )
        except Exception as exc:
            # The directory lives on the head node: Ray is going down, or the head is gone.
            log.warning("directory unreachable while stopping: %r", exc)
            self.ray_lost = True
            return
        self._own_hosts.clear()
        if any(host.shared for host in membership.hosts):
            return  # other nodes still serve: the directory stays for them
        dedicated = []
        for host in membership.hosts:
            with contextlib.suppress(Exception):
                dedicated.append(ray.get_actor(host.name, namespace=NAMESPACE))
        await self._stop_hosts(await self._answering(dedicated), timeout)
        with contextlib.suppress(Exception):
            ray.kill(self._directory, no_restart=True)
        if self.workers is not None:
            with contextlib.suppress(Exception):
                await _bounded(self.workers.stop.remote(), timeout)
            with contextlib.suppress(Exception):
                ray.kill(self.workers, no_restart=True)
        self._handles.clear()

    async def _stop_hosts(self, handles: list[Any], timeout: float) -> None:
        results = await asyncio.gather(
            *(self._while_alive(handle, handle.stop.remote(), timeout) for handle in handles),
            return_exceptions=True,
        )
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("a board host did not stop cleanly: %r", result)
            if not isinstance(handle, InProcessHandle):
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
