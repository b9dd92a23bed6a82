"""Keeping M3 safe from us and us from M3: a circuit breaker and maintenance windows.

The circuit breaker (shared with the BNG connector, see ``m3bng.connectors.protection``) opens
after repeated transient failures and turns calls into ``M3Unavailable`` (events wait, using no
attempt). Maintenance windows make M3 work wait during the tenant's planned downtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from m3bng.connectors.protection import CircuitBreaker, CircuitState

__all__ = ["CircuitBreaker", "CircuitState", "MaintenanceWindow", "maintenance_seconds_left"]


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
