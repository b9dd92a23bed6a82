"""M3 misbehaving mid-load, with real worker processes: an outage (503s, then timeouts), answers
lost after the write was committed, and every OAuth token revoked at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from tests.chaos.support import Stopwatch, check_orders_once, orders, send_orders, sleep_until
from tests.support.cluster import Cluster


async def test_m3_outage_opens_the_circuit_dead_letters_nothing_and_drains(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    """503 for the first half of the outage, calls that hang past the client's timeout for the
    second half (60 s in all with --soak, 8 s in CI)."""
    half = 30.0 if scale > 1 else 4.0
    items = orders("SO-OUT", 80 * scale)
    cluster = make_cluster(shared_pg_url, workers=2, m3_latency_ms=10)
    async with cluster:
        clock = Stopwatch()
        load = asyncio.create_task(send_orders(cluster, items, concurrency=4))
        await asyncio.sleep(1.0)
        await cluster.m3_faults(latency_ms=10, outage_seconds=half)
        clock.mark("503s")
        await sleep_until(clock, 1.0 + half)
        await cluster.m3_faults(latency_ms=10, timeout_rate=1.0, timeout_seconds=5)
        clock.mark("timeouts")
        await sleep_until(clock, 1.0 + 2 * half)
        await cluster.m3_faults(latency_ms=10)
        clock.mark("recovered")
        deliveries = await load
        await cluster.wait_settled(len(items), timeout=90 + 2 * half)
        clock.mark("drained")
        print(f"\n{clock}")
        await check_orders_once(cluster, items, deliveries)
        opened = [
            (name, line)
            for name, line in cluster.log_lines()
            if '"circuit.state_changed"' in line and json.loads(line).get("state") == "open"
        ]
    assert opened, "no worker opened its M3 circuit during the outage"
    assert {name for name, _ in opened} <= {w.name for w in cluster.workers}


async def test_lost_answers_of_add_batch_head_and_confirm_make_one_order_each(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    """M3 commits, then the answer never arrives (10 % of AddBatchHead and Confirm calls). The
    simulator draws its faults from a seeded generator, one number a call: 50 orders make at least
    100 such calls, and the first 100 draws lose 11 answers (the assertion asks for 5)."""
    items = orders("SO-LOST", 50 * scale)
    cluster = make_cluster(shared_pg_url, workers=2)
    async with cluster:
        await cluster.m3_faults(
            drop_response_rate=0.1,
            drop_seconds=4,  # longer than M3BNG_M3_TIMEOUT (2 s): the client gives up first
            programs=["OIS100MI/AddBatchHead", "OIS100MI/Confirm"],
        )
        deliveries = await send_orders(cluster, items)
        await cluster.wait_settled(len(items), timeout=120 * scale)
        stats = await cluster.m3_stats()
        await check_orders_once(cluster, items, deliveries)
    print(f"\nanswers dropped: {stats['faults_injected']}")
    assert stats["faults_injected"] >= 5  # the scenario really happened


async def test_every_token_revoked_mid_load_is_renewed_once_per_process(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    items = orders("SO-TOKEN", 80 * scale)
    cluster = make_cluster(shared_pg_url, workers=2, m3_latency_ms=10)
    async with cluster:
        load = asyncio.create_task(send_orders(cluster, items, concurrency=4))
        await asyncio.sleep(1.5)
        before = (await cluster.m3_stats())["token_requests"]
        assert await cluster.m3_expire_tokens() >= 1
        deliveries = await load
        await cluster.wait_settled(len(items), timeout=60 * scale)
        after = (await cluster.m3_stats())["token_requests"]
        await check_orders_once(cluster, items, deliveries)
        events = await cluster.events()
    # One new token per worker process (each shares one token among its calls), not one per call.
    assert 1 <= after - before <= len(cluster.workers), (before, after)
    assert all(e.attempts == 1 for e in events), [
        (e.id, e.attempts, e.last_error) for e in events if e.attempts > 1
    ]


async def test_gateway_errors_and_resets_after_commit_on_every_order_write(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int
) -> None:
    """The gateway answers 504 after M3 committed (10 % of head, line and Confirm calls), and
    another 5 % of connections are cut mid-answer: every order once, never a line twice. The
    faults come from the simulator's seeded generator: the at least 250 calls of 50 orders meet 30
    gateway errors and 12 resets or more (the assertion asks for 10 and 5)."""
    items = orders("SO-GW", 50 * scale)
    cluster = make_cluster(shared_pg_url, workers=2)
    async with cluster:
        await cluster.m3_faults(
            gateway_rate=0.1,
            gateway_status=504,
            gateway_after=True,
            reset_rate=0.05,
            programs=["OIS100MI/AddBatchHead", "OIS100MI/AddBatchLine", "OIS100MI/Confirm"],
        )
        deliveries = await send_orders(cluster, items)
        await cluster.wait_settled(len(items), timeout=120 * scale)
        stats = await cluster.m3_stats()
        await check_orders_once(cluster, items, deliveries)
        state = await cluster.m3_state()
    for order in state["orders"].values():
        cupos = [line["CUPO"] for line in order["lines"]]
        assert cupos == ["1", "2", "3"], (order["head"]["CUOR"], cupos)
    assert state["batches"] == {}  # no half-entered batch left behind
    print(
        f"\nafter-commit faults: {stats['gateway_errors_after']} gateway, {stats['reset_connections']} resets"
    )
    assert stats["gateway_errors_after"] >= 10 and stats["reset_connections"] >= 5
