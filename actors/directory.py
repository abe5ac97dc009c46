"""The board directory: which board host serves which board.

Shared hosts are chosen by rendezvous hashing over the host names, so the
answer is a pure function of (board id, host set): two gateways opening the
same new board at the same moment always agree, and a restarted directory
gives the same answers without any saved state. A board listed as dedicated
gets a host of its own, created once on first use. The dedicated list is
fixed when the deployment starts: gateways read it once and place every other
board themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable


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
