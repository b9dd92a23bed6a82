from __future__ import annotations

import random

from m3bng.inbox.retry import RetryPolicy


def test_schedule_is_followed_then_exhausted() -> None:
    policy = RetryPolicy([10, 20, 40], jitter=0)
    assert policy.max_attempts == 4
    assert [policy.next_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, None]


def test_jitter_only_lengthens_within_bound() -> None:
    policy = RetryPolicy([100], jitter=0.2, rng=random.Random(7))
    delays = [policy.next_delay(1) for _ in range(200)]
    assert all(d is not None and 100 <= d <= 120 for d in delays)
    assert len(set(delays)) > 100  # spread, so one outage's retries do not arrive together


def test_retry_after_is_honoured() -> None:
    policy = RetryPolicy([5], jitter=0)
    assert policy.next_delay(1, retry_after=90) == 90
    assert policy.next_delay(1, retry_after=1) == 5
