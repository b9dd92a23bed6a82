"""A flow's step rows ride out a database blip, and a store that stays down costs a step row,
never the call's result (flows/runtime/context.py)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.errors import TransientError
from m3bng.flows.runtime import FlowContext
from m3bng.inbox.ingest import ingest_event
from m3bng.store import events, queue, sql
from m3bng.store.models import Event, Step

Sessions = async_sessionmaker[AsyncSession]


class FlakyStore:
    """The store's sessions, with the first ``failures`` transactions failing to start."""

    def __init__(self, sessions: Sessions, failures: int) -> None:
        self.sessions, self.failures, self.begun = sessions, failures, 0

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        self.begun += 1
        if self.begun <= self.failures:
            raise ConnectionResetError("the database went away")
        return self.sessions.begin()


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
