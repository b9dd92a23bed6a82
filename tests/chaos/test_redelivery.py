"""Every webhook and every BOD delivered three times, concurrently and out of order, to a real
API process with real workers: one stored event and one effect each, and an older BOD variation
that arrives after a newer one never overwrites the newer data in BNG."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from m3bng.connectors.bng.samples import sample
from tests.chaos.support import Item, orders
from tests.support.bods import party
from tests.support.cluster import Cluster, Sender, orders_by_reference

COPIES = 3
VARIATIONS = 4
ORDERS = 20  # with the customers, their changes and their BODs: 300 deliveries in random order


def customers(count: int) -> list[Item]:
    return [
        ("customer.created", {**sample("customer.created"), "CustomerID": f"C-RD-{n:04d}"}, f"msg_cust_{n}")
        for n in range(count)
    ]


def customer_updates(count: int) -> list[tuple[str, dict[str, Any], str, str]]:
    """Three changes of each customer, a minute apart (the webhook's timestamp), each with its
    own phone number: whatever order they arrive in, M3 must end with the newest one's."""
    return [
        (
            "customer.updated",
            {
                **sample("customer.updated"),
                "CustomerID": f"C-RD-{n:04d}",
                "Phone": f"+46 8 {change}00 {n:03d}",
            },
            f"msg_cust_{n}_change_{change}",
            f"2026-12-01T10:0{change}:00Z",
        )
        for n in range(count)
        for change in range(1, VARIATIONS)
    ]


def customer_bods(count: int) -> dict[str, list[bytes]]:
    """For each M3 customer, variations 1..VARIATIONS of its SyncCustomerPartyMaster, each in
    another city: the newest variation's city is the one BNG must end up with."""
    return {
        f"M3C{n:04d}": [
            party(
                "CustomerPartyMaster",
                f"M3C{n:04d}",
                name=f"Customer {n}",
                city=f"City-{variation}",
                variation=variation,
                minutes=variation,
            )
            for variation in range(1, VARIATIONS + 1)
        ]
        for n in range(count)
    }


async def test_triple_delivery_out_of_order_has_one_effect_each(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    rng = random.Random(11)
    webhooks = orders("SO-RD", ORDERS * scale) + customers(10 * scale)
    bods = customer_bods(10 * scale)
    cluster = make_cluster(shared_pg_url, workers=2, m3_latency_ms=5)
    async with cluster:
        sender = Sender(cluster.api_url)
        updates = customer_updates(10 * scale)
        deliveries: list[Any] = [("webhook", item) for item in webhooks for _ in range(COPIES)]
        deliveries += [("webhook", item) for item in updates for _ in range(COPIES)]
        deliveries += [("bod", xml) for versions in bods.values() for xml in versions for _ in range(COPIES)]
        rng.shuffle(deliveries)
        gate = asyncio.Semaphore(24)

        async def deliver(kind: str, what: Any) -> tuple[str, int]:
            async with gate:
                if kind == "webhook":
                    return what[2], (await sender.deliver(*what)).event_id
                return "bod", await sender.deliver_bod(what)

        try:
            answers = await asyncio.gather(*(deliver(kind, what) for kind, what in deliveries))
        finally:
            await sender.aclose()
        expected_events = len(webhooks) + len(updates) + len(bods) * VARIATIONS
        counts = await cluster.wait_settled(expected_events, timeout=90 * scale)
        events = await cluster.events()
        m3 = await cluster.m3_state()
        bng = await cluster.bng_state()

    # One event per webhook-id and per BODID, however many copies arrived; the copies of one
    # webhook were all answered with the same event.
    assert len(events) == expected_events, counts
    by_message: dict[str, set[int]] = {}
    for message_id, event_id in answers:
        if message_id != "bod":
            by_message.setdefault(message_id, set()).add(event_id)
    assert all(len(ids) == 1 for ids in by_message.values()), by_message
    # Webhooks: one M3 order per BNG order, one M3 customer per BNG customer.
    by_reference = orders_by_reference(m3)
    for _, data, _ in orders("SO-RD", ORDERS * scale):
        assert len(by_reference.get(str(data["OrderID"]), [])) == 1, data["OrderID"]
    assert len(m3["orders"]) == ORDERS * scale
    for _, data, _ in customers(10 * scale):
        assert data["CustomerID"] in m3["customers"], data["CustomerID"]
    # Customer changes: the newest one's phone number, whatever order they arrived in (older
    # ones arriving after it were skipped as stale).
    newest = {data["CustomerID"]: data["Phone"] for _, data, _, _ in updates}  # last change wins
    for customer_id, phone in newest.items():
        assert m3["customers"][customer_id]["PHNO"] == phone, customer_id
    # BODs: each customer holds its newest variation's data; older ones were skipped as stale
    # (or applied before the newer one arrived), never applied over it.
    for number in bods:
        assert bng["customers"][number]["BillingAddress"]["City"] == f"City-{VARIATIONS}", number
    statuses = {(e.event_type, e.status, e.error_class) for e in events}
    assert statuses <= {
        ("order.created", "done", None),
        ("customer.created", "done", None),
        ("customer.created", "skipped", "stale"),
        ("customer.updated", "done", None),
        ("customer.updated", "skipped", "stale"),
        ("customer.updated", "skipped", "echo"),
        ("SyncCustomerPartyMaster", "done", None),
        ("SyncCustomerPartyMaster", "skipped", "stale"),
    }, statuses
