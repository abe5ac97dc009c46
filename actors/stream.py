"""The frame stream between gateways and board hosts.

Ray carries the control plane (where is board X, start, stop). Frames travel
on one long-lived TCP connection per (gateway, board host) pair, as a stream of
msgpack arrays, one per typed message of :mod:`actors.messages` (the only
module that knows their layout). Everything written during one event-loop tick
leaves in a single ``transport.write``, so a burst of updates costs one syscall
per link, not one per frame, and no Ray call is ever made per frame.

No frame is read or written before the peer has authenticated: a gateway dials
with :func:`open_stream`, and a host lets a new connection in through
:meth:`StreamGuard.admit`; both run the handshake of :mod:`actors.handshake`
under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable

import msgpack

from actors.handshake import Handshake, HandshakeRefused, Refusal, RefusalLog, Role
from actors.messages import Message, decode, encode

log = logging.getLogger("boardcast.stream")

# Past this many unsent bytes the peer is not keeping up: the link is dropped
# and clients reconnect and resync rather than the process growing unbounded.
# Readers stop reading from a link above DRAIN_ABOVE (backpressure), so only
# fan-out driven by other links can push a buffer this far.
DEFAULT_MAX_BUFFERED = 512 * 1024 * 1024
DRAIN_ABOVE = 4 * 1024 * 1024
_READ_CHUNK = 256 * 1024
# Bigger than any frame a gateway accepts from a client.
_MAX_MESSAGE = 256 * 1024 * 1024
#: How long a new link may take to authenticate, where no setting says otherwise.
DEFAULT_HANDSHAKE_SECONDS = 2.0
#: Connections a host lets wait in the handshake at once, where no setting says otherwise.
DEFAULT_MAX_PENDING_HANDSHAKES = 256
#: Payloads this long or longer leave as their own buffer instead of being copied.
ZERO_COPY_MIN = 1024
# What a bin field of no bytes packs to: replaced by the real bin header.
_EMPTY_BIN = b"\xc4\x00"


def _bin_header(length: int) -> bytes:
    """The msgpack header of a bin field of ``length`` bytes."""
    if length < 1 << 8:
        return struct.pack("!BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack("!BH", 0xC5, length)
    return struct.pack("!BI", 0xC6, length)


class _LastPacked:
    """The most recently packed message and its bytes, shared by every link of a process."""

    __slots__ = ("head", "message", "payload")

    def __init__(self) -> None:
        self.message: Message | None = None
        self.head = b""
        self.payload: bytes | None = None


_last = _LastPacked()
_packer = msgpack.Packer(use_bin_type=True)


def pack_message(message: Message) -> tuple[bytes, bytes | None]:
    """The wire bytes of ``message``: a head and, for a long payload, the payload itself.

    ``head + payload`` (or ``head`` alone when the payload is ``None``) is exactly
    ``msgpack.packb(encode(message), use_bin_type=True)``. Sending one message
    object to several links (a broadcast to every gateway) packs it once.
    """
    last = _last
    if last.message is message:
        return last.head, last.payload
    fields = encode(message)
    tail = fields[-1]
    payload: bytes | None = None
    if isinstance(tail, bytes) and len(tail) >= ZERO_COPY_MIN:
        fields[-1] = b""
        packed = _packer.pack(fields)
        head = packed[: -len(_EMPTY_BIN)] + _bin_header(len(tail))
        payload = tail
    else:
        head = _packer.pack(fields)
    last.message, last.head, last.payload = message, head, payload
    return head, payload


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
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_MESSAGE)
        # Queued output: small messages gather in ``_out``; a long payload closes it
        # into ``_chunks`` and follows it there uncopied. ``_queued`` counts both.
        self._out = bytearray()
        self._chunks: list[bytes | bytearray] = []
        self._queued = 0
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
        head, payload = pack_message(message)
        self._out += head
        self._queued += len(head)
        if payload is not None:
            self._chunks.append(self._out)
            self._chunks.append(payload)
            self._out = bytearray()
            self._queued += len(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._queued:
            return
        out, chunks = self._out, self._chunks
        # Handed to the transport as they are, never touched again: fresh buffers.
        self._out, self._chunks, self._queued = bytearray(), [], 0
        if self._transport.is_closing():
            return
        if chunks:
            if out:
                chunks.append(out)
            self._transport.writelines(chunks)
        else:
            self._transport.write(out)
        if self._transport.get_write_buffer_size() > self._max_buffered:
            self.abort()

    def needs_drain(self) -> bool:
        """True when the peer is behind and the sender should wait before sending more."""
        return self._queued + self._transport.get_write_buffer_size() > DRAIN_ABOVE

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
        self._out, self._chunks, self._queued = bytearray(), [], 0
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


async def authenticate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    secret: bytes,
    role: Role,
    timeout: float,
) -> None:
    """Run the handshake on a new connection, before any frame crosses it.

    Reads no byte past the handshake, so the frame stream that follows starts
    exactly where the handshake ended.

    Raises:
        HandshakeRefused: the peer failed, sent garbage, closed, or ran out of time.
    """
    handshake = Handshake(secret, role)
    try:
        async with asyncio.timeout(timeout):
            writer.write(handshake.data_to_send())
            while not handshake.established:
                data = await reader.read(handshake.bytes_expected)
                if not data:
                    raise HandshakeRefused(Refusal.CLOSED, received=handshake.received)
                handshake.receive_data(data)
                if out := handshake.data_to_send():
                    writer.write(out)
            await writer.drain()
    except TimeoutError:
        raise HandshakeRefused(Refusal.TIMEOUT, received=handshake.received) from None
    except HandshakeRefused:
        raise
    except (ConnectionError, OSError):
        raise HandshakeRefused(Refusal.CLOSED, received=handshake.received) from None


async def open_stream(
    host: str,
    port: int,
    *,
    secret: bytes,
    connect_timeout: float = 5.0,
    handshake_timeout: float = DEFAULT_HANDSHAKE_SECONDS,
    limit: int = 1024 * 1024,
    max_buffered: int = DEFAULT_MAX_BUFFERED,
) -> StreamLink:
    """Dial a board host as a gateway and authenticate; the link is ready for frames.

    Raises:
        OSError: the host cannot be reached (:class:`HandshakeRefused` when it was
            reached but did not prove that it knows ``secret``).
        TimeoutError: the connection did not open within ``connect_timeout``.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=limit), connect_timeout
    )
    try:
        await authenticate(
            reader, writer, secret=secret, role=Role.GATEWAY, timeout=handshake_timeout
        )
    except BaseException:
        writer.transport.abort()
        raise
    return StreamLink(reader, writer, max_buffered=max_buffered)


class StreamGuard:
    """A host's door: a new connection proves itself before any of its frames is read.

    At most ``max_pending`` connections wait in the handshake at once (more are
    dropped at once), each for at most ``timeout`` seconds; refusals are logged
    through a :class:`~actors.handshake.RefusalLog`, never once per byte.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        timeout: float = DEFAULT_HANDSHAKE_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING_HANDSHAKES,
        refusals: RefusalLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self.timeout = timeout
        self.max_pending = max_pending
        self._refusals = refusals or RefusalLog()
        self._clock = clock
        self.pending = 0  # connections in the handshake now
        self.refused = 0  # connections dropped before they authenticated, since start

    async def admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Authenticate a new connection; False once it was refused and dropped."""
        info = writer.get_extra_info("peername")
        address = str(info[0]) if info else "?"
        if self.pending >= self.max_pending:
            self._refuse(writer, address, HandshakeRefused(Refusal.BUSY))
            return False
        self.pending += 1
        try:
            await authenticate(
                reader, writer, secret=self._secret, role=Role.HOST, timeout=self.timeout
            )
        except HandshakeRefused as refused:
            self._refuse(writer, address, refused)
            return False
        finally:
            self.pending -= 1
        return True

    def _refuse(
        self, writer: asyncio.StreamWriter, address: str, refused: HandshakeRefused
    ) -> None:
        writer.transport.abort()
        self.refused += 1
        if refused.refusal is Refusal.CLOSED and refused.received == 0:
            # A reachability probe or a port scan: connected, said nothing, left.
            log.debug("stream from %s closed before the handshake", address)
            return
        line = self._refusals.refused(address, refused.refusal, self._clock())
        if line is not None:
            log.warning("frame stream refused from %s", line)
