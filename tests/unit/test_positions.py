"""Fractional-index positions: ordering, key length, and the key format JavaScript clients share."""

from __future__ import annotations

import random

import pytest

from crdt.positions import FIRST_KEY, is_valid_position, position_between

SMALLEST_INTEGER = "A" + "0" * 26


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # The keys npm's fractional-indexing generateKeyBetween() returns for the same inputs.
        (None, None, "a0"),
        ("a0", None, "a1"),
        (None, "a0", "Zz"),
        ("Zz", None, "a0"),
        ("az", None, "b00"),
        (None, "b00", "az"),
        ("a0", "a1", "a0V"),
        ("a0", "a0V", "a0G"),
    ],
)
def test_keys_match_the_javascript_library(
    before: str | None, after: str | None, expected: str
) -> None:
    assert position_between(before, after) == expected


def test_random_insertions_always_fit_strictly_between_neighbours() -> None:
    rng = random.Random(1234)
    keys: list[str] = []
    for _ in range(2_000):
        slot = rng.randint(0, len(keys))
        before = keys[slot - 1] if slot > 0 else None
        after = keys[slot] if slot < len(keys) else None
        key = position_between(before, after)
        assert is_valid_position(key)
        assert before is None or before < key
        assert after is None or key < after
        keys.insert(slot, key)
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_appending_and_prepending_keep_keys_short() -> None:
    last: str | None = None
    first: str | None = None
    for _ in range(10_000):
        last = position_between(last, None)
        first = position_between(None, first)
    assert last is not None and first is not None
    assert len(last) <= 4
    assert len(first) <= 4
    assert first < FIRST_KEY < last


def test_repeated_insertion_at_one_spot_keeps_order() -> None:
    low, high = "a0", "a1"
    for _ in range(500):
        middle = position_between(low, high)
        assert low < middle < high
        high = middle


def test_room_remains_before_the_smallest_integer() -> None:
    just_above = "A" + "0" * 25 + "1"
    below = position_between(None, just_above)
    assert below < just_above
    assert is_valid_position(below)
    assert SMALLEST_INTEGER < position_between(None, below) < below


def test_room_remains_after_the_largest_integer() -> None:
    largest = "z" + "z" * 26
    above = position_between(largest, None)
    assert largest < above
    assert largest < position_between(largest, above) < above


@pytest.mark.parametrize("key", ["", "5", "a", "a00", "a0!", "b0", SMALLEST_INTEGER, "a0 ", "é0"])
def test_malformed_keys_are_rejected(key: str) -> None:
    assert not is_valid_position(key)
    with pytest.raises(ValueError):
        position_between(key, None)
    with pytest.raises(ValueError):
        position_between(None, key)


@pytest.mark.parametrize(("before", "after"), [("a1", "a0"), ("a0", "a0")])
def test_misordered_bounds_are_rejected(before: str, after: str) -> None:
    with pytest.raises(ValueError, match="not before"):
        position_between(before, after)
