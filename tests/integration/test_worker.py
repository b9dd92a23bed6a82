"""Worker semantics on both stores: outcomes, retries, dead letters, ordering, leases, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.errors import PermanentError, TargetUnavailable, TransientError
from m3bng.flows.runtime import FlowContext, FlowRegistry
from m3bng.inbox.ingest import ingest_event
from m3bng.inbox.worker import Worker
from m3bng.store import queue, sql
from m3bng.store.models import DeadLetter, Event, Step
from tests.support.flows import register as register_test_flows
from tests.support.webhooks import post_event

Sessions = async_sessionmaker[AsyncSession]


async def add(
    sessions: Sessions, n: int, event_type: str = "test.record", key: str | None = None, **data: Any
) -> int:
    result = await ingest_event(
        sessions,
        source="bng",
        external_id=f"msg_{n}",
        event_type=event_type,
        payload={"type": event_type, "data": {"n": n, **data}},
        business_key=key,
    )
    return result.event_id


async def event(sessions: Sessions, event_id: int) -> Event:
    async with sessions() as session:
        return (await session.execute(select(Event).where(Event.id == event_id))).scalar_one()


async def rows(sessions: Sessions, model: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(select(model))).scalars())


def registry_with(event_type: str, flow: Callable[[FlowContext], Any]) -> FlowRegistry:
    registry = FlowRegistry()
    registry.register(event_type, flow)
    return registry


async def test_success_records_step_and_done(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    registry = FlowRegistry()
    register_test_flows(registry)
    event_id = await add(sessions, 1)
    await Worker(make_settings(), sessions, registry).run_until_idle()
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, ev.lease_owner) == ("done", 1, None)
    assert ev.checkpoint == {"started": True}
    [step] = await rows(sessions, Step)
    assert (step.name, step.status, step.response, step.attempt) == ("effect", "ok", {"applied": 1}, 1)


async def test_permanent_error_dead_letters_after_one_attempt(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    async def flow(ctx: FlowContext) -> None:
        async with ctx.step("add_batch_head", target="m3", operation="OIS100MI/AddBatchHead", request={}):
            raise PermanentError("CUNO 'X' does not exist")

    event_id = await add(sessions, 1, "test.bad")
    await Worker(make_settings(), sessions, registry_with("test.bad", flow)).run_until_idle()
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, ev.error_class) == ("dead", 1, "permanent")
    [dead] = await rows(sessions, DeadLetter)
    [step] = await rows(sessions, Step)
    assert dead.reason == "permanent_error"
    assert dead.failed_step_id == step.id
    assert "does not exist" in (dead.error or "")
    assert ev.payload["data"] == {"n": 1}  # the original payload is kept for replay


async def test_transient_error_retries_on_schedule_then_dead_letters(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    seen: list[float] = []

    async def flow(ctx: FlowContext) -> None:
        seen.append(asyncio.get_running_loop().time())
        raise TransientError("M3 answered 503")

    settings = make_settings(retry_schedule=[0.2, 0.4])
    event_id = await add(sessions, 1, "test.flaky")
    await Worker(settings, sessions, registry_with("test.flaky", flow)).run_until_idle()
    ev = await event(sessions, event_id)
    assert ev.status == "pending" and ev.attempts == 1 and ev.error_class == "transient"
    worker = Worker(settings, sessions, registry_with("test.flaky", flow))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(100):
        if (await event(sessions, event_id)).status == "dead":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts) == ("dead", 3)
    [dead] = await rows(sessions, DeadLetter)
    assert dead.reason == "retries_exhausted" and dead.attempts == 3
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # the schedule was honoured, not hammered


async def test_transient_then_success(make_settings: Callable[..., Settings], sessions: Sessions) -> None:
    calls = 0

    async def flow(ctx: FlowContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("connection reset")  # unforeseen errors retry like transient ones

    event_id = await add(sessions, 1, "test.once")
    worker = Worker(make_settings(retry_schedule=[0.01]), sessions, registry_with("test.once", flow))
    await worker.run_until_idle()
    await asyncio.sleep(0.05)
    await worker.run_until_idle()
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, calls) == ("done", 2, 2)


async def test_target_unavailable_waits_without_using_attempts(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    async def flow(ctx: FlowContext) -> None:
        raise TargetUnavailable("m3", "circuit open", retry_after=60)

    event_id = await add(sessions, 1, "test.down")
    worker = Worker(make_settings(retry_schedule=[0.01]), sessions, registry_with("test.down", flow))
    await worker.run_until_idle()
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, ev.error_class) == ("pending", 0, "target_down")
    assert (ev.next_attempt_at - ev.updated_at).total_seconds() >= 59
    assert await rows(sessions, DeadLetter) == []


async def test_unknown_event_type_is_dead_lettered(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    event_id = await add(sessions, 1, "nobody.handles")
    await Worker(make_settings(), sessions, FlowRegistry()).run_until_idle()
    ev = await event(sessions, event_id)
    assert ev.status == "dead"
    [dead] = await rows(sessions, DeadLetter)
    assert dead.reason == "no_flow" and "nobody.handles" in (dead.error or "")


async def test_same_key_in_order_different_keys_in_parallel(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    applied: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    overlap = {"max_total": 0, "max_per_key": 0}
    total = 0

    async def flow(ctx: FlowContext) -> None:
        nonlocal total
        key = ctx.event.business_key or ""
        running[key] += 1
        total += 1
        overlap["max_total"] = max(overlap["max_total"], total)
        overlap["max_per_key"] = max(overlap["max_per_key"], running[key])
        await asyncio.sleep(random.uniform(0, 0.01))
        applied[key].append(ctx.payload["data"]["n"])
        running[key] -= 1
        total -= 1

    keys = [f"order:{k}" for k in range(6)]
    for n in range(120):
        await add(sessions, n, "test.ordered", key=keys[n % len(keys)])
    settings = make_settings(worker_concurrency=8)
    registry = registry_with("test.ordered", flow)
    # Two workers share the store, as two processes would. A worker is idle when nothing is
    # claimable *now*: an event whose key the other worker holds (or held, on a busy machine, with
    # a lease still running) is not, so both run again until every event is done, with a deadline.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while True:
        await asyncio.gather(
            Worker(settings, sessions, registry).run_until_idle(60),
            Worker(settings, sessions, registry).run_until_idle(60),
        )
        async with sessions() as session:
            open_events = (await session.execute(select(Event.id).where(Event.status != "done"))).all()
        if not open_events:
            break
        assert loop.time() < deadline, f"{len(open_events)} events never done"
        await asyncio.sleep(0.2)
    for k, key in enumerate(keys):
        assert applied[key] == list(range(k, 120, len(keys))), key
    assert overlap["max_per_key"] == 1
    assert overlap["max_total"] > 1


async def test_expired_lease_is_reclaimed_and_old_owner_is_fenced(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    event_id = await add(sessions, 1)
    async with sessions.begin() as session:
        [claimed] = await queue.claim_due_events(session, "worker-a", 10, lease_seconds=0.2)
    async with sessions.begin() as session:
        assert await queue.claim_due_events(session, "worker-b", 10, lease_seconds=5) == []
    await asyncio.sleep(0.3)
    async with sessions.begin() as session:
        [again] = await queue.claim_due_events(session, "worker-b", 10, lease_seconds=5)
    assert again.id == claimed.id == event_id and again.attempts == 2
    async with sessions.begin() as session:
        assert not await queue.write_outcome(session, event_id, "worker-a", queue.done())  # stale owner
        assert await queue.renew_leases(session, "worker-a", [event_id], 5) == set()
        assert await queue.write_outcome(session, event_id, "worker-b", queue.done())
    assert (await event(sessions, event_id)).status == "done"


async def test_graceful_shutdown_releases_unfinished_events(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    started = asyncio.Event()

    async def flow(ctx: FlowContext) -> None:
        started.set()
        await asyncio.sleep(30)

    event_id = await add(sessions, 1, "test.slow")
    worker = Worker(make_settings(shutdown_grace_seconds=0.2), sessions, registry_with("test.slow", flow))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, ev.lease_owner) == ("pending", 0, None)


async def test_graceful_shutdown_lets_short_events_finish(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    started = asyncio.Event()

    async def flow(ctx: FlowContext) -> None:
        started.set()
        await asyncio.sleep(0.2)

    event_id = await add(sessions, 1, "test.short")
    worker = Worker(make_settings(shutdown_grace_seconds=5), sessions, registry_with("test.short", flow))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert (await event(sessions, event_id)).status == "done"


async def test_a_notification_during_the_claim_is_not_lost(
    make_settings: Callable[..., Settings], sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event committed (and notified) while the claim query runs, too late for that query to
    see it, is claimed at once, not after a whole poll interval (a race CI once lost)."""
    registry = FlowRegistry()
    register_test_flows(registry)
    worker = Worker(make_settings(worker_poll_interval=30, lease_seconds=60), sessions, registry)
    real_claim = queue.claim
    claims = 0

    async def claim_too_early(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        if claims == 1:  # the webhook committed and notified while this claim ran, unseen by it
            worker.wakeup.set()
            return []
        return await real_claim(*args, **kwargs)

    await add(sessions, 1)
    monkeypatch.setattr(queue, "claim", claim_too_early)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(250):  # 5 s, against the 30 s poll interval
            if [e.status for e in await rows(sessions, Event)] == ["done"]:
                break
            await asyncio.sleep(0.02)
        assert [e.status for e in await rows(sessions, Event)] == ["done"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_worker_never_claims_an_event_it_is_still_working_on(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    """Its own attempt is stuck (the database was away) and the lease ran out: the worker must not
    start a second attempt of the same event beside it. Both would carry its id, and the fence
    (by worker) could not tell them apart: the stuck one once wrote its outcome over the new
    one's work (a dead letter in the PostgreSQL-restart chaos run)."""
    entered = 0
    release = asyncio.Event()

    async def flow(ctx: FlowContext) -> None:
        nonlocal entered
        entered += 1
        await release.wait()

    event_id = await add(sessions, 1, "test.stuck")
    worker = Worker(
        make_settings(lease_seconds=5, worker_poll_interval=0.05), sessions, registry_with("test.stuck", flow)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(100):
            if entered:
                break
            await asyncio.sleep(0.02)
        assert entered == 1
        async with sessions.begin() as session:  # as if the heartbeat could not renew it
            await session.execute(
                update(Event).where(Event.id == event_id).values(lease_expires_at=sql.utcnow())
            )
        worker.wakeup.set()
        await asyncio.sleep(0.5)  # ten poll intervals: time enough to claim it again
        assert entered == 1
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 10)
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts) == ("done", 1)


@pytest.mark.parametrize("n", [3])
async def test_in_process_worker_wakes_on_ingest(
    make_settings: Callable[..., Settings], sessions: Sessions, live_server: Callable[..., Any], n: int
) -> None:
    """`serve` runs workers in-process: a webhook is processed without anyone calling the worker."""
    registry = FlowRegistry()
    register_test_flows(registry)
    settings = make_settings(
        worker_poll_interval=5, lease_seconds=30
    )  # only the ingest notification can be this fast
    async with (
        live_server(settings, registry=registry, run_workers=True) as server,
        server.client() as client,
    ):
        for i in range(n):
            response = await post_event(client, {"type": "test.record", "data": {"n": i}}, f"wake_{i}")
            assert response.status_code == 202
        for _ in range(100):
            events = await rows(sessions, Event)
            if all(e.status == "done" for e in events):
                break
            await asyncio.sleep(0.02)
    assert [e.status for e in events] == ["done"] * n


async def test_poison_event_that_keeps_killing_workers_is_dead_lettered(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    calls = 0

    async def flow(ctx: FlowContext) -> None:
        nonlocal calls
        calls += 1

    settings = make_settings(retry_schedule=[0.01, 0.01])  # 3 attempts at most
    event_id = await add(sessions, 1, "test.poison")
    for _ in range(3):  # three workers claimed it and died without an outcome
        async with sessions.begin() as session:
            await queue.claim_due_events(session, "doomed", 1, lease_seconds=0.01)
        await asyncio.sleep(0.02)
    await Worker(settings, sessions, registry_with("test.poison", flow)).run_until_idle()
    ev = await event(sessions, event_id)
    assert (ev.status, ev.attempts, calls) == ("dead", 4, 0)
    [dead] = await rows(sessions, DeadLetter)
    assert dead.reason == "retries_exhausted" and "without an outcome" in (dead.error or "")


async def test_lost_lease_stops_the_flow_and_leaves_the_new_owner_alone(
    make_settings: Callable[..., Settings], sessions: Sessions
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def flow(ctx: FlowContext) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    event_id = await add(sessions, 1, "test.stolen")
    worker = Worker(
        make_settings(lease_seconds=1, worker_poll_interval=0.05),
        sessions,
        registry_with("test.stolen", flow),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    async with sessions.begin() as session:  # another worker took the event over
        await session.execute(update(Event).where(Event.id == event_id).values(lease_owner="other-worker"))
    await asyncio.wait_for(cancelled.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    ev = await event(sessions, event_id)
    assert (ev.status, ev.lease_owner) == ("processing", "other-worker")
