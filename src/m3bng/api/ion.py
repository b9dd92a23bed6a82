"""ION delivers BODs here: the IMS endpoints (``/ion/service/…``) and ``POST /ion/bod``.

An ION "Infor application (IMS)" connection point is given the base URL ``https://<host>/ion``
and calls ``service/ping``, ``service/protocol`` and ``service/v3/multipartMessage`` below it
(facts.md §4). Every route checks the inbound credentials (``M3BNG_ION_INBOUND_TOKEN`` as a
bearer token, and/or ``M3BNG_ION_INBOUND_USERNAME``/``_PASSWORD`` as HTTP Basic), ping
included: ION uses it to test the connection point's credentials.

Answers: 202 (IMS v3, /ion/bod) or 201 (IMS v2) once the BOD is committed, 200 for a duplicate
(same messageId or BODID), 400 for a message that is not a usable BOD (nothing is stored), 413
when it is too large. ION treats any 2xx as delivered and retries everything else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from python_multipart.multipart import parse_options_header

from m3bng.api.deps import RuntimeDep, read_body
from m3bng.api.errors import ApiError, error_body, refusal
from m3bng.connectors.ion.bod import BodError, ParsedBod, parse_bod
from m3bng.connectors.ion.ims import ImsError, read_message, transcode
from m3bng.connectors.ion.ingest import ingest_bod
from m3bng.runtime import Runtime

log = structlog.get_logger(__name__)

# Multipart boundaries, part headers and the ParameterRequest on top of the payload itself.
MULTIPART_OVERHEAD = 64 * 1024
_XML_TYPES = ("application/xml", "text/xml")


class Unauthorized(ApiError):
    """401 with the ``WWW-Authenticate`` challenges of the configured methods."""

    def __init__(self, message: str, challenges: list[str]) -> None:
        super().__init__(401, "unauthorized", message)
        self.challenges = challenges


class _IonRoute(APIRoute):
    """Adds ``WWW-Authenticate`` to a 401, which the app-wide ApiError handler cannot carry."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized as exc:
                response = JSONResponse(error_body(exc.code, exc.message), status_code=401)
                for challenge in exc.challenges:
                    response.headers.append("WWW-Authenticate", challenge)
                return response

        return route


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def check_ion_auth(request: Request, runtime: RuntimeDep) -> None:
    """Accept either configured method; with none configured, only the sandbox is open."""
    settings = runtime.settings
    token = settings.ion_inbound_token.get_secret_value() if settings.ion_inbound_token else None
    username = settings.ion_inbound_username
    password = settings.ion_inbound_password.get_secret_value() if settings.ion_inbound_password else None
    basic = bool(username and password)
    if token is None and not basic:
        if settings.sandbox:
            return
        raise ApiError(
            503,
            "ion_inbound_not_configured",
            "inbound ION authentication is not configured: set M3BNG_ION_INBOUND_TOKEN (bearer) "
            "and/or M3BNG_ION_INBOUND_USERNAME and M3BNG_ION_INBOUND_PASSWORD (basic)",
        )
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer" and token is not None and _same(credentials, token):
        return
    if scheme == "basic" and basic and username is not None and password is not None:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        given_user, sep, given_password = decoded.partition(":")
        user_ok = _same(given_user, username)
        password_ok = _same(given_password, password)
        if sep and user_ok and password_ok:
            return
    challenges = []
    if token is not None:
        challenges.append('Bearer realm="m3bng-ion"')
    if basic:
        challenges.append('Basic realm="m3bng-ion", charset="UTF-8"')
    methods = " or ".join(c.split()[0] for c in challenges)
    reason = "missing" if not scheme else "wrong"
    raise Unauthorized(f"ION credentials {reason}: send Authorization: {methods}", challenges)


router = APIRouter(
    prefix="/ion",
    tags=["ion"],
    route_class=_IonRoute,
    dependencies=[Depends(check_ion_auth)],
    responses={
        401: {"description": "Credentials missing or wrong (WWW-Authenticate names the methods)"},
        503: {"description": "Inbound ION authentication is not configured (outside sandbox mode)"},
    },
)


class BodAccepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    event_id: int
    bod_type: str
    supported: bool


_STORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": BodAccepted, "description": "Already received (same messageId or BODID)"},
    400: {"description": "Not a usable BOD: bad multipart/JSON/XML, DTD or entities, not OAGIS"},
    413: {"description": "Body, part or inflated payload larger than M3BNG_ION_MAX_BOD_BYTES"},
    415: {"description": "Wrong content type"},
}

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "ParameterRequest": {
                            "type": "string",
                            "description": "JSON: documentName, fromLogicalId, toLogicalId, messageId, "
                            "document{characterSet, encoding NONE|DEFLATE, value?}, …",
                        },
                        "MessagePayload": {"type": "string", "format": "binary", "description": "the BOD"},
                    },
                    "required": ["ParameterRequest"],
                }
            }
        },
    }
}


def _bod_error(exc: BodError) -> ApiError:
    """An oversized BOD is told ``payload_too_large`` here, like an oversized IMS part; a replay
    edit keeps the parser's own code for it (ops/replay.py)."""
    return refusal(exc, code="payload_too_large" if exc.too_large else None)


async def _store(
    runtime: Runtime,
    parsed: ParsedBod,
    *,
    ims: dict[str, Any] | None,
    message_id: str | None,
    accepted_status: int,
) -> JSONResponse:
    payload = parsed.to_payload(ims)
    result = await ingest_bod(
        runtime.sessions,
        parsed,
        payload=payload,
        message_id=message_id,
        notifier=runtime.notifier,
        instances=await runtime.bod_router.instances_for(parsed.bod_type, payload),
    )
    if not result.duplicate and runtime.has_storefront:
        from m3bng.storefront.bods import invalidate_for

        # Stored: the storefront's cached prices and balances this BOD changed are stale now.
        # The BOD is committed whatever happens here: a failure is logged, never answered.
        try:
            if runtime.storefront_follower is not None:
                runtime.storefront_follower.mine(result.event_id)
            invalidated = invalidate_for(runtime.storefronts, parsed)
        except Exception as exc:
            log.error("storefront.invalidation_failed", bod_type=parsed.bod_type, error=repr(exc)[:300])
        else:
            if invalidated:
                log.info("storefront.invalidated", bod_type=parsed.bod_type, entries=invalidated)
    supported = runtime.registry.get("ion", parsed.bod_type) is not None
    if not supported and not result.duplicate:
        log.info("ion.bod_unsupported", bod_type=parsed.bod_type, event_id=result.event_id)
    body = BodAccepted(
        status="duplicate" if result.duplicate else "accepted",
        event_id=result.event_id,
        bod_type=parsed.bod_type,
        supported=supported,
    )
    return JSONResponse(body.model_dump(), status_code=200 if result.duplicate else accepted_status)


async def _receive_ims(request: Request, runtime: Runtime, *, accepted_status: int) -> JSONResponse:
    limit = runtime.settings.ion_max_bod_bytes
    body = await read_body(request, 2 * limit + MULTIPART_OVERHEAD)
    try:
        message = read_message(body, request.headers.get("content-type", ""), max_bod_bytes=limit)
        parsed = parse_bod(message.payload, max_bytes=limit)
    except ImsError as exc:
        raise refusal(exc) from None
    except BodError as exc:
        raise _bod_error(exc) from None
    if message.document_name and message.document_name != parsed.bod_type:
        log.warning("ion.document_name_mismatch", document_name=message.document_name, bod=parsed.bod_type)
    return await _store(
        runtime,
        parsed,
        ims=message.parameters,
        message_id=message.message_id,
        accepted_status=accepted_status,
    )


@router.get("/service/ping")
async def ping() -> dict[str, str]:
    """ION's connection test: reachable and the credentials are accepted."""
    return {"status": "ok"}


@router.get("/service/protocol")
async def protocol() -> dict[str, Any]:
    """IMS v3 with the ``multipartMessage`` method and no discovery."""
    return {"version": "v3", "messageMethod": "multipartMessage", "hasDiscovery": False}


@router.get("/service/versions")
async def versions() -> list[str]:
    """ION's fallback when ``protocol`` fails: the IMS versions served here."""
    return ["v2", "v3"]


def _ims_endpoint(accepted_status: int) -> Callable[[Request, Runtime], Coroutine[Any, Any, JSONResponse]]:
    async def receive(request: Request, runtime: RuntimeDep) -> JSONResponse:
        return await _receive_ims(request, runtime, accepted_status=accepted_status)

    return receive


# ION v2 sent wrong part names: on every path the parts are told apart by content (the JSON object
# is the ParameterRequest). v3 answers 202 like ION's own v3, v2 201 like ION's own v2.
for _path, _status, _summary in (
    ("/service/v3/multipartMessage", 202, "IMS v3: ParameterRequest + MessagePayload, plain or deflated"),
    ("/service/v3/message/multipart", 202, "IMS v3 (the path for messageMethod 'message')"),
    ("/service/v2/multipartMessage", 201, "IMS v2 (part names may be wrong: told apart by content)"),
):
    router.add_api_route(
        _path,
        _ims_endpoint(_status),
        methods=["POST"],
        status_code=_status,
        response_model=BodAccepted,
        responses=_STORE_RESPONSES,
        openapi_extra=_MULTIPART_BODY,
        summary=_summary,
        description=f"{_summary}. {_status} once the BOD is stored, 200 for a duplicate.",
        operation_id="ion_ims" + _path.removeprefix("/service").replace("/", "_"),
    )


@router.post(
    "/bod",
    status_code=202,
    response_model=BodAccepted,
    responses=_STORE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "description": "one BOD"}} for t in _XML_TYPES},
        }
    },
)
async def receive_bod(
    request: Request,
    runtime: RuntimeDep,
    x_message_id: Annotated[str | None, Header(alias="x-message-id")] = None,
) -> JSONResponse:
    """One BOD as XML (ION API connection points, scripts). ``X-Message-Id``, when sent, is a
    second deduplication key besides the BODID."""
    content_type = request.headers.get("content-type", "")
    mime, options = parse_options_header(content_type)
    if mime.decode("latin-1") not in _XML_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content-type must be application/xml or text/xml, not {content_type!r}",
        )
    if x_message_id is not None and len(x_message_id) > 255:
        raise ApiError(400, "invalid_header", "X-Message-Id is longer than 255 characters")
    limit = runtime.settings.ion_max_bod_bytes
    body = await read_body(request, limit)
    charset = options.get(b"charset")
    try:
        raw = transcode(body, charset.decode("latin-1") if charset else None)
        parsed = parse_bod(raw, max_bytes=limit)
    except ImsError as exc:
        raise refusal(exc) from None
    except BodError as exc:
        raise _bod_error(exc) from None
    return await _store(runtime, parsed, ims=None, message_id=x_message_id or None, accepted_status=202)
