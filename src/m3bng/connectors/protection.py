"""Protection shared by the connectors (M3 and BNG): a circuit breaker and short in-call retries.

When a target is down, every event would otherwise burn its retries against a dead endpoint and
end in the dead letters. The breaker opens after repeated transient failures and the connector
turns calls into its ``TargetUnavailable`` error (events wait, using no attempt); after
``reset_seconds`` one probe call is let through (half-open) and its outcome closes or re-opens
the circuit, so recovery needs nobody.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = structlog.get_logger(__name__)


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, CircuitState], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    def before_call(self) -> float | None:
        """None when the call may go ahead; otherwise the seconds until it is worth asking again."""
        if self.state is CircuitState.CLOSED:
            return None
        remaining = self._opened_at + self.reset_seconds - self._clock()
        if self.state is CircuitState.OPEN and remaining > 0:
            return remaining
        if self._probe_in_flight:
            return max(self.reset_seconds / 4, 1.0)
        self._set(CircuitState.HALF_OPEN)
        self._probe_in_flight = True
        return None

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self.state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self.state is CircuitState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            if self.state is not CircuitState.OPEN:
                self._set(CircuitState.OPEN)

    def record_neutral(self) -> None:
        """A call that says nothing about the target's health (a data error): just end a probe."""
        if self._probe_in_flight:
            self.record_success()

    def _set(self, state: CircuitState) -> None:
        log.warning("circuit.state_changed", target=self.name, state=state.value, previous=self.state.value)
        self.state = state
        if self._on_change is not None:
            self._on_change(self.name, state)


def inline_retrying(
    retryable: Callable[[BaseException], bool], *, attempts: int, max_wait: float
) -> AsyncRetrying:
    """Short in-call retries: exponential backoff with jitter, at least the error's Retry-After.

    An error asking for a longer wait than ``max_wait`` is not retried here: it goes back to the
    worker, whose durable schedule survives a restart (tenacity's sleeps do not).
    """

    def should_retry(exc: BaseException) -> bool:
        return retryable(exc) and (getattr(exc, "retry_after", None) or 0) <= max_wait

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        base = 0.2 * 2 ** (state.attempt_number - 1) + random.uniform(0, 0.1)
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return float(min(max(base, retry_after), max_wait))

    return AsyncRetrying(
        stop=stop_after_attempt(attempts), wait=wait, retry=retry_if_exception(should_retry), reraise=True
    )
