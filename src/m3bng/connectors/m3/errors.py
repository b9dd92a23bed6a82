"""Errors from M3, classified in this one place.

M3 reports failures three ways: HTTP status (401, 429, 5xx), an MI error inside an HTTP 200 body
(v1 ``ServerReturnedNOK``; v2 ``nrOfFailedTransactions``) and an MI error in an HTTP 400 body
(v2). ``classify_mi_error`` turns the MI part into one of the classes below; the client turns
HTTP and network failures into the rest. Every error carries program, transaction, code and
field so that a dead letter says exactly what M3 refused::

    M3Error (mixin: program, transaction, code, field, value, error_type)
     ├── M3TransientError   (TransientError)     5xx, connect/read failure before sending
     │    ├── M3Throttled                         429, honours Retry-After
     │    ├── M3RecordLocked                      record reserved/changed by another user
     │    └── M3UnknownOutcome                    a write was sent, no answer: look up, never resend
     ├── M3Unavailable      (TargetUnavailable)  circuit open, maintenance window, auth refused
     ├── M3DataError        (PermanentError)     mandatory/too long/invalid value
     │    ├── M3NotFound                          "... does not exist"
     │    └── M3Blocked                           "... is blocked", item status forbids use
     ├── M3Duplicate        (PermanentError)     "... already exists" (callers may treat as success)
     └── M3ProgramError     (PermanentError)     program/transaction unknown, not authorized

How an MI error is classified, first answer wins:

1. M3's error type (``@type`` / ``errorType``) when it is more than ``ServerReturnedNOK``:
   ``TransactionNotFound`` is a set-up problem, ``MandatoryInputFieldNotFound`` a data error
   even though its text says "not found".
2. M3's message id (``@code`` / ``errorCode``, 7 characters such as ``WCU0203``): a few ids in
   ``_BY_CODE`` and M3's field-check convention ``W<field><nn>`` where ``nn`` 03 is "... does
   not exist" and 04 "... already exists". An id names the message whatever the language and
   wording of the text, which is why it comes first: M3 translates messages per user.
3. Whole-word patterns on the text, for errors without a known id (extensions, other
   releases). Word boundaries matter: matching "locked" inside "blocked" once retried a
   blocked item five times as a record lock instead of dead-lettering it with the item named.

Anything else is an ``M3DataError``: permanent, dead-lettered with M3's text, code and field.
``tests/fixtures/m3_messages.yaml`` holds real M3 texts with their ids and expected class.
"""

from __future__ import annotations

import re
from typing import Any

from m3bng.errors import M3bngError, PermanentError, TargetUnavailable, TransientError


class M3Error(M3bngError):
    """Fields every M3 error carries (mixed into the processing-error classes)."""

    program: str = ""
    transaction: str = ""
    code: str | None = None
    field: str | None = None
    value: str | None = None
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
        value: str | None = None,
    ) -> None:
        self.program, self.transaction, self.mi_message = program, transaction, message
        self.code, self.field, self.error_type, self.value = code, field, error_type, value

    def describe(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "transaction": self.transaction,
            "code": self.code,
            "field": self.field,
            "value": self.value,
            "type": self.error_type,
            "message": self.mi_message,
            "class": getattr(self, "error_class", None),
        }


def _text(
    program: str,
    transaction: str,
    message: str,
    code: str | None,
    field: str | None,
    value: str | None = None,
) -> str:
    where = f"{program}/{transaction}" if program else "M3"
    if field:
        target = f"field {field}" + (f" = {value}" if value else "")
    else:
        target = f"value {value}" if value else ""
    extras = ", ".join(part for part in (f"code {code}" if code else "", target) if part)
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
        value: str | None = None,
    ) -> None:
        TransientError.__init__(
            self, _text(program, transaction, message, code, field, value), retry_after=retry_after
        )
        self._set(program, transaction, message, code, field, error_type, value)


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
        value: str | None = None,
    ) -> None:
        PermanentError.__init__(self, _text(program, transaction, message, code, field, value))
        self._set(program, transaction, message, code, field, error_type, value)


class M3DataError(_M3Permanent):
    error_class = "data"


class M3NotFound(M3DataError):
    error_class = "not_found"


class M3Blocked(M3DataError):
    """The record exists but M3 refuses its use (blocked, or an item status that forbids it).

    Waiting does not help, so it is dead-lettered at once, naming the record, unlike a lock.
    """

    error_class = "blocked"


class M3Duplicate(_M3Permanent):
    error_class = "duplicate"


class M3ProgramError(_M3Permanent):
    error_class = "program"


_Class = type[M3RecordLocked] | type[_M3Permanent]

# 1. errorType values that say more than ServerReturnedNOK.
_BY_TYPE: dict[str, _Class] = {
    "TransactionNotFound": M3ProgramError,
    "ProgramNotFound": M3ProgramError,
    "MandatoryInputFieldNotFound": M3DataError,
    "InputFieldTooLong": M3DataError,
}

# 2. Message ids whose meaning is known (texts and sources: tests/fixtures/m3_messages.yaml).
_BY_CODE: dict[str, _Class] = {
    "XRE0103": M3NotFound,  # Record does not exist
    "XRE0104": M3Duplicate,  # Record already exists
    "XIT0107": M3Blocked,  # Item number is not permitted - status is &1
    # Another user changed, deleted or added the record meanwhile: a retry reads it afresh.
    "XUP0001": M3RecordLocked,  # The record has been changed by user &1
    "XDE0001": M3RecordLocked,  # The record has been deleted by another user
    "XAD0001": M3RecordLocked,  # A record has been entered by user &1
    "XO_1130": M3RecordLocked,  # Please try again later
    "XAU0008": M3ProgramError,  # Not authorized for company &1: a set-up problem
}
_FIELD_CHECK = re.compile(r"W[A-Z0-9]{4}0([34])")  # W<field>03 does not exist, W<field>04 already exists
_FIELD_CHECK_CLASS: dict[str, _Class] = {"3": M3NotFound, "4": M3Duplicate}


def _words(*phrases: str) -> re.Pattern[str]:
    """Whole words only, so that "locked" is not found inside "blocked"."""
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.I)


# 3. Whole words of the text, in this order ("blocked" before the lock words).
_BY_WORDS: tuple[tuple[re.Pattern[str], _Class], ...] = (
    (_words("blocked"), M3Blocked),
    (_words("reserved by", "locked", "in use by", "being (?:changed|updated)", "is busy"), M3RecordLocked),
    (_words("already exists?", "already defined", "duplicate"), M3Duplicate),
    (_words("does not exists?", "doesn't exist", "not found", "is not registered"), M3NotFound),
    (_words("not authori[sz]ed"), M3ProgramError),
)
_LOCK_RETRY_AFTER = 5.0


def _class_of(message: str, code: str | None, error_type: str | None) -> _Class:
    if error_type in _BY_TYPE:
        return _BY_TYPE[error_type]
    if code:
        if code in _BY_CODE:
            return _BY_CODE[code]
        if check := _FIELD_CHECK.fullmatch(code):
            return _FIELD_CHECK_CLASS[check.group(1)]
    for pattern, cls in _BY_WORDS:
        if pattern.search(message):
            return cls
    return M3DataError


def classify_mi_error(
    program: str,
    transaction: str,
    message: str,
    *,
    code: str | None = None,
    field: str | None = None,
    error_type: str | None = None,
    value: str | None = None,
) -> M3Error:
    """Decide what an MI error means for the event: retry later, give up, or treat as done.

    ``value`` is what was sent in ``field``, when the caller knows it: M3 does not always repeat
    it ("Item number is not permitted - status is 90"), and a dead letter should name the record.
    """
    message = " ".join((message or "").split()) or "M3 reported an error without a message"
    code = (code or "").strip().upper() or None
    kwargs: dict[str, Any] = {
        "program": program,
        "transaction": transaction,
        "code": code,
        "field": (field or "").strip() or None,
        "error_type": error_type,
        "value": (value or "").strip() or None,
    }
    cls = _class_of(message, code, error_type)
    if cls is M3RecordLocked:
        return M3RecordLocked(message, retry_after=_LOCK_RETRY_AFTER, **kwargs)
    return cls(message, **kwargs)
