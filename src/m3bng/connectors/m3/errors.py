"""Errors from M3, classified in this one place.

M3 reports failures three ways: HTTP status (401, 429, 5xx), an MI error inside an HTTP 200 body
(v1 ``ServerReturnedNOK``; v2 ``nrOfFailedTransactions``) and an MI error in an HTTP 400 body
(v2). ``classify_mi_error`` turns the MI part into one of the classes below; the client turns
HTTP and network failures into the rest. Every error carries program, transaction, code and
field so that a dead letter says exactly what M3 refused::

    M3Error (mixin: program, transaction, code, field, error_type)
     ├── M3TransientError   (TransientError)     5xx, connect/read failure before sending
     │    ├── M3Throttled                         429, honours Retry-After
     │    ├── M3RecordLocked                      record reserved by another user
     │    └── M3UnknownOutcome                    a write was sent, no answer: look up, never resend
     ├── M3Unavailable      (TargetUnavailable)  circuit open, maintenance window, auth refused
     ├── M3DataError        (PermanentError)     mandatory/too long/invalid value
     │    └── M3NotFound                          "... does not exist"
     ├── M3Duplicate        (PermanentError)     "... already exists" (callers may treat as success)
     └── M3ProgramError     (PermanentError)     program or transaction does not exist
"""

from __future__ import annotations

import re
from typing import Any

from m3bng.errors import PermanentError, TargetUnavailable, TransientError


class M3Error(Exception):
    """Fields every M3 error carries (mixed into the processing-error classes)."""

    program: str = ""
    transaction: str = ""
    code: str | None = None
    field: str | None = None
    error_type: str | None = None
    mi_message: str = ""

    def _set(
        self,
        program: str,
        transaction: str,
        message: str,
        code: str | None,
        field: str | None,
        error_type: str | None,
    ) -> None:
        self.program, self.transaction, self.mi_message = program, transaction, message
        self.code, self.field, self.error_type = code, field, error_type

    def describe(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "transaction": self.transaction,
            "code": self.code,
            "field": self.field,
            "type": self.error_type,
            "message": self.mi_message,
            "class": getattr(self, "error_class", None),
        }


def _text(program: str, transaction: str, message: str, code: str | None, field: str | None) -> str:
    where = f"{program}/{transaction}" if program else "M3"
    extras = ", ".join(
        part for part in (f"code {code}" if code else "", f"field {field}" if field else "") if part
    )
    return f"{where}: {message}" + (f" ({extras})" if extras else "")


class M3TransientError(TransientError, M3Error):
    def __init__(
        self,
        message: str,
        *,
        program: str = "",
        transaction: str = "",
        code: str | None = None,
        field: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        TransientError.__init__(
            self, _text(program, transaction, message, code, field), retry_after=retry_after
        )
        self._set(program, transaction, message, code, field, error_type)


class M3Throttled(M3TransientError):
    error_class = "throttled"


class M3RecordLocked(M3TransientError):
    error_class = "locked"


class M3UnknownOutcome(M3TransientError):
    error_class = "unknown_outcome"


class M3Unavailable(TargetUnavailable, M3Error):
    def __init__(
        self, message: str, *, retry_after: float = 30.0, program: str = "", transaction: str = ""
    ) -> None:
        TargetUnavailable.__init__(
            self, "m3", _text(program, transaction, message, None, None), retry_after=retry_after
        )
        self._set(program, transaction, message, None, None, None)


class _M3Permanent(PermanentError, M3Error):
    def __init__(
        self,
        message: str,
        *,
        program: str = "",
        transaction: str = "",
        code: str | None = None,
        field: str | None = None,
        error_type: str | None = None,
    ) -> None:
        PermanentError.__init__(self, _text(program, transaction, message, code, field))
        self._set(program, transaction, message, code, field, error_type)


class M3DataError(_M3Permanent):
    error_class = "data"


class M3NotFound(M3DataError):
    error_class = "not_found"


class M3Duplicate(_M3Permanent):
    error_class = "duplicate"


class M3ProgramError(_M3Permanent):
    error_class = "program"


_DUPLICATE = re.compile(r"already exists?|already defined|duplicate", re.I)
_LOCKED = re.compile(r"reserved by|locked|in use by|being (changed|updated)|is busy", re.I)
_NOT_FOUND = re.compile(r"does not exist|not found|doesn't exist|is not registered", re.I)
_PROGRAM_TYPES = {"TransactionNotFound", "ProgramNotFound"}


def classify_mi_error(
    program: str,
    transaction: str,
    message: str,
    *,
    code: str | None = None,
    field: str | None = None,
    error_type: str | None = None,
) -> M3Error:
    """Decide what an MI error means for the event: retry later, give up, or treat as done."""
    message = " ".join((message or "").split()) or "M3 reported an error without a message"
    kwargs: dict[str, Any] = {
        "program": program,
        "transaction": transaction,
        "code": code or None,
        "field": (field or "").strip() or None,
        "error_type": error_type,
    }
    if error_type in _PROGRAM_TYPES:
        return M3ProgramError(message, **kwargs)
    if _LOCKED.search(message):
        return M3RecordLocked(message, retry_after=5.0, **kwargs)
    if _DUPLICATE.search(message):
        return M3Duplicate(message, **kwargs)
    if _NOT_FOUND.search(message):
        return M3NotFound(message, **kwargs)
    return M3DataError(message, **kwargs)
