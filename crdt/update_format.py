"""Reading the clock ranges a Yjs v1 update covers, without applying it.

A v1 update is a list of struct groups (per client: a first clock, then structs
whose lengths add up) followed by a delete set. Knowing which (client, clock)
ranges an update inserts and deletes lets the room check an update against the
state it actually stores, instead of trusting pycrdt's state vector (which some
crafted updates advance past what it can encode). Only lengths are decoded:
contents are skipped. This runs for every update on the hot path, so it reads
bytes by index with small local helpers rather than through a decoder object.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt.errors import ProtocolError, TruncatedMessage

_BITS5 = 0x1F
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_GC = 0
_SKIP = 10
# ContentType refs that carry a name (XmlElement, XmlHook).
_NAMED_TYPES = {3, 5}
_MAX_DEPTH = 100
_MAX_VARUINT_BYTES = 10


@dataclass(frozen=True, slots=True)
class UpdateRanges:
    """What an update holds: per client the clock range it inserts, and what it deletes."""

    inserts: dict[int, tuple[int, int]]  # client -> (first clock, end clock exclusive)
    deletes: list[tuple[int, int, int]]  # (client, clock, length)
    references: dict[int, int]  # client -> highest clock its structs refer to (origins, parents)
    spans: dict[int, list[tuple[int, int]]]  # client -> the clock ranges carried, skips left out

    def waits_for(self, clocks: dict[int, int]) -> set[int]:
        """The clients whose inserts past ``clocks`` this update needs before it integrates."""
        needed = {
            client for client, clock in self.references.items() if clock >= clocks.get(client, 0)
        }
        for client, (start, _) in self.inserts.items():
            if start > clocks.get(client, 0):
                needed.add(client)
        for client, clock, length in self.deletes:
            if clock + length > clocks.get(client, 0):
                needed.add(client)
        return needed


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varUint at ``pos``; return it and the position after it."""
    try:
        byte = data[pos]
        if byte < 0x80:
            return byte, pos + 1
        result = byte & 0x7F
        shift = 7
        for _ in range(_MAX_VARUINT_BYTES):
            pos += 1
            byte = data[pos]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos + 1
            shift += 7
    except IndexError:
        raise TruncatedMessage("update ends inside a varUint") from None
    raise ProtocolError("varUint too long")


def _skip_bytes(data: bytes, pos: int) -> int:
    """Skip a length-prefixed byte string; return the position after it."""
    length, pos = _uint(data, pos)
    end = pos + length
    if end > len(data):
        raise TruncatedMessage("update ends inside a string")
    return end


def read_ranges(update: bytes) -> UpdateRanges:
    """Decode the clock ranges of a v1 update.

    Raises:
        ProtocolError: the bytes are not a v1 update this reader understands.
    """
    data = bytes(update)
    size = len(data)
    inserts: dict[int, tuple[int, int]] = {}
    spans: dict[int, list[tuple[int, int]]] = {}
    references: dict[int, int] = {}
    groups, pos = _uint(data, 0)
    if groups > size:
        raise ProtocolError("update announces more struct groups than it holds")
    for _ in range(groups):
        count, pos = _uint(data, pos)
        client, pos = _uint(data, pos)
        start, pos = _uint(data, pos)
        if count > size:
            raise ProtocolError("update announces more structs than it holds")
        clock = span_start = start
        client_spans = spans.setdefault(client, [])
        for _ in range(count):
            length, pos, real = _skip_struct(data, pos, references)
            if not real:
                # A skip struct stands for clocks the update does not carry.
                if clock > span_start:
                    client_spans.append((span_start, clock))
                span_start = clock + length
            clock += length
        if clock > span_start:
            client_spans.append((span_start, clock))
        if not client_spans:
            del spans[client]
    for client, client_spans in spans.items():
        inserts[client] = (min(s for s, _ in client_spans), max(e for _, e in client_spans))
    deletes: list[tuple[int, int, int]] = []
    clients, pos = _uint(data, pos)
    if clients > size:
        raise ProtocolError("delete set announces more clients than it holds")
    for _ in range(clients):
        client, pos = _uint(data, pos)
        ranges, pos = _uint(data, pos)
        if ranges > size:
            raise ProtocolError("delete set announces more ranges than it holds")
        for _ in range(ranges):
            clock, pos = _uint(data, pos)
            length, pos = _uint(data, pos)
            deletes.append((client, clock, length))
    if pos != size:
        raise ProtocolError("trailing bytes after update")
    return UpdateRanges(inserts, deletes, references, spans)


def _reference(data: bytes, pos: int, references: dict[int, int]) -> int:
    """Read an item id (client, clock) one struct refers to; note it in ``references``."""
    client, pos = _uint(data, pos)
    clock, pos = _uint(data, pos)
    if references.get(client, -1) < clock:
        references[client] = clock
    return pos


def _skip_struct(data: bytes, pos: int, references: dict[int, int]) -> tuple[int, int, bool]:
    """Skip one struct; return its length in clocks, the position after it, and
    whether it carries content (False for a skip struct)."""
    if pos >= len(data):
        raise TruncatedMessage("update ends inside a struct")
    info = data[pos]
    pos += 1
    ref = info & _BITS5
    if ref in (_GC, _SKIP):
        length, pos = _uint(data, pos)
        return length, pos, ref == _GC
    if info & _HAS_ORIGIN:
        pos = _reference(data, pos, references)
    if info & _HAS_RIGHT_ORIGIN:
        pos = _reference(data, pos, references)
    if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
        named, pos = _uint(data, pos)
        # The parent: a root type's name, or an item's id.
        pos = _skip_bytes(data, pos) if named == 1 else _reference(data, pos, references)
        if info & _HAS_PARENT_SUB:
            pos = _skip_bytes(data, pos)
    length, pos = _skip_content(data, pos, ref)
    return length, pos, True


def _skip_content(data: bytes, pos: int, ref: int) -> tuple[int, int]:
    if ref == 1:  # deleted
        return _uint(data, pos)
    if ref == 2:  # JSON
        length, pos = _uint(data, pos)
        for _ in range(length):
            pos = _skip_bytes(data, pos)
        return length, pos
    if ref == 4:  # string: its length counts UTF-16 code units
        size, pos = _uint(data, pos)
        raw = data[pos : pos + size]
        if len(raw) != size:
            raise TruncatedMessage("update ends inside a string")
        if raw.isascii():
            return size, pos + size
        try:
            text = raw.decode("utf-8", errors="surrogatepass")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string content is not UTF-8") from exc
        return len(text.encode("utf-16-le", errors="surrogatepass")) // 2, pos + size
    if ref == 3 or ref == 5:  # binary, embed
        return 1, _skip_bytes(data, pos)
    if ref == 6:  # format
        return 1, _skip_bytes(data, _skip_bytes(data, pos))
    if ref == 7:  # type
        type_ref, pos = _uint(data, pos)
        return 1, _skip_bytes(data, pos) if type_ref in _NAMED_TYPES else pos
    if ref == 8:  # any
        length, pos = _uint(data, pos)
        for _ in range(length):
            pos = _skip_any(data, pos, 0)
        return length, pos
    if ref == 9:  # subdocument
        return 1, _skip_any(data, _skip_bytes(data, pos), 0)
    raise ProtocolError(f"unknown content type {ref}")


def _skip_any(data: bytes, pos: int, depth: int) -> int:
    if depth > _MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if pos >= len(data):
        raise TruncatedMessage("update ends inside a value")
    kind = data[pos]
    pos += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if kind == 125:  # varInt
        return _uint(data, pos)[1]
    if kind == 124:
        return pos + 4
    if kind in (123, 122):
        return pos + 8
    if kind in (119, 116):  # string, bytes
        return _skip_bytes(data, pos)
    if kind == 118:  # object
        count, pos = _uint(data, pos)
        for _ in range(count):
            pos = _skip_any(data, _skip_bytes(data, pos), depth + 1)
        return pos
    if kind == 117:  # array
        count, pos = _uint(data, pos)
        for _ in range(count):
            pos = _skip_any(data, pos, depth + 1)
        return pos
    raise ProtocolError(f"unknown value type {kind}")
