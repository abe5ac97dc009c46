"""What a server-side call on a board returns, wherever the board lives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The result of :meth:`actors.host.BoardHost.run` (and ``Cluster.run``).

    Attributes:
        version: the board's version (store sequence number) once what the call
            changed is durable; for a call that changed nothing, the version it read.
        value: what the function returned; ``None`` for a retry that did not run.
        applied: False if an earlier call with the same idempotency key had
            already applied, so the function did not run again.
    """

    version: int
    value: T | None
    applied: bool = True
