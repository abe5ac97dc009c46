"""The lib0 codec: byte-exact with what Yjs writes, and strict about what it reads.

The expected bytes were produced once with lib0 0.2.120 (``encoding.writeVarUint`` and
``encoding.writeVarString``), the version installed under tests/interop/js.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.encoding import Decoder, var_uint, write_var_bytes, write_var_string, write_var_uint
from crdt.errors import ProtocolError, TruncatedMessage

# (value, lib0 writeVarUint output)
LIB0_VAR_UINTS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (255, "ff01"),
    (300, "ac02"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2**32, "8080808010"),
    (2**53, "8080808080808010"),
]


@pytest.mark.parametrize(("value", "expected"), LIB0_VAR_UINTS)
def test_var_uint_matches_lib0(value: int, expected: str) -> None:
    assert var_uint(value).hex() == expected


@pytest.mark.parametrize(("value", "encoded"), LIB0_VAR_UINTS)
def test_var_uint_written_by_lib0_reads_back(value: int, encoded: str) -> None:
    decoder = Decoder(bytes.fromhex(encoded))
    assert decoder.read_var_uint() == value
    assert decoder.at_end()


def test_negative_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        var_uint(-1)


def test_string_length_counts_utf8_bytes_not_code_points() -> None:
    # Five code points, nine UTF-8 bytes: lib0 writes 09; pycrdt's Encoder writes 05 here.
    text = "Zoë 🦊"
    out = bytearray()
    write_var_string(out, text)
    assert out.hex() == "095a6fc3ab20f09fa68a"
    assert Decoder(out).read_var_string() == text


def test_empty_byte_array_is_a_single_zero() -> None:
    out = bytearray()
    write_var_bytes(out, b"")
    assert bytes(out) == b"\x00"
    decoder = Decoder(out)
    assert decoder.read_var_bytes() == b""
    assert decoder.at_end()


def test_values_are_read_in_order_from_any_bytes_like_input() -> None:
    out = bytearray()
    write_var_uint(out, 300)
    write_var_bytes(out, b"\x01\x02")
    write_var_string(out, "ok")
    for data in (bytes(out), bytearray(out), memoryview(bytes(out))):
        decoder = Decoder(data)
        assert decoder.read_var_uint() == 300
        assert decoder.read_var_bytes() == b"\x01\x02"
        assert decoder.read_var_string() == "ok"
        assert decoder.at_end()


@pytest.mark.parametrize("data", ["", "80", "ac", "ffffff"])
def test_a_varint_cut_short_is_truncated(data: str) -> None:
    with pytest.raises(TruncatedMessage):
        Decoder(bytes.fromhex(data)).read_var_uint()


def test_an_endless_varint_is_refused_without_reading_on() -> None:
    decoder = Decoder(b"\x80" * 10 + b"\x01")
    with pytest.raises(ProtocolError) as caught:
        decoder.read_var_uint()
    assert not isinstance(caught.value, TruncatedMessage)


def test_a_length_past_the_end_is_truncated() -> None:
    decoder = Decoder(bytes.fromhex("05abcd"))
    with pytest.raises(TruncatedMessage):
        decoder.read_var_bytes()


def test_a_string_that_is_not_utf8_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Decoder(bytes.fromhex("02c328")).read_var_string()


@given(st.integers(min_value=0, max_value=2**63))
def test_var_uint_round_trip_and_length(value: int) -> None:
    encoded = var_uint(value)
    assert len(encoded) == max(1, -(-value.bit_length() // 7))
    decoder = Decoder(encoded)
    assert decoder.read_var_uint() == value
    assert decoder.at_end()


@given(st.integers(min_value=128, max_value=2**63), st.data())
def test_every_proper_prefix_of_a_varint_is_truncated(value: int, data: st.DataObject) -> None:
    encoded = var_uint(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(TruncatedMessage):
        Decoder(encoded[:cut]).read_var_uint()


@given(st.lists(st.one_of(st.integers(min_value=0, max_value=2**53), st.binary(), st.text())))
def test_mixed_values_round_trip(values: list[int | bytes | str]) -> None:
    out = bytearray()
    for value in values:
        if isinstance(value, int):
            write_var_uint(out, value)
        elif isinstance(value, bytes):
            write_var_bytes(out, value)
        else:
            write_var_string(out, value)
    decoder = Decoder(out)
    for value in values:
        if isinstance(value, int):
            assert decoder.read_var_uint() == value
        elif isinstance(value, bytes):
            assert decoder.read_var_bytes() == value
        else:
            assert decoder.read_var_string() == value
    assert decoder.at_end()
