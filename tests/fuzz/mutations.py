"""Byte-level mutations of Yjs updates: flips, inserts, deletes, splices, varints, cross-over."""

from __future__ import annotations

import random
from collections.abc import Callable

from crdt.encoding import var_uint

# Bytes that sit on the edges of lib0 encodings: varint continuation, content refs, info flags.
INTERESTING_BYTES = [0x00, 0x01, 0x02, 0x07, 0x08, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF]
INTERESTING_NUMBERS = [0, 1, 2, 3, 7, 8, 127, 128, 255, 256, 2**31 - 1, 2**32, 2**53 - 1]


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``pos`` and its length in bytes (at most 10, may run off the end)."""
    value = shift = 0
    end = pos
    while end < len(data) and end - pos < 10:
        byte = data[end]
        value |= (byte & 0x7F) << shift
        shift += 7
        end += 1
        if not byte & 0x80:
            break
    return value, end - pos


class Mutator:
    """Applies random mutations drawn from one seeded generator, so a run can be replayed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.operations: list[Callable[[bytes, bytes], bytes]] = [
            self.flip_bit,
            self.set_byte,
            self.insert_bytes,
            self.delete_range,
            self.duplicate_range,
            self.splice,
            self.tweak_varint,
            self.tweak_varint,
            self.transplant_varint,
            self.cross_over,
        ]

    def mutate(self, data: bytes, donor: bytes, *, rounds: int = 1) -> bytes:
        """``data`` after ``rounds`` random operations; ``donor`` feeds splices and cross-overs."""
        for _ in range(rounds):
            data = self.rng.choice(self.operations)(data, donor)
        return data

    def _position(self, data: bytes, *, end: bool = False) -> int:
        return self.rng.randrange(len(data) + (1 if end else 0)) if data or end else 0

    def flip_bit(self, data: bytes, _donor: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        out[self._position(data)] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def set_byte(self, data: bytes, _donor: bytes) -> bytes:
        if not data:
            return data
        out = bytearray(data)
        out[self._position(data)] = self.rng.choice([*INTERESTING_BYTES, self.rng.randrange(256)])
        return bytes(out)

    def insert_bytes(self, data: bytes, _donor: bytes) -> bytes:
        pos = self._position(data, end=True)
        extra = bytes(self.rng.choice(INTERESTING_BYTES) for _ in range(self.rng.randint(1, 4)))
        return data[:pos] + extra + data[pos:]

    def delete_range(self, data: bytes, _donor: bytes) -> bytes:
        if len(data) < 2:
            return data
        pos = self._position(data)
        return data[:pos] + data[pos + self.rng.randint(1, 8) :]

    def duplicate_range(self, data: bytes, _donor: bytes) -> bytes:
        if not data:
            return data
        pos = self._position(data)
        chunk = data[pos : pos + self.rng.randint(1, 16)]
        at = self._position(data, end=True)
        return data[:at] + chunk + data[at:]

    def splice(self, data: bytes, donor: bytes) -> bytes:
        if not donor:
            return data
        start = self._position(donor)
        chunk = donor[start : start + self.rng.randint(1, 24)]
        at = self._position(data, end=True)
        return data[:at] + chunk + data[at + self.rng.randint(0, len(chunk)) :]

    def tweak_varint(self, data: bytes, _donor: bytes) -> bytes:
        if not data:
            return data
        pos = self._position(data)
        value, length = read_varint(data, pos)
        choices = [value + 1, max(value - 1, 0), value * 2, value + self.rng.randint(2, 40)]
        new = self.rng.choice([*choices, *choices, self.rng.choice(INTERESTING_NUMBERS)])
        return data[:pos] + var_uint(new) + data[pos + length :]

    def transplant_varint(self, data: bytes, donor: bytes) -> bytes:
        # Long varints are client ids and clocks: another update's id makes two
        # writers claim the same clock range, which plain flips rarely produce.
        if not data or not donor:
            return data
        starts = [p for p in range(len(donor)) if read_varint(donor, p)[1] >= 3] or [0]
        value, _ = read_varint(donor, self.rng.choice(starts))
        pos = self._position(data)
        _, length = read_varint(data, pos)
        return data[:pos] + var_uint(value) + data[pos + length :]

    def cross_over(self, data: bytes, donor: bytes) -> bytes:
        if not data or not donor:
            return data
        return data[: self._position(data, end=True)] + donor[self._position(donor) :]
