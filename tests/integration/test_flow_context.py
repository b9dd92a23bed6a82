"""A flow's step rows ride out a database blip, and a store that stays down costs a step row,
never the call's result (flows/runtime/context.py)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from m3bng.errors import TransientError
from m3bng.flows.runtime import FlowContext, LeaseLost
from m3bng.inbox.ingest import ingest_event
from m3bng.store import documents, events, queue, sql
from m3bng.store.models import CrossReference, DeadLetter, Event, EventKey, Step

Sessions = async_sessionmaker[AsyncSession]


class FlakyStore:
    """The store's sessions, with the first ``failures`` writes failing to start: transactions,
    and on PostgreSQL the connections of the one-statement writes (store/fenced.py)."""

    def __init__(self, sessions: Sessions, failures: int) -> None:
        self.sessions, self.failures, self.begun = sessions, failures, 0
        self.kw = {"bind": FlakyEngine(self, sessions.kw["bind"])}

    def start(self) -> None:
        self.begun += 1
        if self.begun <= self.failures:
            raise ConnectionResetError("the database went away")

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        self.start()
        return self.sessions.begin()


class FlakyEngine:
    """The engine as ``FlakyStore`` hands it to a one-statement write."""

    def __init__(self, store: FlakyStore, engine: AsyncEngine) -> None:
        self.store, self.engine, self.dialect = store, engine, engine.dialect

    def connect(self) -> AsyncConnection:
        self.store.start()
        return self.engine.connect()


async def claimed_context(sessions: Sessions, store: FlakyStore) -> FlowContext:
    result = await ingest_event(
        sessions,
        source="bng",
        external_id="msg_blip",
        event_type="test.record",
        payload={"type": "test.record", "data": {}},
        business_key=None,
    )
    async with sessions.begin() as session:
        [event] = await queue.claim_due_events(session, "worker-a", 1, lease_seconds=30)
    assert event.id == result.event_id
    return FlowContext(event=event, owner="worker-a", sessions=store)  # type: ignore[arg-type]


async def failing_call() -> Any:
    raise TransientError("M3 answered 503")


async def test_a_failed_step_is_stored_after_a_blip_with_what_was_deferred(sessions: Sessions) -> None:
    store = FlakyStore(sessions, failures=2)
    ctx = await claimed_context(sessions, store)
    ctx.note(CUNO="10001")  # deferred: rides with the step row
    with pytest.raises(TransientError):
        async with ctx.step("head", target="m3", operation="OIS100MI/AddBatchHead", request={}, flush=False):
            await failing_call()
    assert store.begun == 3
    async with sessions() as session:
        [step] = (await session.execute(select(Step).where(Step.event_id == ctx.event.id))).scalars()
        event = (await session.execute(select(Event).where(Event.id == ctx.event.id))).scalar_one()
    assert ctx.last_failed_step_id == step.id and step.status == "failed" and step.error_class == "transient"
    assert event.checkpoint == {"CUNO": "10001"}


async def test_a_store_that_stays_down_costs_the_step_row_not_the_result(sessions: Sessions) -> None:
    store = FlakyStore(sessions, failures=99)
    ctx = await claimed_context(sessions, store)
    with pytest.raises(TransientError):  # the call's own error, not the store's
        async with ctx.step("head", target="m3", operation="OIS100MI/AddBatchHead", request={}, flush=False):
            await failing_call()
    assert ctx.last_failed_step_id is None and store.begun == 3
    ok_row = {**_row(ctx), "name": "lookup", "status": "ok"}
    ctx.defer(lambda session: events.record_step(session, **ok_row))  # a lookup's step row
    ctx.note(CUNO="10001")
    await ctx.flush_quietly()  # gives up after three tries, and forgets the rows it could not store
    assert store.begun == 6
    store.failures = 0
    await ctx.flush()  # the checkpoint is the event's state, still held; the step rows are gone
    assert store.begun == 7
    async with sessions() as session:
        assert (
            list((await session.execute(select(Step).where(Step.event_id == ctx.event.id))).scalars()) == []
        )
        event = (await session.execute(select(Event).where(Event.id == ctx.event.id))).scalar_one()
    assert event.checkpoint == {"CUNO": "10001"}


def _row(ctx: FlowContext) -> dict[str, Any]:
    return {
        "event_id": ctx.event.id,
        "attempt": ctx.event.attempts,
        "target": "m3",
        "operation": "CRS610MI/GetBasicData",
        "request": {},
        "response": [],
        "error_class": None,
        "error": None,
        "duration_ms": 1.0,
        "started_at": sql.utcnow(),
    }


async def test_a_write_after_the_lease_was_lost_changes_nothing_of_the_event_and_says_so(
    sessions: Sessions,
) -> None:
    """The fence holds on either store path (a transaction, or on PostgreSQL one statement):
    the event row, its keys and a dead letter are not written, what happened (a step, a link)
    is stored anyway, and the write answers that the lease is gone."""
    ctx = await claimed_context(sessions, FlakyStore(sessions, failures=0))
    ctx.sessions = sessions
    async with sessions.begin() as session:  # the lease ran out and another worker took it over
        await session.execute(update(Event).where(Event.id == ctx.event.id).values(lease_owner="worker-b"))
    async with ctx.step("lookup", target="m3", operation="CRS610MI/GetBasicData", request={}, flush=False):
        pass
    ctx.defer(documents.deferred_xref("order", "SO-1", "1000001"))
    ctx.note(CUNO="10001")
    with pytest.raises(LeaseLost):
        await ctx.save_checkpoint("CUNO")
    dead = queue.dead(reason="permanent_error", error_class="x", error="x", failed_step_id=None)
    assert not await ctx.store_outcome(dead, {"so-1": "order_id"}, attempts=1, log_as="test")
    async with sessions() as session:
        event = (await session.execute(select(Event).where(Event.id == ctx.event.id))).scalar_one()
        steps = list((await session.execute(select(Step).where(Step.event_id == ctx.event.id))).scalars())
        keys = list(
            (await session.execute(select(EventKey).where(EventKey.event_id == ctx.event.id))).scalars()
        )
        letters = list((await session.execute(select(DeadLetter))).scalars())
        assert await documents.get_xref(session, "order", "SO-1") == "1000001"
    assert (event.status, event.lease_owner, event.checkpoint) == ("processing", "worker-b", {})
    assert [(s.name, s.status, s.request) for s in steps] == [("lookup", "ok", {})]
    assert keys == [] and letters == []


async def test_an_outcome_is_stored_whole_with_what_rode_along(sessions: Sessions) -> None:
    """A dead letter with the event's attempts, the event's keys, a moved link and a refunded
    attempt: the same rows on either store path."""
    ctx = await claimed_context(sessions, FlakyStore(sessions, failures=0))
    ctx.sessions = sessions
    async with sessions.begin() as session:  # both ids taken by other links: the link moves
        await documents.put_xref(session, "order", "SO-1", "1000001")
        await documents.put_xref(session, "order", "SO-2", "1000002")
    ctx.defer(documents.deferred_xref("order", "SO-1", "1000002"))
    ctx.defer(
        documents.deferred_bng_state("order", "SO-1", {"Status": "Open"}, origin="bng", event_id=ctx.event.id)
    )
    ctx.set_on_event(mapping_hash="abc")
    ctx.note(ORNO="1000002")
    dead = queue.dead(reason="permanent_error", error_class="mapping", error="no rule", failed_step_id=None)
    assert await ctx.store_outcome(dead, {"so-1": "order_id"}, attempts=1, log_as="test")
    async with sessions() as session:
        event = (await session.execute(select(Event).where(Event.id == ctx.event.id))).scalar_one()
        [letter] = (await session.execute(select(DeadLetter))).scalars()
        [key] = (await session.execute(select(EventKey).where(EventKey.event_id == ctx.event.id))).scalars()
        links = (await session.execute(select(CrossReference.bng_id, CrossReference.m3_key))).all()
        state = await documents.get_bng_state(session, "order", "SO-1")
    assert (event.status, event.lease_owner, event.checkpoint, event.mapping_hash) == (
        "dead",
        None,
        {"ORNO": "1000002"},
        "abc",
    )
    assert (event.error_class, event.last_error, event.finished_at is not None) == (
        "mapping",
        "no rule",
        True,
    )
    assert (letter.event_id, letter.reason, letter.attempts) == (ctx.event.id, "permanent_error", 1)
    assert (key.value, key.kind) == ("so-1", "order_id")
    assert [tuple(link) for link in links] == [("SO-1", "1000002")] and state == {"Status": "Open"}


async def test_a_released_event_gets_its_attempt_back(sessions: Sessions) -> None:
    ctx = await claimed_context(sessions, FlakyStore(sessions, failures=0))
    ctx.sessions = sessions
    outcome = queue.rescheduled(delay_seconds=0, error_class=None, error=None, refund_attempt=True)
    assert await ctx.store_outcome(outcome, {}, attempts=1, log_as="test")
    async with sessions() as session:
        event = (await session.execute(select(Event).where(Event.id == ctx.event.id))).scalar_one()
    assert (event.status, event.attempts, event.lease_owner) == ("pending", 0, None)
