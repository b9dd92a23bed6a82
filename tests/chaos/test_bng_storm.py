"""A 429 storm from BNG while M3 publishes a burst of item changes, with real worker processes:
m3bng never sends faster than its configured rate, honours Retry-After, and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.support.bods import item_master
from tests.support.cluster import Cluster, Sender

CONFIGURED = 6  # M3BNG_BNG_RATE_LIMIT: what m3bng is told BNG allows
BNG_LIMIT = 4  # what BNG really allows this hour: everything above is answered 429


async def test_bng_429_storm_keeps_the_configured_rate_and_loses_nothing(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    count = 24 * scale  # six seconds at what BNG allows: a storm from the first second on
    cluster = make_cluster(
        shared_pg_url,
        workers=2,
        bng_rate_limit=BNG_LIMIT,
        settings={"M3BNG_BNG_RATE_LIMIT": str(CONFIGURED), "M3BNG_BNG_MAX_INLINE_WAIT": "2"},
    )
    async with cluster:
        await cluster.bng_faults(rate_limit_per_second=BNG_LIMIT, retry_after=1)
        sender = Sender(cluster.api_url)
        try:
            items = [f"ITEM-STORM-{n:04d}" for n in range(count)]
            await asyncio.gather(
                *(sender.deliver_bod(item_master(itno, name=f"Item {itno}")) for itno in items)
            )
        finally:
            await sender.aclose()
        await cluster.wait_settled(count, timeout=60 + 20 * scale)
        stats = await cluster.bng_stats()
        products = (await cluster.bng_state())["products"]
        events = await cluster.events()
        dead = await cluster.dead_letters()
    print(f"\nBNG: {stats['throttled']} answered 429, busiest second {stats['max_arrivals_per_second']} sent")
    assert stats["throttled"] > 0, "no storm: BNG never answered 429"
    assert stats["max_arrivals_per_second"] <= CONFIGURED, stats
    assert stats["max_requests_per_second"] <= BNG_LIMIT, stats
    assert not dead
    assert all(e.status == "done" for e in events), [(e.id, e.status, e.last_error) for e in events]
    assert sorted(products) == items
