"""Edge cases of the BNG client that the simulator cannot easily produce, with respx."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

from m3bng.config import Settings
from m3bng.connectors.bng import auth as auth_module
from m3bng.connectors.bng import client as client_module
from m3bng.connectors.bng.client import BngClient, BngClientConfig, retry_after_seconds, root_url
from m3bng.connectors.bng.errors import (
    BngAuthError,
    BngConflict,
    BngDataError,
    BngNotFound,
    BngThrottled,
    BngTransientError,
    BngUnavailable,
    BngUnknownOutcome,
)
from m3bng.connectors.protection import CircuitState
from m3bng.connectors.ratelimit import RateLimiter, RateLimitPaused
from m3bng.errors import PermanentError, TargetUnavailable, TransientError
from m3bng.observability.logging import configure_logging
from tests.support.webhooks import TEST_SECRET

BASE = "https://bng.example"
API = f"{BASE}/api/v1"
TOKEN_URL = "https://auth.bng.example/oauth/token"
API_KEY = "key-0123456789-secret"
CLIENT_SECRET = "client-secret-value-42"


def client(**overrides: Any) -> BngClient:
    values: dict[str, Any] = {
        "base_url": BASE,
        "api_key": SecretStr(API_KEY),
        "call_attempts": 1,
        "max_inline_wait": 0.5,
        "rate_limit": 0,
    }
    values.update(overrides)
    # respx intercepts httpx's own transport; production sends through aiohttp (connectors/wire.py)
    return BngClient(BngClientConfig(**values), transport=httpx.AsyncHTTPTransport())


def oauth_client(**overrides: Any) -> BngClient:
    values: dict[str, Any] = {
        "api_key": None,
        "oauth_token_url": TOKEN_URL,
        "client_id": "m3bng",
        "client_secret": SecretStr(CLIENT_SECRET),
        "oauth_scope": "orders.write",
    }
    values.update(overrides)
    return client(**values)


def token_route() -> respx.Route:
    issued: list[str] = []

    def issue(request: httpx.Request) -> httpx.Response:
        issued.append(f"tok{len(issued) + 1}")
        return httpx.Response(
            200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600}
        )

    return respx.post(TOKEN_URL).mock(side_effect=issue)


@respx.mock
async def test_api_key_header_and_idempotency_key_on_writes_only() -> None:
    get = respx.get(f"{API}/customers/C1").respond(json={"CustomerID": "C1"})
    put = respx.put(f"{API}/customers/C1").respond(201, json={"CustomerID": "C1"})
    bng = client(api_key_header="X-BNG-Key", base_url=root_url("https://bng.example/api/v1/"))
    assert await bng.get("/customers/C1") == {"CustomerID": "C1"}
    read = get.calls.last.request
    assert read.headers["X-BNG-Key"] == API_KEY and "idempotency-key" not in read.headers
    assert read.headers["accept"] == "application/json"

    result = await bng.put("customers/C1", {"CustomerID": "C1"}, idempotency_key="k-1")
    assert (result.status, result.replayed) == (201, False)
    write = put.calls.last.request
    assert write.headers["Idempotency-Key"] == "k-1" and write.headers["X-BNG-Key"] == API_KEY
    assert write.content == b'{"CustomerID":"C1"}'

    for method in ("PUT", "patch", "POST"):
        with pytest.raises(ValueError, match="idempotency_key"):
            await bng.request(method, "/customers/C1", json={})
    assert put.call_count == 1
    await bng.aclose()


@respx.mock
async def test_replayed_header_is_reported() -> None:
    respx.patch(f"{API}/orders/SO-1").respond(
        200, json={"OrderID": "SO-1"}, headers={"Idempotent-Replayed": "true"}
    )
    bng = client()
    result = await bng.patch("/orders/SO-1", {"Status": "Shipped"}, idempotency_key="k")
    assert result.replayed and result.body == {"OrderID": "SO-1"}
    await bng.aclose()


def error(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": code, "message": message, "field": field}


@respx.mock
@pytest.mark.parametrize(
    ("method", "status", "body", "headers", "expected", "error_class", "base"),
    [
        ("GET", 404, error("not_found", "no such order"), {}, BngNotFound, "not_found", PermanentError),
        ("PUT", 400, error("invalid_json", "not JSON"), {}, BngDataError, "data_error", PermanentError),
        ("PUT", 409, error("conflict", "order is closed"), {}, BngConflict, "conflict", PermanentError),
        ("GET", 418, None, {}, BngDataError, "data_error", PermanentError),
        ("GET", 401, error("invalid_api_key", "bad key"), {}, BngAuthError, "auth", TargetUnavailable),
        ("PUT", 403, error("forbidden", "no access"), {}, BngAuthError, "auth", TargetUnavailable),
        ("GET", 429, error("rate_limited", "slow down"), {}, BngThrottled, "throttled", TransientError),
        ("GET", 500, error("internal_error", "oops"), {}, BngTransientError, "transient", TransientError),
        ("PUT", 500, error("internal_error", "oops"), {}, BngTransientError, "transient", TransientError),
        ("GET", 504, None, {}, BngTransientError, "transient", TransientError),
        ("PUT", 504, None, {}, BngUnknownOutcome, "unknown_outcome", TransientError),
        ("PATCH", 502, None, {}, BngUnknownOutcome, "unknown_outcome", TransientError),
    ],
)
async def test_status_classification(
    method: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: type[Exception],
    error_class: str,
    base: type[Exception],
) -> None:
    respx.route(method=method, url=f"{API}/orders/SO-1").respond(status, json=body, headers=headers)
    bng = client()
    with pytest.raises(expected) as caught:
        await bng.request(method, "/orders/SO-1", json={} if method != "GET" else None, idempotency_key="k")
    assert type(caught.value) is expected
    assert isinstance(caught.value, base)
    assert caught.value.error_class == error_class  # type: ignore[attr-defined]
    assert caught.value.status == status  # type: ignore[attr-defined]
    await bng.aclose()


@respx.mock
async def test_data_error_names_bngs_field_and_message() -> None:
    respx.put(f"{API}/inventory/100/SKU-1").respond(
        422, json=error("invalid_value", "must not be negative", "OnHand")
    )
    bng = client()
    with pytest.raises(BngDataError) as caught:
        await bng.put("/inventory/100/SKU-1", {"OnHand": -1}, idempotency_key="k")
    assert caught.value.field == "OnHand" and caught.value.code == "invalid_value"
    assert "must not be negative" in str(caught.value) and "field OnHand" in str(caught.value)
    assert caught.value.describe()["class"] == "data_error"
    await bng.aclose()


@respx.mock
async def test_network_failures() -> None:
    respx.put(f"{API}/customers/C1").mock(side_effect=httpx.ReadTimeout("slow"))
    respx.get(f"{API}/customers/C1").mock(side_effect=httpx.ReadTimeout("slow"))
    respx.get(f"{API}/customers/C2").mock(side_effect=httpx.ConnectError("refused"))
    bng = client(circuit_failures=100)
    with pytest.raises(BngUnknownOutcome, match="same key"):
        await bng.put("/customers/C1", {}, idempotency_key="k")
    with pytest.raises(BngTransientError) as read:
        await bng.get("/customers/C1")
    assert type(read.value) is BngTransientError
    with pytest.raises(BngUnavailable):
        await bng.get("/customers/C2")
    await bng.aclose()


@respx.mock
async def test_unknown_outcome_is_resent_inline_with_the_same_key() -> None:
    route = respx.put(f"{API}/customers/C1").mock(
        side_effect=[
            httpx.ReadTimeout("lost"),
            httpx.Response(200, json={}, headers={"Idempotent-Replayed": "true"}),
        ]
    )
    bng = client(call_attempts=3)
    result = await bng.put("/customers/C1", {"CompanyName": "A"}, idempotency_key="k-lost")
    assert result.replayed and route.call_count == 2
    assert {c.request.headers["Idempotency-Key"] for c in route.calls} == {"k-lost"}
    await bng.aclose()


@respx.mock
async def test_short_retry_after_is_waited_inline() -> None:
    route = respx.get(f"{API}/products/P1").mock(
        side_effect=[
            httpx.Response(429, json=error("rate_limited", "slow down"), headers={"Retry-After": "0.2"}),
            httpx.Response(200, json={"SKU": "P1"}),
        ]
    )
    bng = client(call_attempts=3)
    started = time.monotonic()
    assert await bng.get("/products/P1") == {"SKU": "P1"}
    assert time.monotonic() - started >= 0.2 and route.call_count == 2
    await bng.aclose()


@respx.mock
async def test_long_retry_after_is_not_waited_and_holds_back_every_call() -> None:
    route = respx.get(f"{API}/products/P1").respond(
        429, json=error("rate_limited", "slow down"), headers={"Retry-After": "30"}
    )
    bng = client(call_attempts=3, max_inline_wait=1.0)
    started = time.monotonic()
    with pytest.raises(BngThrottled) as caught:
        await bng.get("/products/P1")
    assert caught.value.retry_after == 30 and route.call_count == 1
    with pytest.raises(BngThrottled) as held:  # BNG said 30 s: the next call does not even ask
        await bng.get("/products/P1")
    assert held.value.retry_after is not None and 28 < held.value.retry_after <= 30
    assert route.call_count == 1 and time.monotonic() - started < 1
    assert bng.breaker.state is CircuitState.CLOSED  # throttling says nothing about BNG's health
    await bng.aclose()


def test_retry_after_as_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=5)
    response = httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    seconds = retry_after_seconds(response)
    assert seconds is not None and 3 < seconds <= 5
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Response(429)) is None


@respx.mock
async def test_oauth_one_token_for_concurrent_calls() -> None:
    tokens = token_route()
    api = respx.get(url__startswith=f"{API}/customers/").respond(json={})
    bng = oauth_client(max_concurrency=20)
    await asyncio.gather(*(bng.get(f"/customers/C{n}") for n in range(20)))
    assert tokens.call_count == 1 and api.call_count == 20
    assert {c.request.headers["Authorization"] for c in api.calls} == {"Bearer tok1"}
    token_request = tokens.calls.last.request
    expected = base64.b64encode(f"m3bng:{CLIENT_SECRET}".encode()).decode()
    assert token_request.headers["Authorization"] == f"Basic {expected}"
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["orders.write"]
    await bng.aclose()


@respx.mock
async def test_oauth_token_renewed_once_on_401() -> None:
    tokens = token_route()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer tok1":
            return httpx.Response(401, json=error("invalid_token", "expired"))
        return httpx.Response(200, json={"OrderID": "SO-1"})

    api = respx.get(f"{API}/orders/SO-1").mock(side_effect=answer)
    bng = oauth_client()
    assert await bng.get("/orders/SO-1") == {"OrderID": "SO-1"}
    assert tokens.call_count == 2 and api.call_count == 2

    api.mock(return_value=httpx.Response(401, json=error("invalid_token", "revoked")))
    with pytest.raises(BngAuthError) as refused:  # still 401 with a fresh token: credentials
        await bng.get("/orders/SO-1")
    assert refused.value.retry_after == 300
    await bng.aclose()


@respx.mock
async def test_refused_or_unreachable_token_endpoint() -> None:
    route = respx.post(TOKEN_URL).respond(401, json={"error": "invalid_client"})
    bng = oauth_client()
    with pytest.raises(BngAuthError, match="invalid_client"):
        await bng.get("/orders/SO-1")
    route.mock(side_effect=httpx.ConnectError("down"))
    with pytest.raises(BngTransientError, match="token request"):
        await bng.get("/orders/SO-1")
    await bng.aclose()


@respx.mock
async def test_circuit_opens_on_repeated_5xx_but_not_on_data_errors() -> None:
    down = respx.get(f"{API}/orders/SO-1").respond(503, json=error("service_unavailable", "down"))
    respx.get(f"{API}/orders/SO-2").respond(404, json=error("not_found", "no"))
    bng = client(circuit_failures=2, circuit_reset_seconds=60)
    for _ in range(3):
        with pytest.raises(BngNotFound):
            await bng.request("GET", "/orders/SO-2")  # a 404 is BNG answering: no failure
    with pytest.raises(BngTransientError):
        await bng.get("/orders/SO-1")
    with pytest.raises(BngUnavailable, match="circuit open") as opened:
        await bng.get("/orders/SO-1")
    assert opened.value.retry_after == 60 and bng.breaker.state is CircuitState.OPEN
    with pytest.raises(BngUnavailable):
        await bng.get("/orders/SO-1")
    assert down.call_count == 2
    await bng.aclose()


@respx.mock
async def test_no_secrets_or_bodies_in_logs(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = token_route()
    respx.put(f"{API}/customers/C1").respond(422, json=error("invalid_value", "bad e-mail", "Email"))
    respx.get(f"{API}/customers/C1").mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={"Email": "anna@example.com"})]
    )
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG", "json")
    # Module loggers are cached on first use with the suite's WARNING level: give them fresh ones.
    monkeypatch.setattr(client_module, "log", structlog.get_logger(client_module.__name__))
    monkeypatch.setattr(auth_module, "log", structlog.get_logger(auth_module.__name__))
    try:
        keyed = client()
        with pytest.raises(BngDataError):
            await keyed.put("/customers/C1", {"Email": "anna@example.com"}, idempotency_key="k")
        await keyed.aclose()
        oauth = oauth_client()
        await oauth.get("/customers/C1")
        await oauth.aclose()
    finally:
        configure_logging("WARNING", "console")
    assert tokens.call_count == 2
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line["event"] == "bng.call"]
    assert [(c["method"], c["status"]) for c in calls] == [("PUT", 422), ("GET", 200)]
    assert set(calls[0]) >= {"method", "path", "status", "duration_ms", "outcome"}
    assert any(line["event"] == "bng.token_obtained" for line in lines)
    text = json.dumps(lines) + caplog.text
    for secret in (API_KEY, CLIENT_SECRET, "tok1", "tok2", "anna@example.com"):
        assert secret not in text


async def virtual_limiter(rate: float, **kwargs: Any) -> tuple[RateLimiter, list[float]]:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    return RateLimiter(rate, clock=lambda: now[0], sleep=sleep, **kwargs), now


def busiest(starts: list[float], window: float = 1.0) -> int:
    return max(sum(1 for t in starts if start <= t < start + window) for start in starts)


@pytest.mark.parametrize(("rate", "per_second"), [(10, 10), (2.5, 2), (0.5, 1)])
async def test_rate_limiter_never_exceeds_the_rate(rate: float, per_second: int) -> None:
    limiter, now = await virtual_limiter(rate)
    starts: list[float] = []

    async def one() -> None:
        slot = await limiter.acquire()
        starts.append(now[0])
        now[0] += 0.01  # the answer takes a while
        limiter.release(slot)

    await asyncio.gather(*(one() for _ in range(35)))
    assert busiest(starts) <= per_second
    assert starts[per_second] >= 1.0  # the first second was full
    assert limiter.waits > 0


async def test_rate_limiter_counts_a_slot_from_the_answer() -> None:
    """A slot is free one second after the answer, not after the start: a late arrival at the
    server (slow connect) can never squeeze two requests of one slot into one second there."""
    limiter, now = await virtual_limiter(2)
    first, _ = await limiter.acquire(), await limiter.acquire()
    third = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not third.done()  # both slots are in flight
    now[0] = 5.0
    limiter.release(first)  # answered at t=5
    assert await third == first and now[0] >= 6.0


async def test_rate_limiter_pause() -> None:
    limiter, now = await virtual_limiter(0, max_wait=1.0)
    assert await limiter.acquire() == -1  # unlimited: no slot, no wait
    assert now[0] == 0
    limiter.pause(0.5)
    await limiter.acquire()
    assert now[0] == 0.5
    limiter.pause(5)
    with pytest.raises(RateLimitPaused) as paused:
        await limiter.acquire()
    assert paused.value.seconds == 5


def test_from_settings_needs_a_url_and_credentials() -> None:
    with pytest.raises(ValueError, match="M3BNG_BNG_BASE_URL"):
        BngClientConfig.from_settings(Settings(webhook_secrets=[TEST_SECRET]))
    with pytest.raises(ValueError, match="M3BNG_BNG_API_KEY"):
        BngClientConfig.from_settings(Settings(bng_base_url=BASE, webhook_secrets=[TEST_SECRET]))
    config = BngClientConfig.from_settings(
        Settings(
            bng_base_url="https://bng.example/shop/api/v1/",
            bng_oauth_token_url="/oauth/token",
            bng_client_id="m3bng",
            bng_client_secret=SecretStr("s"),
            bng_rate_limit=5,
            webhook_secrets=[TEST_SECRET],
        )
    )
    assert config.base_url == "https://bng.example/shop"
    assert config.token_url() == "https://bng.example/shop/oauth/token"
    assert config.rate_limit == 5


async def test_a_given_transport_serves_token_and_api_and_is_closed_once() -> None:
    closed: list[bool] = []

    class Transport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            assert not closed, "the token client closed the API client's transport"
            if request.url.path == "/oauth/token":
                return httpx.Response(
                    200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 60}
                )
            return httpx.Response(200, json={"path": request.url.path})

        async def aclose(self) -> None:
            closed.append(True)

    config = BngClientConfig(
        base_url=BASE, oauth_token_url="/oauth/token", client_id="m3bng", client_secret=SecretStr("s")
    )
    bng = BngClient(config, transport=Transport())
    assert await bng.get("/orders/1") == {"path": "/api/v1/orders/1"}
    assert await bng.get("/orders/2") == {"path": "/api/v1/orders/2"}
    await bng.aclose()
    assert closed == [True]
