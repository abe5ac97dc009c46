"""The frame stream between gateways and board hosts.

Ray carries the control plane (where is board X, start, stop). Frames travel
on one long-lived TCP connection per (gateway, board host) pair, as a stream of
msgpack arrays, one per typed message of :mod:`actors.messages` (the only
module that knows their layout). Everything written during one event-loop tick
leaves in a single ``transport.write``, so a burst of updates costs one syscall
per link, not one per frame, and no Ray call is ever made per frame.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgpack

from actors.messages import Message, decode, encode

# Past this many unsent bytes the peer is not keeping up: the link is dropped
# and clients reconnect and resync rather than the process growing unbounded.
# Readers stop reading from a link above DRAIN_ABOVE (backpressure), so only
# fan-out driven by other links can push a buffer this far.
DEFAULT_MAX_BUFFERED = 512 * 1024 * 1024
DRAIN_ABOVE = 4 * 1024 * 1024
_READ_CHUNK = 256 * 1024
# Bigger than any frame a gateway accepts from a client.
_MAX_MESSAGE = 256 * 1024 * 1024


class LinkOverflow(Exception):
    """The peer of a link stopped reading; its buffered output passed the bound."""


class StreamLink:
    """One side of a gateway-host connection: batched msgpack out, decoded messages in."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._max_buffered = max_buffered
        self._packer = msgpack.Packer(use_bin_type=True)
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_MESSAGE)
        self._out = bytearray()
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.closed = False

    @property
    def peer(self) -> str:
        """The remote address, for logs."""
        info = self._writer.get_extra_info("peername")
        return f"{info[0]}:{info[1]}" if info else "?"

    def send(self, message: Message) -> None:
        """Queue ``message``; it leaves with everything else queued this tick."""
        if self.closed:
            return
        self._out += self._packer.pack(encode(message))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._out:
            return
        if self._transport.is_closing():
            self._out.clear()
            return
        self._transport.write(bytes(self._out))
        self._out.clear()
        if self._transport.get_write_buffer_size() > self._max_buffered:
            self.abort()

    def needs_drain(self) -> bool:
        """True when the peer is behind and the sender should wait before sending more."""
        return len(self._out) + self._transport.get_write_buffer_size() > DRAIN_ABOVE

    async def drain(self) -> None:
        """Write what is queued, then wait until the transport's buffer is below its mark."""
        self._flush()
        if not self.closed and not self._transport.is_closing():
            await self._writer.drain()

    async def read_batches(self) -> list[Message] | None:
        """Read whatever arrived and return the complete messages, or ``None`` at EOF.

        Raises:
            StreamProtocolError: the peer sent something that is not a message.
        """
        unpacker = self._unpacker
        while True:
            data = await self._reader.read(_READ_CHUNK)
            if not data:
                return None
            unpacker.feed(data)
            batch = [decode(raw) for raw in unpacker]
            if batch:
                return batch

    def abort(self) -> None:
        """Drop the connection at once."""
        self.closed = True
        self._out.clear()
        self._transport.abort()

    async def close(self) -> None:
        """Flush what is queued and close."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
