"""PostgreSQL restarted mid-load (every connection cut, the server down for a while): the API and
the workers reconnect by themselves and nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.chaos.support import Stopwatch, check_orders_once, orders, send_orders
from tests.support.cluster import Cluster, PrivatePostgres


async def test_postgresql_restart_mid_load_loses_nothing(
    private_pg: PrivatePostgres, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    url = await private_pg.create_database("m3bng")
    items = orders("SO-PG", 100 * scale)
    cluster = make_cluster(url, workers=2, m3_latency_ms=10)
    async with cluster:
        clock = Stopwatch()
        load = asyncio.create_task(send_orders(cluster, items, concurrency=8, rate=25))
        for _ in range(scale):
            await asyncio.sleep(1.5)
            clock.mark("restart")
            await asyncio.to_thread(private_pg.restart, 2.0)
            clock.mark("up")
        deliveries = await load
        clock.mark("load sent")
        await cluster.wait_settled(len(items), timeout=90 * scale)
        clock.mark("settled")
        print(f"\n{clock}")
        await check_orders_once(cluster, items, deliveries)
        assert cluster.api.running and all(w.running for w in cluster.workers)
