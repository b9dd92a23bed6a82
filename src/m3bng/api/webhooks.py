"""``POST /webhooks/bng``: BNG's events enter here, and are stored before BNG hears back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from m3bng.api.deps import RuntimeDep, receive_body, request_headers, send_json
from m3bng.api.errors import ApiError, error_body, error_response, refusal, validation_error
from m3bng.connectors.bng.events import BngEnvelope, business_key
from m3bng.connectors.bng.models import InvalidEventData
from m3bng.connectors.bng.models import check_event_data as check_data
from m3bng.connectors.bng.signatures import SignatureError, verify_shopify, verify_standard, verify_stripe
from m3bng.connectors.untrusted_json import UntrustedJsonError, parse_json
from m3bng.errors import Refused
from m3bng.inbox.ingest import ingest_event
from m3bng.instances import DEFAULT
from m3bng.runtime import Runtime

router = APIRouter(tags=["inbound"])
log = structlog.get_logger(__name__)


class Accepted(BaseModel):
    event_id: int
    duplicate: bool
    correlation_id: str


def verify_signature(
    runtime: Runtime, headers: Mapping[str, str], body: bytes, secrets: Sequence[str] | None = None
) -> str:
    """Check the signature by the configured scheme with the instance's secrets (``secrets``;
    None: the default instance's); returns the message id (dedup key)."""
    settings = runtime.settings
    keys = runtime.webhook_secrets if secrets is None else secrets
    try:
        if settings.webhook_scheme == "shopify":
            return verify_shopify(headers, body, keys).message_id
        if settings.webhook_scheme == "stripe":
            verify_stripe(headers, body, keys, tolerance=settings.webhook_tolerance_seconds)
            return ""  # Stripe-style senders carry the id in the body
        verified = verify_standard(headers, body, keys, tolerance=settings.webhook_tolerance_seconds)
        return verified.message_id
    except SignatureError as exc:
        raise refusal(exc, message=f"webhook signature rejected: {exc}") from None


def check_event_data(runtime: Runtime, envelope: BngEnvelope) -> None:
    """Refuse, before storing, an event no flow could ever apply (see models.check_event_data)."""
    try:
        check_data(
            envelope.type,
            envelope.data,
            has_flow=lambda: runtime.registry.get("bng", envelope.type) is not None,
        )
    except InvalidEventData as exc:
        raise refusal(exc) from None


def check_content_type(content_type: str | None) -> None:
    """JSON only: ``application/json`` or ``application/<something>+json``, with any parameters.

    A missing Content-Type used to be taken for JSON, and anything ending in "json" (``text/notjson``)
    passed; every sender m3bng supports labels its body, so now only JSON labelled so is read."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json" and not (mime.startswith("application/") and mime.endswith("+json")):
        shown = repr(content_type) if content_type else "missing"
        raise ApiError(415, "unsupported_media_type", f"content-type must be application/json, not {shown}")


def event_id_from_body(raw: dict[str, Any]) -> str:
    """Stripe-style senders put the event id, the deduplication key, in the body: a string.

    Any JSON value used to be turned into text (``{"a": 1}`` became the id ``"{'a': 1}"``)."""
    value = raw.get("id")
    if value is None or value == "":
        raise ApiError(422, "invalid_event", "id: Field required (the event id is the deduplication key)")
    if not isinstance(value, str):
        raise ApiError(422, "invalid_event", f"id: must be a string, not a JSON {type(value).__name__}")
    if len(value) > 255:
        raise ApiError(422, "invalid_event", "id: longer than 255 characters")
    return value


_HEADERS_DOC = [
    {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 255}},
    {"name": "webhook-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "webhook-signature", "in": "header", "required": False, "schema": {"type": "string"}},
    {
        "name": "x-correlation-id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 64},
        "description": "Kept with the event and in every log line about it (generated when absent)",
    },
]
_HEADER_LIMITS = (("webhook-id", 255), ("x-correlation-id", 64))


@router.post(
    "/webhooks/bng",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": Accepted, "description": "Already received (duplicate webhook-id)"},
        400: {"description": "Body that is not JSON"},
        401: {"description": "Signature missing, stale or not matching any secret"},
        413: {"description": "Body too large"},
        415: {"description": "Not application/json"},
        422: {"description": "Envelope or event data invalid, or unknown event type"},
    },
    openapi_extra={"parameters": _HEADERS_DOC},
)
async def receive_bng_webhook(request: Request, runtime: RuntimeDep) -> Any:
    """Verify, validate and store one BNG event. 202 when new, 200 when already received.

    Standard Webhooks headers by default (``M3BNG_WEBHOOK_SCHEME``); the signature is checked
    over the raw body before anything is parsed, and nothing is stored for a rejected request.
    The event belongs to the instance ``default``.
    """
    return _response(*await handle_webhook(runtime, request.scope, request.receive))


@router.post(
    "/webhooks/bng/{instance}",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": Accepted, "description": "Already received (duplicate webhook-id) by this instance"},
        400: {"description": "Body that is not JSON"},
        401: {"description": "Signature missing, stale or not matching any of this instance's secrets"},
        404: {"description": "No BNG instance of this id is configured (M3BNG_INSTANCES_FILE)"},
        413: {"description": "Body too large"},
        415: {"description": "Not application/json"},
        422: {"description": "Envelope or event data invalid, or unknown event type"},
    },
    openapi_extra={"parameters": _HEADERS_DOC},
)
async def receive_instance_webhook(instance: str, request: Request, runtime: RuntimeDep) -> Any:
    """The same as ``POST /webhooks/bng`` for one BNG instance among several: checked with that
    instance's secrets, and its keys (the webhook id, order ids …) are that instance's own."""
    return _response(*await handle_webhook(runtime, request.scope, request.receive, instance))


async def handle_webhook(
    runtime: Runtime, scope: Scope, receive: Receive, instance_id: str = DEFAULT
) -> tuple[int, bytes]:
    """The whole webhook path: ``(status, JSON body)`` of the answer. Served by ``fast_path``
    below, past FastAPI's routing and dependency injection, which cost more CPU than storing
    the event (docs/benchmarks.md); the route above is the same code, and what the OpenAPI
    schema shows."""
    secrets: Sequence[str] | None = None
    if instance_id != DEFAULT:
        found = runtime.instances.get(instance_id) if runtime.instances is not None else None
        if found is None:
            shown = instance_id if len(instance_id) <= 64 else instance_id[:64] + "…"
            raise ApiError(
                404, "unknown_instance", f"no BNG instance {shown!r} is configured (M3BNG_INSTANCES_FILE)"
            )
        secrets = found.webhook_secrets
    headers = request_headers(scope)
    for name, limit in _HEADER_LIMITS:
        value = headers.get(name)
        if value is not None and len(value) > limit:
            problem = f"String should have at most {limit} characters"
            raise ApiError(
                422,
                "invalid_request",
                f"header.{name}: {problem}",
                fields=[{"field": f"header.{name}", "problem": problem}],
            )
    check_content_type(headers.get("content-type"))
    body = await receive_body(receive, runtime.settings.max_body_bytes, headers.get("content-length"))
    message_id = verify_signature(runtime, headers, body, secrets)
    try:
        raw = parse_json(body)
    except UntrustedJsonError as exc:
        raise refusal(exc) from None
    try:
        envelope = BngEnvelope.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, "invalid_event") from None
    check_event_data(runtime, envelope)
    if not message_id:
        message_id = event_id_from_body(raw)
    if len(message_id) > 255:
        raise ApiError(400, "invalid_header", "the message id is longer than 255 characters")
    result = await ingest_event(
        runtime.sessions,
        source="bng",
        external_id=message_id,
        event_type=envelope.type,
        payload=raw,
        business_key=business_key(envelope.type, envelope.data),
        correlation_id=headers.get("x-correlation-id"),
        notifier=runtime.notifier,
        group=runtime.ingest_group,
        instance=instance_id,
    )
    answer = {
        "event_id": result.event_id,
        "duplicate": result.duplicate,
        "correlation_id": result.correlation_id,
    }
    # The Accepted model, encoded by orjson: JSONResponse's standard-library encoder was a few
    # per cent of a webhook's CPU (docs/benchmarks.md).
    return 200 if result.duplicate else 202, orjson.dumps(answer)


def _response(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


FAST_PATH = "/webhooks/bng"
INSTANCE_PREFIX = FAST_PATH + "/"


def fast_path_instance(path: str) -> str | None:
    """The instance a webhook path names: ``default`` for ``/webhooks/bng``, the last segment
    of ``/webhooks/bng/{instance}``; None for any other path."""
    if path == FAST_PATH:
        return DEFAULT
    if path.startswith(INSTANCE_PREFIX):
        rest = path[len(INSTANCE_PREFIX) :]
        if rest and "/" not in rest:
            return rest
    return None


async def fast_path(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, instance_id: str = DEFAULT
) -> None:
    """``POST /webhooks/bng[/{instance}]`` as a plain ASGI call (m3bng.app routes it here
    first): the same handler and error shape as the route, without the framework's per-request
    machinery."""
    try:
        status, body = await handle_webhook(runtime, scope, receive, instance_id)
    except (ApiError, Refused) as exc:
        response = error_response(exc)
    except Exception as exc:  # the store is down, a bug: 5xx, so that BNG retries later
        log.error("webhook.failed", error=repr(exc)[:500])
        response = JSONResponse(
            error_body("internal_error", "the event could not be stored; retry later"), status_code=500
        )
    else:
        await send_json(send, status, body)
        return
    await response(scope, receive, send)
