"""The simulator's control API under ``/_sim/``: not part of BNG, for tests, demos and people.

GET  /_sim/state               every collection
POST /_sim/reset               back to the configured seed and faults
POST /_sim/seed                {collection: {id: resource}}
GET|POST|PUT /_sim/faults      fault injection (config.Faults)
GET  /_sim/calls               request log (?limit=N for the last N)
GET  /_sim/stats               counts by status, the busiest second, 429s, applied writes
POST /_sim/tokens/expire       every issued token stops working (clients must re-authenticate)
POST /_sim/webhooks/send       sign and send one webhook; answers with the target's answer
GET|POST /_sim/webhooks/config the auto-emit target (``{"url", "secret", "enabled"}``)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from m3bng.connectors.bng.models import EVENT_MODELS
from m3bng.connectors.bng.samples import sample
from m3bng.sim.bng.config import Faults, WebhookTarget
from m3bng.sim.bng.runtime import Runtime
from m3bng.sim.bng.state import SimError
from m3bng.sim.bng.webhooks import send_webhook


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.sim
    return runtime


async def _object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise SimError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimError(422, "invalid_body", "the body must be a JSON object")
    return body


def _invalid(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or None
    return JSONResponse({"error": "invalid_body", "message": first["msg"], "field": where}, status_code=422)


async def get_state(request: Request) -> Response:
    return JSONResponse(_rt(request).resources.snapshot())


async def reset(request: Request) -> Response:
    _rt(request).reset()
    return JSONResponse({"status": "reset"})


async def seed(request: Request) -> Response:
    try:
        count = _rt(request).resources.seed(await _object(request))
    except SimError as exc:
        return exc.response()
    return JSONResponse({"seeded": count})


async def faults(request: Request) -> Response:
    rt = _rt(request)
    if request.method in ("POST", "PUT"):
        try:
            rt.set_faults(Faults.model_validate(await _object(request)))
        except SimError as exc:
            return exc.response()
        except ValidationError as exc:
            return _invalid(exc)
    return JSONResponse(rt.faults.model_dump())


async def get_calls(request: Request) -> Response:
    calls = list(_rt(request).calls)
    limit = request.query_params.get("limit")
    if limit and limit.isdigit():
        calls = calls[-int(limit) :] if int(limit) else []
    return JSONResponse(calls)


async def get_stats(request: Request) -> Response:
    return JSONResponse(_rt(request).snapshot_stats())


async def expire_tokens(request: Request) -> Response:
    rt = _rt(request)
    rt.tokens = {token: (0.0, client) for token, (_, client) in rt.tokens.items()}
    return JSONResponse({"expired": len(rt.tokens)})


async def webhook_config(request: Request) -> Response:
    rt = _rt(request)
    if request.method == "POST":
        try:
            rt.emitter.target = WebhookTarget.model_validate(await _object(request))
        except SimError as exc:
            return exc.response()
        except ValidationError as exc:
            return _invalid(exc)
    return JSONResponse(rt.emitter.target.public())


async def place_order(request: Request) -> Response:
    """A storefront's new order: stored in BNG, then announced with ``order.created`` (or lost to
    the webhook ``drop_rate``): ``{"order": id, "webhook": "sent" | "dropped" | "off"}``."""
    rt = _rt(request)
    try:
        order = await _object(request)
        order_id = str(order.get("OrderID") or "")
        if not order_id:
            raise SimError(422, "invalid_body", "an order needs an OrderID", "OrderID")
    except SimError as exc:
        return exc.response()
    rt.resources.put("orders", order_id, order)
    webhook = await rt.emitter.emit("order.created", order)
    return JSONResponse({"order": order_id, "webhook": webhook})


async def send(request: Request) -> Response:
    """Sign and POST one webhook; the answer is the target's status and body (+ ``webhook-id``)."""
    rt = _rt(request)
    target = rt.emitter.target
    try:
        body = await _object(request)
        url, secret, event_type, data = _send_args(body, target)
    except SimError as exc:
        return exc.response()
    entry: dict[str, Any] = {"kind": "webhook", "type": event_type, "url": url}
    try:
        message_id, answer = await send_webhook(
            url,
            secret,
            event_type,
            data,
            webhook_id=str(body["id"]) if body.get("id") else None,
            timeout=float(body.get("timeout") or target.timeout),
            transport=rt.webhook_transport,
        )
    except (httpx.HTTPError, OSError) as exc:
        entry.update(status=None, error=f"{type(exc).__name__}: {exc}"[:300])
        rt.record(entry)
        return JSONResponse(
            {"error": "delivery_failed", "message": entry["error"], "field": "url"}, status_code=502
        )
    entry.update(webhook_id=message_id, status=answer.status_code)
    rt.record(entry)
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers={
            "content-type": answer.headers.get("content-type", "application/octet-stream"),
            "webhook-id": message_id,
        },
    )


def _send_args(body: dict[str, Any], target: WebhookTarget) -> tuple[str, str, str, dict[str, Any]]:
    url = body.get("url") or target.url
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SimError(
            422, "invalid_body", "url must be an http(s) URL (or configure /_sim/webhooks/config)", "url"
        )
    secret = body.get("secret") or target.secret
    if not isinstance(secret, str) or not secret:
        raise SimError(422, "invalid_body", "secret is required (whsec_…)", "secret")
    event_type = body.get("type")
    if event_type not in EVENT_MODELS:
        known = ", ".join(sorted(EVENT_MODELS))
        raise SimError(422, "invalid_body", f"type must be one of {known}", "type")
    data = body.get("data")
    if data is None:
        data = sample(event_type)
    if not isinstance(data, dict):
        raise SimError(422, "invalid_body", "data must be a JSON object", "data")
    return url, secret, event_type, data


def routes() -> list[BaseRoute]:
    return [
        Route("/_sim/state", get_state),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/seed", seed, methods=["POST"]),
        Route("/_sim/faults", faults, methods=["GET", "POST", "PUT"]),
        Route("/_sim/calls", get_calls),
        Route("/_sim/stats", get_stats),
        Route("/_sim/tokens/expire", expire_tokens, methods=["POST"]),
        Route("/_sim/webhooks/send", send, methods=["POST"]),
        Route("/_sim/orders/place", place_order, methods=["POST"]),
        Route("/_sim/webhooks/config", webhook_config, methods=["GET", "POST"]),
    ]
