"""Reading the clock ranges a Yjs v1 update covers, without applying it.

A v1 update is a list of struct groups (per client: a first clock, then structs
whose lengths add up) followed by a delete set. Knowing which (client, clock)
ranges an update inserts and deletes lets the room check an update against the
state it actually stores, instead of trusting pycrdt's state vector (which some
crafted updates advance past what it can encode). Only lengths are decoded:
contents are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt.encoding import Decoder
from crdt.errors import ProtocolError

_BITS5 = 0x1F
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_GC = 0
_SKIP = 10
# ContentType refs that carry a name (XmlElement, XmlHook).
_NAMED_TYPES = {3, 5}


@dataclass(frozen=True, slots=True)
class UpdateRanges:
    """What an update holds: per client the clock range it inserts, and what it deletes."""

    inserts: dict[int, tuple[int, int]]  # client -> (first clock, end clock exclusive)
    deletes: list[tuple[int, int, int]]  # (client, clock, length)


def read_ranges(update: bytes) -> UpdateRanges:
    """Decode the clock ranges of a v1 update.

    Raises:
        ProtocolError: the bytes are not a v1 update this reader understands.
    """
    decoder = Decoder(update)
    inserts: dict[int, tuple[int, int]] = {}
    groups = decoder.read_var_uint()
    if groups > len(update):
        raise ProtocolError("update announces more struct groups than it holds")
    for _ in range(groups):
        count = decoder.read_var_uint()
        client = decoder.read_var_uint()
        start = clock = decoder.read_var_uint()
        if count > len(update):
            raise ProtocolError("update announces more structs than it holds")
        for _ in range(count):
            clock += _skip_struct(decoder)
        if client in inserts:
            first, end = inserts[client]
            inserts[client] = (min(first, start), max(end, clock))
        else:
            inserts[client] = (start, clock)
    deletes: list[tuple[int, int, int]] = []
    clients = decoder.read_var_uint()
    if clients > len(update):
        raise ProtocolError("delete set announces more clients than it holds")
    for _ in range(clients):
        client = decoder.read_var_uint()
        ranges = decoder.read_var_uint()
        if ranges > len(update):
            raise ProtocolError("delete set announces more ranges than it holds")
        for _ in range(ranges):
            deletes.append((client, decoder.read_var_uint(), decoder.read_var_uint()))
    if not decoder.at_end():
        raise ProtocolError("trailing bytes after update")
    return UpdateRanges(inserts, deletes)


def _skip_struct(decoder: Decoder) -> int:
    """Skip one struct; return its length in clocks."""
    info = decoder.read_bytes(1)[0]
    ref = info & _BITS5
    if ref in (_GC, _SKIP):
        return decoder.read_var_uint()
    if info & _HAS_ORIGIN:
        decoder.read_var_uint()
        decoder.read_var_uint()
    if info & _HAS_RIGHT_ORIGIN:
        decoder.read_var_uint()
        decoder.read_var_uint()
    if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
        if decoder.read_var_uint() == 1:
            decoder.read_var_bytes()  # parent: a root type's name
        else:
            decoder.read_var_uint()  # parent: an item's id
            decoder.read_var_uint()
        if info & _HAS_PARENT_SUB:
            decoder.read_var_bytes()
    return _skip_content(decoder, ref)


def _skip_content(decoder: Decoder, ref: int) -> int:
    if ref == 1:  # deleted
        return decoder.read_var_uint()
    if ref == 2:  # JSON
        length = decoder.read_var_uint()
        for _ in range(length):
            decoder.read_var_bytes()
        return length
    if ref == 3:  # binary
        decoder.read_var_bytes()
        return 1
    if ref == 4:  # string: its length counts UTF-16 code units
        raw = decoder.read_var_bytes()
        try:
            text = raw.decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string content is not UTF-8") from exc
        return len(text.encode("utf-16-le", errors="surrogatepass")) // 2
    if ref == 5:  # embed
        decoder.read_var_bytes()
        return 1
    if ref == 6:  # format
        decoder.read_var_bytes()
        decoder.read_var_bytes()
        return 1
    if ref == 7:  # type
        if decoder.read_var_uint() in _NAMED_TYPES:
            decoder.read_var_bytes()
        return 1
    if ref == 8:  # any
        length = decoder.read_var_uint()
        for _ in range(length):
            _skip_any(decoder, 0)
        return length
    if ref == 9:  # subdocument
        decoder.read_var_bytes()
        _skip_any(decoder, 0)
        return 1
    raise ProtocolError(f"unknown content type {ref}")


_MAX_DEPTH = 100


def _skip_any(decoder: Decoder, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    kind = decoder.read_bytes(1)[0]
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if kind == 125:  # varInt
        while decoder.read_bytes(1)[0] & 0x80:
            pass
    elif kind == 124:
        decoder.read_bytes(4)
    elif kind in (123, 122):
        decoder.read_bytes(8)
    elif kind in (119, 116):  # string, bytes
        decoder.read_var_bytes()
    elif kind == 118:  # object
        for _ in range(decoder.read_var_uint()):
            decoder.read_var_bytes()
            _skip_any(decoder, depth + 1)
    elif kind == 117:  # array
        for _ in range(decoder.read_var_uint()):
            _skip_any(decoder, depth + 1)
    else:
        raise ProtocolError(f"unknown value type {kind}")
