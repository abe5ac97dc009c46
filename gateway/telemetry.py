"""What a gateway counts on its hot path, read by ``/metrics`` at scrape time.

Plain integers and fixed histogram buckets, no locks: the gateway's event loop
is the only writer, and a scrape reads them on the same loop. Recording a
figure is an integer add or one bisect, never a label lookup or an allocation.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the fan-out latency buckets: sub-millisecond to seconds.
FANOUT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: How y-protocol frames carrying a document update start (sync step 2, sync update).
UPDATE_PREFIXES = (b"\x00\x02", b"\x00\x01")

#: How the frames a host relays to a board's other clients start (sync update).
RELAYED_UPDATE = b"\x00\x02"


class LatencyHistogram:
    """A Prometheus-style histogram with fixed buckets and one writer."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = FANOUT_BUCKETS) -> None:
        self.bounds = bounds
        # One slot per bound, and a last one for values past every bound (+Inf).
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Record one value."""
        # bisect_left puts a value equal to a bound in that bound's bucket (le).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count of values <= le)`` pairs, ending with ``+Inf``, as Prometheus exposes."""
        pairs: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            pairs.append((repr(bound), float(running)))
        pairs.append(("+Inf", float(running + self.counts[-1])))
        return pairs


@dataclass
class GatewayTelemetry:
    """Counters of one gateway that the routing counters do not hold."""

    updates_in: int = 0  # client frames carrying a document update
    updates_out: int = 0  # relayed updates written to clients, one per recipient
    # Every WebSocket close this gateway sent, by close code, whoever decided it.
    closes: Counter[int] = field(default_factory=Counter)
    # From a client's update arriving here to its relay written to the board's other
    # clients on this gateway (local delivery): what a user on the board waits for.
    fanout: LatencyHistogram = field(default_factory=LatencyHistogram)
