"""Bulk replay by filter: the dry run counts what the dead-letter list shows, a running bulk
replay is rate-limited, cancellable, and never replays an event twice (not after a cancel, not
with a second bulk, not with several runners)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sqlalchemy import select

from m3bng.connectors.bng.samples import sample
from m3bng.ops.bulk import BulkRunner
from m3bng.store.models import AuditEntry, BulkReplay, DeadLetter, Event, Replay
from tests.integration.ops.conftest import Ops

BULK = "/api/v1/replays/bulk"
# What GET /dead-letters filters by (the API contract); bulk replay takes the full event filter.
LIST_PARAMS = {"reason", "error_class", "event_type", "source", "since", "until", "program", "q"}


async def dead_orders(ops: Ops, prefix: str, count: int, customer: str) -> list[int]:
    """``count`` orders for a customer M3 does not have, sent together, all dead-lettered."""
    ids = await asyncio.gather(
        *(
            ops.send(
                "order.created",
                {**sample("order.created"), "OrderID": f"{prefix}-{n}", "CustomerID": customer},
            )
            for n in range(count)
        )
    )
    for event_id in ids:
        event = await ops.settle(event_id)
        assert event.status == "dead", event.last_error
    return sorted(ids)


async def wait_bulk(ops: Ops, bulk_id: int, until: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await ops.read.get(f"{BULK}/{bulk_id}")
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if until(status):
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def replay_rows(ops: Ops, event_ids: list[int]) -> list[Replay]:
    async with ops.sessions() as session:
        rows = await session.execute(select(Replay).where(Replay.event_id.in_(event_ids)).order_by(Replay.id))
        return list(rows.scalars())


async def statuses(ops: Ops, event_ids: list[int]) -> dict[int, str]:
    async with ops.sessions() as session:
        rows = await session.execute(select(Event.id, Event.status).where(Event.id.in_(event_ids)))
        return {row.id: row.status for row in rows}


async def test_dry_run_counts_what_the_dead_letter_list_shows(ops: Ops) -> None:
    orders = await dead_orders(ops, "SO-DRY", 3, "C-DRY")
    other = await ops.dead_order("SO-DRY-OTHER", customer="C-DRY-2")
    await ops.add_customer("C-DRY-2")
    assert (await ops.replay.post(f"/api/v1/transactions/{other}/replay")).status_code == 202
    assert (await ops.settle(other)).status == "done"  # replayed: no longer a dead letter
    cases: list[tuple[dict[str, Any], int]] = [
        ({}, 3),
        ({"event_type": ["order.created"]}, 3),
        ({"error_class": "missing_reference", "event_type": "order.created"}, 3),
        ({"reason": "permanent_error", "status": ["dead"]}, 3),
        ({"q": "SO-DRY-1"}, 1),
        ({"q": "SO-DRY-OTHER"}, 0),
        ({"event_type": ["customer.created"]}, 0),
        ({"error_class": "transient"}, 0),
        ({"since": "2000-01-01", "event_type": "order.created"}, 3),
        ({"until": "2000-01-01T00:00:00Z"}, 0),
    ]
    for flt, expected in cases:
        response = await ops.replay.post(BULK, json={"filter": flt, "dry_run": True})
        assert response.status_code == 200, response.text
        assert response.json() == {"matched": expected}, flt
        if set(flt) <= LIST_PARAMS:  # the same filter on the dead-letter list: the same set
            listed = await ops.read.get("/api/v1/dead-letters", params={**flt, "limit": 200})
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == expected, flt
    # A dry run changes nothing and starts no bulk replay.
    assert set((await statuses(ops, orders)).values()) == {"dead"}
    assert (await ops.read.get(BULK)).json()["items"] == []


async def test_bulk_request_is_validated_naming_the_field(ops: Ops) -> None:
    cases = [
        ({"filter": {"status": ["done"]}, "dry_run": True}, "filter.status"),
        ({"filter": {"colour": "red"}, "dry_run": True}, "filter.colour"),
        ({"filter": {}, "mode": "sideways"}, "mode"),
        ({"filter": {}, "rate": 0}, "rate"),
        ({"filter": {}, "rate": 0.001}, "rate"),  # below one event per 100 s
        ({"filter": {}, "rate": 10_001}, "rate"),
        ({"filter": {"since": "yesterday"}}, "filter.since"),
    ]
    for body, field in cases:
        response = await ops.replay.post(BULK, json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["error"]["message"], (field, response.text)
    assert (await ops.read.get(f"{BULK}/12345")).status_code == 404
    assert (await ops.replay.post(f"{BULK}/12345/cancel")).status_code == 404


async def test_bulk_replay_cancelled_midway_then_finished_by_a_second_one(ops: Ops) -> None:
    orders = await dead_orders(ops, "SO-BULK", 10, "C-BULK")
    await ops.add_customer("C-BULK")  # the fix: every replayed order now goes through
    body: dict[str, Any] = {
        "filter": {"event_type": ["order.created"], "error_class": "missing_reference"},
        "mode": "from_failed_step",
        "rate": 2,
    }
    response = await ops.replay.post(BULK, json={**body, "reason": "customer C-BULK added"})
    assert response.status_code == 202, response.text
    first = response.json()
    assert (first["status"], first["total"], first["replayed"], first["rate"]) == ("running", 10, 0, 2.0)
    assert first["requested_by"] == "replay-user"

    await wait_bulk(ops, first["id"], lambda s: s["replayed"] + s["skipped"] > 0)
    response = await ops.replay.post(
        f"{BULK}/{first['id']}/cancel", json={"reason": "checking the first ones"}
    )
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    assert 0 < cancelled["replayed"] < 10 and cancelled["skipped"] == 0
    assert (await ops.replay.post(f"{BULK}/{first['id']}/cancel")).status_code == 409

    async with ops.sessions() as session:
        cursor = (
            await session.execute(select(BulkReplay.cursor).where(BulkReplay.id == first["id"]))
        ).scalar_one()
    rows = await replay_rows(ops, orders)
    assert all(row.bulk_id == first["id"] for row in rows)
    assert max(Counter(row.event_id for row in rows).values()) == 1  # at most one replay per event
    assert cancelled["replayed"] + cancelled["skipped"] == len(rows)
    assert {row.event_id for row in rows} == {e for e in orders if e <= cursor}
    later = [e for e in orders if e > cursor]
    assert len(later) == 10 - len(rows)
    for event_id in sorted(row.event_id for row in rows):
        assert (await ops.settle(event_id)).status == "done"
    assert set((await statuses(ops, later)).values()) == {"dead"}  # the cancel held: still dead

    # A second bulk replay with the same filter picks up exactly the rest, even with two more
    # runners (other processes) competing for it next to the server's own.
    response = await ops.replay.post(BULK, json={**body, "dry_run": True})
    assert response.json() == {"matched": len(later)}
    stop = asyncio.Event()
    runners = [BulkRunner(ops.server.app.state.runtime.settings, ops.sessions) for _ in range(2)]
    tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
    try:
        response = await ops.replay.post(BULK, json={**body, "rate": 50})
        assert response.status_code == 202, response.text
        second = response.json()
        # Dead-lettered after the second bulk started: not part of its set.
        newcomer = await ops.dead_order("SO-BULK-LATE", customer="C-BULK-LATE")
        done = await wait_bulk(ops, second["id"], lambda s: s["status"] != "running")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert (done["status"], done["total"], done["replayed"], done["skipped"]) == (
        "done",
        len(later),
        len(later),
        0,
    )
    assert done["progress"] == 1.0 and done["finished_at"]
    rows = await replay_rows(ops, [*orders, newcomer])
    assert Counter(row.event_id for row in rows) == Counter(orders)  # every event exactly once
    assert {row.event_id for row in rows if row.bulk_id == second["id"]} == set(later)
    for event_id in later:
        assert (await ops.settle(event_id)).status == "done"
    assert (await statuses(ops, [newcomer]))[newcomer] == "dead"

    listed = (await ops.read.get(BULK)).json()["items"]
    assert [item["id"] for item in listed] == [second["id"], first["id"]]
    async with ops.sessions() as session:
        audit = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.target_id, AuditEntry.detail)
                .where(AuditEntry.target_type == "bulk_replay")
                .order_by(AuditEntry.id)
            )
        ).all()
        unresolved = (
            await session.execute(
                select(DeadLetter.event_id).where(
                    DeadLetter.event_id.in_(orders), DeadLetter.resolved_at.is_(None)
                )
            )
        ).all()
    assert [(a.action, a.target_id) for a in audit] == [
        ("bulk_replay", str(first["id"])),
        ("bulk_replay_cancel", str(first["id"])),
        ("bulk_replay", str(second["id"])),
    ]
    assert audit[0].detail == "customer C-BULK added"
    assert unresolved == []


async def test_event_no_longer_dead_when_reached_counts_as_skipped(ops: Ops) -> None:
    orders = await dead_orders(ops, "SO-SKIP", 3, "C-SKIP")
    await ops.add_customer("C-SKIP")
    response = await ops.replay.post(BULK, json={"filter": {"q": "C-SKIP"}, "rate": 0.5})
    assert response.status_code == 202, response.text
    bulk_id = response.json()["id"]
    assert response.json()["total"] == 3
    await wait_bulk(ops, bulk_id, lambda s: s["replayed"] > 0)
    # Someone replays the last one by hand before the bulk gets there (one event per 2 s).
    response = await ops.replay.post(f"/api/v1/transactions/{orders[-1]}/replay")
    assert response.status_code == 202, response.text
    done = await wait_bulk(ops, bulk_id, lambda s: s["status"] == "done")
    assert (done["total"], done["replayed"], done["skipped"], done["progress"]) == (3, 2, 1, 1.0)
    rows = await replay_rows(ops, orders)
    assert Counter(row.event_id for row in rows) == Counter(orders)  # once each, by hand or bulk
    assert [row.bulk_id for row in rows if row.event_id == orders[-1]] == [None]
    for event_id in orders:
        assert (await ops.settle(event_id)).status == "done"


async def test_a_bulk_replay_that_cannot_be_taken_does_not_hold_up_later_ones(ops: Ops) -> None:
    """A stored rate the API no longer accepts (1e-300 once overflowed the lease computation)
    must not stop the runner from taking the bulk replays after it."""
    order = await ops.dead_order("SO-AFTER-ODD", customer="C-ODD")
    odd = await ops.replay.post(BULK, json={"filter": {"q": "SO-NOTHING"}, "rate": 1})
    assert odd.status_code == 202, odd.text
    async with ops.sessions.begin() as session:
        row = await session.get(BulkReplay, odd.json()["id"])
        assert row is not None
        row.rate, row.lease_owner, row.lease_expires_at = 1e-300, None, None
    response = await ops.replay.post(BULK, json={"filter": {"q": "SO-AFTER-ODD"}, "rate": 100})
    assert response.status_code == 202, response.text
    done = await wait_bulk(ops, response.json()["id"], lambda s: s["status"] != "running", timeout=15)
    assert (done["status"], done["replayed"]) == ("done", 1), done
    assert (await ops.settle(order)).status == "dead"  # replayed; the customer is still missing
