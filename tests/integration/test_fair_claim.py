"""Several BNG instances share the workers fairly (store/queue.py, the fair claim), and the
inventory poller routes each warehouse to its instances; on both stores.

One instance's flood of old events must not delay another instance's next event by more than one
claim per instance with work; keys (dedup, per-key order) are per instance.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.flows.runtime import FlowContext, FlowRegistry
from m3bng.inbox.worker import Worker
from m3bng.instances import Instance, Instances, Routing
from m3bng.mapping import load_mappings
from m3bng.poller import InventoryPoller
from m3bng.store import queue
from m3bng.store.models import Event
from m3bng.store.queue import NewEvent
from tests.conftest import REPO_ROOT

Sessions = async_sessionmaker[AsyncSession]


def new(instance: str, n: int, key: str | None = None) -> NewEvent:
    return NewEvent(
        source="bng",
        external_id=f"msg_{n}",
        event_type="test.record",
        payload={"type": "test.record", "data": {"n": n}},
        business_key=key,
        correlation_id=f"c{n}",
        instance=instance,
    )


def two(settings: Settings) -> Instances:
    return Instances({i: Instance(id=i, webhook_secrets=(), settings=settings) for i in ("a", "b")})


async def claim(sessions: Sessions, limit: int, instances: list[str] | None) -> list[queue.ClaimedEvent]:
    """The worker's claim: on PostgreSQL straight on asyncpg, on SQLite in a transaction."""
    return await queue.claim(sessions, queue.ClaimRequest("w", limit, 60, instances=instances))


async def test_the_same_ids_in_two_instances_are_two_events_and_the_claim_is_fair(sessions: Sessions) -> None:
    flood = [new("a", n) for n in range(200)]
    stored = await queue.store_events(sessions, [*flood, new("b", 0), new("b", 1)])
    # msg_0 and msg_1 exist in both instances: four distinct events, none a duplicate.
    assert all(created for _, created in stored) and len({i for i, _ in stored}) == 202
    again = await queue.store_events(sessions, [new("b", 0)])
    assert again == [(stored[200][0], False)]  # a duplicate within its own instance

    # Head of line of every instance first: a's 200 older events do not hold b back.
    first = await claim(sessions, 4, ["a", "b"])
    assert [(e.instance, e.external_id) for e in first] == [
        ("a", "msg_0"),
        ("a", "msg_1"),
        ("b", "msg_0"),
        ("b", "msg_1"),
    ]
    # Among equals the caller's order decides (workers rotate it): b first, then a.
    await queue.store_events(sessions, [new("b", 2)])
    [head] = await claim(sessions, 1, ["b", "a"])
    assert (head.instance, head.external_id) == ("b", "msg_2")
    # Only the instances asked for: a paused (left out) leaves its events pending.
    assert await claim(sessions, 5, ["b"]) == []
    assert await claim(sessions, 5, []) == []


async def test_per_key_order_is_per_instance(sessions: Sessions) -> None:
    await queue.store_events(sessions, [new("a", 1, key="order:SO-1"), new("a", 2, key="order:SO-1")])
    await queue.store_events(sessions, [new("b", 1, key="order:SO-1")])
    claimed = await claim(sessions, 10, ["a", "b"])
    # a's second event waits behind its first; b's event of the same key does not wait for a's.
    assert sorted((e.instance, e.external_id) for e in claimed) == [("a", "msg_1"), ("b", "msg_1")]


async def test_a_flood_on_one_instance_delays_the_other_by_one_claim_at_most(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    settings = make_settings(worker_concurrency=1)
    order: list[str] = []

    async def flow(ctx: FlowContext) -> None:
        order.append(ctx.event.instance)

    registry = FlowRegistry()
    registry.register("test.record", flow)
    await queue.store_events(sessions, [new("a", n) for n in range(120)])
    await queue.store_events(sessions, [new("b", n) for n in range(3)])
    await Worker(settings, sessions, registry, instances=two(settings)).run_until_idle(120)
    assert len(order) == 123
    # One event at a time, the instances taking turns while both have work: b's three events
    # are done within the first six, not after a's 120.
    positions = [i for i, instance in enumerate(order) if instance == "b"]
    assert positions[-1] < 6, positions


async def test_the_poller_sends_a_warehouse_to_the_instances_routed_to_it(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    settings = make_settings()
    instances = Instances(
        {
            "a": Instance(id="a", webhook_secrets=(), settings=settings, routing=Routing(locations=("100",))),
            "b": Instance(id="b", webhook_secrets=(), settings=settings, routing=Routing(locations=("200",))),
            "c": Instance(id="c", webhook_secrets=(), settings=settings, routing=Routing(all=True)),
        }
    )
    mapping = load_mappings(REPO_ROOT / "mappings")["inventory_poll"]
    poller = InventoryPoller(settings, sessions, None, mapping, instances=instances)  # type: ignore[arg-type]
    balance = {"WHLO": "100", "ITNO": "BIKE-100", "STQT": "5"}
    assert await poller._enqueue_changes("100", [balance]) == 1
    async with sessions() as session:
        stored = {e.instance: e.external_id for e in await session.scalars(select(Event))}
    assert sorted(stored) == ["a", "c"] and len(set(stored.values())) == 1  # one balance, two events
    assert await poller._enqueue_changes("100", [balance]) == 0  # unchanged: nothing for anyone
