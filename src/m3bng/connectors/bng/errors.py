"""Errors from BNG's REST API, classified in this one place.

BNG answers every failure with ``{"error": code, "message": text, "field": name|null}`` and an
HTTP status; the client turns status, body and network failures into these classes, which tell
the worker what to do with the event::

    BngError (mixin: method, path, status, code, field, bng_message)
     ├── BngTransientError  (TransientError)     5xx, timeout on a read, connection dropped
     │    ├── BngThrottled                         429 after the inline waits; carries Retry-After
     │    └── BngUnknownOutcome                    a write was sent, no answer (safe to resend)
     ├── BngUnavailable     (TargetUnavailable)  connection refused, circuit open
     │    └── BngAuthError                         401/403 after re-authentication: wait, not dead-letter
     ├── BngNotFound        (PermanentError)     404
     ├── BngDataError       (PermanentError)     400/422: names BNG's field and message
     └── BngConflict        (PermanentError)     409
"""

from __future__ import annotations

from typing import Any

from m3bng.errors import M3bngError, PermanentError, TargetUnavailable, TransientError

# Wrong or revoked credentials are a configuration problem nothing in an event can fix: work waits
# (TargetUnavailable) and is retried every few minutes until someone fixes the key.
AUTH_RETRY_SECONDS = 300.0


class BngError(M3bngError):
    """Fields every BNG error carries (mixed into the processing-error classes). ``status`` is
    the HTTP status BNG answered with: a fact about its answer, not one m3bng answers with."""

    method: str = ""
    path: str = ""
    status: int | None = None
    code: str | None = None
    field: str | None = None
    bng_message: str = ""

    def _set(
        self,
        method: str,
        path: str,
        status: int | None,
        code: str | None,
        field: str | None,
        message: str,
    ) -> None:
        self.method, self.path, self.status = method, path, status
        self.code, self.field, self.bng_message = code, field, message

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "code": self.code,
            "field": self.field,
            "message": self.bng_message,
            "class": getattr(self, "error_class", None),
        }


def _text(method: str, path: str, status: int | None, message: str, field: str | None) -> str:
    where = f"BNG {method} {path}".rstrip() if method else "BNG"
    extras = ", ".join(
        p for p in (f"HTTP {status}" if status else "", f"field {field}" if field else "") if p
    )
    return f"{where}: {message}" + (f" ({extras})" if extras else "")


class BngTransientError(TransientError, BngError):
    error_class = "transient"

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        TransientError.__init__(self, _text(method, path, status, message, field), retry_after=retry_after)
        self._set(method, path, status, code, field, message)


class BngThrottled(BngTransientError):
    """429 that outlasted the inline waits (or asked for a longer one): the event is rescheduled
    no earlier than ``retry_after``."""

    error_class = "throttled"


class BngUnknownOutcome(BngTransientError):
    """A write was sent and no answer came back: BNG may or may not have applied it.

    Unlike M3, resending is safe: every write carries an ``Idempotency-Key``, and BNG answers a
    repeat of a key it has already applied with the stored response (``Idempotent-Replayed:
    true``) instead of applying it again. So this is an ordinary transient error; the flow must
    only make sure that the retry reuses the same key.
    """

    error_class = "unknown_outcome"


class BngUnavailable(TargetUnavailable, BngError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 30.0,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        TargetUnavailable.__init__(
            self, "bng", _text(method, path, status, message, None), retry_after=retry_after
        )
        self._set(method, path, status, code, None, message)


class BngAuthError(BngUnavailable):
    """BNG refused our credentials even after a fresh token (or the API key is wrong)."""

    error_class = "auth"

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None) -> None:
        super().__init__(message, retry_after=AUTH_RETRY_SECONDS, method=method, path=path, status=status)


class _BngPermanent(PermanentError, BngError):
    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        PermanentError.__init__(self, _text(method, path, status, message, field))
        self._set(method, path, status, code, field, message)


class BngNotFound(_BngPermanent):
    error_class = "not_found"


class BngDataError(_BngPermanent):
    error_class = "data_error"


class BngConflict(_BngPermanent):
    error_class = "conflict"
