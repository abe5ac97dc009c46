"""What a gateway needs from the cluster: where a board lives, and how to reach its host.

Two implementations: :class:`actors.local.LocalCluster` runs the hosts in the
gateway's own process (tests, development) and
:class:`actors.ray_backend.RayCluster` finds them as Ray actors anywhere on a
Ray cluster. Gateways speak to both through this interface only.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, TypeVar

from actors.transactions import Outcome
from crdt.board import Board

T = TypeVar("T")


class Cluster(abc.ABC):
    """The control plane, as seen by a gateway."""

    @abc.abstractmethod
    async def locate(self, board_id: str) -> str:
        """Name of the host that serves ``board_id``."""

    @abc.abstractmethod
    async def endpoint(self, host_name: str) -> tuple[str, int]:
        """The frame-stream address of a host, starting it if needed."""

    @abc.abstractmethod
    def forget(self, host_name: str) -> None:
        """Drop cached knowledge of a host whose link failed (it may have moved)."""

    async def host_unreachable(self, host_name: str) -> None:
        """A link to ``host_name`` failed or could not be opened: have it checked.

        Returns once the cluster decided; if the host is gone, the next
        :meth:`locate` places its boards elsewhere. By default only the cached
        endpoint is dropped (hosts that cannot move).
        """
        self.forget(host_name)

    async def drain(self) -> int:
        """Hand the boards of the hosts this process started to other hosts, if there are any.

        Returns how many boards moved. By default nothing can move (in-process hosts).
        """
        return 0

    @property
    def stream_secret(self) -> bytes:
        """The cluster secret a frame stream to one of its hosts proves (actors/handshake.py)."""
        raise NotImplementedError(f"{type(self).__name__} has no frame streams")

    @property
    def placement_epoch(self) -> int:
        """Grows whenever the set of hosts boards are placed over changes."""
        return 0

    def is_dedicated(self, board_id: str) -> bool:
        """Whether ``board_id`` has a host of its own (its placement never moves)."""
        return False

    @abc.abstractmethod
    async def transact(
        self,
        board_id: str,
        change: Callable[[Board], object],
        *,
        idempotency_key: str | None = None,
    ) -> int:
        """Run ``change`` on the board's actor, wherever it lives, as one transaction.

        Returns the board's version once the change is durable; see
        :meth:`actors.host.BoardHost.transact`. On Ray ``change`` travels
        pickled: use module-level functions, ``functools.partial`` or
        ``operator.methodcaller`` on :class:`~crdt.board.Board` methods.
        """

    async def run(
        self,
        board_id: str,
        function: Callable[[Board], T],
        *,
        idempotency_key: str | None = None,
        origin: str | None = None,
    ) -> Outcome[T]:
        """Run ``function`` on the board's actor as one transaction; its value and version.

        See :meth:`actors.host.BoardHost.run`: what :meth:`transact` does, with
        the function's return value (a function that changes nothing is a
        read) and who made the change (``origin``, kept in the log).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot run functions on boards")

    @abc.abstractmethod
    async def stats(self) -> list[dict[str, Any]]:
        """One stats dict per host."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop what this object started; hosts flush and snapshot first."""
