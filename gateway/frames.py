"""WebSocket frames encoded once, written to many sockets.

Fan-out sends the same bytes to every client of a board. Encoding the frame
header once per message and writing those bytes to each transport avoids the
per-recipient framing work of the library's ``send_bytes``. Server frames are
never masked, so the bytes are identical for every recipient. This is only
valid on connections without per-message compression, which the gateway never
negotiates.

A long payload is not copied behind its header: :func:`binary_frame` returns
the header and the payload as two buffers, written together with one
``writelines``.
"""

from __future__ import annotations

import struct

_FIN_BINARY = 0x82
#: Payloads this long or longer travel as their own buffer, behind a separate header.
SPLIT_ABOVE = 1024

#: An encoded frame: its bytes, or its header and its payload, to be written in that order.
WsFrame = bytes | tuple[bytes, bytes]


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, length)
    return struct.pack("!BBQ", _FIN_BINARY, 127, length)


def encode_binary_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final binary WebSocket frame carrying ``payload``."""
    return _header(len(payload)) + payload


def binary_frame(payload: bytes) -> WsFrame:
    """The frame carrying ``payload``; a long payload stays a buffer of its own (no copy)."""
    if len(payload) < SPLIT_ABOVE:
        return _header(len(payload)) + payload
    return _header(len(payload)), payload
