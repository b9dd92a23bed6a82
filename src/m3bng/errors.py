"""What a flow raises to tell the worker how an event should continue.

Classification happens in exactly one place per boundary (the M3 and BNG connectors turn HTTP
and MI answers into these); the worker only reads the class::

    ProcessingError
     ├── TransientError       retry on the schedule (timeouts, 5xx, 429, record locked)
     │    └── TargetUnavailable   the target is down or paused: wait, consume no attempt
     └── PermanentError       dead-letter now (bad data, missing mapping, rejected by M3)
    Skipped                   not an error: the event is closed as ``skipped`` with its reason

Any other exception is a bug or an unforeseen failure; it is retried like a transient error
(with the class ``internal``) so that a fix deployed within the retry window still delivers.
"""

from __future__ import annotations


class M3bngError(Exception):
    """Root of m3bng's own exceptions."""


class ProcessingError(M3bngError):
    error_class = "error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(ProcessingError):
    error_class = "transient"


class TargetUnavailable(TransientError):
    """The target is down (circuit open), paused or in a maintenance window.

    The event waits without using up an attempt: an outage must never dead-letter work.
    """

    error_class = "target_down"

    def __init__(self, target: str, message: str, *, retry_after: float = 30.0) -> None:
        super().__init__(message, retry_after=retry_after)
        self.target = target


class PermanentError(ProcessingError):
    error_class = "permanent"


class Skipped(M3bngError):
    """The event is deliberately not applied: a stale BOD variation, an echo of m3bng's own
    write, a BOD noun no flow handles. The worker closes it as ``skipped`` with this reason;
    it is neither retried nor dead-lettered (there is nothing to fix)."""

    def __init__(self, reason: str, *, error_class: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
