"""The exception tree of the sans-I/O core.

    BoardcastError
    ├── ProtocolError            bytes that are not a valid y-protocol frame
    │   ├── TruncatedMessage     a frame ends in the middle of a value
    │   └── UnknownMessageType   an outer or sync message type we do not speak
    └── InvalidUpdate            a well-framed update pycrdt refuses to apply

The gateway maps each class to a named WebSocket close code (see
``gateway/close_codes.py``); nothing here knows about sockets.
"""

from __future__ import annotations


class BoardcastError(Exception):
    """Base class of every error Boardcast raises on purpose."""


class ProtocolError(BoardcastError):
    """The peer sent bytes that do not decode as y-protocol messages."""


class TruncatedMessage(ProtocolError):
    """A frame ended before the value being read was complete."""


class UnknownMessageType(ProtocolError):
    """An outer message type or sync step this server does not speak."""


class InvalidUpdate(BoardcastError):
    """A Yjs update that is framed correctly but cannot be applied."""
