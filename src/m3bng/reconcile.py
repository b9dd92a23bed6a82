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
* ``in_flight``: its event was taken in recently and is being applied;
* ``unknown_in_bng``: an M3 order whose CUOR names no BNG order. M3 has no order list by date
  or by CUOR: OIS100MI LstHead lists one customer's orders (ORNO, CUOR, ORDT …), so this reads
  the orders of the customers of the window's BNG orders, keeps those whose order date (ORDT)
  falls in the window, and asks BNG for each CUOR that is not among the window's orders.

With ``fix``, an order that never arrived is taken in as an event of source ``reconcile``, with
the order's business key and an id derived from the order id: a second run enqueues it once
only, and a webhook that turns up late is applied after it (same key, arrival order) and finds
the order in M3 by the cross-reference, so it never makes a second order. Nothing else is fixed
automatically: a stuck order is a dead letter or an outage to look at, a different one a
decision for a person.

Every run and its findings (all but ``matching``) are stored for the ops API. ``recorded``
does that for every kind (stock: reconcile_stock.py; customers and items: reconcile_master.py).

Each run compares one BNG instance (``instance``, instances.py; ``m3bng reconcile --instance``):
its BNG, M3 in its company, its events and cross-references; a fix is an event of that instance.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.bng.events import business_key
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.errors import M3DataError, M3NotFound
from m3bng.errors import M3bngError, Refused
from m3bng.mapping import Mapping
from m3bng.observability import metrics
from m3bng.ops.scheduler import ScheduledJob
from m3bng.store import queue
from m3bng.store import reconcile as store
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.store.queue import NewEvent
from m3bng.store.sql import utcnow
from m3bng.timestamps import iso_utc

log = structlog.get_logger(__name__)

SOURCE = "reconcile"
ORDER_CREATED = "order.created"
FINDINGS = ("matching", "different", "never_arrived", "stuck", "in_flight", "unknown_in_bng")
OPEN = ("pending", "processing")
KINDS = ("orders", "stock", "customers", "items")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a full comparison: "changed since" the beginning
CUNO_LENGTH = 10  # a CustomerID longer than this is no CUNO: LstHead would refuse it


@dataclass
class Report:
    run_id: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0))
    findings: list[dict[str, Any]] = field(default_factory=list)
    fixed: int = 0
    m3_calls: int = 0

    def add(self, key: str, finding: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
        """Count the object in its class; keep it as a finding unless it matches."""
        self.counts[finding] = self.counts.get(finding, 0) + 1
        entry = {"key": key[:255], "finding": finding, "detail": detail or {}, "event_id": None}
        if finding != "matching":
            self.findings.append(entry)
        return entry


async def recorded(
    sessions: async_sessionmaker[AsyncSession],
    kind: str,
    since: datetime,
    classes: Sequence[str],
    body: Callable[[Report], Awaitable[None]],
    *,
    fix: bool,
    instance: str = DEFAULT_INSTANCE,
) -> Report:
    """One run of any kind, stored: started, its findings and counts when ``body`` is done, or
    failed with the error (and raised again); the metric counts each class."""
    async with sessions.begin() as session:
        report = Report(
            run_id=await store.start_run(session, kind, since, fix=fix, instance=instance),
            counts=dict.fromkeys(classes, 0),
        )
    try:
        await body(report)
    except (M3bngError, OSError) as exc:
        async with sessions.begin() as session:
            await store.finish_run(
                session, report.run_id, status="failed", counts=report.counts, error=str(exc)
            )
        raise
    async with sessions.begin() as session:
        await store.add_findings(session, report.run_id, report.findings)
        counts = {**report.counts, "fixed": report.fixed, "m3_calls": report.m3_calls}
        await store.finish_run(session, report.run_id, status="done", counts=counts)
    for finding, count in report.counts.items():
        metrics.observe_reconcile(kind, finding, count)
    log.info(
        "reconcile.done",
        instance=instance,
        kind=kind,
        run_id=report.run_id,
        fixed=report.fixed,
        **report.counts,
    )
    return report


async def reconcile_orders(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client | None,
    *,
    since: datetime,
    fix: bool = False,
    grace: timedelta = timedelta(minutes=10),
    sla: timedelta = timedelta(minutes=30),
    instance: str = DEFAULT_INSTANCE,
) -> Report:
    """One run (module docstring) for the BNG ``instance``, whose BNG ``bng`` is (and ``m3``
    runs in its company). ``m3`` None skips the line check (``matching`` then means "linked to
    an M3 order") and the search for M3 orders unknown in BNG."""

    async def body(report: Report) -> None:
        await _run(sessions, bng, m3, report, since=since, fix=fix, grace=grace, sla=sla, instance=instance)

    return await recorded(sessions, "orders", since, FINDINGS, body, fix=fix, instance=instance)


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
    instance: str,
) -> None:
    orders = [o for o in await bng.changed_since("orders", since) if str(o.get("OrderID") or "")]
    ids = [str(o["OrderID"]) for o in orders]
    keys = {oid: business_key(ORDER_CREATED, {"OrderID": oid}) or f"order:{oid}" for oid in ids}
    async with sessions() as session:
        known = await store.events_by_key(session, instance, list(keys.values()), [ORDER_CREATED])
        linked = await store.xrefs(session, instance, "order", ids)
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
                    intake.append((oid, _event(order, keys[oid], instance)))
        else:
            latest = events[-1]
            detail = {
                "event_id": latest.id,
                "status": latest.status,
                "received_at": latest.received_at.isoformat(),
            }
            late = now - latest.received_at > sla
            finding = "in_flight" if latest.status in OPEN and not late else "stuck"
        report.add(oid, finding, detail)
    if m3 is not None:
        await _unknown_in_bng(sessions, bng, m3, report, orders, since, instance)
    if intake:
        async with sessions.begin() as session:
            stored = await queue.insert_events_once(session, [new for _, new in intake])
        by_order = {oid: event_id for (oid, _), (event_id, _created) in zip(intake, stored, strict=True)}
        for f in report.findings:
            if f["key"] in by_order and f["finding"] == "never_arrived":
                f["event_id"] = by_order[f["key"]]
        report.fixed = sum(1 for _, created in stored if created)


async def _unknown_in_bng(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client,
    report: Report,
    orders: list[dict[str, Any]],
    since: datetime,
    instance: str,
) -> None:
    """M3 orders of the window's customers, with an order date in the window, whose CUOR names
    no BNG order: one LstHead per customer, one BNG GET per CUOR not among the window's orders
    (it may be an older BNG order that has not changed since)."""
    in_window = {str(o["OrderID"]) for o in orders}
    customers = sorted({str(o.get("CustomerID") or "").strip() for o in orders} - {""})
    async with sessions() as session:
        cunos = await store.xrefs(session, instance, "customer", customers)
    first_day = since.astimezone(UTC).strftime("%Y%m%d")
    candidates: dict[str, dict[str, str]] = {}
    for cuno in sorted({cunos.get(c, c) for c in customers}):
        if len(cuno) > CUNO_LENGTH:
            continue
        try:
            report.m3_calls += 1
            heads = (await m3.execute("OIS100MI", "LstHead", {"CUNO": cuno}, maxrecs=0)).records
        except M3DataError:  # no such customer in M3 (the order never got there): no M3 orders
            continue
        for head in heads:
            cuor, ordt = (head.get("CUOR") or "").strip(), (head.get("ORDT") or "").strip()
            if cuor and cuor not in in_window and (not ordt or ordt >= first_day):
                candidates.setdefault(cuor, {"orno": head.get("ORNO", ""), "cuno": cuno, "order_date": ordt})
    for cuor, detail in sorted(candidates.items()):
        if await bng.get(f"/orders/{quote(cuor, safe='')}") is None:
            report.add(cuor, "unknown_in_bng", detail)


def _event(order: dict[str, Any], key: str, instance: str) -> NewEvent:
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
        instance=instance,
    )


def quantity(value: Any) -> Decimal | None:
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
    in_m3 = {(r.get("CUPO") or "").strip().lstrip("0") or "0": quantity(r.get("ORQT")) for r in rows}
    problems = []
    given = order.get("Lines")
    lines: list[Any] = given if isinstance(given, list) else []
    for position, line in enumerate(lines, start=1):
        if not isinstance(line, dict):
            continue
        number = str(line.get("LineID") or position).strip().lstrip("0") or "0"
        want, got = quantity(line.get("Quantity")), in_m3.get(number)
        if number not in in_m3:
            problems.append(f"line {number}: not in M3")
        elif want is not None and got != want:
            problems.append(f"line {number}: quantity {got} in M3, {want} in BNG")
    if len(in_m3) > len(lines):
        problems.append(f"M3 has {len(in_m3)} lines, BNG {len(lines)}")
    return {"problems": problems} if problems else None


JOB = "reconcile_orders"


class ReconcileRefused(Refused):
    """A run cannot start: an unknown kind, BNG or M3 not configured, its mapping not loaded."""

    code = "reconcile_refused"


async def run_kind(
    kind: str,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    connectors: Connectors,
    mappings: dict[str, Mapping],
    *,
    since: datetime | None = None,
    fix: bool = False,
    tolerance: Decimal | None = None,
    grace: timedelta | None = None,
    sla: timedelta | None = None,
    instance: str = DEFAULT_INSTANCE,
) -> Report:
    """One run of ``kind`` for the BNG ``instance``, for the command and the scheduled jobs
    alike; what is not given comes from the settings (the window of orders, the stock tolerance,
    grace and SLA). ``connectors`` are the installation's: the run uses the instance's BNG, M3
    in its company, and the mappings with its vars (what its flows write)."""
    from m3bng.instances import with_instance_vars

    view = connectors.for_instance(instance)
    bng, m3 = view.bng, view.m3
    mappings = with_instance_vars(mappings, view.instance)
    if bng is None:
        if instance != DEFAULT_INSTANCE:
            raise ReconcileRefused(f"instance {instance!r} has no BNG (is it in M3BNG_INSTANCES_FILE?)")
        raise ReconcileRefused("BNG is not configured (set M3BNG_BNG_BASE_URL)")
    if kind == "orders":
        return await reconcile_orders(
            sessions,
            bng,
            m3,
            since=since or utcnow() - timedelta(hours=settings.reconcile_orders_window_hours),
            fix=fix,
            grace=grace if grace is not None else timedelta(minutes=settings.reconcile_grace_minutes),
            sla=sla if sla is not None else timedelta(minutes=settings.reconcile_sla_minutes),
            instance=instance,
        )
    if kind not in KINDS:
        raise ReconcileRefused(f"reconcile {kind!r}: the kinds are {', '.join(KINDS)}")
    if m3 is None:
        raise ReconcileRefused(f"reconcile {kind}: M3 is not configured (set M3BNG_IONAPI_FILE)")
    if kind == "stock":
        from m3bng.reconcile_stock import reconcile_stock

        mapping = mappings.get("inventory_poll")
        if mapping is None:
            raise ReconcileRefused("reconcile stock: mappings/inventory_poll.yaml is not loaded")
        if tolerance is None:
            tolerance = Decimal(str(settings.reconcile_stock_tolerance))
        warehouses = settings.inventory_poll_warehouses
        return await reconcile_stock(
            sessions,
            bng,
            m3,
            mapping,
            warehouses=warehouses,
            fix=fix,
            tolerance=tolerance,
            instance=instance,
        )
    from m3bng.reconcile_master import reconcile_master

    return await reconcile_master(sessions, bng, m3, mappings, kind, fix=fix, instance=instance)


def scheduled_job(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    connectors: Connectors,
    kind: str = "orders",
    mappings: dict[str, Mapping] | Callable[[], dict[str, Mapping]] | None = None,
    instance: str = DEFAULT_INSTANCE,
) -> ScheduledJob | None:
    """``M3BNG_RECONCILE_<KIND>_SECONDS``: the same run on a schedule, in whichever process
    holds the job's lease (``reconcile_<kind>``, ``reconcile_<kind>:<instance>`` for another
    instance than default); None when off or the instance's BNG (or, but for orders, M3) is not
    configured."""
    seconds = float(getattr(settings, f"reconcile_{kind}_seconds"))
    view = connectors.for_instance(instance)
    if not seconds or view.bng is None or (kind != "orders" and view.m3 is None):
        return None
    fix = bool(getattr(settings, f"reconcile_{kind}_fix"))

    async def work() -> Report:
        # Each run with the versions live then (a callable: the process's current mappings).
        live = mappings() if callable(mappings) else mappings
        return await run_kind(kind, settings, sessions, connectors, live or {}, fix=fix, instance=instance)

    name = f"reconcile_{kind}" if instance == DEFAULT_INSTANCE else f"reconcile_{kind}:{instance}"
    return ScheduledJob(name, seconds, sessions, work, expected=(M3bngError, OSError))


def scheduled_jobs(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    connectors: Connectors,
    mappings: dict[str, Mapping] | Callable[[], dict[str, Mapping]],
) -> list[ScheduledJob]:
    """One job per kind whose interval is set, for each configured BNG instance."""
    instances = connectors.instances.ids if connectors.instances is not None else [DEFAULT_INSTANCE]
    jobs = (
        scheduled_job(settings, sessions, connectors, kind, mappings, instance)
        for instance in instances
        for kind in KINDS
    )
    return [job for job in jobs if job is not None]
