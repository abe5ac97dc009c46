"""How a target frames y-protocol messages on its WebSocket.

A y-websocket server (Boardcast, ``@y/websocket-server``, pycrdt-websocket)
takes one board per socket at ``{url}/{board}`` and bare y-protocol frames.
Hocuspocus multiplexes documents on one socket: every message starts with the
document name (a lib0 varString), and a document opens only after an ``Auth``
message. Its sync and awareness message numbers match y-protocol's, plus
``SyncReply`` (4, a sync message that asks for no step 1 back), ``SyncStatus``
(8, an acknowledgement) and ``Ping``/``Pong`` (9/10).
"""

from __future__ import annotations

from typing import Protocol

from crdt.encoding import Decoder, var_uint, write_var_string

HOCUSPOCUS_AUTH = 2
HOCUSPOCUS_AUTH_TOKEN = 0
HOCUSPOCUS_AUTH_PERMISSION_DENIED = 1
HOCUSPOCUS_SYNC_REPLY = 4
HOCUSPOCUS_PING = 9
HOCUSPOCUS_PONG = 10
# Outer types that are plain y-protocol messages after the document name.
_Y_PROTOCOL_TYPES = frozenset({0, 1, 3})


class WireError(Exception):
    """The server refused the board (Hocuspocus permission denied)."""


class Wire(Protocol):
    """Frames y-protocol messages for one kind of server."""

    name: str

    def socket_url(self, base_url: str, board: str) -> str:
        """The WebSocket URL a client of ``board`` connects to."""
        ...

    def opening(self, board: str) -> list[bytes]:
        """Messages sent first on a new socket, before the sync step 1."""
        ...

    def wrap(self, board: str, frame: bytes) -> bytes:
        """The bytes to send for one y-protocol ``frame``."""
        ...

    def unwrap(self, board: str, data: bytes) -> tuple[bytes | None, bytes | None]:
        """Split received bytes into (y-protocol frame or None, bytes to answer or None)."""
        ...


class YWebsocketWire:
    """One board per socket, at ``{base_url}/{board}``; frames are bare y-protocol."""

    name = "y-websocket"

    def socket_url(self, base_url: str, board: str) -> str:
        """See :meth:`Wire.socket_url`."""
        return f"{base_url.rstrip('/')}/{board}"

    def opening(self, board: str) -> list[bytes]:
        """See :meth:`Wire.opening`."""
        return []

    def wrap(self, board: str, frame: bytes) -> bytes:
        """See :meth:`Wire.wrap`."""
        return frame

    def unwrap(self, board: str, data: bytes) -> tuple[bytes | None, bytes | None]:
        """See :meth:`Wire.unwrap`."""
        return data, None


class HocuspocusWire:
    """Hocuspocus framing: document name first, an ``Auth`` message to open a document."""

    name = "hocuspocus"

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}

    def _prefix(self, board: str) -> bytes:
        prefix = self._prefixes.get(board)
        if prefix is None:
            out = bytearray()
            write_var_string(out, board)
            prefix = self._prefixes[board] = bytes(out)
        return prefix

    def socket_url(self, base_url: str, board: str) -> str:
        """See :meth:`Wire.socket_url`: any path; the document is named in each message."""
        return base_url

    def opening(self, board: str) -> list[bytes]:
        """An ``Auth`` message with an empty token, as the provider sends with no token set."""
        token = bytearray(var_uint(HOCUSPOCUS_AUTH) + var_uint(HOCUSPOCUS_AUTH_TOKEN))
        write_var_string(token, "")
        return [self._prefix(board) + bytes(token)]

    def wrap(self, board: str, frame: bytes) -> bytes:
        """See :meth:`Wire.wrap`."""
        return self._prefix(board) + frame

    def unwrap(self, board: str, data: bytes) -> tuple[bytes | None, bytes | None]:
        """See :meth:`Wire.unwrap`: strips the name; answers pings; raises if denied."""
        prefix = self._prefix(board)
        if not data.startswith(prefix):
            decoder = Decoder(data)
            raise WireError(f"message for another document: {decoder.read_var_string()!r}")
        rest = data[len(prefix) :]
        if not rest:
            return None, None
        kind = rest[0]
        if kind in _Y_PROTOCOL_TYPES:
            return rest, None
        if kind == HOCUSPOCUS_SYNC_REPLY:
            return b"\x00" + rest[1:], None
        if kind == HOCUSPOCUS_PING:
            return None, prefix + var_uint(HOCUSPOCUS_PONG)
        if (
            kind == HOCUSPOCUS_AUTH
            and len(rest) > 1
            and rest[1] == HOCUSPOCUS_AUTH_PERMISSION_DENIED
        ):
            raise WireError(f"permission denied for {board!r}")
        return None, None


def wire_for(name: str) -> Wire:
    """The wire named ``name`` (``y-websocket`` or ``hocuspocus``)."""
    if name == "hocuspocus":
        return HocuspocusWire()
    if name == "y-websocket":
        return YWebsocketWire()
    raise ValueError(f"unknown wire {name!r}")
