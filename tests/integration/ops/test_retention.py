"""Retention end to end: real events made by the app and its workers, aged by moving their
timestamps back, then purged through ``POST /api/v1/retention/purge`` (and the scheduled job's
function). What must go goes, what must stay stays, and deduplication still holds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.ops import retention
from m3bng.store import queue, sql
from m3bng.store.models import (
    AuditEntry,
    BngState,
    DeadLetter,
    Event,
    EventKey,
    IonMessage,
    Replay,
    Step,
)
from m3bng.store.sql import utcnow
from tests.integration.ops.conftest import Ops
from tests.support.webhooks import post_event

PURGE = "/api/v1/retention/purge"


async def order(ops: Ops, order_id: str, msg_id: str | None = None) -> Event:
    data = {**sample("order.created"), "OrderID": order_id}
    event = await ops.settle(await ops.send("order.created", data, msg_id=msg_id))
    assert event.status == "done", event.last_error
    return event


async def age(ops: Ops, event_id: int, days: float) -> None:
    """As if the event had arrived and finished ``days`` ago."""
    past = utcnow() - timedelta(days=days)
    async with ops.sessions.begin() as session:
        await session.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(received_at=past, finished_at=past, updated_at=past)
        )
        await session.execute(
            update(DeadLetter).where(DeadLetter.event_id == event_id).values(created_at=past)
        )


async def row(ops: Ops, event_id: int) -> Event | None:
    async with ops.sessions() as session:
        return (await session.execute(select(Event).where(Event.id == event_id))).scalar_one_or_none()


async def count(ops: Ops, model: Any, *where: Any) -> int:
    async with ops.sessions() as session:
        return int(
            (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )


async def purge(ops: Ops, dry_run: bool) -> dict[str, Any]:
    response = await ops.admin.post(PURGE, json={"dry_run": dry_run})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body.pop("dry_run") is dry_run
    return body


async def test_old_payloads_go_recent_and_open_ones_stay_and_dedup_still_holds(ops: Ops) -> None:
    old = await order(ops, "SO-RET-OLD", msg_id="msg-ret-old")
    recent = await order(ops, "SO-RET-NEW")
    dead_recent = await ops.dead_order("SO-RET-DEAD-NEW")
    dead_old = await ops.dead_order("SO-RET-DEAD-OLD")
    # An order fixed by an edited replay: the replay row holds two copies of the payload.
    edited_id = await ops.dead_order("SO-RET-EDIT", customer="C-TYPO")
    original = (await row(ops, edited_id)).payload  # type: ignore[union-attr]
    fixed = {**original, "data": {**original["data"], "CustomerID": "10001"}}
    replayed = await ops.replay.post(f"/api/v1/transactions/{edited_id}/replay", json={"payload": fixed})
    assert replayed.status_code == 202, replayed.text
    assert (await ops.settle(edited_id)).status == "done"
    # A pending event received long ago (its next attempt is far off): open, never purged.
    async with ops.sessions.begin() as session:
        pending, _ = await queue.insert_event_once(
            session, queue.NewEvent("bng", "msg-ret-pending", "order.created", fixed, "order:P", "c-p")
        )
        far = utcnow() + timedelta(days=1)
        await session.execute(update(Event).where(Event.id == pending).values(next_attempt_at=far))
        stale = utcnow() - timedelta(days=45)
        fresh = utcnow()
        for bng_id, at in (("C-OLD", stale), ("C-NEW", fresh)):
            await session.execute(
                sql.upsert(
                    session,
                    BngState.__table__,
                    ["instance", "entity", "bng_id"],
                    {
                        "entity": "customer",
                        "bng_id": bng_id,
                        "data": {"Email": "x@y.example"},
                        "origin": "bng",
                        "updated_at": at,
                    },
                )
            )
    await age(ops, pending, 500)
    async with ops.sessions.begin() as session:  # the pending event's clock moved, its status did not
        await session.execute(update(Event).where(Event.id == pending).values(finished_at=None))
    for event_id in (old.id, edited_id):
        await age(ops, event_id, 31)
    await age(ops, dead_recent, 31)  # dead letters keep their payload for 90 days
    await age(ops, dead_old, 91)
    async with ops.sessions.begin() as session:
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.target_id == str(edited_id))
            .values(at=utcnow() - timedelta(days=31))
        )
    old_steps = await count(ops, Step, Step.event_id == old.id)
    assert old_steps > 0

    would = await purge(ops, dry_run=True)
    assert await count(ops, Step, Step.event_id == old.id) == old_steps  # a dry run changes nothing
    did = await purge(ops, dry_run=False)
    assert did == would
    assert did["payloads"] == 2 and did["dead_letter_payloads"] == 1 and did["events"] == 0
    assert did["replays"] == 1 and did["bng_state"] == 1 and did["audit_entries"] == 1
    assert did["steps"] >= old_steps + 3  # the old order's, the edited order's, the old dead one's
    assert set((await purge(ops, dry_run=False)).values()) == {0}  # nothing left to do

    purged = await row(ops, old.id)
    assert purged is not None and purged.payload is None and purged.purged_at is not None
    assert purged.payload_hash == retention.payload_hash(old.payload)
    assert purged.checkpoint == old.checkpoint and purged.checkpoint  # M3 keys stay
    assert purged.status == "done" and purged.business_key == "order:SO-RET-OLD"
    assert await count(ops, Step, Step.event_id == old.id) == 0
    assert await count(ops, EventKey, EventKey.event_id == old.id) > 0  # still findable by key
    kept = await row(ops, recent.id)
    assert kept is not None and kept.payload == recent.payload and kept.purged_at is None
    assert await count(ops, Step, Step.event_id == recent.id) > 0
    dead_kept = await row(ops, dead_recent)
    assert dead_kept is not None and dead_kept.payload is not None and dead_kept.status == "dead"
    dead_purged = await row(ops, dead_old)
    assert dead_purged is not None and dead_purged.payload is None and dead_purged.status == "dead"
    assert await count(ops, DeadLetter, DeadLetter.event_id == dead_old) == 1  # why it died stays
    still_pending = await row(ops, pending)
    assert still_pending is not None and still_pending.payload == fixed and still_pending.status == "pending"
    async with ops.sessions() as session:
        [copies] = (await session.execute(select(Replay).where(Replay.event_id == edited_id))).scalars()
        [entry] = (
            await session.execute(select(AuditEntry).where(AuditEntry.target_id == str(edited_id)))
        ).scalars()
        customers = select(BngState.bng_id).where(BngState.entity == "customer")
        states = set((await session.execute(customers)).scalars())
        [purge_entry] = (
            await session.execute(select(AuditEntry).where(AuditEntry.action == "retention.purge").limit(1))
        ).scalars()
    assert copies.edited_payload is None and copies.previous_payload is None and copies.mode == "from_start"
    assert (entry.action, entry.actor, entry.before, entry.after) == ("replay", "replay-user", None, None)
    assert states == {"C-NEW"}
    assert purge_entry.actor == "admin-user" and purge_entry.after == did

    # BNG re-sends the purged order's webhook: still recognised as the same event.
    body = {"type": "order.created", "timestamp": "2026-11-24T10:00:00Z", "data": old.payload["data"]}
    again = await post_event(ops.client, body, "msg-ret-old")
    assert again.status_code == 200 and again.json()["event_id"] == old.id


async def test_event_rows_past_the_key_retention_go_with_their_keys(ops: Ops) -> None:
    gone = await order(ops, "SO-RET-ANCIENT", msg_id="msg-ret-ancient")
    dead = await ops.dead_order("SO-RET-ANCIENT-DEAD")
    stays = await order(ops, "SO-RET-399")
    async with ops.sessions.begin() as session:
        session.add(IonMessage(message_id="ion-msg-1", event_id=gone.id, received_at=utcnow()))
    await age(ops, gone.id, 401)
    await age(ops, dead, 401)
    await age(ops, stays.id, 399)
    assert await count(ops, EventKey, EventKey.event_id == gone.id) > 0

    would = await purge(ops, dry_run=True)
    did = await purge(ops, dry_run=False)
    assert did == would and did["events"] == 2
    assert did["payloads"] == 1  # the 399-day-old order: payload gone, row kept
    for event_id in (gone.id, dead):
        assert await row(ops, event_id) is None
        assert await count(ops, EventKey, EventKey.event_id == event_id) == 0
        assert await count(ops, Step, Step.event_id == event_id) == 0
    assert await count(ops, DeadLetter, DeadLetter.event_id == dead) == 0
    assert await count(ops, IonMessage) == 0
    assert (await row(ops, stays.id)) is not None

    # Past the key retention the id is forgotten: the same webhook id is a new event.
    body = {"type": "order.created", "timestamp": "2026-11-24T10:00:00Z", "data": gone.payload["data"]}
    again = await post_event(ops.client, body, "msg-ret-ancient")
    assert again.status_code == 202 and again.json()["event_id"] != gone.id


async def test_purge_runs_in_batches_and_the_scheduled_job_audits_as_retention(
    ops: Ops, make_settings: Callable[..., Settings]
) -> None:
    events = [await order(ops, f"SO-RET-BATCH-{n}") for n in range(5)]
    for event in events:
        await age(ops, event.id, 40)
    settings = make_settings()
    counts = await retention.purge(ops.sessions, settings, batch=2, dry_run=True)
    assert counts.payloads == 5
    job = retention.Retention(settings, ops.sessions)
    assert job.job() is not None
    done = await job.run_once()
    assert done.payloads == 5 and done.steps == counts.steps
    assert await count(ops, Event, Event.payload.is_(None)) == 5
    async with ops.sessions() as session:
        [entry] = (
            await session.execute(select(AuditEntry).where(AuditEntry.action == "retention.purge"))
        ).scalars()
    assert entry.actor == "retention" and entry.target_id == "scheduled" and entry.after["payloads"] == 5
    assert (await job.run_once()).total == 0
    assert await count(ops, AuditEntry, AuditEntry.action == "retention.purge") == 1  # idle runs: no entry
    assert retention.Retention(make_settings(retention_run_seconds=0), ops.sessions).job() is None


async def test_small_batches_purge_everything(ops: Ops, make_settings: Callable[..., Settings]) -> None:
    events = [await order(ops, f"SO-RET-SMALL-{n}") for n in range(5)]
    for event in events:
        await age(ops, event.id, 40)
    counts = await retention.purge(ops.sessions, make_settings(), batch=2)
    assert counts.payloads == 5
    assert await count(ops, Event, Event.payload.is_not(None)) == 0


async def test_erase_by_business_key(ops: Ops) -> None:
    target = await order(ops, "SO-GDPR-1")
    other = await order(ops, "SO-GDPR-2")
    response = await ops.admin.post("/api/v1/retention/erase", json={"q": "so-gdpr-1", "dry_run": True})
    assert response.status_code == 200, response.text
    assert response.json()["matched"] == 1 and response.json()["payloads"] == 1
    assert (await row(ops, target.id)).payload is not None  # type: ignore[union-attr]
    response = await ops.admin.post("/api/v1/retention/erase", json={"q": "SO-GDPR-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["matched"], body["open"], body["payloads"], body["dry_run"]) == (1, 0, 1, False)
    erased = await row(ops, target.id)
    assert erased is not None and erased.payload is None and erased.payload_hash
    assert await count(ops, Step, Step.event_id == target.id) == 0
    assert (await row(ops, other.id)).payload == other.payload  # type: ignore[union-attr]
    blank = await ops.admin.post("/api/v1/retention/erase", json={"q": "  "})
    assert blank.status_code == 422 and blank.json()["error"]["fields"][0]["field"] == "q"


async def test_purge_and_erase_need_admin(ops: Ops) -> None:
    for path in (PURGE, "/api/v1/retention/erase"):
        body = {"dry_run": True, "q": "x"}
        assert (await ops.client.post(path, json=body)).status_code == 401
        assert (await ops.read.post(path, json=body)).status_code == 403
        refused = await ops.replay.post(path, json=body)
        assert refused.status_code == 403 and "ops:admin" in refused.json()["error"]["message"]
    assert (await ops.admin.post(PURGE, json={"dry_run": "maybe"})).status_code == 422
