"""Send times of every marked update and every delivery seen, on one clock.

Every update a writer sends sets a map key that names it (``~m{writer}.{seq}~``),
so a receiver finds it in the frame bytes without applying anything. The clock
is ``time.monotonic`` everywhere (the server sampler runs in another process and
uses the same clock), so send and receive times compare directly.
"""

from __future__ import annotations

import math
import re
import time
from array import array
from dataclasses import dataclass, field

MARKER = re.compile(rb"~m\d+\.\d+~")


def marker_for(writer_id: int, seq: int) -> str:
    """The key naming update ``seq`` of writer ``writer_id``."""
    return f"~m{writer_id}.{seq}~"


@dataclass(slots=True)
class SendRecord:
    """One update: when it was made, by whom, for which board, and if it is measured."""

    at: float
    writer_id: int
    board: str
    measured: bool


@dataclass
class Ledger:
    """Counts sends, expected and observed deliveries; keeps latencies for the window."""

    measure_start: float = math.inf
    measure_end: float = math.inf
    sent: dict[bytes, SendRecord] = field(default_factory=dict)
    # Parallel arrays: send time and latency of every measured delivery (seconds).
    delivery_sent_at: array[float] = field(default_factory=lambda: array("d"))
    delivery_latency: array[float] = field(default_factory=lambda: array("d"))
    schedule_lags: list[float] = field(default_factory=list)
    sends: int = 0
    sends_total: int = 0
    expected: int = 0
    expected_total: int = 0
    observed: int = 0
    observed_total: int = 0
    duplicates: int = 0
    # Where each measured delivery came from: a broadcast update, or a resync (step 2).
    observed_via_resync: int = 0
    # Per board: (made at, received at) of every delivery, when asked for (failover).
    receipts: dict[str, list[tuple[float, float]]] | None = None

    def measuring(self, due: float) -> bool:
        """True if a send scheduled at ``due`` belongs to the measured window."""
        return self.measure_start <= due < self.measure_end

    def record_send(
        self, marker: bytes, writer_id: int, board: str, receivers: int, *, at: float, due: float
    ) -> None:
        """Note an update as made, and how many other clients should receive it."""
        measured = self.measuring(due)
        self.sent[marker] = SendRecord(at, writer_id, board, measured)
        self.sends_total += 1
        self.expected_total += receivers
        if measured:
            self.sends += 1
            self.expected += receivers
            self.schedule_lags.append(at - due)

    def deliver(
        self, data: bytes, seen: set[bytes], writer_id: int | None, *, resync: bool = False
    ) -> None:
        """Account for every marked update in ``data`` received by one client.

        Args:
            data: an update (or a merged update, or a whole document state).
            seen: the markers this client has already received.
            writer_id: the client's own writer id: its own updates do not count.
            resync: ``data`` is a sync step 2 answering this client's step 1; a marker
                seen again there is the resync overlap, not a duplicate broadcast.
        """
        now = time.monotonic()
        for marker in MARKER.findall(data):
            record = self.sent.get(marker)
            if record is None or record.writer_id == writer_id:
                continue
            if marker in seen:
                if not resync:
                    self.duplicates += 1
                continue
            seen.add(marker)
            self.observed_total += 1
            if self.receipts is not None:
                self.receipts.setdefault(record.board, []).append((record.at, now))
            if record.measured:
                self.observed += 1
                self.delivery_sent_at.append(record.at)
                self.delivery_latency.append(now - record.at)
                if resync:
                    self.observed_via_resync += 1

    @property
    def lost(self) -> int:
        """Measured deliveries that never arrived."""
        return self.expected - self.observed
