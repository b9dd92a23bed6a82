"""The root of every exception m3bng defines, and the two families most code meets.

Every exception class in the project derives from ``M3bngError``, so that "one of ours" is one
``except`` (and a test, tests/unit/test_errors.py, keeps it so). Under it::

    M3bngError
     ├── ProcessingError          what a flow raises: how should the event continue?
     │    ├── TransientError       retry on the schedule (timeouts, 5xx, 429, record locked)
     │    │    └── TargetUnavailable   the target is down or paused: wait, consume no attempt
     │    └── PermanentError       dead-letter now (bad data, missing mapping, rejected by M3)
     ├── Skipped                  not an error: the event is closed as ``skipped`` with its reason
     ├── Held                     not an error: an anomaly rule stops the event for a person
     ├── Refused                  something handed to m3bng that it turns down; the kind says why:
     │    ├── Malformed            not what it claims to be (not JSON, not XML, a broken multipart)
     │    ├── Invalid              well-formed, but its content is refused (names the field)
     │    ├── TooLarge             over a configured size limit
     │    ├── UnsupportedMediaType a content type m3bng does not read
     │    ├── Unauthenticated      no credentials, or wrong ones
     │    ├── Forbidden            authenticated, but not entitled to this
     │    ├── NotFound             what it names does not exist
     │    ├── Conflict             not possible in the state the thing is in now
     │    └── Unavailable          m3bng cannot serve it as set up (nothing configured, IdP down)
     └── … the rest: settings, mapping files, .ionapi files, lost leases, tracing set-up

Processing errors are classified in exactly one place per boundary (the M3 and BNG connectors
turn HTTP and MI answers into them); the worker only reads the class. Any other exception is a
bug or an unforeseen failure; it is retried like a transient error (with the class
``internal``) so that a fix deployed within the retry window still delivers.

Refusals carry no HTTP status: connectors, flows and ``ops/`` say *what kind* of refusal it is
(a family such as ``BodError`` or ``ReplayError`` mixes a kind in), and ``api/errors.py`` alone
decides which status each kind is answered with. A status some *other* system answered us with
(BNG's, ION's, M3's gateway) is a fact about that answer and stays on its error as data.
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


class Held(M3bngError):
    """An anomaly rule holds the event before anything is sent (flows/runtime/anomalies.py): the
    worker stores it as ``held`` with ``findings`` (every rule that fired, flags included), and
    it waits for a person to release or discard it. Neither retried nor dead-lettered."""

    def __init__(self, reason: str, *, flow: str, findings: list[dict[str, object]]) -> None:
        super().__init__(reason)
        self.flow = flow
        self.findings = findings


class Refused(M3bngError):
    """A request, body, credential or operator action that m3bng turns down.

    ``code`` is the machine-readable reason clients see (a class default, or per raise);
    ``fields`` names each offending field as ``[{"field", "problem"}]``. The subclass (its kind)
    is what the HTTP layer maps to a status, so the same refusal reads the same wherever it is
    raised: the webhook route, the IMS endpoint, a replay edit.
    """

    code = "invalid_request"

    def __init__(
        self, message: str, *, code: str | None = None, fields: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields: list[dict[str, str]] = fields or []


class Malformed(Refused):
    """Not what it claims to be: not JSON, not XML, a broken multipart body."""


class Invalid(Refused):
    """Well-formed, but its content is refused; ``fields`` says where."""


class FieldInvalid(Invalid):
    """One named part of a request refused: the message and ``fields`` both name it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", fields=[{"field": field, "problem": problem}])


class TooLarge(Refused):
    """Over a size limit the installation sets (a body, a part, an inflated payload)."""


class UnsupportedMediaType(Refused):
    """A content type m3bng does not read."""


class Unauthenticated(Refused):
    """No credentials, or ones that prove nothing (a wrong token, a bad signature)."""


class Forbidden(Refused):
    """The caller is known, but not entitled to this."""


class NotFound(Refused):
    """What the request names does not exist."""


class Conflict(Refused):
    """Not possible in the state the thing is in now (it changed, or is already done)."""


class Unavailable(Refused):
    """m3bng cannot serve this as it is set up: nothing configured for it, or a service it relies
    on (the identity provider) is unreachable. Not a flow's target being down: that is
    ``TargetUnavailable``, which makes an event wait."""
