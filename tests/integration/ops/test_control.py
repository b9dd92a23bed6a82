"""Pause and resume over the ops API, on the real app with in-process workers and the M3
simulator: paused events wait as pending (attempts untouched), resumed ones complete, every
switch is audited, and ``GET /control`` shows what waits where."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select

from m3bng.connectors.bng.samples import sample
from m3bng.store.models import AuditEntry, Event
from tests.integration.ops.conftest import Ops

HOLD_SECONDS = 1.5  # longer than the workers' paused-flows cache (1 s) and many poll intervals


async def assert_stays_pending(ops: Ops, *event_ids: int) -> None:
    """A paused event must not be claimed: watch it for a while (a state, not a timing)."""
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        async with ops.sessions() as session:
            rows = (await session.execute(select(Event).where(Event.id.in_(event_ids)))).scalars().all()
        for event in rows:
            assert (event.status, event.attempts) == ("pending", 0), (
                event.id,
                event.status,
                event.last_error,
            )
        await asyncio.sleep(0.1)


async def control(ops: Ops) -> dict[str, Any]:
    response = await ops.read.get("/api/v1/control")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def flow(body: dict[str, Any], event_type: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [f for f in body["flows"] if f["event_type"] == event_type]
    assert len(found) == 1, found
    return found[0]


def target(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [t for t in body["targets"] if t["name"] == name]
    assert len(found) == 1, found
    return found[0]


def customer(customer_id: str) -> dict[str, Any]:
    return {**sample("customer.created"), "CustomerID": customer_id}


async def test_paused_flow_holds_new_events_until_resumed(ops: Ops) -> None:
    response = await ops.admin.post(
        "/api/v1/control/pause", json={"kind": "flow", "name": "customer.created", "reason": "CRS610 upgrade"}
    )
    assert response.status_code == 200, response.text
    switch = response.json()
    assert switch["kind"] == "flow" and switch["name"] == "customer.created"
    assert switch["paused"] is True and switch["reason"] == "CRS610 upgrade"
    assert switch["changed_by"] == "admin-user"

    event_id = await ops.send("customer.created", customer("C-PAUSE-1"))
    await assert_stays_pending(ops, event_id)

    body = await control(ops)
    held = flow(body, "customer.created")
    assert held["paused"] is True and held["reason"] == "CRS610 upgrade"
    assert held["target"] == "m3" and held["target_paused"] is False
    assert held["pending"] == 1 and held["processing"] == 0
    assert held["oldest_pending_age_seconds"] >= HOLD_SECONDS - 0.5
    running = flow(body, "order.created")
    assert running["paused"] is False and running["pending"] == 0
    assert running["oldest_pending_age_seconds"] is None
    # every registered flow is listed, not only the ones with events
    assert {f["event_type"] for f in body["flows"]} >= {"order.created", "SyncSalesOrder", "ConfirmBOD"}
    assert target(body, "m3") == {"name": "m3", "paused": False, "reason": None, "circuit": "closed"}
    assert target(body, "bng")["circuit"] is None  # not configured in this setup

    response = await ops.admin.post(
        "/api/v1/control/resume", json={"kind": "flow", "name": "customer.created"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["paused"] is False
    event = await ops.settle(event_id)
    assert event.status == "done", event.last_error
    assert event.attempts == 1  # the wait used no attempt

    body = await control(ops)
    assert flow(body, "customer.created")["paused"] is False
    assert flow(body, "customer.created")["pending"] == 0

    async with ops.sessions() as session:
        entries = (
            (await session.execute(select(AuditEntry).where(AuditEntry.target_id == "customer.created")))
            .scalars()
            .all()
        )
    assert [(e.action, e.actor, e.target_type) for e in sorted(entries, key=lambda e: e.id)] == [
        ("pause", "admin-user", "flow"),
        ("resume", "admin-user", "flow"),
    ]
    pause_entry, resume_entry = sorted(entries, key=lambda e: e.id)
    assert pause_entry.before is None  # never switched before
    assert pause_entry.after["paused"] is True and pause_entry.after["reason"] == "CRS610 upgrade"
    assert pause_entry.detail == "CRS610 upgrade"
    assert resume_entry.before["paused"] is True and resume_entry.after["paused"] is False


async def test_paused_target_holds_every_flow_writing_to_it(ops: Ops) -> None:
    response = await ops.admin.post(
        "/api/v1/control/pause", json={"kind": "target", "name": "m3", "reason": "M3 maintenance window"}
    )
    assert response.status_code == 200, response.text

    customer_id = await ops.send("customer.created", customer("C-PAUSE-2"))
    order_id = await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-PAUSE-2"})
    await assert_stays_pending(ops, customer_id, order_id)

    body = await control(ops)
    assert target(body, "m3")["paused"] is True
    assert target(body, "m3")["reason"] == "M3 maintenance window"
    for event_type in ("customer.created", "order.created"):
        held = flow(body, event_type)
        assert held["target_paused"] is True and held["paused"] is False
        assert held["pending"] == 1
    assert all(f["target_paused"] for f in body["flows"] if f["target"] == "m3")
    assert not any(f["target_paused"] for f in body["flows"] if f["target"] != "m3")

    response = await ops.admin.post("/api/v1/control/resume", json={"kind": "target", "name": "m3"})
    assert response.status_code == 200, response.text
    for event_id in (customer_id, order_id):
        event = await ops.settle(event_id)
        assert event.status == "done", event.last_error

    async with ops.sessions() as session:
        actions = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.target_type).where(AuditEntry.target_id == "m3")
            )
        ).all()
    assert sorted(actions) == [("pause", "target"), ("resume", "target")]


async def test_switches_need_admin_and_a_known_name(ops: Ops) -> None:
    change = {"kind": "flow", "name": "order.created", "reason": "x"}
    response = await ops.client.post("/api/v1/control/pause", json=change)
    assert response.status_code == 401
    for client in (ops.read, ops.replay):
        response = await client.post("/api/v1/control/pause", json=change)
        assert response.status_code == 403, response.text
        assert "ops:admin" in response.json()["error"]["message"]
        response = await client.post("/api/v1/control/resume", json=change)
        assert response.status_code == 403
    assert (await ops.client.get("/api/v1/control")).status_code == 401

    response = await ops.admin.post("/api/v1/control/pause", json={"kind": "flow", "name": "order.shipped"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert "order.shipped" in error["message"] and error["fields"][0]["field"] == "name"

    response = await ops.admin.post("/api/v1/control/pause", json={"kind": "target", "name": "sap"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert "sap" in error["message"] and error["fields"][0]["field"] == "name"

    response = await ops.admin.post("/api/v1/control/pause", json={"kind": "queue", "name": "m3"})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "kind"

    # nothing was switched or audited by the refused requests
    body = await control(ops)
    assert not any(f["paused"] for f in body["flows"])
    assert not any(t["paused"] for t in body["targets"])
    async with ops.sessions() as session:
        assert (await session.execute(select(AuditEntry))).scalars().all() == []
