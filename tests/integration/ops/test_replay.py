"""Replay and discard of one transaction through the ops API, against the real app and the M3
simulator: from the failed step, from the start, with an edited payload, and the refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.ion.bod import parse_bod
from m3bng.connectors.ion.ingest import ingest_bod
from m3bng.store.models import AuditEntry, DeadLetter, Event, Replay, Step
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, ops_settings
from tests.support.bods import bod
from tests.support.ops import ADMIN, READ, REPLAY, bearer

HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "bods" / "hostile"


def orders_for(state: dict[str, Any], cuor: str) -> list[dict[str, Any]]:
    return [o for o in state["orders"].values() if o["head"].get("CUOR") == cuor]


async def steps_of(ops: Ops, event_id: int, operation: str) -> list[Step]:
    async with ops.sessions() as session:
        rows = await session.execute(
            select(Step).where(Step.event_id == event_id, Step.operation == operation).order_by(Step.id)
        )
        return list(rows.scalars())


async def replays_of(ops: Ops, event_id: int) -> list[Replay]:
    async with ops.sessions() as session:
        rows = await session.execute(select(Replay).where(Replay.event_id == event_id).order_by(Replay.id))
        return list(rows.scalars())


async def audit_of(ops: Ops, event_id: int, action: str) -> list[AuditEntry]:
    async with ops.sessions() as session:
        rows = await session.execute(
            select(AuditEntry)
            .where(AuditEntry.target_id == str(event_id), AuditEntry.action == action)
            .order_by(AuditEntry.id)
        )
        return list(rows.scalars())


async def dead_letters_of(ops: Ops, event_id: int) -> list[DeadLetter]:
    async with ops.sessions() as session:
        rows = await session.execute(
            select(DeadLetter).where(DeadLetter.event_id == event_id).order_by(DeadLetter.id)
        )
        return list(rows.scalars())


async def event_row(ops: Ops, event_id: int) -> Event:
    async with ops.sessions() as session:
        return (await session.execute(select(Event).where(Event.id == event_id))).scalar_one()


async def wait_for(ops: Ops, event_id: int, check: Callable[[Event], bool], timeout: float = 20) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        event = await event_row(ops, event_id)
        if check(event):
            return event
        assert time.monotonic() < deadline, f"event {event_id}: {event.status} {event.last_error}"
        await asyncio.sleep(0.05)


async def replay(ops: Ops, event_id: int, **body: Any) -> Any:
    return await ops.replay.post(f"/api/v1/transactions/{event_id}/replay", json=body)


async def order_dead_after_batch_head(ops: Ops, order_id: str) -> Event:
    """An order whose lines M3 keeps refusing (HTTP 500) until the retries run out: dead, with
    the batch head already entered and its temporary ORNO checkpointed."""
    await ops.sim.faults(programs=["OIS100MI/AddBatchLine"], error_rate=1.0)
    event = await ops.settle(
        await ops.send("order.created", {**sample("order.created"), "OrderID": order_id})
    )
    await ops.sim.faults()  # M3 healthy again
    assert event.status == "dead", event.last_error
    assert event.checkpoint.get("ORNO_TEMP"), event.checkpoint
    assert len(await steps_of(ops, event.id, "OIS100MI/AddBatchHead")) == 1
    return event


async def test_replay_from_the_failed_step_resumes_with_the_checkpointed_batch(ops: Ops) -> None:
    dead = await order_dead_after_batch_head(ops, "SO-RESUME")
    response = await replay(ops, dead.id, mode="from_failed_step", reason="M3 is back")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["event_id"] == dead.id and body["mode"] == "from_failed_step" and body["diff"] == []
    assert body["status"] == "pending"
    event = await ops.settle(dead.id)
    assert event.status == "done", event.last_error
    assert len(await steps_of(ops, dead.id, "OIS100MI/AddBatchHead")) == 1  # not entered again
    [order] = orders_for(await ops.sim.state(), "SO-RESUME")
    assert order["head"]["ORNO"] == event.checkpoint["ORNO"]
    [dead_letter] = await dead_letters_of(ops, dead.id)
    assert dead_letter.resolution == "replayed" and dead_letter.resolved_at is not None
    [row] = await replays_of(ops, dead.id)
    assert (row.mode, row.requested_by, row.from_status, row.bulk_id) == (
        "from_failed_step",
        "replay-user",
        "dead",
        None,
    )
    assert row.id == body["replay_id"] and row.edited_payload is None
    [entry] = await audit_of(ops, dead.id, "replay")
    assert entry.actor == "replay-user" and entry.detail == "M3 is back"
    assert entry.before["status"] == "dead" and entry.before["checkpoint"]["ORNO_TEMP"]
    assert entry.after["status"] == "pending" and entry.after["mode"] == "from_failed_step"


async def test_replay_from_start_runs_the_whole_flow_with_the_current_mapping(ops: Ops) -> None:
    dead = await order_dead_after_batch_head(ops, "SO-RESTART")
    response = await replay(ops, dead.id, mode="from_start")
    assert response.status_code == 202, response.text
    event = await ops.settle(dead.id)
    assert event.status == "done", event.last_error
    # Started over: a second batch head; the first batch was never confirmed, so one order.
    assert len(await steps_of(ops, dead.id, "OIS100MI/AddBatchHead")) == 2
    assert len(orders_for(await ops.sim.state(), "SO-RESTART")) == 1
    assert event.mapping_hash  # recorded again by the flow, with the mapping loaded now
    [entry] = await audit_of(ops, dead.id, "replay")
    assert entry.after["checkpoint"] == {} and entry.before["checkpoint"]["ORNO_TEMP"]


async def test_runbook_missing_customer_added_then_replayed(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-RUNBOOK", customer="C-RUNBOOK")
    await ops.add_customer("C-RUNBOOK")
    response = await ops.replay.post(f"/api/v1/transactions/{dead_id}/replay")  # no body: defaults
    assert response.status_code == 202, response.text
    assert response.json()["mode"] == "from_failed_step"
    event = await ops.settle(dead_id)
    assert event.status == "done", event.last_error
    assert event.attempts == 1  # a fresh retry budget: counted from zero again
    assert len(orders_for(await ops.sim.state(), "SO-RUNBOOK")) == 1


async def test_invalid_edited_payload_is_refused_naming_the_field(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-EDIT-BAD")
    before = await event_row(ops, dead_id)
    bad_date = {**before.payload, "data": {**before.payload["data"], "OrderDate": "next tuesday"}}
    response = await replay(ops, dead_id, payload=bad_date)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "data.OrderDate" in error["message"]
    assert [f["field"] for f in error["fields"]] == ["payload.data.OrderDate"]

    other_type = {**before.payload, "type": "order.updated"}
    response = await replay(ops, dead_id, payload=other_type)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "payload.type"

    no_data = {"type": "order.created", "timestamp": "2026-11-24T10:00:00Z"}
    response = await replay(ops, dead_id, payload=no_data)
    assert response.status_code == 422 and "payload.data" in response.json()["error"]["message"]

    after = await event_row(ops, dead_id)
    assert (after.status, after.payload, after.checkpoint) == (
        before.status,
        before.payload,
        before.checkpoint,
    )
    assert await replays_of(ops, dead_id) == []
    assert await audit_of(ops, dead_id, "replay") == []
    [dead_letter] = await dead_letters_of(ops, dead_id)
    assert dead_letter.resolved_at is None


async def test_edited_payload_fixing_the_customer_is_applied_and_audited_with_its_diff(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-EDIT-OK", customer="C-TYPO")
    original = (await event_row(ops, dead_id)).payload
    fixed = {**original, "data": {**original["data"], "CustomerID": "10001"}}
    response = await replay(ops, dead_id, payload=fixed, reason="customer number typed wrong in BNG")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["mode"] == "from_start"  # the default for an edit: old checkpoints may not fit
    change = {"path": "data.CustomerID", "before": "C-TYPO", "after": "10001", "change": "changed"}
    assert body["diff"] == [change]
    event = await ops.settle(dead_id)
    assert event.status == "done", event.last_error
    assert event.payload == fixed and event.business_key == "order:SO-EDIT-OK"
    [order] = orders_for(await ops.sim.state(), "SO-EDIT-OK")
    assert order["head"]["CUNO"] == "10001"
    [row] = await replays_of(ops, dead_id)
    assert row.previous_payload == original and row.edited_payload == fixed and row.mode == "from_start"
    [entry] = await audit_of(ops, dead_id, "replay")
    assert entry.after["diff"] == [change] and entry.after["edited"] is True
    assert entry.before["payload_sha256"] != entry.after["payload_sha256"]
    assert entry.detail == "customer number typed wrong in BNG"


async def test_edited_bod_goes_through_the_hardened_parser(ops: Ops) -> None:
    def carrier(name: str) -> bytes:
        return bod("CarrierParty", {"PartyIDs": {"ID": "DHL"}, "Name": name}, document_id="DHL")

    parsed = parse_bod(carrier("DHL Fright"), max_bytes=1 << 20)
    ims = {"messageId": "msg-carrier-1", "documentName": "SyncCarrierParty"}
    stored = await ingest_bod(
        ops.sessions, parsed, payload=parsed.to_payload(ims), message_id="msg-carrier-1"
    )
    event = await ops.settle(stored.event_id)
    assert (event.status, event.error_class) == ("skipped", "unsupported")

    refusals = [
        ({"xml": (HOSTILE / "xxe_file.xml").read_text()}, "DOCTYPE"),
        (
            {"xml": bod("SupplierPartyMaster", {"Name": "x"}, document_id="S1").decode()},
            "must stay SyncCarrierParty",
        ),
        ({"xml": "<not-closed>"}, "payload.xml"),
        ({"xml": carrier("DHL").decode(), "ims": {}}, "payload.ims"),
        ({"data": {"Name": "DHL"}}, "payload.xml"),
    ]
    for payload, problem in refusals:
        response = await replay(ops, event.id, payload=payload)
        assert response.status_code == 422, response.text
        assert problem in response.json()["error"]["message"], response.text
    assert (await event_row(ops, event.id)).payload == event.payload

    response = await replay(ops, event.id, payload={"xml": carrier("DHL Freight").decode()})
    assert response.status_code == 202, response.text
    assert {"path": "data.Name", "before": "DHL Fright", "after": "DHL Freight", "change": "changed"} in (
        response.json()["diff"]
    )
    replayed = await ops.settle(event.id)
    assert replayed.payload["data"]["Name"] == "DHL Freight"
    assert (
        replayed.payload["ims"] == ims and replayed.payload["bod"]["bodid"] == event.payload["bod"]["bodid"]
    )
    assert replayed.business_key == event.business_key
    assert (replayed.status, replayed.error_class) == ("skipped", "unsupported")  # still no flow for it


async def test_done_transaction_is_not_replayed(ops: Ops) -> None:
    event = await ops.settle(
        await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-DONE"})
    )
    assert event.status == "done", event.last_error
    response = await replay(ops, event.id)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "already_applied" and "twice" in error["message"]
    assert await replays_of(ops, event.id) == []
    response = await ops.replay.post(
        f"/api/v1/transactions/{event.id}/discard", json={"reason": "not needed"}
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_discardable"
    response = await replay(ops, 999_999)
    assert response.status_code == 404


async def test_two_concurrent_replays_of_one_event_replay_it_once(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-RACE")
    # Paused, so that the first replay's event stays pending: otherwise a fast worker can run
    # it and dead-letter it again before the second request reads it, and both replays count.
    pause = {"kind": "flow", "name": "order.created", "reason": "race test"}
    assert (await ops.admin.post("/api/v1/control/pause", json=pause)).status_code == 200
    other = ops.server.client()
    other.headers.update(bearer(ADMIN))
    try:
        responses = await asyncio.gather(
            replay(ops, dead_id), other.post(f"/api/v1/transactions/{dead_id}/replay")
        )
    finally:
        await other.aclose()
    assert sorted(r.status_code for r in responses) == [202, 409], [r.text for r in responses]
    assert len(await replays_of(ops, dead_id)) == 1
    assert len(await audit_of(ops, dead_id, "replay")) == 1


async def test_discard_needs_a_reason_and_closes_the_dead_letter(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-DISCARD")
    url = f"/api/v1/transactions/{dead_id}/discard"
    for body in ({"reason": " x "}, {}):
        response = await ops.replay.post(url, json=body)
        assert response.status_code == 422, response.text
        assert "reason" in response.json()["error"]["message"]
    assert (await event_row(ops, dead_id)).status == "dead"
    response = await ops.replay.post(url, json={"reason": "test order, never shipped"})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["id"] == dead_id and summary["status"] == "discarded" and summary["finished_at"]
    [dead_letter] = await dead_letters_of(ops, dead_id)
    assert dead_letter.resolution == "discarded" and dead_letter.resolved_at is not None
    [entry] = await audit_of(ops, dead_id, "discard")
    assert (entry.actor, entry.detail) == ("replay-user", "test order, never shipped")
    assert (entry.before["status"], entry.after["status"]) == ("dead", "discarded")
    response = await ops.replay.post(url, json={"reason": "again"})
    assert response.status_code == 409

    # A discarded event can still be replayed (once the customer exists, it goes through).
    await ops.add_customer("C-MISSING")
    response = await replay(ops, dead_id)
    assert response.status_code == 202, response.text
    assert (await ops.settle(dead_id)).status == "done"
    [row] = await replays_of(ops, dead_id)
    assert row.from_status == "discarded"


async def test_read_scope_gets_403_on_every_write(ops: Ops) -> None:
    dead_id = await ops.dead_order("SO-READONLY")
    writes = [
        (f"/api/v1/transactions/{dead_id}/replay", {}),
        (f"/api/v1/transactions/{dead_id}/discard", {"reason": "not allowed"}),
        ("/api/v1/replays/bulk", {"filter": {}, "dry_run": True}),
        ("/api/v1/replays/bulk/1/cancel", {}),
    ]
    for url, body in writes:
        response = await ops.read.post(url, json=body)
        assert response.status_code == 403, (url, response.text)
        assert "ops:replay" in response.json()["error"]["message"]
        assert (await ops.client.post(url, json=body)).status_code == 401
    assert (await event_row(ops, dead_id)).status == "dead"
    assert await replays_of(ops, dead_id) == []
    assert (await ops.read.get("/api/v1/replays/bulk")).status_code == 200  # reading is ops:read


# -- a pending event (a retry scheduled a minute out) ------------------------------------------


@pytest.fixture
async def slow_retry_ops(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Ops]:
    """Like ``ops``, but a failed attempt waits a minute for its retry: events stay pending."""
    settings = ops_settings(make_settings, m3_sim, retry_schedule=[60.0, 60.0])
    async with live_server(settings, run_workers=True) as server:
        plain, admin, replayer, read = clients = [server.client() for _ in range(4)]
        for client, token in ((admin, ADMIN), (replayer, REPLAY), (read, READ)):
            client.headers.update(bearer(token))
        try:
            yield Ops(server, plain, admin, replayer, read, sim=m3_sim, sessions=sessions)
        finally:
            for client in clients:
                await client.aclose()


async def test_pending_retry_is_not_replayed_but_can_be_discarded(slow_retry_ops: Ops) -> None:
    ops = slow_retry_ops
    await ops.sim.faults(programs=["OIS100MI/AddBatchHead"], error_rate=1.0)
    event_id = await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-PENDING"})
    waiting = await wait_for(
        ops, event_id, lambda e: e.status == "pending" and e.attempts == 1 and bool(e.last_error)
    )
    response = await replay(ops, event_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_queued"
    assert "already queued" in response.json()["error"]["message"]
    assert (await event_row(ops, event_id)).next_attempt_at == waiting.next_attempt_at  # untouched

    response = await ops.replay.post(
        f"/api/v1/transactions/{event_id}/discard", json={"reason": "customer cancelled by phone"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "discarded"
    assert await dead_letters_of(ops, event_id) == []  # it never died: nothing to resolve

    await ops.sim.faults()
    response = await replay(ops, event_id)  # runs at once, not at the old retry time
    assert response.status_code == 202, response.text
    assert (await ops.settle(event_id)).status == "done"
