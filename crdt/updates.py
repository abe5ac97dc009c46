"""Applying untrusted Yjs updates to a pycrdt document, and checking the result.

pycrdt (Yrs) has two failure modes a server must not pass on to its store:

- some crafted updates make it panic after it has integrated part of them, so a
  failed apply can leave the document changed (:func:`apply_update` turns every
  failure into :class:`~crdt.errors.InvalidUpdate`; the caller rebuilds);
- it silently drops some updates applied out of causal order, leaving the state
  vector behind (:func:`missing_from`, checked after every apply, tells).

The checks here work on bytes with pycrdt's native functions, so their cost is
that of decoding the update, not of the whole document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pycrdt
from pycrdt import Doc

from crdt.encoding import Decoder
from crdt.errors import InvalidUpdate, ProtocolError

#: A Yjs v1 update that changes nothing: no structs, empty delete set.
EMPTY_UPDATE = b"\x00\x00"
#: How a v1 update without structs begins: varUint(0) clients.
_NO_STRUCTS = b"\x00"


class _ApplyOrigin:
    """Transaction origin marking updates applied on behalf of a connection."""


REMOTE = _ApplyOrigin()


def _refused(exc: BaseException) -> InvalidUpdate:
    return InvalidUpdate(f"cannot apply update: {exc}"[:200])


def is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (a BaseException), raised when Yrs panics."""
    return type(exc).__name__ == "PanicException"


@contextmanager
def refused_as_invalid() -> Iterator[None]:
    """Turn whatever pycrdt raises, panics included, into :class:`InvalidUpdate`."""
    try:
        yield
    except Exception as exc:
        raise _refused(exc) from exc
    except BaseException as exc:
        if is_panic(exc):
            raise _refused(exc) from exc
        raise


def apply_update(doc: Doc[Any], update: bytes) -> None:
    """Apply ``update`` to ``doc``, raising :class:`InvalidUpdate` if pycrdt refuses it.

    After an :class:`InvalidUpdate` the document may hold part of the update:
    callers that must not keep it rebuild the document (see ``BoardRoom``).
    """
    with refused_as_invalid(), doc.transaction(origin=REMOTE):
        doc.apply_update(update)


def encode_state(doc: Doc[Any], state_vector: bytes | None = None) -> bytes:
    """``doc`` as one update (past ``state_vector`` if given), or :class:`InvalidUpdate`.

    A document left inconsistent by a crafted update can make pycrdt panic even
    while encoding; the caller then rebuilds it.
    """
    with refused_as_invalid():
        if state_vector is None:
            state: bytes = doc.get_update()
        else:
            state = doc.get_update(state_vector)
    return state


def missing_from(doc: Doc[Any], update: bytes) -> bytes | None:
    """The part of ``update``'s inserts that ``doc`` does not hold, or ``None`` if none.

    ``None`` after applying ``update`` means the document integrated it. Anything
    else means Yrs is keeping it pending (a dependency is missing) or dropped it.
    """
    return missing_past(update, doc.get_state())


def missing_past(update: bytes, state_vector: bytes) -> bytes | None:
    """The part of ``update``'s inserts past ``state_vector``, or ``None`` if none.

    :func:`missing_from` for a document known only by its state vector (a board
    not built yet, see ``BoardDocument``).
    """
    with refused_as_invalid():
        rest: bytes = pycrdt.get_update(update, state_vector)
    # A v1 update starts with the number of clients it has structs for. (pycrdt's
    # get_state of an update is no help: it ignores structs not starting at clock 0.)
    return None if rest[:1] == _NO_STRUCTS else rest


def merge(updates: Iterable[bytes]) -> bytes:
    """Merge updates into one, raising :class:`InvalidUpdate` if pycrdt refuses them."""
    parts = list(updates)
    if len(parts) == 1:
        return parts[0]
    with refused_as_invalid():
        merged: bytes = pycrdt.merge_updates(*parts)
    return merged


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a Yjs state vector into {client id: clock}."""
    decoder = Decoder(state_vector)
    count = decoder.read_var_uint()
    if count > len(state_vector):
        raise ProtocolError("state vector announces more clients than it holds")
    clocks = {decoder.read_var_uint(): decoder.read_var_uint() for _ in range(count)}
    if not decoder.at_end():
        raise ProtocolError("trailing bytes after state vector")
    return clocks


def _clocks_held(state_vector: bytes) -> dict[int, int]:
    # A client at clock 0 holds nothing: pycrdt lists some, a reload does not.
    return {client: clock for client, clock in decode_state_vector(state_vector).items() if clock}


def state_vectors_match(left: bytes, right: bytes) -> bool:
    """True if two encoded state vectors name the same clocks (in any order)."""
    return left == right or _clocks_held(left) == _clocks_held(right)


def build_document(base: bytes | None, updates: Iterable[bytes]) -> Doc[Any]:
    """A fresh document holding ``base`` then ``updates``, applied in order.

    Raises:
        InvalidUpdate: pycrdt refused one of them.
    """
    doc: Doc[Any] = Doc()
    if base is not None:
        apply_update(doc, base)
    pending = list(updates)
    for update in pending:
        apply_update(doc, update)
    if pending:
        # pycrdt can drop an update that arrived before its dependency; the log
        # is in causal order, but a repair pass costs little and makes sure.
        rest = missing_from(doc, merge(pending))
        if rest is not None:
            apply_update(doc, rest)
    return doc


def snapshot_loads(state: bytes, state_vector: bytes) -> bool:
    """True if ``state`` loads into a fresh document whose state vector is ``state_vector``.

    A snapshot that fails this must never replace the log it would trim.
    Pure function over bytes: callers may run it in a thread.
    """
    try:
        fresh = build_document(state, ())
        return state_vectors_match(fresh.get_state(), state_vector)
    except (InvalidUpdate, ProtocolError):
        return False
    except BaseException as exc:
        if is_panic(exc):
            return False
        raise
