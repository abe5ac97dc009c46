"""The pycrdt 0.14.13 bugs Boardcast works around, as tests that fail once an upgrade fixes them.

Each ``still`` test asserts that the bug is still there; its failure message names the
workaround that may then be simplified. The repair recipes are tested to work. Cases
that panic run in a forked child (tests/fuzz/sandbox.py): a Yrs panic may leave the
process unsafe.
"""

from __future__ import annotations

import itertools
from importlib.metadata import version
from typing import Any

import pytest
from pycrdt import Doc, Encoder, Map, get_state, get_update, merge_updates

from tests.fuzz.board_updates import one_writer_overwrites
from tests.fuzz.corpus import CorpusCase, load_corpus
from tests.fuzz.oracle import (
    ERROR_PARTIAL,
    LOG_DIFFERS,
    LOG_UNLOADABLE,
    PANIC_CLEAN,
    PANIC_PARTIAL,
    POISONED,
    SNAPSHOT_DIFFERS,
    SNAPSHOT_UNLOADABLE,
    UPDATE_DROPPED,
    covers,
    decode_state_vector,
)
from tests.fuzz.sandbox import run_isolated

PYCRDT = version("pycrdt")
OUT_OF_ORDER_FIXED = (
    "pycrdt fixed the out-of-order drop: the resync repair in crdt/room.py may be simplified"
)
# What each corpus kind guards in crdt/room.py, for the message when pycrdt stops doing it.
WORKAROUNDS = {
    PANIC_PARTIAL: "the doc rebuild after a panicking apply in crdt/room.py may be simplified",
    ERROR_PARTIAL: "the doc rebuild after a failed apply in crdt/room.py may be simplified",
    PANIC_CLEAN: "crdt/room.py may stop catching PanicException for this input",
    POISONED: "the doc rebuild after a panic in crdt/room.py may be simplified",
    LOG_UNLOADABLE: "crdt/room.py may relay TransactionEvent.update as it is again",
    LOG_DIFFERS: "crdt/room.py may relay TransactionEvent.update as it is again",
    SNAPSHOT_UNLOADABLE: "the snapshot check in crdt/room.py may be simplified",
    SNAPSHOT_DIFFERS: "the snapshot check in crdt/room.py may be simplified",
    UPDATE_DROPPED: OUT_OF_ORDER_FIXED,
}
CORPUS = load_corpus()


def map_of(doc: Doc[Any]) -> dict[str, Any]:
    return dict(doc.get("m", type=Map).to_py() or {})


def apply_in(order: tuple[int, ...], updates: list[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for index in order:
        doc.apply_update(updates[index])
    return doc


@pytest.mark.parametrize("order", [(1, 2, 0), (2, 1, 0)])
def test_pycrdt_still_drops_out_of_order_updates(order: tuple[int, ...]) -> None:
    updates = one_writer_overwrites()
    doc = apply_in(order, updates)
    dropped = map_of(doc) == {"k2": 2} and decode_state_vector(doc.get_state()) != {1: 3}
    assert dropped, f"{OUT_OF_ORDER_FIXED} (pycrdt {PYCRDT}, order {order}: {map_of(doc)})"


def test_the_other_orders_converge() -> None:
    updates = one_writer_overwrites()
    for order in set(itertools.permutations(range(3))) - {(1, 2, 0), (2, 1, 0)}:
        assert map_of(apply_in(order, updates)) == {"k1": 3, "k2": 2}, order


@pytest.mark.parametrize("order", [(1, 2, 0), (2, 1, 0)])
def test_the_drop_shows_as_a_state_vector_behind_everything_received(
    order: tuple[int, ...],
) -> None:
    # How a room can detect it: the doc must cover the state of all it was sent, merged.
    updates = one_writer_overwrites()
    doc = apply_in(order, updates)
    received = decode_state_vector(get_state(merge_updates(*updates)))
    assert received == {1: 3}
    assert not covers(decode_state_vector(doc.get_state()), received)


def test_the_state_of_a_single_update_does_not_reveal_the_drop() -> None:
    # get_state(update) is the state the update alone gives an empty doc: {} for an update
    # that does not start at clock 0, so "doc covers get_state(update)" after each apply
    # holds in the dropping orders too. Compare against merged received updates instead.
    updates = one_writer_overwrites()
    assert [decode_state_vector(get_state(u)) for u in updates] == [{1: 1}, {}, {}]
    doc = apply_in((1, 2, 0), updates)
    have = decode_state_vector(doc.get_state())
    assert all(covers(have, decode_state_vector(get_state(u))) for u in updates)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_resync_repair_recovers_every_order(order: tuple[int, ...]) -> None:
    updates = one_writer_overwrites()
    doc = apply_in(order, updates)
    log = [updates[index] for index in order]
    doc.apply_update(get_update(merge_updates(*log), doc.get_state()))
    assert map_of(doc) == {"k1": 3, "k2": 2}
    assert decode_state_vector(doc.get_state()) == {1: 3}


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c.kind == UPDATE_DROPPED], ids=lambda c: c.name
)
def test_the_resync_repair_recovers_the_corpus_drops(case: CorpusCase) -> None:
    doc: Doc[Any] = Doc()
    for update in case.updates:
        doc.apply_update(update)
    wanted = decode_state_vector(get_state(merge_updates(*case.updates)))
    assert not covers(decode_state_vector(doc.get_state()), wanted), OUT_OF_ORDER_FIXED
    doc.apply_update(get_update(merge_updates(*case.updates), doc.get_state()))
    assert covers(decode_state_vector(doc.get_state()), wanted)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_pycrdt_still_misbehaves_on_the_corpus(case: CorpusCase) -> None:
    verdict = run_isolated(case.updates, complete=case.kind == UPDATE_DROPPED)
    assert verdict.kind == case.kind, (
        f"pycrdt {PYCRDT} no longer shows {case.kind} on tests/corpus/{case.name}.json "
        f"(found on {case.pycrdt}: {case.detail}; now: {verdict.kind} {verdict.detail}): "
        f"{WORKAROUNDS.get(case.kind, 'its workaround may be simplified')}"
    )


def test_pycrdt_still_panics_after_partly_applying_an_update() -> None:
    panics = [c for c in CORPUS if c.kind == PANIC_PARTIAL]
    assert panics, "the corpus lost its panic cases: run python -m tests.fuzz.mutate"
    verdict = run_isolated(panics[0].updates)
    assert verdict.kind == PANIC_PARTIAL, (
        f"pycrdt {PYCRDT} fixed the partial apply before a panic ({verdict}): "
        f"{WORKAROUNDS[PANIC_PARTIAL]}"
    )
    assert "PanicException" in verdict.detail


def test_pycrdt_still_writes_var_string_lengths_in_code_points() -> None:
    encoder = Encoder()
    encoder.write_var_string("é")
    assert encoder.to_bytes() == b"\x01\xc3\xa9", (
        "pycrdt fixed Encoder.write_var_string (UTF-8 byte length now): "
        "crdt/encoding.write_var_string need not be kept apart from it"
    )
