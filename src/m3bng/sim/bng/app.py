"""The simulated BNG REST API, as an ASGI app (contract: docs/bng-api.md).

    POST /oauth/token                              client_credentials grant (form or HTTP Basic)
    GET  /api/v1/{collection}                      list (tests and demos)
    GET|PUT|PATCH /api/v1/{collection}/{id}        orders, customers, products, vendors, invoices
    GET|PUT|PATCH /api/v1/inventory/{Warehouse}/{SKU}

plus the control API under ``/_sim/`` (control.py) that BNG itself does not have. Every write needs
an ``Idempotency-Key``: the answer is stored for ``idempotency_ttl_seconds`` and replayed (header
``Idempotent-Replayed: true``) for the same request, refused (422) for a different one. Works
mounted under a prefix (``app.mount("/_sim/bng", sim)``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from m3bng.sim.bng import control
from m3bng.sim.bng.config import BngSimConfig
from m3bng.sim.bng.runtime import Runtime
from m3bng.sim.bng.state import COLLECTIONS, SimError, fingerprint, resource_id

API_PREFIX = "/api/v1"
WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
Changed = tuple[str, dict[str, Any]] | None  # (collection, stored resource) to announce by webhook


def route_path(request: Request) -> str:
    """The path below the mount point, so a mounted simulator logs and fingerprints the same."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# -- OAuth ------------------------------------------------------------------------------------------


def _basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def token(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    form = await request.form()
    client_id, client_secret = str(form.get("client_id") or ""), str(form.get("client_secret") or "")
    basic = _basic_credentials(request.headers.get("authorization", ""))
    if basic is not None:
        client_id, client_secret = basic
    valid = hmac.compare_digest(client_id.encode(), rt.config.client_id.encode()) and hmac.compare_digest(
        client_secret.encode(), rt.config.client_secret.encode()
    )
    if not valid:
        return JSONResponse({"error": "invalid_client", "error_description": "unknown client or secret"}, 401)
    if form.get("grant_type") != "client_credentials":
        return JSONResponse(
            {"error": "unsupported_grant_type", "error_description": "only client_credentials is supported"},
            400,
        )
    rt.stats["token_requests"] += 1
    access = secrets.token_urlsafe(32)
    rt.tokens[access] = (time.monotonic() + rt.config.token_lifetime_seconds, client_id)
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(rt.config.token_lifetime_seconds),
    }
    if form.get("scope"):
        body["scope"] = str(form.get("scope"))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _authenticate(rt: Runtime, request: Request) -> str:
    """The calling client's name, or a 401."""
    header = rt.config.api_key_header
    key = request.headers.get(header)
    if key is not None:
        if hmac.compare_digest(key.encode(), rt.config.api_key.encode()):
            return "api-key"
        raise SimError(401, "invalid_api_key", f"the {header} header does not hold a valid API key")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        entry = rt.tokens.get(auth[7:].strip())
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        raise SimError(401, "invalid_token", "the access token is invalid or expired")
    raise SimError(
        401,
        "unauthorized",
        f"send an API key in {header} or an OAuth2 bearer token in Authorization",
        headers={"WWW-Authenticate": 'Bearer realm="bng"'},
    )


# -- the REST API -----------------------------------------------------------------------------------


async def api(request: Request) -> Response:
    rt: Runtime = request.app.state.sim
    method = request.method
    call: dict[str, Any] = {
        "time": time.time(),
        "kind": "api",
        "method": method,
        "path": route_path(request),
        "idempotency_key": request.headers.get("idempotency-key"),
        "status": None,
        "replayed": False,
        "applied": False,
    }
    rt.in_flight += 1
    rt.max_in_flight = max(rt.max_in_flight, rt.in_flight)
    changed: Changed = None
    try:
        response, changed = await _serve(rt, request, call)
    except SimError as exc:
        response = exc.response()
    finally:
        rt.in_flight -= 1
    call["status"] = response.status_code
    rt.by_status[str(response.status_code)] += 1
    rt.record(call)
    if changed is not None:
        # After the answer has gone out (on a real server); the task only schedules the delivery.
        response.background = BackgroundTask(rt.emitter.changed, *changed)
    return response


async def _serve(rt: Runtime, request: Request, call: dict[str, Any]) -> tuple[Response, Changed]:
    arrived = time.monotonic()
    principal = _authenticate(rt, request)
    retry_after = rt.accept(principal, arrived)
    if retry_after is not None:
        raise SimError(
            429,
            "rate_limited",
            f"more than {rt.faults.rate_limit_per_second:g} requests per second",
            headers={"Retry-After": f"{retry_after:g}"},
        )
    method = request.method
    segments = _segments(request)
    resource_path = "/".join(segments)
    faulty = rt.faults.applies_to(method, resource_path)
    if faulty:
        await _inject(rt)
    collection, ids = _resource(segments)
    rid = resource_id(ids) if ids else None
    if method == "GET":
        return _read(rt, collection, rid, request.query_params), None
    key = call["idempotency_key"]
    if not key:
        raise SimError(
            400, "idempotency_key_required", f"{method} needs an Idempotency-Key header", "Idempotency-Key"
        )
    if len(key) > 255:
        raise SimError(
            400, "invalid_idempotency_key", "Idempotency-Key is longer than 255", "Idempotency-Key"
        )
    if method not in ("PUT", "PATCH") or not ids:
        raise SimError(405, "method_not_allowed", f"{method} is not supported on /{resource_path}")
    raw = await request.body()
    body = _json_object(raw)
    response, changed = await _write(
        rt, method, call, collection, ids, body, fingerprint(method, call["path"], raw)
    )
    drop = rt.faults.drop_response_rate
    if faulty and drop and rt.fault_allowed() and rt.rng.random() < drop:
        rt.stats["faults_injected"] += 1
        rt.stats["dropped_responses"] += 1
        if rt.faults.drop_mode == "hang":
            await asyncio.sleep(rt.faults.drop_seconds)
        error = SimError(504, "gateway_timeout", "the upstream did not answer in time")
        return error.response(), changed
    return response, changed


async def _inject(rt: Runtime) -> None:
    faults = rt.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if not rt.fault_allowed():
        return
    if rt.outage_until and time.monotonic() < rt.outage_until:
        rt.stats["faults_injected"] += 1
        raise SimError(faults.outage_status, "service_unavailable", "BNG is temporarily unavailable")
    if faults.error_rate and rt.rng.random() < faults.error_rate:
        rt.stats["faults_injected"] += 1
        raise SimError(faults.error_status, "internal_error", "something went wrong on BNG's side")


def _segments(request: Request) -> list[str]:
    """The path below /api/v1, split before decoding: an id may hold an encoded ``/`` (``%2F``)."""
    raw = bytes(request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
    rest = raw.split(API_PREFIX + "/", 1)[-1].strip("/")
    return [unquote(segment) for segment in rest.split("/")]


def _resource(segments: list[str]) -> tuple[str, list[str]]:
    """``[customers, C1]`` → ("customers", ["C1"]); ``[customers]`` → ("customers", [])."""
    collection, *parts = segments
    names = COLLECTIONS.get(collection)
    if names is None:
        raise SimError(404, "not_found", f"no resource collection {collection!r}")
    if parts and len(parts) != len(names):
        shape = "/".join("{" + n + "}" for n in names)
        raise SimError(404, "not_found", f"{collection} are addressed as /{collection}/{shape}")
    return collection, parts


def _read(rt: Runtime, collection: str, rid: str | None, query: Mapping[str, str]) -> Response:
    if rid is None and ("updated_since" in query or "cursor" in query or "limit" in query):
        return _list_changed(rt, collection, query)
    if rid is None:
        items = list(rt.resources.snapshot()[collection].values())
        return JSONResponse({"items": items, "count": len(items)})
    found = rt.resources.get(collection, rid)
    if found is None:
        raise SimError(404, "not_found", f"{collection}/{rid} does not exist")
    return JSONResponse(found)


def _list_changed(rt: Runtime, collection: str, query: Mapping[str, str]) -> Response:
    """``GET /api/v1/orders?updated_since=ISO&limit=N&cursor=C``: what changed since a time, in
    change order, a page at a time (docs/bng-api.md); ``next_cursor`` null on the last page."""
    since = query.get("updated_since") or None
    if since is not None:
        try:
            since = (
                datetime.fromisoformat(since.replace("Z", "+00:00"))
                .astimezone(UTC)
                .isoformat(timespec="microseconds")
            )
        except ValueError:
            raise SimError(
                422, "invalid_query", "updated_since must be an ISO 8601 time", "updated_since"
            ) from None
    try:
        limit = int(query.get("limit") or 100)
    except ValueError:
        raise SimError(422, "invalid_query", "limit must be a number", "limit") from None
    if not 1 <= limit <= 500:
        raise SimError(422, "invalid_query", "limit must be 1 to 500", "limit")
    after = None
    if query.get("cursor"):
        at, _, rid = query["cursor"].partition("|")
        after = (at, rid)
    rows = rt.resources.changed_since(collection, since, after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    items = [{**resource, "UpdatedAt": at} for at, _, resource in page]
    cursor = f"{page[-1][0]}|{page[-1][1]}" if more and page else None
    return JSONResponse({"items": items, "count": len(items), "next_cursor": cursor})


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise SimError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SimError(422, "invalid_body", "the body must be a JSON object")
    return body


def _with_ids(collection: str, parts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """The body with its id fields taken from the path; a different id in the body is a 422."""
    ids = dict(zip(COLLECTIONS[collection], parts, strict=True))
    for name, value in ids.items():
        if name in body and str(body[name]) != value:
            raise SimError(
                422, "id_mismatch", f"{name} is {body[name]!r} in the body but {value!r} in the path", name
            )
    return {**body, **ids}


async def _write(
    rt: Runtime,
    method: str,
    call: dict[str, Any],
    collection: str,
    parts: list[str],
    body: dict[str, Any],
    fp: str,
) -> tuple[Response, Changed]:
    resource = _with_ids(collection, parts, body)
    rid = resource_id(parts)
    key: str = call["idempotency_key"]
    async with rt.lock:  # look up the key, apply and store the answer as one step
        stored = rt.idempotency.lookup(key)
        if stored is not None:
            if stored.fingerprint != fp:
                raise SimError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                    "Idempotency-Key",
                )
            call["replayed"] = True
            rt.stats["replays"] += 1
            return JSONResponse(stored.body, stored.status, headers={"Idempotent-Replayed": "true"}), None
        if method == "PATCH":
            existing = rt.resources.get(collection, rid)
            if existing is None:
                error = SimError(404, "not_found", f"{collection}/{rid} does not exist")
                rt.idempotency.store(key, fp, error.status, error.body())
                raise error
            resource = {**existing, **resource}
        created = rt.resources.put(collection, rid, resource)
        status = 201 if created and method == "PUT" else 200
        rt.idempotency.store(key, fp, status, resource)
        call["applied"] = True
        rt.stats["applied_writes"] += 1
    return JSONResponse(resource, status), (collection, resource)


def create_app(
    config: BngSimConfig | None = None, *, webhook_transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """A fresh simulated BNG. ``webhook_transport`` lets webhooks reach an in-process m3bng."""
    runtime = Runtime(config or BngSimConfig(), webhook_transport=webhook_transport)
    methods = ["GET", "PUT", "PATCH", "POST", "DELETE"]
    routes = [
        Route("/oauth/token", token, methods=["POST"]),
        Route(API_PREFIX + "/{rest:path}", api, methods=methods),
        *control.routes(),
    ]
    app = Starlette(routes=routes)
    app.state.sim = runtime
    return app
