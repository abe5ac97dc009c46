"""Named WebSocket close codes: why Boardcast ended a client's connection.

Codes 1000-1015 are the standard ones (RFC 6455); 4000-4999 are ours. The
y-websocket client reconnects after any close, so every code here is also an
instruction: reconnect at once (1012), later (1013), or fix the client (44xx).
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Close codes sent by the gateway, each with a fixed meaning."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the gateway is shutting down
    UNSUPPORTED_DATA = 1003  # a text frame: the protocol is binary
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the board moved or its host restarted: reconnect and resync
    TRY_AGAIN_LATER = 1013  # the board cannot be loaded right now
    BAD_MESSAGE = 4400  # bytes that are not y-protocol messages
    UNAUTHORIZED = 4401  # the connection did not say who it is, or not convincingly
    FORBIDDEN = 4403  # who it is may not open this board
    SLOW_CONSUMER = 4408  # the client did not read fast enough; reconnect and resync
    OUT_OF_SYNC = 4409  # too many updates wait for missing dependencies; reconnect and resync
    UPDATE_TOO_LARGE = 4413  # one update over the size limit
    INVALID_UPDATE = 4422  # a well-framed Yjs update that cannot be applied
    AWARENESS_LIMIT = 4429  # presence over its size, entry or client-id limits
    TOO_MANY_CONNECTIONS = 4430  # the user has the most sockets allowed open already
    STORE_UNAVAILABLE = 4503  # storage is down and the unsaved backlog is full: writes refused
    BOARD_FULL = 4507  # the update would take the board past its maximum size


REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "bye",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.UNSUPPORTED_DATA: "text frames are not part of the protocol",
    CloseCode.MESSAGE_TOO_BIG: "frame too large",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "board host restarting, reconnect",
    CloseCode.TRY_AGAIN_LATER: "board unavailable, try again later",
    CloseCode.BAD_MESSAGE: "malformed message",
    CloseCode.UNAUTHORIZED: "authentication required",
    CloseCode.FORBIDDEN: "not allowed on this board",
    CloseCode.SLOW_CONSUMER: "send queue overflow, reconnect to resync",
    CloseCode.OUT_OF_SYNC: "updates missing their dependencies, reconnect to resync",
    CloseCode.UPDATE_TOO_LARGE: "update too large",
    CloseCode.INVALID_UPDATE: "invalid update",
    CloseCode.AWARENESS_LIMIT: "presence over its limits",
    CloseCode.TOO_MANY_CONNECTIONS: "too many connections",
    CloseCode.STORE_UNAVAILABLE: "storage unavailable, writes refused, retry later",
    CloseCode.BOARD_FULL: "board at its maximum size",
}
