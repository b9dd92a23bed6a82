"""GET /api/v1/dead-letters and /dead-letters/summary on the real app: filters, resolution,
paging, counts."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import update

from m3bng.connectors.bng.samples import sample
from m3bng.store.models import DeadLetter
from m3bng.store.sql import utcnow
from tests.integration.ops.conftest import Ops

URL = "/api/v1/dead-letters"


async def listed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(URL, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def events(client: httpx.AsyncClient, **params: Any) -> list[int]:
    return [item["event_id"] for item in await listed(client, **params)]


async def dead_customer(ops: Ops) -> int:
    """A customer whose postal code is longer than M3's PONO: refused by the mapping."""
    data = {**sample("customer.created"), "CustomerID": "C-LONG"}
    data["BillingAddress"] = {**data["BillingAddress"], "PostalCode": "1234567890123456"}
    event = await ops.settle(await ops.send("customer.created", data))
    assert (event.status, event.error_class) == ("dead", "mapping"), event.last_error
    return event.id


async def test_filters_resolution_and_paging(ops: Ops) -> None:
    first = await ops.dead_order("SO-D1")
    customer = await dead_customer(ops)
    second = await ops.dead_order("SO-D2")
    done = (await ops.settle(await ops.send("order.created"))).id

    items = await listed(ops.read)
    assert [item["event_id"] for item in items] == [second, customer, first]
    assert done not in [item["event_id"] for item in items]
    top = items[0]
    assert (top["event_type"], top["source"], top["business_key"]) == ("order.created", "bng", "order:SO-D2")
    assert (top["reason"], top["error_class"], top["attempts"]) == ("permanent_error", "missing_reference", 1)
    assert "C-MISSING" in top["error"] and top["resolved_at"] is None and top["resolution"] is None

    assert await events(ops.read, error_class="missing_reference") == [second, first]
    assert await events(ops.read, error_class="mapping") == [customer]
    assert await events(ops.read, reason="permanent_error") == [second, customer, first]
    assert await events(ops.read, reason="retries_exhausted") == []
    assert await events(ops.read, event_type="customer.created") == [customer]
    assert await events(ops.read, source="ion") == []
    assert await events(ops.read, q="so-d1") == [first]
    assert await events(ops.read, program="CRS610MI/Add") == []  # refused before any call to Add
    since = (await ops.read.get(f"/api/v1/transactions/{customer}")).json()["received_at"]
    assert await events(ops.read, since=since) == [second, customer]
    assert await events(ops.read, until=since) == [first]

    # Paging: one at a time, every dead letter once.
    seen, cursor = [], None
    while True:
        response = await ops.read.get(URL, params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        body = response.json()
        seen += [item["event_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [second, customer, first]

    # Resolved (what a replay or a discard does to the dead letter row).
    async with ops.sessions.begin() as session:
        await session.execute(
            update(DeadLetter)
            .where(DeadLetter.event_id == first)
            .values(resolved_at=utcnow(), resolution="discarded")
        )
    assert await events(ops.read) == [second, customer]
    resolved = await listed(ops.read, resolved="true")
    assert [(item["event_id"], item["resolution"]) for item in resolved] == [(first, "discarded")]
    assert resolved[0]["resolved_at"] is not None
    assert await events(ops.read, resolved="all") == [second, customer, first]
    assert await events(ops.read, resolved="all", error_class="missing_reference") == [second, first]

    for params, name in (
        ({"resolved": "maybe"}, "resolved"),
        ({"since": "soon"}, "since"),
        ({"limit": 5000}, "limit"),
        ({"cursor": "%%"}, "cursor"),
    ):
        response = await ops.read.get(URL, params=params)
        assert response.status_code == 422, response.text
        assert name in response.json()["error"]["message"], params
    assert (await ops.client.get(URL)).status_code == 401


async def test_summary_counts_by_type_reason_and_class(ops: Ops) -> None:
    first = await ops.dead_order("SO-D1")
    await ops.dead_order("SO-D2")
    await dead_customer(ops)

    response = await ops.read.get(f"{URL}/summary")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "total": 3,
        "groups": [
            {
                "event_type": "order.created",
                "reason": "permanent_error",
                "error_class": "missing_reference",
                "count": 2,
            },
            {
                "event_type": "customer.created",
                "reason": "permanent_error",
                "error_class": "mapping",
                "count": 1,
            },
        ],
    }
    only_orders = (await ops.read.get(f"{URL}/summary", params={"event_type": "order.created"})).json()
    assert only_orders["total"] == 2 and len(only_orders["groups"]) == 1

    async with ops.sessions.begin() as session:
        await session.execute(
            update(DeadLetter)
            .where(DeadLetter.event_id == first)
            .values(resolved_at=utcnow(), resolution="replayed")
        )
    assert (await ops.read.get(f"{URL}/summary")).json()["total"] == 2
    assert (await ops.read.get(f"{URL}/summary", params={"resolved": "true"})).json()["groups"] == [
        {
            "event_type": "order.created",
            "reason": "permanent_error",
            "error_class": "missing_reference",
            "count": 1,
        }
    ]
    assert (await ops.read.get(f"{URL}/summary", params={"resolved": "all"})).json()["total"] == 3
