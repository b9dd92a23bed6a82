"""Keeping M3 safe from us and us from M3: a circuit breaker and maintenance windows.

When M3 is down, every event would otherwise burn its retries against a dead endpoint and end
in the dead letters. The breaker opens after repeated transient failures and turns calls into
``M3Unavailable`` (events wait, using no attempt); after ``reset_seconds`` one probe call is let
through (half-open) and its outcome closes or re-opens the circuit, so recovery needs nobody.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

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
        """A call that says nothing about M3's health (a data error): just end a probe."""
        if self._probe_in_flight:
            self.record_success()

    def _set(self, state: CircuitState) -> None:
        log.warning("circuit.state_changed", target=self.name, state=state.value, previous=self.state.value)
        self.state = state
        if self._on_change is not None:
            self._on_change(self.name, state)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^(?:(?P<day>[a-z]{3})\s+)?(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$", re.I)


@dataclass(frozen=True)
class MaintenanceWindow:
    """``Sun 02:00-04:00`` (weekly) or ``02:00-02:30`` (daily), in UTC; may cross midnight."""

    day: int | None
    start: int  # minutes after midnight
    end: int

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        match = _WINDOW.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a window like 'Sun 02:00-04:00' or '02:00-02:30' (UTC)")
        day = match["day"]
        if day is not None and day.lower() not in _DAYS:
            raise ValueError(f"{text!r}: day must be one of {', '.join(d.title() for d in _DAYS)}")

        def minutes(hhmm: str) -> int:
            hours, mins = int(hhmm[:2]), int(hhmm[3:])
            if hours > 23 or mins > 59:
                raise ValueError(f"{text!r}: {hhmm} is not a time of day")
            return hours * 60 + mins

        return cls(_DAYS.index(day.lower()) if day else None, minutes(match["start"]), minutes(match["end"]))

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until this window ends if ``now`` is inside it, else None."""
        now = now.astimezone(UTC)
        for offset in (0, -1):  # a window that started yesterday may still be open
            day = now.date() + timedelta(days=offset)
            if self.day is not None and day.weekday() != self.day:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=self.start)
            length = (self.end - self.start) % (24 * 60) or 24 * 60
            end = start + timedelta(minutes=length)
            if start <= now < end:
                return (end - now).total_seconds()
        return None


def maintenance_seconds_left(windows: list[MaintenanceWindow], now: datetime | None = None) -> float | None:
    now = now or datetime.now(UTC)
    left = [s for w in windows if (s := w.seconds_left(now)) is not None]
    return max(left) if left else None
