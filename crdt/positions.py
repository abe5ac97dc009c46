"""Fractional-index keys: strings that order tasks and columns by plain string comparison.

A key is an *integer part* followed by an optional *fraction*, all in base-62 digits
``0-9A-Za-z`` (ASCII order, so JavaScript and Python compare keys the same way):

- The integer part's head letter gives its length: ``a``..``z`` are followed by 1..26 digits,
  ``Z``..``A`` (below every lowercase head) by 1..26 digits. ``a0`` is the first key handed out.
  Appending or prepending bumps the integer part, so keys grow by one character per ~62^n
  appends instead of one character per few appends.
- The fraction never ends in ``0``: that keeps room below every key, so a key strictly between
  any two distinct valid keys always exists.

The format is the one read and written by the npm ``fractional-indexing`` package
(``generateKeyBetween``), so JavaScript clients can use that package on the same board.
"""

from __future__ import annotations

DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE = len(DIGITS)
FIRST_KEY = "a0"
_VALUE = {digit: value for value, digit in enumerate(DIGITS)}
_SMALLEST_INTEGER = "A" + "0" * 26


def position_between(a: str | None, b: str | None) -> str:
    """Return a key that sorts strictly after ``a`` and strictly before ``b``.

    ``None`` stands for the start (``a``) or end (``b``) of the list. Raises ``ValueError`` if a
    key is malformed or ``a >= b``.
    """
    if a is not None:
        _validate(a)
    if b is not None:
        _validate(b)
    if a is not None and b is not None and a >= b:
        raise ValueError(f"position {a!r} is not before {b!r}")
    if a is None:
        if b is None:
            return FIRST_KEY
        integer_b = b[: _integer_length(b[0])]
        if integer_b == _SMALLEST_INTEGER:
            return integer_b + _midpoint("", b[len(integer_b) :])
        if integer_b < b:
            return integer_b
        if integer_b == "A" + "0" * 25 + "1":
            # Only the smallest integer lies below, and a bare integer key must not be it.
            return _SMALLEST_INTEGER + _midpoint("", None)
        return _decrement(integer_b)
    integer_a = a[: _integer_length(a[0])]
    fraction_a = a[len(integer_a) :]
    if b is None:
        following = _increment(integer_a)
        return integer_a + _midpoint(fraction_a, None) if following is None else following
    integer_b = b[: _integer_length(b[0])]
    if integer_a == integer_b:
        return integer_a + _midpoint(fraction_a, b[len(integer_b) :])
    following = _increment(integer_a)
    if following is not None and following < b:
        return following
    return integer_a + _midpoint(fraction_a, None)


def is_valid_position(key: str) -> bool:
    """Tell whether ``key`` is a well-formed position (see the module docstring)."""
    try:
        _validate(key)
    except ValueError:
        return False
    return True


def _validate(key: str) -> None:
    if not key or not ("a" <= key[0] <= "z" or "A" <= key[0] <= "Z"):
        raise ValueError(f"invalid position {key!r}: must start with a letter")
    if any(char not in _VALUE for char in key[1:]):
        raise ValueError(f"invalid position {key!r}: digits must be in 0-9A-Za-z")
    length = _integer_length(key[0])
    if len(key) < length:
        raise ValueError(f"invalid position {key!r}: integer part is too short")
    if key == _SMALLEST_INTEGER:
        raise ValueError(f"invalid position {key!r}: nothing could be placed before it")
    if len(key) > length and key.endswith("0"):
        raise ValueError(f"invalid position {key!r}: fraction ends in 0")


def _integer_length(head: str) -> int:
    if "a" <= head <= "z":
        return ord(head) - ord("a") + 2
    return ord("Z") - ord(head) + 2


def _midpoint(low: str, high: str | None) -> str:
    """Digits strictly between fractions ``0.low`` and ``0.high`` (``None`` meaning 1)."""
    if high is not None:
        # Keep the shared leading digits; ``low`` reads as padded with zeros on the right.
        shared = 0
        while shared < len(high) and (low[shared] if shared < len(low) else "0") == high[shared]:
            shared += 1
        if shared:
            return high[:shared] + _midpoint(low[shared:], high[shared:])
    digit_low = _VALUE[low[0]] if low else 0
    digit_high = _VALUE[high[0]] if high is not None else BASE
    if digit_high - digit_low > 1:
        return DIGITS[(digit_low + digit_high + 1) // 2]
    if high is not None and len(high) > 1:
        # ``high`` continues with a non-zero digit, so its first digit alone is below it.
        return high[0]
    return DIGITS[digit_low] + _midpoint(low[1:], None)


def _increment(integer: str) -> str | None:
    """The next integer part, or ``None`` past the largest one."""
    head, digits = integer[0], list(integer[1:])
    for index in range(len(digits) - 1, -1, -1):
        value = _VALUE[digits[index]] + 1
        if value < BASE:
            digits[index] = DIGITS[value]
            return head + "".join(digits)
        digits[index] = "0"
    if head == "Z":
        return "a0"
    if head == "z":
        return None
    next_head = chr(ord(head) + 1)
    # Lowercase heads lengthen as they grow; uppercase heads shorten towards ``Z``.
    if next_head > "a":
        digits.append("0")
    else:
        digits.pop()
    return next_head + "".join(digits)


def _decrement(integer: str) -> str:
    """The previous integer part; never called on the smallest one."""
    head, digits = integer[0], list(integer[1:])
    for index in range(len(digits) - 1, -1, -1):
        value = _VALUE[digits[index]] - 1
        if value >= 0:
            digits[index] = DIGITS[value]
            return head + "".join(digits)
        digits[index] = "z"
    if head == "a":
        return "Zz"
    previous_head = chr(ord(head) - 1)
    if previous_head < "Z":
        digits.append("z")
    else:
        digits.pop()
    return previous_head + "".join(digits)
