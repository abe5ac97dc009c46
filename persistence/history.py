"""Reading a board as it was: which past versions are retained, and how a past state is rebuilt.

A *version* of a board is its state right after one update (seq ``k``); its time is the time
the store appended that update. A snapshot covering seq <= ``k`` is that same version stored
whole, so it carries the same time. Compaction writes a new snapshot and moves the log entries
it covers out of the live log (into ``update_history``) rather than deleting them, and the
snapshot it replaces into ``snapshot_history``. What stays there is decided by a
:class:`HistoryPolicy`: a list of tiers, each up to an age, keeping either every version or
one version per step. The default, ``1h:all,1d:10m,30d:1h``, keeps

- every version less than 1 hour old;
- for versions up to 1 day old, the newest of each 10-minute step (UTC-aligned);
- for versions up to 30 days old, the newest of each hour;

and drops what is older. The current snapshot and the live log are never dropped. Before the
updates of a step leave the every-version window, the newest version of that step is
materialised as a snapshot, so the coarser tiers can still be read after the updates are gone.
Thinning runs when a board is compacted and does a bounded amount of work per call
(:data:`MAX_BUILDS_PER_THINNING` materialisations); what is left over waits for the next
compaction, so a store may briefly keep more than the policy asks, never less.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
#: The span word that keeps a tier forever.
FOREVER = "forever"
#: The step word that keeps every version.
ALL = "all"

#: How many snapshots one thinning pass may materialise; the rest waits for the next one.
MAX_BUILDS_PER_THINNING = 4


class InvalidHistoryPolicy(ValueError):
    """A history setting that does not parse, or whose tiers contradict each other."""


@dataclass(frozen=True)
class RetentionTier:
    """Versions up to ``span`` seconds old: every one (``step`` None) or the newest per step."""

    span: float
    step: float | None


@dataclass(frozen=True)
class HistoryPolicy:
    """Which past versions of a board are retained (see the module docstring).

    Args:
        tiers: from the youngest to the oldest; spans (ages measured from now) strictly
            increasing, steps non-decreasing, only the first may keep every version. No
            tiers keeps nothing but the current snapshot and the log after it.
    """

    tiers: tuple[RetentionTier, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        previous_span, previous_step = 0.0, 0.0
        for index, tier in enumerate(self.tiers):
            if not tier.span > previous_span:
                raise InvalidHistoryPolicy(
                    f"history tier {index + 1}: spans must be positive and increase"
                )
            if tier.step is None and index > 0:
                raise InvalidHistoryPolicy("history: only the first tier may keep every version")
            if tier.step is not None:
                if not (0 < tier.step < math.inf) or tier.step < previous_step:
                    raise InvalidHistoryPolicy(
                        f"history tier {index + 1}: steps must be positive and not shrink"
                    )
                previous_step = tier.step
            previous_span = tier.span

    @property
    def every_version_for(self) -> float | None:
        """Seconds back from now in which every version is kept; None if no tier keeps all."""
        first = self.tiers[0] if self.tiers else None
        return first.span if first is not None and first.step is None else None

    def every_version_since(self, now: float) -> float:
        """The time from which on every version is kept (``inf`` if none is)."""
        window = self.every_version_for
        return now - window if window is not None else math.inf

    def tier_for(self, age: float) -> tuple[int, RetentionTier] | None:
        """The tier (index and tier) a version ``age`` seconds old falls in, None if beyond."""
        for index, tier in enumerate(self.tiers):
            if age <= tier.span:
                return index, tier
        return None

    def describe(self) -> str:
        """What is kept, in words for messages: ``1h of every version, 10m steps for 1d``."""
        if not self.tiers:
            return "no past versions (only the current snapshot and the log after it)"
        parts = [
            f"{_format_duration(t.span)} of every version"
            if t.step is None
            else f"{_format_duration(t.step)} steps for {_format_duration(t.span)}"
            for t in self.tiers
        ]
        return ", ".join(parts)

    def __str__(self) -> str:
        """The setting text that parses back to this policy, e.g. ``1h:all,1d:10m,30d:1h``."""
        if not self.tiers:
            return "none"
        return ",".join(
            f"{_format_duration(t.span)}:{ALL if t.step is None else _format_duration(t.step)}"
            for t in self.tiers
        )


def parse_history_policy(text: str) -> HistoryPolicy:
    """Parse a history setting such as ``"1h:all,1d:10m,30d:1h"`` (the ``BOARDCAST_HISTORY`` text).

    Comma-separated ``SPAN:STEP`` tiers, youngest first. SPAN is a duration (``90s``, ``10m``,
    ``1h``, ``7d``, ``2w``) or ``forever``; STEP is a duration or ``all`` (every version,
    first tier only). ``none`` or an empty text keeps no past version. Raises
    InvalidHistoryPolicy (a ValueError) with the offending part.
    """
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return KEEP_NOTHING
    tiers: list[RetentionTier] = []
    for part in stripped.split(","):
        span_text, colon, step_text = part.partition(":")
        if not colon:
            raise InvalidHistoryPolicy(f"history tier {part.strip()!r}: expected SPAN:STEP")
        span = math.inf if span_text.strip().lower() == FOREVER else _parse_duration(span_text)
        step = None if step_text.strip().lower() == ALL else _parse_duration(step_text)
        tiers.append(RetentionTier(span, step))
    return HistoryPolicy(tuple(tiers))


def _parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise InvalidHistoryPolicy(
            f"history: {text.strip()!r} is not a duration like 90s, 10m, 1h, 7d or 2w"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _format_duration(seconds: float) -> str:
    if seconds == math.inf:
        return FOREVER
    for unit in ("w", "d", "h", "m"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


#: The policy stores use unless told otherwise.
DEFAULT_HISTORY = parse_history_policy("1h:all,1d:10m,30d:1h")

#: Keeps every version forever.
KEEP_EVERYTHING = HistoryPolicy((RetentionTier(math.inf, None),))

#: Keeps no past version: the board can be read back only to its current snapshot.
KEEP_NOTHING = HistoryPolicy(())


@dataclass(frozen=True)
class Thinning:
    """What one thinning pass does to a board's history, in this order.

    Attributes:
        build: ``(seq, at)`` of the versions to materialise as history snapshots, oldest
            first (each from the newest snapshot at or below it plus the updates after it).
        drop_snapshots: seqs of the history snapshots to delete.
        drop_updates_upto: retained (compacted) updates with seq <= this are deleted.
    """

    build: list[tuple[int, float]]
    drop_snapshots: list[int]
    drop_updates_upto: int

    @property
    def is_empty(self) -> bool:
        """True when the pass changes nothing."""
        return not self.build and not self.drop_snapshots and self.drop_updates_upto <= 0


@dataclass(frozen=True)
class _Point:
    seq: int
    at: float
    snapshot: bool
    current: bool = False


def plan_thinning(
    *,
    policy: HistoryPolicy,
    now: float,
    current: tuple[int, float] | None,
    snapshots: Sequence[tuple[int, float]],
    aged_updates: Sequence[tuple[int, float]],
    more_aged_updates: bool = False,
    first_newer_update: int | None = None,
    max_builds: int = MAX_BUILDS_PER_THINNING,
) -> Thinning:
    """Decide what thinning one board's history does now (pure: the stores do the I/O).

    Args:
        policy: what to retain.
        now: the current time; ages are measured from it.
        current: ``(seq, at)`` of the current snapshot, never dropped.
        snapshots: ``(seq, at)`` of every history snapshot of the board.
        aged_updates: ``(seq, at)`` of the retained updates older than the every-version
            window (``at < policy.every_version_since(now)``), oldest first.
        more_aged_updates: ``aged_updates`` was cut short; its last step is left alone.
        first_newer_update: the lowest seq of the retained updates inside the every-version
            window (kept, and in need of a snapshot to be rebuilt from), if any.
        max_builds: how many snapshots this pass may materialise.
    """
    horizon = policy.every_version_since(now)
    points = [_Point(seq, at, True) for seq, at in snapshots if at < horizon]
    points += [_Point(seq, at, False) for seq, at in aged_updates if at < horizon]
    if current is not None and current[1] < horizon:
        points.append(_Point(current[0], current[1], True, current=True))
    # An update sorts before the snapshot of the same seq: the snapshot is the one kept.
    points.sort(key=lambda p: (p.seq, p.snapshot, p.current))

    groups: list[tuple[tuple[int, int] | None, list[_Point]]] = []
    for point in points:
        found = policy.tier_for(now - point.at)
        # Older than the every-version window, so its tier has a step.
        key = None if found is None else (found[0], _bucket(point.at, found[1].step or math.inf))
        if groups and groups[-1][0] == key:
            groups[-1][1].append(point)
        else:
            groups.append((key, [point]))
    if more_aged_updates and groups:
        groups.pop()  # its step may go on in updates not read yet

    build: list[tuple[int, float]] = []
    drop: list[int] = []
    upto = 0
    ended_beyond = False
    for key, members in groups:
        if key is None:
            # Older than every tier: dropped without a trace.
            drop += [p.seq for p in members if p.snapshot and not p.current]
            upto = max(upto, *(p.seq for p in members))
            ended_beyond = True
            continue
        tier = policy.tiers[key[0]]
        assert tier.step is not None  # an every-version tier holds no aged version
        if (key[1] + 1) * tier.step > horizon:
            break  # the step is still filling up: leave it and everything newer
        target = members[-1]
        if not target.snapshot:
            if len(build) >= max_builds:
                break
            build.append((target.seq, target.at))
        drop += [p.seq for p in members[:-1] if p.snapshot and not p.current]
        upto = max(upto, target.seq)
        ended_beyond = False

    kept_after = [p.seq for p in points if not p.snapshot and p.seq > upto]
    if first_newer_update is not None:
        kept_after.append(first_newer_update)
    if ended_beyond and kept_after and upto > 0:
        # The updates still kept need a base: a snapshot between the dropped ones and them.
        lowest = min(kept_after)
        remaining = {seq for seq, _ in snapshots} - set(drop)
        if current is not None:
            remaining.add(current[0])
        if not any(upto <= seq <= lowest for seq in remaining):
            if upto in drop:
                drop.remove(upto)
            else:
                build.append((upto, max(p.at for p in points if p.seq == upto)))
    return Thinning(build, sorted(drop), upto)


def _bucket(at: float, step: float) -> int:
    return math.floor(at / step)


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
