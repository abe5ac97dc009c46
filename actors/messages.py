"""The typed messages of the frame stream between gateways and board hosts.

This module is the only one that knows their wire layout: each message travels
as one msgpack array, ``[kind, field, field, ...]``, and :func:`encode` and
:func:`decode` are the only functions that read or write it by position.

Gateway to host::

    Hello(version, role)          first message of a link: the protocol it speaks
    Open(board_id, conn, ack, read_only, origin)
                                  a client joined board_id (ack: it wants
                                  "persisted up to here" messages; read_only:
                                  its updates are refused; origin: who it is,
                                  recorded with its stored updates, or nil)
    Frame(board_id, conn, data)   a y-protocol frame from that client
    Close(board_id, conn)         the client left (cleanly or not)

On a control link (its hello's role is ``control``), instead of the above::

    Call(call_id, method, args)   run one of the host's control methods (stats,
                                  transact...) with these pickled arguments

Host to gateway::

    Hello(version, role)                  the host's answer to the gateway's hello
    Send(conn, data)                      a frame for one client
    Broadcast(board_id, exclude, data)    a frame for every client of the board on
                                          this gateway except ``exclude``
    Reject(conn, code, reason)            close that client with a named code
    Persisted(conn, count)                the client's first ``count`` update
                                          messages on this connection are in the
                                          document and durable
    Answer(call_id, ok, value)            on a control link: the pickled result of
                                          that call, or (``ok`` false) its exception

Control links reach hosts that have no Ray actor (:mod:`actors.control`), which
are always of the caller's own release: the two kinds are sent to no other peer.

**Versions.** A gateway opens every link with ``Hello``; the host answers with
its own. Peers from before versioning (protocol 0) send no hello: their first
message is an ``Open``, and the layout of every other message is unchanged, so
a host still serves them and says so in its log.

Protocol 2 has the messages of protocol 1, and its decoder ignores fields past
the ones it knows, so a later release can append a field to a message without
breaking this one. Protocol 1 peers refuse a message with one field too many:
a release never sends them one, and never sends any peer a message kind until
that peer's hello has shown a version that has it. The policy (which releases
talk to each other) is in docs/operations.md, *Upgrades*;
``tests/engine/test_wire_versions.py`` checks today's code against frames
recorded from the previous release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crdt.close_codes import REASONS, CloseCode

#: The protocol this code speaks. 0: unversioned (no hello); 1: hello, then the messages
#: above; 2: the same messages, and fields past the known ones are ignored.
PROTOCOL_VERSION = 2

#: The client id meaning "nobody" in ``Broadcast.exclude``.
NO_CONNECTION = -1

#: The longest origin (who made a change) a message may carry.
MAX_ORIGIN = 256

#: The longest close reason sent (WebSocket close reasons are at most 123 bytes).
MAX_REASON = 120

HELLO = 0
OPEN = 1
FRAME = 2
CLOSE = 3
CALL = 4
SEND = 10
BROADCAST = 11
REJECT = 12
PERSISTED = 13
ANSWER = 14


class StreamProtocolError(Exception):
    """A peer sent something that is not a frame-stream message: the link is dropped."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The protocol version a peer speaks, and what it is (``gateway`` or ``host``)."""

    version: int
    role: str


@dataclass(frozen=True, slots=True)
class Open:
    """A client joined a board."""

    board_id: str
    conn: int
    ack: bool = False
    read_only: bool = False
    origin: str | None = None  # who the client is (``on_connect``), kept with its updates


@dataclass(frozen=True, slots=True)
class Frame:
    """A y-protocol frame from a client."""

    board_id: str
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A client left its board."""

    board_id: str
    conn: int


@dataclass(frozen=True, slots=True)
class Send:
    """A frame for one client."""

    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A frame for every client of a board on the receiving gateway but one."""

    board_id: str
    exclude: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    """Close a client with a named code."""

    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Persisted:
    """The client's first ``count`` update messages are integrated and durable."""

    conn: int
    count: int


@dataclass(frozen=True, slots=True)
class Call:
    """A control call: ``method`` of the host with pickled ``args`` (control links only)."""

    call_id: int
    method: str
    args: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """The pickled result of a :class:`Call`, or its pickled exception when not ``ok``."""

    call_id: int
    ok: bool
    value: bytes


GatewayMessage = Hello | Open | Frame | Close
HostMessage = Hello | Send | Broadcast | Reject | Persisted
ControlMessage = Call | Answer
Message = GatewayMessage | HostMessage | ControlMessage


def reject(conn: int, code: CloseCode, detail: str | None = None) -> Reject:
    """A :class:`Reject` with the code's reason, followed by ``detail`` if given."""
    reason = REASONS[code] if detail is None else f"{REASONS[code]}: {detail}"
    return Reject(conn, int(code), reason[:MAX_REASON])


def encode(message: Message) -> list[Any]:
    """The msgpack array a message travels as."""
    if isinstance(message, Frame):
        return [FRAME, message.board_id, message.conn, message.data]
    if isinstance(message, Broadcast):
        return [BROADCAST, message.board_id, message.exclude, message.data]
    if isinstance(message, Send):
        return [SEND, message.conn, message.data]
    if isinstance(message, Persisted):
        return [PERSISTED, message.conn, message.count]
    if isinstance(message, Open):
        return [
            OPEN,
            message.board_id,
            message.conn,
            message.ack,
            message.read_only,
            message.origin,
        ]
    if isinstance(message, Close):
        return [CLOSE, message.board_id, message.conn]
    if isinstance(message, Reject):
        return [REJECT, message.conn, message.code, message.reason]
    if isinstance(message, Hello):
        return [HELLO, message.version, message.role]
    if isinstance(message, Call):
        return [CALL, message.call_id, message.method, message.args]
    if isinstance(message, Answer):
        return [ANSWER, message.call_id, message.ok, message.value]
    raise TypeError(f"not a frame-stream message: {message!r}")


def decode(raw: Any) -> Message:
    """The message a msgpack array carries.

    Raises:
        StreamProtocolError: ``raw`` is not a message of this protocol.
    """
    if not isinstance(raw, list) or not raw:
        raise StreamProtocolError(f"not a message: {raw!r}"[:200])
    kind = raw[0]
    try:
        if kind == FRAME:
            board_id, conn, data = _fields(raw, 3)
            return Frame(_text(board_id), _int(conn), _bytes(data))
        if kind == BROADCAST:
            board_id, exclude, data = _fields(raw, 3)
            return Broadcast(_text(board_id), _int(exclude), _bytes(data))
        if kind == SEND:
            conn, data = _fields(raw, 2)
            return Send(_int(conn), _bytes(data))
        if kind == PERSISTED:
            conn, count = _fields(raw, 2)
            return Persisted(_int(conn), _int(count))
        if kind == OPEN:
            # Protocol 0 peers may leave out the flags.
            board_id, conn = _fields(raw, 2)
            flags = raw[3:6]
            ack = bool(flags[0]) if flags else False
            read_only = bool(flags[1]) if len(flags) > 1 else False
            origin = _origin(flags[2]) if len(flags) > 2 else None
            return Open(_text(board_id), _int(conn), ack, read_only, origin)
        if kind == CLOSE:
            board_id, conn = _fields(raw, 2)
            return Close(_text(board_id), _int(conn))
        if kind == REJECT:
            conn, code, reason = _fields(raw, 3)
            return Reject(_int(conn), _int(code), _text(reason))
        if kind == HELLO:
            version, role = _fields(raw, 2)
            return Hello(_int(version), _text(role))
        if kind == CALL:
            call_id, method, args = _fields(raw, 3)
            return Call(_int(call_id), _text(method), _bytes(args))
        if kind == ANSWER:
            call_id, ok, value = _fields(raw, 3)
            if not isinstance(ok, bool):
                raise TypeError(f"expected a boolean, got {type(ok).__name__}")
            return Answer(_int(call_id), ok, _bytes(value))
    except (ValueError, TypeError) as exc:
        raise StreamProtocolError(f"malformed message of kind {kind!r}: {exc}") from exc
    raise StreamProtocolError(f"unknown message kind {kind!r}")


def _fields(raw: list[Any], count: int) -> list[Any]:
    # Fields past ``count`` are a newer release's additions: ignored (see Versions above).
    if len(raw) < count + 1:
        raise ValueError(f"{len(raw) - 1} fields, at least {count} expected")
    return raw[1 : count + 1]


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _origin(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value)
    if len(text) > MAX_ORIGIN:
        raise ValueError(f"origin of {len(text)} characters (at most {MAX_ORIGIN})")
    return text


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return value


def from_gateway(message: Message) -> GatewayMessage:
    """``message``, checked to be one a gateway may send.

    Raises:
        StreamProtocolError: it is a host's message.
    """
    if isinstance(message, Hello | Open | Frame | Close):
        return message
    raise StreamProtocolError(f"a gateway may not send {type(message).__name__}")


def from_host(message: Message) -> HostMessage:
    """``message``, checked to be one a host may send.

    Raises:
        StreamProtocolError: it is a gateway's message.
    """
    if isinstance(message, Hello | Send | Broadcast | Reject | Persisted):
        return message
    raise StreamProtocolError(f"a host may not send {type(message).__name__}")
