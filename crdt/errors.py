"""The exception tree of the sans-I/O core.

    BoardcastError
    ├── ProtocolError            bytes that are not a valid y-protocol frame
    │   ├── TruncatedMessage     a frame ends in the middle of a value
    │   └── UnknownMessageType   an outer or sync message type we do not speak
    ├── InvalidUpdate            a well-framed update pycrdt refuses to apply
    ├── LimitExceeded            input past one of the board's limits
    │   ├── UpdateTooLarge       one update over ``max_update_bytes``
    │   ├── BoardFull            the update would take the board past ``max_board_bytes``
    │   ├── AwarenessLimit       presence over its size, entry or client-id limits
    │   └── OutOfSync            too many updates wait for what they depend on
    ├── WritesRefused            the store is down and its backlog is full
    ├── TransactionFailed        a server-side change raised; nothing of it was kept
    ├── BoardCorrupted           the live document cannot be rebuilt: reload the board
    └── TokenRefused             a bearer token not accepted; ``reason`` says why in one word

Each class that a client can cause names the WebSocket close code it earns
(``close_code``, see :mod:`crdt.close_codes`); nothing here knows about sockets.
"""

from __future__ import annotations

from crdt.close_codes import CloseCode


class BoardcastError(Exception):
    """Base class of every error Boardcast raises on purpose."""

    close_code: CloseCode = CloseCode.BAD_MESSAGE


class ProtocolError(BoardcastError):
    """The peer sent bytes that do not decode as y-protocol messages."""


class TruncatedMessage(ProtocolError):
    """A frame ended before the value being read was complete."""


class UnknownMessageType(ProtocolError):
    """An outer message type or sync step this server does not speak."""


class InvalidUpdate(BoardcastError):
    """A Yjs update that is framed correctly but cannot be applied."""

    close_code = CloseCode.INVALID_UPDATE


class LimitExceeded(BoardcastError):
    """Input that is well formed but past one of the limits of docs/settings.md."""


class UpdateTooLarge(LimitExceeded):
    """One update larger than the board accepts."""

    close_code = CloseCode.UPDATE_TOO_LARGE


class BoardFull(LimitExceeded):
    """An update that would make the board larger than its maximum size."""

    close_code = CloseCode.BOARD_FULL


class AwarenessLimit(LimitExceeded):
    """A presence message over its size, entry count or client-id limits."""

    close_code = CloseCode.AWARENESS_LIMIT


class OutOfSync(LimitExceeded):
    """Too many of a connection's updates wait for updates they depend on."""

    close_code = CloseCode.OUT_OF_SYNC


class WritesRefused(BoardcastError):
    """A write while the store is unavailable and the unsaved backlog is full."""

    close_code = CloseCode.STORE_UNAVAILABLE


class BoardCorrupted(BoardcastError):
    """The board's document cannot be rebuilt from its own base and journal.

    The host reloads the board from the store; its clients reconnect.
    """

    close_code = CloseCode.SERVICE_RESTART


class TransactionFailed(BoardcastError):
    """A server-side change raised part-way; the board is as it was before it."""


class TokenRefused(BoardcastError):
    """A token Boardcast does not accept (see docs/oidc.md for the reasons).

    ``reason`` is a short machine-readable word (``expired``, ``bad-signature``...);
    ``issuer-unavailable`` means the token could not be checked right now (answer 503).
    """

    close_code = CloseCode.UNAUTHORIZED

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        if reason == "issuer-unavailable":
            self.close_code = CloseCode.TRY_AGAIN_LATER


class DecryptionFailed(BoardcastError):
    """A blob stored encrypted at rest that does not decrypt: a wrong or unknown key, or
    bytes changed since they were written. Nothing of its plaintext is returned."""

    close_code = CloseCode.TRY_AGAIN_LATER
