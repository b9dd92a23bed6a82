"""One error shape for every 4xx/5xx the service returns: ``{"error": {"code", "message", ...}}``,
and the one place where a domain error's HTTP status is decided.

Code below ``api/`` raises domain errors only (``m3bng.errors``): a refusal says what *kind* of
refusal it is (``Invalid``, ``NotFound``, ``TooLarge`` …) and never which status to answer.
``STATUS_BY_KIND`` turns kinds into statuses; the app-wide handler answers any refusal that
reaches it with that status, and routes that word a refusal their own way build the answer with
``refusal()``, which takes the status from the same table. ``ApiError`` is for what the HTTP
layer itself refuses (a content type, a header, a page size): it is the one error with a status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from m3bng.errors import (
    Conflict,
    Forbidden,
    Invalid,
    M3bngError,
    Malformed,
    NotFound,
    Refused,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

# The HTTP status of every kind of refusal. A family (BodError, ReplayError, AuthError …) gets
# its status through the kind it mixes in, so a new family needs no row here.
STATUS_BY_KIND: dict[type[Refused], int] = {
    Malformed: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMediaType: 415,
    Invalid: 422,
    Unavailable: 503,
}
# A refusal of no kind (a family's base raised as such) is still the caller's to fix.
DEFAULT_REFUSAL_STATUS = 400


def status_for(exc: Refused) -> int:
    """The status a refusal is answered with: the first kind in its class's MRO.

    Families list their kind first (``class BodTooLarge(TooLarge, BodError)``), so the kind of
    the subclass wins over the one its family base mixes in (``BodError`` is ``Malformed``).
    """
    for cls in type(exc).__mro__:
        status = STATUS_BY_KIND.get(cls)
        if status is not None:
            return status
    return DEFAULT_REFUSAL_STATUS


class ApiError(M3bngError):
    """A refusal of the HTTP layer's own (content type, header, page size), answered as given."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = headers


def refusal(
    exc: Refused,
    *,
    code: str | None = None,
    message: str | None = None,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> ApiError:
    """The answer to a domain refusal, with its status from ``STATUS_BY_KIND``; ``code``,
    ``message`` and ``fields`` for a route that words it its own way (``webhook signature
    rejected: …``, a filter's parameter named like FastAPI's own)."""
    fields = exc.fields if fields is None else fields
    extra: dict[str, Any] = {"fields": fields} if fields else {}
    text = exc.message if message is None else message
    return ApiError(status_for(exc), code or exc.code, text, headers=headers, **extra)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: ApiError | Refused) -> JSONResponse:
    """The JSON answer to an error, for the handlers below and for routes served past them."""
    error = refusal(exc) if isinstance(exc, Refused) else exc
    return JSONResponse(
        error_body(error.code, error.message, **error.extra), status_code=error.status, headers=error.headers
    )


def validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    details = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"] if p != "body") or "(body)"
        details.append({"field": field, "problem": str(err["msg"])})
    return details


def validation_error(
    exc: ValidationError | RequestValidationError, code: str = "invalid_request"
) -> ApiError:
    """422 naming every field pydantic refused, in one message and in ``fields``."""
    fields = validation_details(exc)
    message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
    return ApiError(422, code, message, fields=fields)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))
