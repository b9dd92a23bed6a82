"""Lost webhooks (issue 17): the BNG simulator never delivers a share of its webhooks while
orders and customer changes come in, with real API and worker processes. ``m3bng reconcile
orders --fix`` finds every lost order and takes it in; M3 ends with each order exactly once; the
lost webhooks delivered late afterwards change nothing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from m3bng.connectors.bng.samples import sample
from tests.support.cluster import BNG_API_KEY, WEBHOOK_SECRET, Cluster, orders_by_reference

DROP_RATE = 0.3


def order(n: int) -> dict[str, Any]:
    return {**sample("order.created"), "OrderID": f"SO-LOST-{n:04d}"}


async def webhook_log(bng: httpx.AsyncClient, event_type: str) -> list[dict[str, Any]]:
    """The simulator's deliveries (sent, failed or lost) of one webhook type."""
    answer = await bng.get("/_sim/calls")
    answer.raise_for_status()
    return [c for c in answer.json() if c.get("kind") == "webhook" and c.get("type") == event_type]


async def reconcile(cluster: Cluster, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "m3bng", "reconcile", "orders", "--since", "1h", "--grace", "0s", *args,
        env={**os.environ, **cluster.app_settings()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return int(process.returncode or 0), out.decode()


async def test_lost_order_webhooks_are_found_taken_in_once_and_late_ones_change_nothing(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    count = 30 * scale
    cluster = make_cluster(shared_pg_url, workers=2, settings={"M3BNG_BNG_RATE_LIMIT": "0"})
    async with cluster, httpx.AsyncClient(base_url=cluster.bng_url, timeout=30) as bng:
        target = {"url": f"{cluster.api_url}/webhooks/bng", "secret": WEBHOOK_SECRET, "enabled": True}
        (await bng.post("/_sim/webhooks/config", json={**target, "drop_rate": DROP_RATE})).raise_for_status()

        async def place(n: int) -> str:
            answer = await bng.post("/_sim/orders/place", json=order(n))
            answer.raise_for_status()
            return str(answer.json()["webhook"])

        async def change_customer(n: int) -> None:  # BNG announces it with customer.updated, or loses it
            body = {**sample("customer.updated"), "CustomerID": f"CL{n:04d}", "CompanyName": f"Lost {n}"}
            headers = {"X-API-Key": BNG_API_KEY, "Idempotency-Key": f"lost-customer-{n}"}
            (await bng.put(f"/api/v1/customers/CL{n:04d}", json=body, headers=headers)).raise_for_status()

        webhooks, _ = await asyncio.gather(
            asyncio.gather(*(place(n) for n in range(count))),
            asyncio.gather(*(change_customer(n) for n in range(count // 3))),
        )
        lost = {order(n)["OrderID"] for n, how in enumerate(webhooks) if how == "dropped"}
        assert 0 < len(lost) < count, webhooks
        # The customer webhooks leave after the API answers: wait until each was sent or lost.
        changes, deadline = count // 3, time.monotonic() + 30
        while len(customer_webhooks := await webhook_log(bng, "customer.updated")) < changes:
            assert time.monotonic() < deadline, customer_webhooks
            await asyncio.sleep(0.1)
        delivered = sum(1 for entry in customer_webhooks if not entry.get("dropped"))
        await cluster.wait_settled(count - len(lost) + delivered, timeout=60 + 20 * scale)

        code, out = await reconcile(cluster, "--fix")
        assert code == 0, out  # every finding was a lost order, and each was taken in
        assert f"{len(lost)} never_arrived" in out and f"{len(lost)} taken in" in out, out
        await cluster.wait_settled(count, timeout=60 + 20 * scale)

        for oid in sorted(lost):  # BNG's retries finally get through, after the fix
            late = {**target, "type": "order.created", "data": {**order(int(oid[-4:]))}}
            (await bng.post("/_sim/webhooks/send", json=late)).raise_for_status()
        await cluster.wait_settled(count + len(lost), timeout=60 + 20 * scale)

        in_m3 = orders_by_reference(await cluster.m3_state())
        twice = {oid: ornos for oid, ornos in in_m3.items() if oid.startswith("SO-LOST") and len(ornos) != 1}
        assert not twice
        assert {f"SO-LOST-{n:04d}" for n in range(count)} <= set(in_m3)
        code, out = await reconcile(cluster)
        assert code == 0 and f"{count} matching" in out and "0 never_arrived" in out, out
        dead = await cluster.dead_letters()
        assert not dead, [(d.event_id, d.reason, d.error) for d in dead]
