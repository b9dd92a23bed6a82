"""The production BNG client against the BNG simulator over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr

from m3bng.config import Settings
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.bng.errors import (
    BngAuthError,
    BngDataError,
    BngNotFound,
    BngThrottled,
    BngTransientError,
    BngUnavailable,
    BngUnknownOutcome,
)
from m3bng.connectors.protection import CircuitState
from m3bng.errors import TargetUnavailable
from tests.conftest import free_port
from tests.support.bng import BngSim
from tests.support.webhooks import TEST_SECRET

Make = Callable[..., BngClient]


def customer(n: int) -> dict[str, Any]:
    return {"CustomerID": f"C{n}", "CompanyName": f"Company {n}", "Email": f"c{n}@example.com"}


async def test_api_key_put_get_patch(bng_sim: BngSim, bng_client: Make) -> None:
    bng = bng_client()
    created = await bng.put("/customers/C1", customer(1), idempotency_key="k-c1")
    assert (created.status, created.replayed) == (201, False)
    changed = await bng.put("/customers/C1", {**customer(1), "Phone": "+46 1"}, idempotency_key="k-c1b")
    assert changed.status == 200 and changed.body["Phone"] == "+46 1"
    assert await bng.get("/customers/C1") == changed.body
    assert await bng.get("/api/v1/customers/C404") is None  # full paths work too; 404 → None

    await bng.put("/orders/SO-1", {"OrderID": "SO-1", "Status": "New"}, idempotency_key="k-o1")
    patched = await bng.patch(
        "/orders/SO-1", {"Status": "Shipped", "M3OrderNumber": "1000123"}, idempotency_key="k-o1p"
    )
    assert patched.body == {"OrderID": "SO-1", "Status": "Shipped", "M3OrderNumber": "1000123"}
    with pytest.raises(BngNotFound) as missing:
        await bng.patch("/orders/SO-404", {"Status": "Shipped"}, idempotency_key="k-o404")
    assert missing.value.error_class == "not_found"

    inventory = await bng.put(
        "/inventory/100/BIKE-100", {"OnHand": 5, "Available": 3}, idempotency_key="k-inv"
    )
    assert inventory.body == {"OnHand": 5, "Available": 3, "Warehouse": "100", "SKU": "BIKE-100"}
    state = await bng_sim.state()
    assert state["inventory"]["100/BIKE-100"]["OnHand"] == 5
    assert state["orders"]["SO-1"]["Status"] == "Shipped"


async def test_validation_errors_name_the_field(bng_client: Make) -> None:
    bng = bng_client()
    with pytest.raises(BngDataError) as mismatch:
        await bng.put("/customers/C1", {"CustomerID": "C2"}, idempotency_key="k1")
    assert mismatch.value.field == "CustomerID" and mismatch.value.status == 422
    assert "CustomerID" in str(mismatch.value)
    with pytest.raises(BngDataError) as not_object:
        await bng.put("/customers/C1", [1, 2], idempotency_key="k2")
    assert not_object.value.code == "invalid_body"


async def test_idempotent_replay_applies_once(bng_sim: BngSim, bng_client: Make) -> None:
    bng = bng_client()
    first = await bng.put("/customers/C1", customer(1), idempotency_key="same")
    again = await bng.put("/customers/C1", customer(1), idempotency_key="same")
    assert (first.status, first.replayed) == (201, False)
    assert (again.status, again.replayed, again.body) == (201, True, first.body)
    assert (await bng_sim.stats())["applied_writes"] == 1
    assert [c["replayed"] for c in await bng_sim.calls()] == [False, True]

    with pytest.raises(BngDataError) as reused:
        await bng.put("/customers/C1", customer(2) | {"CustomerID": "C1"}, idempotency_key="same")
    assert reused.value.code == "idempotency_key_reused" and reused.value.field == "Idempotency-Key"
    assert (await bng_sim.state())["customers"]["C1"]["CompanyName"] == "Company 1"


async def test_oauth_one_token_for_concurrent_calls_and_reauth_on_401(
    bng_sim: BngSim, bng_client: Make
) -> None:
    bng = bng_client(oauth=True, bng_max_concurrency=16)
    await bng_sim.seed({"customers": {f"C{n}": customer(n) for n in range(20)}})
    bodies = await asyncio.gather(*(bng.get(f"/customers/C{n}") for n in range(20)))
    assert [(b or {}).get("CustomerID") for b in bodies] == [f"C{n}" for n in range(20)]
    assert (await bng_sim.stats())["token_requests"] == 1

    await bng_sim.expire_tokens()
    assert (await bng.put("/customers/C1", customer(1), idempotency_key="k")).status == 200
    stats = await bng_sim.stats()
    assert stats["token_requests"] == 2 and stats["by_status"]["401"] == 1


async def test_wrong_credentials_wait_instead_of_dead_lettering(bng_client: Make) -> None:
    with pytest.raises(BngAuthError) as bad_key:
        await bng_client(bng_api_key=SecretStr("not-the-key")).get("/customers/C1")
    assert isinstance(bad_key.value, TargetUnavailable) and bad_key.value.retry_after == 300
    with pytest.raises(BngAuthError):
        await bng_client(oauth=True, bng_client_secret=SecretStr("wrong")).get("/customers/C1")


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)), default=0)


async def test_rate_limit_is_never_exceeded(bng_sim: BngSim, bng_client: Make) -> None:
    await bng_sim.faults(rate_limit_per_second=20, retry_after=0.2)
    bng = bng_client(bng_rate_limit=20, bng_max_concurrency=16)
    started = time.monotonic()
    results = await asyncio.gather(
        *(bng.put(f"/customers/C{n}", customer(n), idempotency_key=f"rate-{n}") for n in range(100))
    )
    elapsed = time.monotonic() - started
    assert all(r.status == 201 for r in results)
    stats = await bng_sim.stats()
    assert stats["max_requests_per_second"] <= 20, stats
    assert stats["throttled"] == 0, stats
    assert stats["applied_writes"] == 100
    assert busiest_second([c["time"] for c in await bng_sim.calls()]) <= 20
    assert elapsed >= 4.0  # 100 requests at 20/s cannot take less than ~5 s


async def put_until_applied(bng: BngClient, n: int) -> int:
    """What the worker does with a throttled event: try again later, with the same key."""
    tries = 0
    while True:
        tries += 1
        try:
            await bng.put(f"/customers/C{n}", customer(n), idempotency_key=f"storm-{n}")
            return tries
        except BngThrottled as exc:
            assert exc.retry_after is not None
            await asyncio.sleep(min(exc.retry_after, 0.3))


async def test_429_storm_loses_nothing_and_applies_each_write_once(bng_sim: BngSim, bng_client: Make) -> None:
    await bng_sim.faults(rate_limit_per_second=8, retry_after=0.2)
    bng = bng_client(bng_rate_limit=40, bng_max_concurrency=16, bng_call_attempts=2)
    tries = await asyncio.gather(*(put_until_applied(bng, n) for n in range(24)))
    stats = await bng_sim.stats()
    assert stats["throttled"] > 0  # it was a storm
    assert stats["max_requests_per_second"] <= 8
    assert stats["applied_writes"] == 24 and len((await bng_sim.state())["customers"]) == 24
    applied = Counter(c["path"] for c in await bng_sim.calls() if c["applied"])
    assert set(applied.values()) == {1}
    assert max(tries) >= 1


async def test_outage_opens_the_circuit_then_recovers(bng_sim: BngSim, bng_client: Make) -> None:
    bng = bng_client(bng_call_attempts=1, bng_circuit_failures=3, bng_circuit_reset_seconds=0.5)
    await bng_sim.faults(outage_seconds=0.8)
    for _ in range(2):
        with pytest.raises(BngTransientError):
            await bng.get("/customers/C1")
    with pytest.raises(BngUnavailable) as opened:
        await bng.get("/customers/C1")
    assert bng.breaker.state is CircuitState.OPEN and opened.value.retry_after == 0.5
    sent = len(await bng_sim.calls())
    with pytest.raises(BngUnavailable):  # open: BNG is not even asked
        await bng.get("/customers/C1")
    assert len(await bng_sim.calls()) == sent
    await asyncio.sleep(1.0)
    assert await bng.get("/customers/C1") is None  # the probe succeeds (404 = BNG is answering)
    assert bng.breaker.state.value == "closed"


async def test_connection_refused_is_target_unavailable() -> None:
    settings = Settings(
        bng_base_url=f"http://127.0.0.1:{free_port()}",
        bng_api_key=SecretStr("k"),
        webhook_secrets=[TEST_SECRET],
    )
    bng = BngClient.from_settings(settings)
    try:
        with pytest.raises(BngUnavailable):
            await bng.put("/customers/C1", customer(1), idempotency_key="k")
    finally:
        await bng.aclose()


async def test_lost_answer_is_retried_inline_with_the_same_key(bng_sim: BngSim, bng_client: Make) -> None:
    await bng_sim.faults(drop_response_rate=1.0, limit=1)
    result = await bng_client().put("/customers/C1", customer(1), idempotency_key="lost-1")
    assert (result.status, result.replayed) == (201, True)
    calls = await bng_sim.calls()
    assert [(c["status"], c["applied"], c["replayed"]) for c in calls] == [
        (504, True, False),
        (201, False, True),
    ]
    assert {c["idempotency_key"] for c in calls} == {"lost-1"}
    assert (await bng_sim.stats())["applied_writes"] == 1


async def test_lost_answer_then_later_retry_applies_once(bng_sim: BngSim, bng_client: Make) -> None:
    await bng_sim.faults(drop_response_rate=1.0, limit=1, drop_mode="hang", drop_seconds=0.6)
    bng = bng_client(bng_call_attempts=1, bng_timeout=0.3)
    with pytest.raises(BngUnknownOutcome) as lost:
        await bng.put("/customers/C1", customer(1), idempotency_key="lost-2")
    assert "same key" in str(lost.value)
    again = await bng.put("/customers/C1", customer(1), idempotency_key="lost-2")
    assert again.replayed
    assert (await bng_sim.stats())["applied_writes"] == 1


async def test_errors_rate_is_retried_inline(bng_sim: BngSim, bng_client: Make) -> None:
    await bng_sim.faults(error_rate=1.0, limit=2)
    bng = bng_client(bng_call_attempts=3)
    assert (await bng.put("/customers/C1", customer(1), idempotency_key="e1")).status == 201
    assert [c["status"] for c in await bng_sim.calls()] == [500, 500, 201]
