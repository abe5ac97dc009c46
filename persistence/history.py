"""Reading a board as it was: which past snapshots are kept, and how a past state is rebuilt.

Compacting a board writes a new snapshot and trims the log entries it covers. The snapshot it
replaces is not dropped: it moves to the board's history (the ``snapshot_history`` table or
collection), so the past stays readable:

- since the current snapshot every update is still in the log, so a time after it is read
  at update granularity;
- before it, a time is read at snapshot granularity: the newest retained past snapshot
  written at or before that time.

Past snapshots are full states, so keeping all of them would grow without bound. Each time a
board is compacted its history is thinned by a :class:`HistoryPolicy`; by default it keeps

- the 10 newest past snapshots, whatever their age;
- for the last 48 hours, the newest snapshot of each clock hour;
- for the last 365 days, the newest snapshot of each UTC day;

and deletes the rest. A board that is not written is not thinned. Times are unix seconds as
stamped by the store when it wrote the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pycrdt

_HOUR = 3600.0
_DAY = 86400.0


@dataclass(frozen=True)
class HistoryPolicy:
    """Which past snapshots of a board survive thinning (see the module docstring).

    Args:
        keep_last: how many of the newest past snapshots are always kept.
        hourly_for: seconds back from now in which the newest snapshot of each hour is kept.
        daily_for: seconds back from now in which the newest snapshot of each UTC day is kept;
            ``None`` keeps one per day forever.
    """

    keep_last: int = 10
    hourly_for: float = 48 * _HOUR
    daily_for: float | None = 365 * _DAY

    def __post_init__(self) -> None:
        if self.keep_last < 0 or self.hourly_for < 0 or (self.daily_for or 0) < 0:
            raise ValueError(f"{self!r}: counts and durations must not be negative")


#: The policy stores use unless told otherwise.
DEFAULT_HISTORY = HistoryPolicy()

#: Keeps every past snapshot forever.
KEEP_EVERYTHING = HistoryPolicy(keep_last=2**62, hourly_for=0.0, daily_for=0.0)

#: Keeps no past snapshot: the board can be read back only to its current snapshot.
KEEP_NOTHING = HistoryPolicy(keep_last=0, hourly_for=0.0, daily_for=0.0)


def snapshots_to_drop(
    snapshots: Iterable[tuple[int, float]], *, now: float, policy: HistoryPolicy
) -> list[int]:
    """Return the seqs of the past snapshots that ``policy`` no longer keeps.

    Args:
        snapshots: ``(seq, at)`` of each past snapshot of one board, in any order.
        now: the current time, from which ages are measured.
        policy: what to keep.
    """
    newest_first = sorted(snapshots, key=lambda item: (item[1], item[0]), reverse=True)
    hours: set[int] = set()
    days: set[int] = set()
    dropped: list[int] = []
    for rank, (seq, at) in enumerate(newest_first):
        hour, day = int(at // _HOUR), int(at // _DAY)
        age = now - at
        keep = (
            rank < policy.keep_last
            or (age <= policy.hourly_for and hour not in hours)
            or ((policy.daily_for is None or age <= policy.daily_for) and day not in days)
        )
        if keep:
            # A kept snapshot already stands for its hour and its day.
            hours.add(hour)
            days.add(day)
        else:
            dropped.append(seq)
    return sorted(dropped)


def merge_state(snapshot: bytes | None, updates: Sequence[bytes]) -> bytes:
    """Apply a snapshot and then updates, in order, to a fresh document; return its full state.

    The state is canonical: loading it and encoding again gives the same bytes. Blocks for as
    long as pycrdt takes (about 2 x 50 ms for a 10,000-task board): async callers use a thread.
    """
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if snapshot is not None:
        doc.apply_update(snapshot)
    # Seq order is causal order; pycrdt does not always converge on updates out of order.
    for update in updates:
        doc.apply_update(update)
    # A document built from a log can encode a few bytes longer than the same document
    # loaded from that encoding (pycrdt merges deleted runs on load: 24 of 300 random
    # boards); once loaded, the encoding is stable, so one reload makes exports comparable.
    reloaded: pycrdt.Doc[Any] = pycrdt.Doc()
    reloaded.apply_update(doc.get_update())
    state: bytes = reloaded.get_update()
    return state
