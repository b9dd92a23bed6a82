"""Edge cases of the M3 client that a simulator cannot easily produce, with respx."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client, M3ClientConfig, format_value
from m3bng.connectors.m3.errors import (
    M3DataError,
    M3Duplicate,
    M3NotFound,
    M3ProgramError,
    M3RecordLocked,
    M3Throttled,
    M3TransientError,
    M3Unavailable,
    M3UnknownOutcome,
)
from m3bng.connectors.m3.ionapi import IonApiError, load_ionapi
from m3bng.connectors.m3.protection import CircuitBreaker, CircuitState, MaintenanceWindow
from tests.support.webhooks import TEST_SECRET

BASE = "https://ionapi.example/TENANT/M3/m3api-rest"
IONAPI = {
    "ti": "TENANT",
    "cn": "m3bng",
    "ci": "TENANT~abc",
    "cs": "client-secret-value",
    "iu": "https://ionapi.example",
    "pu": "https://sso.example/TENANT/as/",
    "oa": "authorization.oauth2",
    "ot": "token.oauth2",
    "or": "revoke_token.oauth2",
    "saak": "TENANT#key",
    "sask": "service-secret-value",
}
TOKEN_URL = "https://sso.example/TENANT/as/token.oauth2"


def v2(records: list[dict[str, Any]], transaction: str = "GetBasicData") -> dict[str, Any]:
    return {
        "results": [{"transaction": transaction, "records": records}],
        "wasTerminated": False,
        "nrOfSuccessfullTransactions": 1,
        "nrOfFailedTransactions": 0,
    }


def client(**overrides: Any) -> M3Client:
    values: dict[str, Any] = {"base_url": BASE, "call_attempts": 3, "max_inline_wait": 0.05}
    values.update(overrides)
    # respx intercepts httpx's own transport; production sends through aiohttp (connectors/wire.py)
    return M3Client(M3ClientConfig(**values), transport=httpx.AsyncHTTPTransport())


@pytest.fixture
def ionapi_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenant.ionapi"
    path.write_text(json.dumps(IONAPI))
    return path


def test_format_value() -> None:
    assert format_value(date(2026, 1, 2)) == "20260102"
    assert format_value(datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) == "20260102"
    assert format_value(Decimal("12.50")) == "12.50"
    assert format_value(2.5) == "2.5"
    assert format_value(3.0) == "3"
    assert format_value(True) == "1"
    assert format_value(None) is None


@respx.mock
async def test_v2_success_url_and_trimming() -> None:
    route = respx.get(url__startswith=f"{BASE}/v2/execute/CRS610MI/GetBasicData").respond(
        json=v2([{"CUNO": "10001     ", "CUNM": "ACME  "}])
    )
    m3 = client(cono=100, divi="AAA")
    result = await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"}, returncols=["CUNO", "CUNM"])
    assert result.record == {"CUNO": "10001", "CUNM": "ACME"}
    url = str(route.calls.last.request.url)
    assert "/GetBasicData;returncols=CUNO,CUNM;cono=100;divi=AAA?CUNO=10001" in url
    await m3.aclose()


@respx.mock
@pytest.mark.parametrize(
    ("status", "body", "error", "field"),
    [
        (
            200,
            {
                "results": [
                    {
                        "transaction": "Add",
                        "errorMessage": "Customer number 1 already exists   ",
                        "errorField": "CUNO",
                    }
                ],
                "nrOfFailedTransactions": 1,
            },
            M3Duplicate,
            "CUNO",
        ),
        (
            400,
            {"errorMessage": "Customer 9 does not exist", "errorCode": "WCU0203", "errorField": "CUNO"},
            M3NotFound,
            "CUNO",
        ),
        (
            400,
            {"errorMessage": "Input field CUNM is too long", "errorType": "InputFieldTooLong"},
            M3DataError,
            None,
        ),
        (
            400,
            {"errorMessage": "Transaction Nope not found", "errorType": "TransactionNotFound"},
            M3ProgramError,
            None,
        ),
        (200, {"results": [{"errorMessage": "Record is reserved by another user"}]}, M3RecordLocked, None),
    ],
)
async def test_v2_errors_are_classified(
    status: int, body: dict[str, Any], error: type, field: str | None
) -> None:
    respx.get(url__startswith=BASE).respond(status, json=body)
    m3 = client(call_attempts=1)
    with pytest.raises(error) as info:
        await m3.execute("CRS610MI", "Add", {"CUNO": "1"})
    assert getattr(info.value, "field", None) == field
    assert "CRS610MI/" in str(info.value)
    await m3.aclose()


@respx.mock
async def test_v1_success_and_server_returned_nok() -> None:
    ok = {
        "Program": "TST001MI",
        "Transaction": "Lst10Out",
        "MIRecord": [{"RowIndex": 0, "NameValue": [{"Name": "F001", "Value": "00000001  "}]}],
    }
    nok = {
        "Message": "Designed to fail!      ",
        "@type": "ServerReturnedNOK",
        "@code": "CPF9898",
        "@field": "RETT",
    }
    respx.get(url__regex=r".*/execute/TST001MI/Lst10Out;metadata=true.*").respond(json=ok)
    respx.get(url__regex=r".*/execute/TST001MI/Fail.*").respond(json=nok)
    m3 = client(api_version="v1")
    assert (await m3.execute("TST001MI", "Lst10Out")).records == [{"F001": "00000001"}]
    with pytest.raises(M3DataError) as info:
        await m3.execute("TST001MI", "Fail")
    assert (info.value.code, info.value.field, info.value.mi_message) == (
        "CPF9898",
        "RETT",
        "Designed to fail!",
    )
    await m3.aclose()


@respx.mock
async def test_429_and_5xx_are_retried_in_call_honouring_retry_after() -> None:
    route = respx.get(url__startswith=BASE).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.01"}),
            httpx.Response(503),
            httpx.Response(200, json=v2([{"CUNO": "1"}])),
        ]
    )
    m3 = client()
    assert (await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "1"})).record == {"CUNO": "1"}
    assert route.call_count == 3
    await m3.aclose()


@respx.mock
async def test_long_retry_after_goes_back_to_the_queue() -> None:
    respx.get(url__startswith=BASE).respond(429, headers={"Retry-After": "120"})
    m3 = client()
    with pytest.raises(M3Throttled) as info:
        await m3.execute("CRS610MI", "GetBasicData")
    assert info.value.retry_after == 120
    assert respx.calls.call_count == 1
    await m3.aclose()


@respx.mock
async def test_write_timeout_after_send_is_unknown_outcome_and_not_resent() -> None:
    route = respx.get(url__startswith=BASE).mock(side_effect=httpx.ReadTimeout("slow"))
    m3 = client()
    with pytest.raises(M3UnknownOutcome):
        await m3.execute("OIS100MI", "AddBatchHead", {"CUNO": "1"})
    assert route.call_count == 1
    # A read that times out is safe to repeat.
    with pytest.raises(M3TransientError) as info:
        await m3.execute("OIS100MI", "GetHead", {"ORNO": "1"})
    assert not isinstance(info.value, M3UnknownOutcome)
    assert route.call_count == 4
    await m3.aclose()


@respx.mock
async def test_connect_error_on_write_is_retried() -> None:
    route = respx.get(url__startswith=BASE).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(200, json=v2([{"ORNO": "T1"}], "AddBatchHead")),
        ]
    )
    m3 = client()
    assert (await m3.execute("OIS100MI", "AddBatchHead", {"CUNO": "1"})).record == {"ORNO": "T1"}
    assert route.call_count == 2
    await m3.aclose()


@respx.mock
async def test_circuit_opens_and_calls_wait() -> None:
    respx.get(url__startswith=BASE).respond(503)
    m3 = client(call_attempts=1, circuit_failures=2, circuit_reset_seconds=60)
    with pytest.raises(M3TransientError) as first:
        await m3.execute("CRS610MI", "GetBasicData")
    assert not isinstance(first.value, M3Unavailable)
    with pytest.raises(M3Unavailable, match="circuit open"):  # this failure opens the circuit
        await m3.execute("CRS610MI", "GetBasicData")
    with pytest.raises(M3Unavailable) as info:
        await m3.execute("CRS610MI", "GetBasicData")
    assert info.value.error_class == "target_down" and (info.value.retry_after or 0) > 50
    assert respx.calls.call_count == 2  # the open circuit did not call M3
    await m3.aclose()


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def test_breaker_half_open_probe_closes_or_reopens() -> None:
    now = [0.0]
    breaker = CircuitBreaker("m3", failure_threshold=1, reset_seconds=10, clock=lambda: now[0])
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN and breaker.before_call() == 10
    now[0] = 11
    assert breaker.before_call() is None and state_of(breaker) is CircuitState.HALF_OPEN
    assert breaker.before_call() is not None  # only one probe at a time
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    now[0] = 22
    assert breaker.before_call() is None
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED


def test_maintenance_windows() -> None:
    window = MaintenanceWindow.parse("Sun 23:00-01:00")
    sunday = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    assert window.seconds_left(sunday) == 90 * 60
    assert window.seconds_left(sunday + timedelta(hours=1)) == 30 * 60  # Monday 00:30, still open
    assert window.seconds_left(sunday - timedelta(hours=1)) is None
    daily = MaintenanceWindow.parse("02:00-02:30")
    assert daily.seconds_left(datetime(2026, 11, 24, 2, 10, tzinfo=UTC)) == 20 * 60
    with pytest.raises(ValueError, match="not a window"):
        MaintenanceWindow.parse("sometime")


async def test_maintenance_window_holds_calls() -> None:
    now = datetime.now(UTC)
    start = (now - timedelta(minutes=1)).strftime("%H:%M")
    end = (now + timedelta(minutes=5)).strftime("%H:%M")
    m3 = client(maintenance_windows=(MaintenanceWindow.parse(f"{start}-{end}"),))
    with respx.mock:
        with pytest.raises(M3Unavailable, match="maintenance"):
            await m3.execute("CRS610MI", "GetBasicData")
        assert respx.calls.call_count == 0
    await m3.aclose()


@respx.mock
async def test_one_token_for_concurrent_calls_and_renewal_on_401(ionapi_file: Path) -> None:
    tokens = iter(["tok-1", "tok-2", "tok-3"])

    async def grant(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(
            200, json={"access_token": next(tokens), "token_type": "Bearer", "expires_in": 7200}
        )

    token_route = respx.post(TOKEN_URL).mock(side_effect=grant)
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        auth = request.headers["Authorization"]
        seen.append(auth)
        if auth == "Bearer tok-1" and len(seen) > 20:
            return httpx.Response(401)
        return httpx.Response(200, json=v2([{"OK": "1"}]))

    respx.get(url__startswith=BASE).mock(side_effect=api)
    m3 = M3Client.from_settings(
        Settings(ionapi_file=ionapi_file, m3_max_concurrency=32, webhook_secrets=[TEST_SECRET]),
        httpx.AsyncHTTPTransport(),
    )
    await asyncio.gather(*(m3.execute("CRS610MI", "GetBasicData") for _ in range(20)))
    assert token_route.call_count == 1
    form = dict(x.split("=") for x in token_route.calls.last.request.content.decode().split("&"))
    assert form["grant_type"] == "password" and form["username"] == "TENANT%23key"
    assert form["client_id"] == "TENANT~abc" or form["client_id"] == "TENANT%7Eabc"
    # The gateway now refuses tok-1: renewed once, the call succeeds with tok-2.
    assert (await m3.execute("CRS610MI", "GetBasicData")).record == {"OK": "1"}
    assert token_route.call_count == 2 and seen[-1] == "Bearer tok-2"
    revoke = respx.post("https://sso.example/TENANT/as/revoke_token.oauth2").respond(200)
    await m3.aclose()
    assert revoke.called


@respx.mock
async def test_refused_grant_waits_instead_of_failing_events(ionapi_file: Path) -> None:
    respx.post(TOKEN_URL).respond(400, json={"error": "invalid_grant"})
    m3 = M3Client.from_settings(
        Settings(ionapi_file=ionapi_file, webhook_secrets=[TEST_SECRET]), httpx.AsyncHTTPTransport()
    )
    with pytest.raises(M3Unavailable) as info:
        await m3.execute("CRS610MI", "GetBasicData")
    assert "invalid_grant" in str(info.value)
    assert "service-secret-value" not in str(info.value) and "client-secret-value" not in str(info.value)
    await m3.aclose()


@respx.mock
async def test_execute_many_returns_per_transaction_outcomes() -> None:
    body = {
        "results": [
            {"transaction": "GetItmWhsBal", "records": [{"ITNO": "A  ", "STQT": "5"}]},
            {"transaction": "GetItmWhsBal", "errorMessage": "Item B does not exist", "errorField": "ITNO"},
        ],
        "nrOfSuccessfullTransactions": 1,
        "nrOfFailedTransactions": 1,
    }
    route = respx.post(f"{BASE}/v2/execute").respond(json=body)
    m3 = client(cono=100)
    out = await m3.execute_many(
        "MMS200MI",
        [("GetItmWhsBal", {"WHLO": "100", "ITNO": "A"}), ("GetItmWhsBal", {"WHLO": "100", "ITNO": "B"})],
    )
    assert out[0].record == {"ITNO": "A", "STQT": "5"}  # type: ignore[union-attr]
    assert isinstance(out[1], M3NotFound)
    sent = json.loads(route.calls.last.request.content)
    assert sent["program"] == "MMS200MI" and sent["transactions"][1]["record"]["ITNO"] == "B"
    assert "selectedColumns" not in sent["transactions"][0]
    await m3.execute_many(
        "MMS200MI", [("GetItmWhsBal", {"WHLO": "100", "ITNO": "A"})], columns=["STQT", "AV01"]
    )
    sent = json.loads(route.calls.last.request.content)
    assert sent["transactions"][0]["selectedColumns"] == ["STQT", "AV01"]
    await m3.aclose()


def test_ionapi_errors_name_the_key_and_hide_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bad.ionapi"
    path.write_text(json.dumps({k: v for k, v in IONAPI.items() if k not in ("sask", "pu")}))
    with pytest.raises(IonApiError, match="lacks pu, sask"):
        load_ionapi(path)
    path.write_text("{not json")
    with pytest.raises(IonApiError, match="not valid JSON"):
        load_ionapi(path)
    with pytest.raises(IonApiError, match="cannot read"):
        load_ionapi(tmp_path / "missing.ionapi")
    path.write_text(json.dumps(IONAPI))
    creds = load_ionapi(path)
    assert creds.token_url == TOKEN_URL
    assert creds.m3_base_url == BASE
    assert "service-secret-value" not in repr(creds) and "client-secret-value" not in repr(creds)
