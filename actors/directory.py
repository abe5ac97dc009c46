"""The board directory: which board host serves which board.

Shared hosts are chosen by rendezvous hashing over the host names, so the
answer is a pure function of (board id, host set): two gateways opening the
same new board at the same moment always agree, and a restarted directory
gives the same answers without any saved state. A board listed as dedicated
gets a host of its own, created once on first use. The dedicated list is
fixed when the deployment starts: gateways read it once and place every other
board themselves.

On a Ray cluster the host set changes: each node's hosts join it when they
start and leave when they drain or die. :class:`HostRegistry` holds that
membership (who is alive, where its frame stream listens, who is draining) with
an epoch that grows on every change; gateways and hosts watch the epoch and
place boards over the live, non-draining hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace


def dedicated_host_name(cluster_name: str, board_id: str) -> str:
    """The name of the host that serves ``board_id`` alone."""
    return f"{cluster_name}-board-{board_id}"


def rendezvous_host(board_id: str, host_names: Iterable[str]) -> str:
    """Pick the host with the highest hash weight for ``board_id``."""
    best_name = ""
    best_weight = b""
    for name in host_names:
        weight = hashlib.blake2b(f"{name}\x00{board_id}".encode(), digest_size=8).digest()
        if weight > best_weight:
            best_name, best_weight = name, weight
    if not best_name:
        raise LookupError("no board hosts are registered")
    return best_name


class Directory:
    """Maps board ids to host names; creates dedicated hosts on demand."""

    def __init__(
        self,
        host_names: Iterable[str],
        *,
        cluster_name: str = "boardcast",
        dedicated: Iterable[str] = (),
        create_dedicated_host: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._hosts = sorted(set(host_names))
        self._cluster_name = cluster_name
        self._dedicated = set(dedicated)
        self._create = create_dedicated_host
        self._created: dict[str, asyncio.Future[None]] = {}

    @property
    def host_names(self) -> list[str]:
        """The shared hosts, sorted."""
        return list(self._hosts)

    def set_hosts(self, host_names: Iterable[str]) -> None:
        """Place shared boards over these hosts from now on (the membership changed)."""
        self._hosts = sorted(set(host_names))

    @property
    def dedicated_boards(self) -> list[str]:
        """Boards served by a host of their own, sorted."""
        return sorted(self._dedicated)

    async def locate(self, board_id: str) -> str:
        """The name of the host serving ``board_id``, creating a dedicated one if needed."""
        if board_id not in self._dedicated or self._create is None:
            return rendezvous_host(board_id, self._hosts)
        name = dedicated_host_name(self._cluster_name, board_id)
        created = self._created.get(name)
        if created is None:
            # Concurrent first opens share one creation.
            created = asyncio.ensure_future(self._create(name))
            self._created[name] = created
        try:
            await asyncio.shield(created)
        except Exception:
            # Only forget this failed attempt: a caller that already retried may
            # have started the next one, which must not be started twice.
            if self._created.get(name) is created:
                del self._created[name]
            raise
        return name


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One board host as the registry knows it."""

    name: str
    endpoint: tuple[str, int]  # where gateways open frame streams to it
    node_id: str = ""  # the Ray node it runs on
    shared: bool = True  # False for a dedicated host: it takes no shared boards
    draining: bool = False  # leaving: it takes no new boards
    in_gateway: bool = False  # runs in a gateway's process: reached by control links, not Ray


@dataclass(frozen=True, slots=True)
class Membership:
    """The registry's hosts at one epoch; the epoch grows with every change."""

    epoch: int = 0
    hosts: tuple[HostRecord, ...] = ()
    # False while a (re)started directory may not have heard from every live host yet.
    settled: bool = True

    def placement(self) -> list[str]:
        """The hosts shared boards are placed over: shared and not draining."""
        return sorted(h.name for h in self.hosts if h.shared and not h.draining)

    def record(self, name: str) -> HostRecord | None:
        """The record of host ``name``, if it is a member."""
        for host in self.hosts:
            if host.name == name:
                return host
        return None

    def owner(self, board_id: str) -> str | None:
        """The shared host a board belongs to now, or None if there is none."""
        hosts = self.placement()
        return rendezvous_host(board_id, hosts) if hosts else None


class HostRegistry:
    """Board hosts that are alive, as their heartbeats say; a plain class (no Ray).

    A host registers when it starts serving and then beats every fraction of
    ``timeout_seconds``; one silent for longer is dropped by :meth:`expire`,
    as is one found unreachable by :meth:`remove`. Every change bumps the epoch
    and wakes :meth:`watch` callers.
    """

    def __init__(
        self, *, timeout_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._timeout = timeout_seconds
        self._clock = clock
        self._hosts: dict[str, HostRecord] = {}
        self._last_beat: dict[str, float] = {}
        self._epoch = 0
        self._changed = asyncio.Event()
        self._started = clock()

    @property
    def settled(self) -> bool:
        """True once every live host has had time to register (one timeout after start)."""
        return self._clock() - self._started >= self._timeout

    @property
    def membership(self) -> Membership:
        """The current members, sorted by name."""
        hosts = tuple(self._hosts[name] for name in sorted(self._hosts))
        return Membership(self._epoch, hosts, self.settled)

    def _bump(self) -> None:
        self._epoch += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def register(self, record: HostRecord) -> Membership:
        """Add or update a host (a restarted host comes back with a new endpoint)."""
        self._last_beat[record.name] = self._clock()
        if self._hosts.get(record.name) != record:
            self._hosts[record.name] = record
            self._bump()
        return self.membership

    def heartbeat(self, name: str) -> bool:
        """Record that ``name`` is alive; False if it is not a member (it must register)."""
        if name not in self._hosts:
            return False
        self._last_beat[name] = self._clock()
        return True

    def drain(self, name: str) -> Membership:
        """Mark ``name`` as leaving: no board is placed on it any more."""
        record = self._hosts.get(name)
        if record is not None and not record.draining:
            self._hosts[name] = replace(record, draining=True)
            self._bump()
        return self.membership

    def remove(self, name: str) -> bool:
        """Drop ``name`` (stopped, or found dead); True if it was a member."""
        self._last_beat.pop(name, None)
        if self._hosts.pop(name, None) is None:
            return False
        self._bump()
        return True

    def expire(self) -> list[str]:
        """Drop every host silent for longer than the timeout; their names."""
        now = self._clock()
        silent = [n for n, beat in self._last_beat.items() if now - beat > self._timeout]
        for name in silent:
            self.remove(name)
        return silent

    async def watch(self, epoch: int, timeout: float) -> Membership:
        """The membership once its epoch differs from ``epoch``, or after ``timeout`` s."""
        if self._epoch == epoch:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.membership


@dataclass(frozen=True, slots=True)
class ClusterTimings:
    """How fast a multi-node deployment notices a host gone; see docs/operations.md."""

    heartbeat_seconds: float = 0.5  # how often each host tells the directory it is alive
    host_timeout_seconds: float = 2.0  # a host silent this long is dropped, its boards re-placed
    probe_timeout_seconds: float = 0.5  # connecting to a host a gateway reported unreachable
    handover_grace_seconds: float = 0.3  # between a drain's announcement and closing its clients
