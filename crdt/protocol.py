"""The y-websocket wire protocol: frames in, typed messages out, and back.

A WebSocket frame holds one or more messages back to back. Each message is
``varUint(outer type)`` followed by its payload:

* ``0`` sync: ``varUint(step)`` then ``varUint8Array``; step 0 carries a state
  vector, steps 1 and 2 carry a Yjs update (v1 encoding).
* ``1`` awareness: ``varUint8Array`` of an awareness update.
* ``2`` auth: ``varUint(0)`` then ``varString(reason)``: permission denied.
* ``3`` query awareness: no payload.

Boardcast adds one message a plain y-websocket client never receives unless it
asks for it (see docs/protocol.md): ``100`` persisted, ``varUint(seq)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from crdt.encoding import Decoder, write_var_bytes, write_var_string, write_var_uint
from crdt.errors import ProtocolError, UnknownMessageType

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3
MESSAGE_PERSISTED = 100

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """A peer's state vector: "send me what I am missing"."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """The answer to a step 1: the update the peer is missing."""

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """An incremental document update."""

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    """An encoded awareness update (see :mod:`crdt.awareness`)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for every awareness state the server knows."""


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    """Auth message: the server refuses access, with a reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class Persisted:
    """Boardcast extension: this client's updates are durable up to ``seq``."""

    seq: int


Message = (
    SyncStep1
    | SyncStep2
    | SyncUpdate
    | AwarenessUpdate
    | QueryAwareness
    | PermissionDenied
    | Persisted
)


def decode_frame(frame: bytes | bytearray | memoryview) -> list[Message]:
    """Decode every message in one WebSocket frame.

    Raises:
        ProtocolError: the frame is empty, truncated or of an unknown type.
    """
    return list(iter_frame(frame))


def iter_frame(frame: bytes | bytearray | memoryview) -> Iterator[Message]:
    """Yield the messages of one frame in order, decoding each only when it is asked for.

    A caller can act on the messages before a bad one; the bad one raises
    :class:`ProtocolError` when reached.
    """
    decoder = Decoder(frame)
    if decoder.at_end():
        raise ProtocolError("empty frame")
    while not decoder.at_end():
        yield _decode_message(decoder)


def _decode_message(decoder: Decoder) -> Message:
    outer = decoder.read_var_uint()
    if outer == MESSAGE_SYNC:
        step = decoder.read_var_uint()
        payload = decoder.read_var_bytes()
        if step == SYNC_STEP1:
            return SyncStep1(payload)
        if step == SYNC_STEP2:
            return SyncStep2(payload)
        if step == SYNC_UPDATE:
            return SyncUpdate(payload)
        raise UnknownMessageType(f"unknown sync step {step}")
    if outer == MESSAGE_AWARENESS:
        return AwarenessUpdate(decoder.read_var_bytes())
    if outer == MESSAGE_QUERY_AWARENESS:
        return QueryAwareness()
    if outer == MESSAGE_AUTH:
        kind = decoder.read_var_uint()
        if kind != AUTH_PERMISSION_DENIED:
            raise UnknownMessageType(f"unknown auth message {kind}")
        return PermissionDenied(decoder.read_var_string())
    if outer == MESSAGE_PERSISTED:
        return Persisted(decoder.read_var_uint())
    raise UnknownMessageType(f"unknown message type {outer}")


def encode_message(message: Message) -> bytes:
    """Encode one message as the bytes of a frame (frames may concatenate several)."""
    out = bytearray()
    if isinstance(message, SyncStep1):
        _write_sync(out, SYNC_STEP1, message.state_vector)
    elif isinstance(message, SyncStep2):
        _write_sync(out, SYNC_STEP2, message.update)
    elif isinstance(message, SyncUpdate):
        _write_sync(out, SYNC_UPDATE, message.update)
    elif isinstance(message, AwarenessUpdate):
        write_var_uint(out, MESSAGE_AWARENESS)
        write_var_bytes(out, message.payload)
    elif isinstance(message, QueryAwareness):
        write_var_uint(out, MESSAGE_QUERY_AWARENESS)
    elif isinstance(message, PermissionDenied):
        write_var_uint(out, MESSAGE_AUTH)
        write_var_uint(out, AUTH_PERMISSION_DENIED)
        write_var_string(out, message.reason)
    elif isinstance(message, Persisted):
        write_var_uint(out, MESSAGE_PERSISTED)
        write_var_uint(out, message.seq)
    else:  # pragma: no cover - the Union is closed
        raise TypeError(f"not a protocol message: {message!r}")
    return bytes(out)


def _write_sync(out: bytearray, step: int, payload: bytes) -> None:
    write_var_uint(out, MESSAGE_SYNC)
    write_var_uint(out, step)
    write_var_bytes(out, payload)


def sync_step1(state_vector: bytes) -> bytes:
    """Frame bytes of a sync step 1."""
    return encode_message(SyncStep1(state_vector))


def sync_step2(update: bytes) -> bytes:
    """Frame bytes of a sync step 2."""
    return encode_message(SyncStep2(update))


def sync_update(update: bytes) -> bytes:
    """Frame bytes of a sync update."""
    return encode_message(SyncUpdate(update))


def awareness_frame(payload: bytes) -> bytes:
    """Frame bytes of an awareness update."""
    return encode_message(AwarenessUpdate(payload))
