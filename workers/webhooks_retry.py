"""When a delivery is tried again, and what one attempt's outcome means (sans-I/O).

The default schedule is that of Svix and most Standard Webhooks senders: immediately, then
5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after each failure (a bit more than a day in
all), each wait stretched or shrunk by up to ``jitter`` of itself so that endpoints that
failed together are not all retried in the same second.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

DEFAULT_SCHEDULE = "0,5,300,1800,7200,18000,36000,36000"


def parse_schedule(spec: str) -> tuple[float, ...]:
    """Seconds before each attempt, from ``"0,5,300"``; at least one, none negative."""
    try:
        waits = tuple(float(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{spec!r}: the retry schedule is comma-separated seconds") from None
    if not waits or any(wait < 0 for wait in waits) or len(waits) > 100:
        raise ValueError(f"{spec!r}: 1-100 waits in seconds, none negative")
    return waits


class Outcome(enum.Enum):
    """What one attempt's answer means."""

    DELIVERED = "delivered"  # a 2xx: done
    GONE = "gone"  # 410: the receiver asks us to stop; the endpoint is disabled
    RETRY = "retry"  # anything else (another status, a timeout, a refused address...)


def classify(status: int | None) -> Outcome:
    """The outcome of an attempt answered with ``status`` (None: no answer)."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.RETRY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The schedule of attempts (waits before each) and its jitter."""

    schedule: tuple[float, ...] = parse_schedule(DEFAULT_SCHEDULE)
    jitter: float = 0.1

    @property
    def attempts(self) -> int:
        """How many scheduled attempts a delivery gets."""
        return len(self.schedule)

    def next_wait(self, attempts_made: int, rand: random.Random | None = None) -> float | None:
        """Seconds from a failed attempt to the next one; None when it was the last."""
        if attempts_made >= len(self.schedule):
            return None
        wait = self.schedule[attempts_made]
        spread = wait * self.jitter
        draw = (rand or random).uniform(-spread, spread) if spread else 0.0
        return max(0.0, wait + draw)
