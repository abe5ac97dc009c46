"""Judge one sequence of updates applied to a fresh pycrdt document, as BoardRoom applies them.

Run inside a throwaway process: a Yrs panic can leave the document, and sometimes
the interpreter, in a state nothing else should share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pycrdt import Doc, Map, get_state, merge_updates

from crdt.encoding import Decoder

# Findings, most serious first; a case reports the first one it hits.
PANIC_PARTIAL = "panic-partial-apply"  # apply panicked after changing the document
ERROR_PARTIAL = "error-partial-apply"  # apply raised an exception after changing the document
POISONED = "poisoned-doc"  # a plain local edit panics after the sequence
SNAPSHOT_UNLOADABLE = "snapshot-unloadable"  # get_update() does not load into a fresh Doc
SNAPSHOT_DIFFERS = "snapshot-state-differs"  # it loads, to a different state vector
LOG_UNLOADABLE = "log-unloadable"  # the observed updates (what a room stores) do not replay
LOG_DIFFERS = "log-state-differs"  # they replay, to a different state vector than the doc's
UPDATE_DROPPED = "update-dropped"  # every apply succeeded, yet a delivered clock is missing
PANIC_CLEAN = "panic-clean"  # apply panicked and changed nothing
HANG = "hang"  # the case did not finish in time (judged by the parent)
CRASH = "crash"  # the process died (abort, out of memory: judged by the parent)
OK = "ok"

SEVERITY = [
    PANIC_PARTIAL,
    ERROR_PARTIAL,
    POISONED,
    SNAPSHOT_UNLOADABLE,
    SNAPSHOT_DIFFERS,
    LOG_UNLOADABLE,
    LOG_DIFFERS,
    HANG,
    CRASH,
    UPDATE_DROPPED,
    PANIC_CLEAN,
    OK,
]


@dataclass(frozen=True)
class Verdict:
    """What a case triggered: ``kind`` (one of the constants above), at which update, and why."""

    kind: str
    index: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """The verdict as a JSON object."""
        return asdict(self)


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """A state vector's clocks by client id, without zero clocks (the same as no entry).

    The encoding orders clients arbitrarily, so compare these, never the bytes.
    """
    decoder = Decoder(state_vector)
    clocks = {}
    for _ in range(decoder.read_var_uint()):
        client = decoder.read_var_uint()
        clock = decoder.read_var_uint()
        if clock:
            clocks[client] = clock
    return clocks


def is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException: a Rust panic inside Yrs, a BaseException."""
    return type(exc).__name__ == "PanicException"


def _describe(exc: BaseException, where: Callable[[], str] | None = None) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if where is not None and is_panic(exc):
        text += f" (at {where()})"
    return text[:300]


def _snapshot(doc: Doc[Any]) -> tuple[bytes, bytes] | BaseException:
    try:
        return doc.get_state(), doc.get_update()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return exc


def covers(state: dict[int, int], wanted: dict[int, int]) -> bool:
    """True when ``state`` has every clock of ``wanted``."""
    return all(state.get(client, 0) >= clock for client, clock in wanted.items())


def evaluate(
    updates: list[bytes],
    *,
    expect_complete: bool = False,
    panic_location: Callable[[], str] | None = None,
) -> Verdict:
    """Apply ``updates`` in order to a fresh Doc and report the worst thing that happened.

    Args:
        updates: the Yjs updates, applied one per transaction as BoardRoom applies them.
        expect_complete: the updates are a causally complete set of valid updates (in any
            order): once all are applied, every clock they carry must be present.
        panic_location: returns where Yrs panicked (file:line), for the verdict's detail.
    """
    doc: Doc[Any] = Doc()
    changes: list[bytes] = []
    doc.observe(lambda event: changes.append(event.update))
    panicked: Verdict | None = None
    for index, update in enumerate(updates):
        before = _snapshot(doc)
        observed = len(changes)
        try:
            with doc.transaction(origin="fuzz"):
                doc.apply_update(update)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            after = _snapshot(doc)
            # Changed: visible in the state or the encoded document, or an observer was
            # told (BoardRoom would broadcast and store what it was told).
            changed = after != before or len(changes) > observed
            detail = _describe(exc, panic_location)
            if is_panic(exc):
                if changed:
                    return Verdict(PANIC_PARTIAL, index, detail)
                panicked = panicked or Verdict(PANIC_CLEAN, index, detail)
            elif changed:
                return Verdict(ERROR_PARTIAL, index, detail)
    # An innocent local edit, as the next client's keystroke would make.
    try:
        with doc.transaction(origin="innocent"):
            doc.get("fuzz-innocent", type=Map)["edit"] = 1
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Verdict(POISONED, None, _describe(exc, panic_location))
    snapshot = _snapshot(doc)
    if isinstance(snapshot, BaseException):
        return Verdict(POISONED, None, f"get_update: {_describe(snapshot, panic_location)}")
    state, update = snapshot
    fresh: Doc[Any] = Doc()
    try:
        fresh.apply_update(update)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Verdict(SNAPSHOT_UNLOADABLE, None, _describe(exc, panic_location))
    have = decode_state_vector(state)
    loaded = decode_state_vector(fresh.get_state())
    if loaded != have:
        return Verdict(SNAPSHOT_DIFFERS, None, f"doc {have} snapshot {loaded}")
    # What BoardRoom broadcasts and persists is what the observer saw: it must rebuild the doc.
    replayed: Doc[Any] = Doc()
    try:
        for change in changes:
            replayed.apply_update(change)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Verdict(LOG_UNLOADABLE, None, _describe(exc, panic_location))
    logged = decode_state_vector(replayed.get_state())
    if logged != have:
        return Verdict(LOG_DIFFERS, None, f"doc {have} log {logged}")
    if expect_complete:
        # Not get_state(update) one by one: an update that does not start at clock 0
        # has the empty state on its own, so the merge is what says what was sent.
        sent = decode_state_vector(get_state(merge_updates(*updates)))
        if not covers(have, sent):
            return Verdict(UPDATE_DROPPED, None, f"doc {have}, sent {sent}")
    return panicked or Verdict(OK)
