"""The retry decision, kept pure so that it can be tested without clocks or databases."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule[n-1]`` is the delay after the n-th failed attempt; past its end, give up.

    Jitter only ever lengthens a delay (by up to ``jitter`` × delay) so that retries of many
    events failed by one outage spread out, while the whole schedule never gets shorter than
    documented.
    """

    schedule: Sequence[float]
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_delay(self, attempts_made: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when the schedule is exhausted."""
        if attempts_made >= self.max_attempts:
            return None
        base = self.schedule[max(attempts_made, 1) - 1]
        delay = base * (1 + self.rng.uniform(0, self.jitter))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay
