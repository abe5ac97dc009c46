"""WebSocket frames encoded once, written to many sockets.

Fan-out sends the same bytes to every client of a board. Encoding the frame
header once per message and writing those bytes to each transport avoids the
per-recipient framing work of the library's ``send_bytes``. Server frames are
never masked, so the bytes are identical for every recipient. This is only
valid on connections without per-message compression, which the gateway never
negotiates.
"""

from __future__ import annotations

import struct

_FIN_BINARY = 0x82


def encode_binary_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final binary WebSocket frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_BINARY, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_BINARY, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_BINARY, 127, length)
    return header + payload
