"""The ops API refuses without revealing: every /api/v1 operation in the app's own OpenAPI schema,
called without a token, with garbage tokens, and with a token of too small a scope.

A refusal is 401 (no or unknown credentials) or 403 (known caller, scope too small), in the
project's error shape, and its body holds nothing of the stored data (the seeded order id,
customer, e-mail, BOD numbers) and never echoes the token it was sent. The scope each route
needs is read from the route's own dependency (``require_read`` / ``_replay`` / ``_admin``).

What callers *with* the right scope may see, and that no operation answers 5xx whatever it is
sent, is fuzzed by tests/integration/ops/test_schemathesis.py; which scope each route needs is
pinned by tests/integration/ops/test_auth_matrix.py. This test is about what refusals leak.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from m3bng.connectors.bng.samples import sample
from m3bng.ops.auth import Scope
from tests.security.conftest import ION_BEARER, ION_TOKEN, Service
from tests.security.corpus import ORDER_BOD, XML, dumps, envelope
from tests.support.ops import ADMIN, OPS_TOKEN_ENTRIES, READ, REPLAY, STOREFRONT, bearer
from tests.support.webhooks import TEST_SECRET, signed_headers

pytestmark = pytest.mark.parametrize("service", ["sqlite"], indirect=True)

ORDER_ID = "SO-CONFIDENTIAL-4711"
CUSTOMER_ID = "C-CONFIDENTIAL-0815"
EMAIL = "hidden.person@confidential.example"
# What no refusal may contain: the seeded data (BNG ids, the e-mail, the BOD's ORNO/CUOR).
SEEDED = (ORDER_ID, CUSTOMER_ID, EMAIL, "confidential", "1000123", "BNG-1001", "Velo Sport")
# Two families: the ops scopes, each covering the ones below it, and BNG's storefront reads,
# which no ops token (not even ops:admin) covers and which cover no ops route.
RANK = {Scope.READ: 0, Scope.REPLAY: 1, Scope.ADMIN: 2, Scope.STOREFRONT_READ: 0}
FAMILY = {Scope.READ: "ops", Scope.REPLAY: "ops", Scope.ADMIN: "ops", Scope.STOREFRONT_READ: "storefront"}
TOKEN_SCOPES = {READ: Scope.READ, REPLAY: Scope.REPLAY, ADMIN: Scope.ADMIN, STOREFRONT: Scope.STOREFRONT_READ}


def covers(held: Scope, needed: Scope) -> bool:
    return FAMILY[held] == FAMILY[needed] and RANK[held] >= RANK[needed]


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


GARBAGE: dict[str, dict[str, Any]] = {  # header values: str, or raw bytes
    "no_authorization": {},
    "empty": {"Authorization": ""},
    "bearer_nothing": {"Authorization": "Bearer"},
    "random_word": bearer("garbage"),
    "right_prefix_wrong_token": bearer("m3bng_ops_" + "A" * 43),
    "admin_token_plus_one": bearer(ADMIN + "x"),
    "admin_token_truncated": bearer(ADMIN[:-1]),
    "admin_token_as_basic": {
        "Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    },
    "the_configured_hash_itself": bearer(OPS_TOKEN_ENTRIES[2].split()[-1]),
    "alg_none_jwt_with_admin_scope": bearer(_unsigned_jwt({"sub": "mallory", "scope": "ops:admin"})),
    "ion_inbound_token": bearer(ION_TOKEN),
    "webhook_secret": bearer(TEST_SECRET),
    "huge_token": bearer("x" * 8000),
    "latin1_token": {"Authorization": "Bearer t\u00f6k\u00e9n".encode("latin-1")},
    "sql_in_token": bearer("' OR '1'='1"),
}


async def seed(service: Service) -> int:
    """One order webhook with the confidential ids and e-mail, and one BOD: rows to leak."""
    data = {
        **sample("order.created"),
        "OrderID": ORDER_ID,
        "CustomerID": CUSTOMER_ID,
        "Customer": {**sample("customer.created"), "CustomerID": CUSTOMER_ID, "Email": EMAIL},
    }
    body = dumps(envelope("order.created", data))
    response = await service.client.post(
        "/webhooks/bng", content=body, headers=signed_headers(body, f"msg_{uuid.uuid4().hex}")
    )
    assert response.status_code in (200, 202), response.text
    bod = await service.client.post("/ion/bod", content=ORDER_BOD, headers={**ION_BEARER, **XML})
    assert bod.status_code in (200, 202), bod.text
    return int(response.json()["event_id"])


def operations(service: Service) -> list[tuple[str, str, Scope]]:
    """(method, path, scope needed) of every /api/v1 operation in the OpenAPI schema."""
    app = service.servers["standard"].app
    needed: dict[tuple[str, str], Scope] = {}
    # FastAPI 0.16x includes routers lazily: app.routes holds the routers, not their routes.
    for context in iter_route_contexts(app.routes):
        route = context.route
        if not isinstance(route, APIRoute):
            continue
        names = [getattr(d.call, "__name__", "") for d in _all_dependencies(route)]
        scopes = [
            Scope[name.removeprefix("require_").upper()] for name in names if name.startswith("require_")
        ]
        for method in (route.methods or set()) if scopes else ():
            needed[(method, str(context.path))] = max(scopes, key=RANK.__getitem__)
    found = []
    for path, methods in app.openapi()["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method in methods:
            scope = needed.get((method.upper(), path))
            assert scope is not None, f"{method.upper()} {path} declares no scope"
            found.append((method.upper(), path, scope))
    assert len(found) >= 19, found
    return found


def _all_dependencies(route: APIRoute) -> list[Any]:
    pending, seen = list(route.dependant.dependencies), []
    while pending:
        dependant = pending.pop()
        seen.append(dependant)
        pending.extend(dependant.dependencies)
    return seen


def filled(path: str, event_id: int) -> str:
    return re.sub(r"\{[^}]+\}", str(event_id), path)


def assert_reveals_nothing(response: httpx.Response, status: int, sent: dict[str, Any]) -> None:
    assert response.status_code == status, (
        response.request.method,
        response.request.url,
        response.text[:300],
    )
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}, body
    text = response.text
    for value in SEEDED:
        assert value.lower() not in text.lower(), (value, text)
    token = str(sent.get("Authorization", "")).partition(" ")[2]
    if len(token) >= 8:
        assert token not in text, text


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, Any]) -> httpx.Response:
    body = {"reason": "x", "filter": {"status": ["dead"]}, "dry_run": True, "q": ORDER_ID, "flow": "orders"}
    return await client.request(method, path, headers=headers, json=body if method == "POST" else None)


async def test_refusals_reveal_nothing(service: Service) -> None:
    event_id = await seed(service)
    ops = operations(service)
    async with service.servers["standard"].client() as client:
        # The control: with the admin token the seeded data is there to leak.
        found = await client.get(f"/api/v1/transactions/{event_id}", headers=bearer(ADMIN))
        assert found.status_code == 200 and ORDER_ID in found.text and EMAIL in found.text, found.text[:300]
        checked = 0
        for method, path, scope in ops:
            url = filled(path, event_id)
            for headers in GARBAGE.values():
                assert_reveals_nothing(await call(client, method, url, headers), 401, headers)
                checked += 1
            for token, held in TOKEN_SCOPES.items():
                if not covers(held, scope):
                    headers = bearer(token)
                    assert_reveals_nothing(await call(client, method, url, headers), 403, headers)
                    checked += 1
    assert checked > len(ops) * len(GARBAGE)
