"""The simulator sends signed webhooks that a real m3bng accepts (on request, and after changes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.store.db import create_engine, session_factory
from m3bng.store.models import Event
from tests.conftest import LiveServer
from tests.support.bng import BngSim
from tests.support.webhooks import OTHER_SECRET, TEST_SECRET


@pytest.fixture
async def m3bng(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Settings]]:
    """A real m3bng (own SQLite store, no workers) that BNG's webhooks can reach."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}",
        migrate_on_start=True,
        webhook_secrets=[TEST_SECRET],
        log_level="WARNING",
        mappings_dir=Path(__file__).resolve().parents[3] / "mappings",
    )
    async with LiveServer(settings, None, False) as server:
        yield server, settings


async def stored_events(settings: Settings) -> list[Event]:
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            return list((await session.execute(select(Event).order_by(Event.id))).scalars())
    finally:
        await engine.dispose()


async def test_send_delivers_a_signed_webhook_that_m3bng_stores(
    bng_sim: BngSim, m3bng: tuple[LiveServer, Settings]
) -> None:
    server, settings = m3bng
    url = f"{server.base_url}/webhooks/bng"
    answer = await bng_sim.send_webhook(url=url, secret=TEST_SECRET, type="customer.updated", id="msg_sim_1")
    assert answer.status_code == 202, answer.text
    assert answer.headers["webhook-id"] == "msg_sim_1"
    again = await bng_sim.send_webhook(url=url, secret=TEST_SECRET, type="customer.updated", id="msg_sim_1")
    assert again.status_code == 200  # m3bng's duplicate answer, passed through
    order = {**sample("order.created"), "OrderID": "SO-77"}
    assert (
        await bng_sim.send_webhook(url=url, secret=TEST_SECRET, type="order.created", data=order)
    ).status_code == 202
    forged = await bng_sim.send_webhook(url=url, secret=OTHER_SECRET, type="customer.updated")
    assert forged.status_code == 401  # signed with a secret m3bng does not know

    events = await stored_events(settings)
    assert (events[0].external_id, events[0].event_type) == ("msg_sim_1", "customer.updated")
    assert events[0].payload["data"] == sample("customer.updated")
    assert events[1].business_key == "order:SO-77"
    sent = await bng_sim.calls(kind="webhook")
    assert [c["status"] for c in sent] == [202, 200, 202, 401]


async def test_send_refuses_bad_requests(bng_sim: BngSim) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"secret": TEST_SECRET, "type": "customer.updated"}, "url"),
        ({"url": "http://127.0.0.1:9/x", "type": "customer.updated"}, "secret"),
        ({"url": "http://127.0.0.1:9/x", "secret": TEST_SECRET, "type": "order.shipped"}, "type"),
        (
            {"url": "http://127.0.0.1:9/x", "secret": TEST_SECRET, "type": "order.created", "data": [1]},
            "data",
        ),
    ]
    for body, field in cases:
        answer = await bng_sim.send_webhook(**body)
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    unreachable = await bng_sim.send_webhook(
        url="http://127.0.0.1:9/webhooks/bng", secret=TEST_SECRET, type="customer.updated", timeout=1
    )
    assert unreachable.status_code == 502 and unreachable.json()["error"] == "delivery_failed"


async def test_changes_are_announced_by_webhook(bng_sim: BngSim, m3bng: tuple[LiveServer, Settings]) -> None:
    server, settings = m3bng
    shown = await bng_sim.webhooks(url=f"{server.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True)
    assert shown["secret_set"] is True and "secret" not in shown
    bng = bng_sim.client()
    try:
        customer = {"CompanyName": "Velo Sport AB", "Phone": "+46 8 1"}
        await bng.put("/customers/C-1", customer, idempotency_key="w1")
        await bng.put("/customers/C-1", customer, idempotency_key="w1")  # replay: no new webhook
        await bng.put("/customers/C-2", {"Phone": "+46 8 2"}, idempotency_key="w2")  # no name: not valid
        await bng.put("/invoices/INV-1", {"Amount": 10}, idempotency_key="w3")  # no webhook type
        await bng.put("/products/P-1", {"Name": "Bike"}, idempotency_key="w4")
    finally:
        await bng.aclose()
    await bng_sim.drain_webhooks()
    for _ in range(50):  # the skipped one is recorded at once, deliveries when answered
        if len(await bng_sim.calls(kind="webhook")) == 3:
            break
        await asyncio.sleep(0.05)
    webhooks = await bng_sim.calls(kind="webhook")
    assert [(w["type"], w["status"]) for w in webhooks if not w.get("skipped")] == [
        ("customer.updated", 202),
        ("product.updated", 202),
    ]
    skipped = [w for w in webhooks if w.get("skipped")]
    assert len(skipped) == 1 and "CompanyName, FirstName or LastName" in skipped[0]["skipped"]
    events = await stored_events(settings)
    assert [(e.event_type, e.business_key) for e in events] == [
        ("customer.updated", "customer:C-1"),
        ("product.updated", "product:P-1"),
    ]
    assert events[0].payload["data"] == {"CustomerID": "C-1", **customer}
    stats = await bng_sim.stats()
    assert (stats["webhooks_sent"], stats["webhooks_skipped"]) == (2, 1)


async def test_failed_deliveries_are_logged_not_raised(bng_sim: BngSim) -> None:
    await bng_sim.webhooks(url="http://127.0.0.1:9/webhooks/bng", secret=TEST_SECRET, enabled=True, timeout=1)
    bng = bng_sim.client()
    try:
        assert (await bng.put("/vendors/V-300", sample("vendor.created"), idempotency_key="v1")).status == 201
    finally:
        await bng.aclose()
    await bng_sim.drain_webhooks()
    [failed] = await bng_sim.calls(kind="webhook")
    assert failed["type"] == "vendor.updated" and failed["status"] is None and failed["error"]
