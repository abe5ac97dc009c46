"""In-process links: a gateway and a board host in one event loop, with no socket between.

When a board host runs in the gateway's own process (``--backend local``, or
``--hosts-in-gateway`` on Ray), a frame-stream link between them over loopback TCP
would pack every message with msgpack, write it, wake the loop on the socket, read
it and unpack it again, all to move an object from one coroutine to another. A
:class:`MemoryLink` pair moves the message objects themselves: what one end sends
during a tick is the next batch its peer reads, as on a stream, and nothing is
copied or encoded. The messages are frozen dataclasses holding ``bytes``, so the two
ends can share them.

A host that accepts in-process links :func:`listen`\\ s on its stream endpoint; a
gateway (or a direct connection) that is about to dial an endpoint asks
:func:`dial` first, and gets a link when a host of this process, on this event
loop, listens there. Every other peer is reached over TCP as before, and the host
still serves those peers on its socket. No handshake is run: the registry is this
process's memory, which no peer outside it can reach.

The bounds are a stream's: a reader that falls more than ``DRAIN_ABOVE`` bytes
behind makes :meth:`MemoryLink.needs_drain` true, and one more than
``max_buffered`` behind loses the link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.messages import Message
from actors.stream import DEFAULT_MAX_BUFFERED, DRAIN_ABOVE, StreamLink

# What a message costs in a peer's inbox beside its payload, for the bounds.
_MESSAGE_OVERHEAD = 64

Accept = Callable[[str], "MemoryLink | None"]

# Endpoint -> (the loop the host runs on, what takes a new link's host end).
_listeners: dict[tuple[str, int], tuple[asyncio.AbstractEventLoop, Accept]] = {}


def _cost(message: Message) -> int:
    data = getattr(message, "data", None)
    return _MESSAGE_OVERHEAD + (len(data) if data is not None else 0)


class MemoryLink:
    """One end of an in-process link: :class:`~actors.stream.StreamLink`'s interface, no bytes."""

    def __init__(self, *, name: str, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self._name = name
        self._max_buffered = max_buffered
        self._loop = asyncio.get_running_loop()
        self._other: MemoryLink | None = None
        # Messages the peer sent that this end has not read, and what they weigh.
        self._inbox: list[Message] = []
        self._inbox_bytes = 0
        self._ended = False  # the peer closed or aborted: EOF once the inbox is read
        self._readable: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None  # set when the peer reads
        self.closed = False

    @property
    def peer(self) -> str:
        """What logs call the other end."""
        return self._name

    def send(self, message: Message) -> None:
        """Put ``message`` in the peer's inbox; it reads everything sent this tick at once."""
        other = self._other
        if self.closed or other is None or other.closed:
            return
        other._inbox.append(message)
        other._inbox_bytes += _cost(message)
        if other._inbox_bytes > self._max_buffered:
            # The peer stopped reading: what it has not read goes with the link.
            other._inbox, other._inbox_bytes = [], 0
            self.abort()
            return
        _wake(other._readable)

    def needs_drain(self) -> bool:
        """True when the peer is behind and the sender should wait before sending more."""
        other = self._other
        return other is not None and not other.closed and other._inbox_bytes > DRAIN_ABOVE

    async def drain(self) -> None:
        """Wait until the peer has read its inbox down to the mark (or is gone)."""
        while self.needs_drain() and not self.closed:
            other = self._other
            assert other is not None
            waiter = other._drained
            if waiter is None or waiter.done():
                waiter = other._drained = self._loop.create_future()
            await waiter

    async def read_batches(self) -> list[Message] | None:
        """The messages the peer sent since the last call, or ``None`` once it is gone."""
        while not self._inbox:
            if self._ended or self.closed:
                return None
            waiter = self._readable = self._loop.create_future()
            try:
                await waiter
            finally:
                self._readable = None
        batch, self._inbox, self._inbox_bytes = self._inbox, [], 0
        _wake(self._drained)
        return batch

    def abort(self) -> None:
        """Drop the link at once: what this end has not read is discarded."""
        if self.closed:
            return
        self.closed = True
        self._inbox, self._inbox_bytes = [], 0
        _wake(self._readable)
        _wake(self._drained)
        other = self._other
        if other is not None:
            other._end()

    async def close(self) -> None:
        """Close: the peer still reads what was sent, then sees the end of the link."""
        self.abort()

    def _end(self) -> None:
        self._ended = True
        _wake(self._readable)
        _wake(self._drained)


#: Either kind of link: the gateway and the host treat both alike.
AnyLink = StreamLink | MemoryLink


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def connect(first: MemoryLink, second: MemoryLink) -> None:
    """Join two new ends: what one sends, the other reads."""
    first._other, second._other = second, first


def pair(
    *,
    names: tuple[str, str] = ("in-process", "in-process"),
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> tuple[MemoryLink, MemoryLink]:
    """Two connected ends; ``names[0]`` is what the first end calls its peer."""
    first = MemoryLink(name=names[0], max_buffered=max_buffered)
    second = MemoryLink(name=names[1], max_buffered=max_buffered)
    connect(first, second)
    return first, second


def listen(endpoint: tuple[str, int], accept: Accept) -> None:
    """Take in-process links dialled to ``endpoint``.

    ``accept`` is called with the dialler's name and returns the host's end of the new
    link (its task reads it from the next tick on), or ``None`` to refuse it.
    """
    _listeners[endpoint] = (asyncio.get_running_loop(), accept)


def unlisten(endpoint: tuple[str, int], accept: Accept | None = None) -> None:
    """Stop taking links at ``endpoint`` (only if ``accept`` is still the listener, when given)."""
    entry = _listeners.get(endpoint)
    if entry is not None and (accept is None or entry[1] == accept):
        del _listeners[endpoint]


def dial(
    endpoint: tuple[str, int], *, name: str = "gateway", max_buffered: int = DEFAULT_MAX_BUFFERED
) -> MemoryLink | None:
    """A link to the host of this process and loop listening at ``endpoint``, if there is one."""
    entry = _listeners.get(endpoint)
    if entry is None:
        return None
    loop, accept = entry
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    if running is not loop:
        return None
    near = MemoryLink(name=f"in-process {endpoint[0]}:{endpoint[1]}", max_buffered=max_buffered)
    far = accept(name)
    if far is None:
        return None
    connect(near, far)
    return near
