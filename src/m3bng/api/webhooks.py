"""``POST /webhooks/bng``: BNG's events enter here, and are stored before BNG hears back."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from m3bng.api.deps import RuntimeDep, read_body
from m3bng.api.errors import ApiError, validation_details
from m3bng.connectors.bng.events import BngEnvelope, business_key
from m3bng.inbox.ingest import ingest_event

router = APIRouter(tags=["inbound"])


class Accepted(BaseModel):
    event_id: int
    duplicate: bool
    correlation_id: str


@router.post(
    "/webhooks/bng",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": Accepted, "description": "Already received (duplicate webhook-id)"},
        400: {"description": "Missing webhook-id or body that is not JSON"},
        413: {"description": "Body too large"},
        415: {"description": "Not application/json"},
        422: {"description": "Envelope invalid (type, data)"},
    },
)
async def receive_bng_webhook(
    request: Request,
    runtime: RuntimeDep,
    webhook_id: Annotated[str | None, Header(alias="webhook-id", max_length=255)] = None,
    x_correlation_id: Annotated[str | None, Header(alias="x-correlation-id", max_length=64)] = None,
) -> Any:
    """Store one BNG event. 202 when new, 200 when this ``webhook-id`` was already received."""
    content_type = request.headers.get("content-type", "application/json")
    if not content_type.split(";")[0].strip().lower().endswith("json"):
        raise ApiError(
            415, "unsupported_media_type", f"content-type must be application/json, not {content_type!r}"
        )
    if not webhook_id:
        raise ApiError(400, "missing_header", "header webhook-id is required (it is the deduplication key)")
    body = await read_body(request, runtime.settings.max_body_bytes)
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    try:
        envelope = BngEnvelope.model_validate(raw)
    except ValidationError as exc:
        fields = validation_details(exc)
        message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
        raise ApiError(422, "invalid_event", message, fields=fields) from None
    result = await ingest_event(
        runtime.sessions,
        source="bng",
        external_id=webhook_id,
        event_type=envelope.type,
        payload=raw,
        business_key=business_key(envelope.type, envelope.data),
        correlation_id=x_correlation_id,
        notifier=runtime.notifier,
    )
    return JSONResponse(Accepted(**vars(result)).model_dump(), status_code=200 if result.duplicate else 202)
