"""SIGKILL of worker processes and of the API process at random moments during a load of orders:
0 lost events, 0 duplicate M3 orders, every event processed (or dead-lettered with a reason)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from m3bng.connectors.bng.samples import sample
from tests.support.cluster import Cluster, Process, Sender, orders_by_reference


def order(n: int, prefix: str) -> tuple[str, dict[str, object], str]:
    data = {**sample("order.created"), "OrderID": f"{prefix}-{n:05d}"}
    return "order.created", data, f"msg_{prefix}_{n}"


async def kill_now_and_then(cluster: Cluster, kills: int, rng: random.Random) -> list[str]:
    """SIGKILL a random API or worker process every 0.3-1.2 s while the load runs, and start it
    again a moment later (as a supervisor would)."""
    victims: list[Process] = [cluster.api, *cluster.workers]
    killed: list[str] = []
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        victim = rng.choice(victims)
        victim.kill()
        killed.append(victim.name)
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        victim.start()
        if victim is cluster.api:
            await cluster.wait_api()
    return killed


async def test_sigkill_workers_and_api_mid_load_loses_and_duplicates_nothing(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    count, kills = 150 * scale, 4 * scale
    rng = random.Random(7)
    cluster = make_cluster(shared_pg_url, workers=2, m3_latency_ms=15)
    async with cluster:
        sender = Sender(cluster.api_url)
        try:
            items = [order(n, "SO-KILL") for n in range(count)]
            started = time.monotonic()
            load = asyncio.create_task(sender.deliver_all(items, concurrency=8))
            killed = await kill_now_and_then(cluster, kills, rng)
            deliveries = await load
            loaded = time.monotonic()
        finally:
            await sender.aclose()
        counts = await cluster.wait_settled(count, timeout=60 + 30 * scale)
        print(
            f"\nkills {killed}; load {loaded - started:.1f} s, settled {time.monotonic() - loaded:.1f} s "
            f"later; {sender.retries} webhook retries"
        )
        events = await cluster.events()
        state = await cluster.m3_state()

    assert len(killed) == kills
    # Every acknowledged webhook is one stored event, and none is stored twice.
    assert sorted(e.external_id for e in events) == sorted(msg for _, _, msg in items)
    assert {d.event_id for d in deliveries} == {e.id for e in events}
    assert counts == {"done": count}, [(e.id, e.status, e.last_error) for e in events if e.status != "done"]
    # Exactly one confirmed M3 order per BNG order, with its three lines.
    by_reference = orders_by_reference(state)
    for _, data, _ in items:
        ornos = by_reference.get(str(data["OrderID"]), [])
        assert len(ornos) == 1, (data["OrderID"], ornos)
        assert len(state["orders"][ornos[0]]["lines"]) == 3, data["OrderID"]
    assert len(state["orders"]) == count
