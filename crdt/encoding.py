"""lib0 binary encoding: the variable-length integers and byte strings Yjs uses.

Only the pieces the y-protocols need: unsigned varints (7 bits per byte, low
group first, high bit set while more bytes follow), length-prefixed byte arrays
and length-prefixed UTF-8 strings (the length counts bytes, not code points).
"""

from __future__ import annotations

from crdt.errors import ProtocolError, TruncatedMessage

# Yjs client ids and clocks are at most 2**53; a longer varint is garbage.
_MAX_VARUINT_BYTES = 10


def write_var_uint(out: bytearray, value: int) -> None:
    """Append ``value`` to ``out`` as a lib0 varUint."""
    if value < 0:
        raise ValueError("varUint cannot encode a negative number")
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append ``data`` prefixed with its length (lib0 varUint8Array)."""
    write_var_uint(out, len(data))
    out += data


def write_var_string(out: bytearray, text: str) -> None:
    """Append ``text`` as UTF-8, prefixed with its length in bytes (lib0 varString)."""
    write_var_bytes(out, text.encode("utf-8"))


def var_uint(value: int) -> bytes:
    """Return ``value`` encoded as a varUint."""
    out = bytearray()
    write_var_uint(out, value)
    return bytes(out)


class Decoder:
    """Reads lib0 values from a byte string, left to right.

    Every read raises :class:`TruncatedMessage` if the input ends early, so a
    caller never sees a half-read value.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self.pos = 0

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self.pos >= len(self.data)

    def read_var_uint(self) -> int:
        """Read one varUint."""
        data = self.data
        result = 0
        shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if self.pos >= len(data):
                raise TruncatedMessage("frame ends inside a varUint")
            byte = data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7
        raise ProtocolError(f"varUint longer than {_MAX_VARUINT_BYTES} bytes")

    def read_bytes(self, length: int) -> bytes:
        """Read exactly ``length`` raw bytes."""
        end = self.pos + length
        if end > len(self.data):
            raise TruncatedMessage(
                f"frame ends {end - len(self.data)} bytes short of a {length}-byte value"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def read_var_bytes(self) -> bytes:
        """Read a length-prefixed byte array."""
        return self.read_bytes(self.read_var_uint())

    def read_var_string(self) -> str:
        """Read a length-prefixed UTF-8 string."""
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not valid UTF-8") from exc
