"""Extensions: the hooks through which auth, read-only access and workers plug in.

An extension is a class with some of the hook methods below; the ones it does
not define do nothing. Extensions are named in settings as ``module:factory``
(``boardcast serve --extension mypkg.audit:AuditLog``, repeatable, or
``BOARDCAST_EXTENSIONS=a:b,c:d``); the factory is called with no arguments in
every process that runs hooks: the gateway, and every board host (on Ray, each
host actor loads its own).

Where each hook runs, in this order over a session's life:

=================  ========  ==================================================
hook               runs in   when, and what it may do
=================  ========  ==================================================
``on_connect``     gateway   a WebSocket asks for a board, before any frame is
                             read. Raise :class:`Refused` to close it with a
                             named code; return a :class:`Session` to name the
                             client or make the session read-only.
``on_message``     gateway   a frame arrived from the client, before it is
                             forwarded. Raise :class:`Refused` to close the
                             client with a named code (defining it costs an
                             await per frame).
``on_load``        host      a board was loaded from the store into memory.
``on_change``      host      updates of a board are durable: board id, version
                             (the store's sequence number), domain events.
``on_store``       host      a snapshot of the board was written (board id,
                             the version it covers).
``on_disconnect``  gateway   the session ended, for whatever reason.
=================  ========  ==================================================

Hooks of several extensions run in the order the extensions are listed. For
``on_connect`` the first :class:`Refused` stops the chain; the session is
read-only if any extension says so, and named by the last that names it. A hook
that raises anything else is logged and skipped (``on_connect``: the client is
closed with 1011), so one broken extension does not stop the others.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.messages import MAX_ORIGIN
from crdt.close_codes import REASONS, CloseCode
from crdt.errors import BoardcastError
from crdt.events import DomainEvent

log = logging.getLogger("boardcast.extensions")


class Refused(BoardcastError):
    """Raised by ``on_connect`` to refuse a connection with a named close code."""

    def __init__(self, code: CloseCode, reason: str | None = None) -> None:
        super().__init__(reason or REASONS.get(code, "refused"))
        self.close_code = code


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What a gateway knows of a client asking for a board."""

    board_id: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    remote: str | None


@dataclass(frozen=True, slots=True)
class Session:
    """What ``on_connect`` decided about a client."""

    identity: str | None = None  # who the client is, for logs and origins
    read_only: bool = False  # its updates are refused; it still reads and has presence


@dataclass(frozen=True, slots=True)
class Change:
    """Durable updates of one board, made by one origin: versions ``version - updates + 1``
    to ``version``.

    Delivered at least once: after a crash, changes whose delivery it may have cut
    off come again, one per stored update. They arrive in version order, so a
    consumer that keeps the highest ``version`` it handled drops a change whose
    ``version`` is not above it and never handles an event twice.
    """

    board_id: str
    version: int  # the board's sequence number of the last update in the change
    updates: int  # how many stored updates it covers
    events: Sequence[DomainEvent] = field(default_factory=tuple)
    origin: str | None = None  # who made them (``on_connect``'s identity, transact's origin)


def load_extensions(specs: Sequence[str]) -> list[Any]:
    """Instantiate ``module:factory`` specs, in order.

    Raises:
        ValueError: a spec is malformed or names nothing importable.
    """
    loaded: list[Any] = []
    for spec in specs:
        module_name, sep, factory_name = spec.strip().partition(":")
        if not sep or not module_name or not factory_name:
            raise ValueError(f"extension {spec!r}: expected 'module:factory'")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"extension {spec!r} cannot be loaded: {exc}") from exc
        loaded.append(factory())
    return loaded


class Extensions:
    """The loaded extensions of one process, and the order their hooks run in."""

    def __init__(self, extensions: Sequence[Any] = ()) -> None:
        self._extensions = list(extensions)

    @classmethod
    def from_specs(cls, specs: Sequence[str]) -> Extensions:
        """Load ``module:factory`` specs (see :func:`load_extensions`)."""
        return cls(load_extensions(specs))

    def __bool__(self) -> bool:
        return bool(self._extensions)

    def defines(self, hook: str) -> bool:
        """True if any extension defines ``hook``."""
        return any(callable(getattr(ext, hook, None)) for ext in self._extensions)

    async def on_connect(self, request: ConnectRequest) -> Session:
        """Run every ``on_connect``; raise :class:`Refused` if one refuses."""
        identity: str | None = None
        read_only = False
        for ext in self._extensions:
            hook = getattr(ext, "on_connect", None)
            if hook is None:
                continue
            session = await hook(request)
            if session is not None:
                identity = session.identity if session.identity is not None else identity
                read_only = read_only or session.read_only
        if identity is not None and len(identity) > MAX_ORIGIN:
            # Stored with every update the client makes: a bug in an extension, not the client's.
            raise ValueError(f"on_connect named the client with {len(identity)} characters")
        return Session(identity, read_only)

    async def on_message(self, board_id: str, session: Session, frame: bytes) -> None:
        """Run every ``on_message``; one raising :class:`Refused` closes the client."""
        for ext in self._extensions:
            hook = getattr(ext, "on_message", None)
            if hook is not None:
                await hook(board_id, session, frame)

    async def on_store(self, board_id: str, version: int) -> None:
        """Run every ``on_store``."""
        await self._each("on_store", board_id, version)

    async def on_load(self, board_id: str) -> None:
        """Run every ``on_load``."""
        await self._each("on_load", board_id)

    async def on_change(self, change: Change) -> None:
        """Run every ``on_change``."""
        await self._each("on_change", change)

    async def on_disconnect(self, board_id: str, session: Session) -> None:
        """Run every ``on_disconnect``."""
        await self._each("on_disconnect", board_id, session)

    async def _each(self, name: str, *args: Any) -> None:
        for ext in self._extensions:
            hook = getattr(ext, name, None)
            if hook is None:
                continue
            try:
                await hook(*args)
            except Exception:
                log.exception("extension %s failed in %s", type(ext).__name__, name)
