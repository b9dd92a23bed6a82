"""Reconciliation of orders: BNG's orders against m3bng's store and M3.

Webhooks get lost: BNG gives up after its retries, an endpoint was down for a day, a webhook was
never registered for a store. Event flows cannot notice what never arrived, so this reads BNG's
own list of the orders changed in a window (``GET /api/v1/orders?updated_since=…``) and puts each
order in one class:

* ``matching``: in M3 (the BNG order id ⇄ ORNO cross-reference), and M3's lines hold BNG's
  quantities (OIS100MI LstLine: the line whose CUPO is the BNG line number);
* ``different``: in M3, but a line is missing or its quantity differs;
* ``never_arrived``: no event for the order at all, and it changed longer ago than ``grace``
  (younger ones may still have their webhook on the way: ``in_flight``);
* ``stuck``: its event was taken in but is not in M3 past ``sla`` (or is a dead letter);
* ``in_flight``: its event was taken in recently and is being applied.

With ``fix``, an order that never arrived is taken in as an event of source ``reconcile``, with
the order's business key and an id derived from the order id: a second run enqueues it once
only, and a webhook that turns up late is applied after it (same key, arrival order) and finds
the order in M3 by the cross-reference, so it never makes a second order. Nothing else is fixed
automatically: a stuck order is a dead letter or an outage to look at, a different one a
decision for a person.

Every run and its findings (all but ``matching``) are stored for the ops API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.bng.events import business_key
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.errors import M3NotFound
from m3bng.errors import M3bngError
from m3bng.observability import metrics
from m3bng.ops.scheduler import ScheduledJob
from m3bng.store import queue
from m3bng.store import reconcile as store
from m3bng.store.queue import NewEvent
from m3bng.store.sql import utcnow
from m3bng.timestamps import iso_utc

log = structlog.get_logger(__name__)

SOURCE = "reconcile"
ORDER_CREATED = "order.created"
FINDINGS = ("matching", "different", "never_arrived", "stuck", "in_flight")
OPEN = ("pending", "processing")


@dataclass
class Report:
    run_id: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0))
    findings: list[dict[str, Any]] = field(default_factory=list)
    fixed: int = 0
    m3_calls: int = 0


async def reconcile_orders(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client | None,
    *,
    since: datetime,
    fix: bool = False,
    grace: timedelta = timedelta(minutes=10),
    sla: timedelta = timedelta(minutes=30),
) -> Report:
    """One run (module docstring). ``m3`` None skips the line check (``matching`` then means
    "linked to an M3 order")."""
    async with sessions.begin() as session:
        report = Report(run_id=await store.start_run(session, "orders", since, fix=fix))
    try:
        await _run(sessions, bng, m3, report, since=since, fix=fix, grace=grace, sla=sla)
    except (M3bngError, OSError) as exc:
        async with sessions.begin() as session:
            await store.finish_run(
                session, report.run_id, status="failed", counts=report.counts, error=str(exc)
            )
        raise
    async with sessions.begin() as session:
        await store.add_findings(session, report.run_id, report.findings)
        await store.finish_run(
            session, report.run_id, status="done", counts={**report.counts, "fixed": report.fixed}
        )
    for finding, count in report.counts.items():
        metrics.observe_reconcile("orders", finding, count)
    log.info("reconcile.done", kind="orders", run_id=report.run_id, fixed=report.fixed, **report.counts)
    return report


async def _run(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client | None,
    report: Report,
    *,
    since: datetime,
    fix: bool,
    grace: timedelta,
    sla: timedelta,
) -> None:
    orders = [o for o in await bng.changed_since("orders", since) if str(o.get("OrderID") or "")]
    ids = [str(o["OrderID"]) for o in orders]
    keys = {oid: business_key(ORDER_CREATED, {"OrderID": oid}) or f"order:{oid}" for oid in ids}
    async with sessions() as session:
        known = await store.events_by_key(session, list(keys.values()), [ORDER_CREATED])
        linked = await store.xrefs(session, "order", ids)
    now = utcnow()
    intake: list[tuple[str, NewEvent]] = []
    for order in orders:
        oid = str(order["OrderID"])
        changed = iso_utc(str(order.get("UpdatedAt") or "")) if order.get("UpdatedAt") else None
        events = known.get(keys[oid], [])
        finding: str = "matching"
        detail: dict[str, Any] = {}
        if oid in linked:
            detail = {"orno": linked[oid]}
            if m3 is not None:
                difference = await _line_difference(m3, linked[oid], order)
                report.m3_calls += 1
                if difference:
                    finding, detail = "different", {**detail, **difference}
        elif not events:
            if changed is not None and now - changed < grace:
                finding = "in_flight"
            else:
                finding, detail = "never_arrived", {"updated_at": order.get("UpdatedAt")}
                if fix:
                    intake.append((oid, _event(order, keys[oid])))
        else:
            latest = events[-1]
            detail = {
                "event_id": latest.id,
                "status": latest.status,
                "received_at": latest.received_at.isoformat(),
            }
            late = now - latest.received_at > sla
            finding = "in_flight" if latest.status in OPEN and not late else "stuck"
        report.counts[finding] += 1
        if finding != "matching":
            report.findings.append({"key": oid, "finding": finding, "detail": detail, "event_id": None})
    if intake:
        async with sessions.begin() as session:
            stored = await queue.insert_events_once(session, [new for _, new in intake])
        by_order = {oid: event_id for (oid, _), (event_id, _created) in zip(intake, stored, strict=True)}
        for f in report.findings:
            if f["key"] in by_order and f["finding"] == "never_arrived":
                f["event_id"] = by_order[f["key"]]
        report.fixed = sum(1 for _, created in stored if created)


def _event(order: dict[str, Any], key: str) -> NewEvent:
    """The order as its ``order.created`` webhook would have carried it."""
    data = {k: v for k, v in order.items() if k != "UpdatedAt"}
    payload = {"type": ORDER_CREATED, "data": data, "timestamp": order.get("UpdatedAt")}
    return NewEvent(
        source=SOURCE,
        external_id=f"order:{order['OrderID']}"[:255],
        event_type=ORDER_CREATED,
        payload=payload,
        business_key=key,
        correlation_id=uuid.uuid4().hex,
    )


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


async def _line_difference(m3: M3Client, orno: str, order: dict[str, Any]) -> dict[str, Any] | None:
    """BNG's lines against the M3 order's (OIS100MI LstLine, by CUPO = the BNG line number)."""
    try:
        rows = (await m3.execute("OIS100MI", "LstLine", {"ORNO": orno}, maxrecs=0)).records
    except M3NotFound:
        return {"problem": f"order {orno} is linked but M3 does not have it"}
    in_m3 = {(r.get("CUPO") or "").strip().lstrip("0") or "0": _quantity(r.get("ORQT")) for r in rows}
    problems = []
    given = order.get("Lines")
    lines: list[Any] = given if isinstance(given, list) else []
    for position, line in enumerate(lines, start=1):
        if not isinstance(line, dict):
            continue
        number = str(line.get("LineID") or position).strip().lstrip("0") or "0"
        want, got = _quantity(line.get("Quantity")), in_m3.get(number)
        if number not in in_m3:
            problems.append(f"line {number}: not in M3")
        elif want is not None and got != want:
            problems.append(f"line {number}: quantity {got} in M3, {want} in BNG")
    if len(in_m3) > len(lines):
        problems.append(f"M3 has {len(in_m3)} lines, BNG {len(lines)}")
    return {"problems": problems} if problems else None


JOB = "reconcile_orders"


def scheduled_job(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], connectors: Connectors
) -> ScheduledJob | None:
    """``M3BNG_RECONCILE_ORDERS_SECONDS``: the same run on a schedule, in whichever process holds
    the job's lease; None when off or BNG is not configured."""
    bng = connectors.bng
    if not settings.reconcile_orders_seconds or bng is None:
        return None

    async def work() -> Report:
        return await reconcile_orders(
            sessions,
            bng,
            connectors.m3,
            since=utcnow() - timedelta(hours=settings.reconcile_orders_window_hours),
            fix=settings.reconcile_orders_fix,
            grace=timedelta(minutes=settings.reconcile_grace_minutes),
            sla=timedelta(minutes=settings.reconcile_sla_minutes),
        )

    return ScheduledJob(
        JOB, settings.reconcile_orders_seconds, sessions, work, expected=(M3bngError, OSError)
    )
