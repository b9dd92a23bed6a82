"""The store side of anomaly holds (``flows/runtime/anomalies.py`` decides what is anomalous):
the order history the rules compare against, the findings (flags and holds) and the holds' end.

Every read of the history is bounded: the last ``limit`` rows of each SKU and of the customer's
orders, in one statement (``read_history``). A hold's end (release, discard) is conditional on
the event still being ``held``, so of two people acting on one hold exactly one does (as
``store/replays.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from m3bng.store.fenced import Deferred, Part, json_text, naive_utc
from m3bng.store.models import AnomalyFinding, Event, EventStatus, OrderHistory
from m3bng.store.sql import utcnow

HOLD, FLAG = "hold", "flag"
RELEASED, DISCARDED = "released", "discarded"
_HISTORY: Table = OrderHistory.__table__  # type: ignore[assignment]
_FINDINGS: Table = AnomalyFinding.__table__  # type: ignore[assignment]
# The table's INSERTs, built once: one executemany whatever columns are None (the ORM's would
# split the rows by the columns they set), and no statement built per order.
_INSERT_HISTORY = insert(_HISTORY)
_INSERT_FINDINGS = insert(_FINDINGS)


@dataclass(frozen=True)
class HistoryRow:
    """One row of ``order_history`` as the rules read it."""

    order_id: str
    customer: str
    sku: str | None
    quantity: float
    unit_price: float | None
    amount: float
    digest: str | None
    at: datetime


@dataclass(frozen=True)
class History:
    """What the rules see of the past: the last rows of each SKU of the order, and of the
    customer's orders (``sku`` NULL rows)."""

    by_sku: dict[str, list[HistoryRow]]
    customer_orders: list[HistoryRow]


async def read_history(
    session: AsyncSession, *, flow: str, instance: str, skus: Sequence[str], customer: str, limit: int
) -> History:
    """The last ``limit`` rows of each SKU and of the customer's orders, newest first.

    One statement: a UNION ALL of one ``ORDER BY id DESC LIMIT n`` per key, each an index range
    scan that stops after ``limit`` rows (``ix_order_history_sku``, ``ix_order_history_customer``).
    A window function over the keys would number, and so read, every row a key ever had."""
    wanted = sorted(set(skus))
    params: dict[str, Any] = {"flow": flow, "instance": instance, "customer": customer, "limit": limit}
    params.update({f"sku_{i}": sku for i, sku in enumerate(wanted)})
    rows = await session.execute(_history_statement(len(wanted)), params)
    by_sku: dict[str, list[HistoryRow]] = {}
    orders: list[HistoryRow] = []
    for row in sorted(rows, key=lambda r: r.id, reverse=True):
        item = HistoryRow(
            order_id=row.order_id,
            customer=row.customer,
            sku=row.sku,
            quantity=row.quantity,
            unit_price=row.unit_price,
            amount=row.amount,
            digest=row.digest,
            at=_aware(row.at),
        )
        (orders if row.sku is None else by_sku.setdefault(row.sku, [])).append(item)
    return History(by_sku=by_sku, customer_orders=orders)


_HISTORY_READS: dict[int, Any] = {}


def _history_statement(sku_count: int) -> Any:
    """``read_history``'s statement for ``sku_count`` SKUs, built once per count with every value
    a bound parameter: building it per call cost more CPU than running it."""
    statement = _HISTORY_READS.get(sku_count)
    if statement is None:
        c = _HISTORY.c
        columns = (c.id, c.order_id, c.customer, c.sku, c.quantity, c.unit_price, c.amount, c.digest, c.at)
        keys = [c.sku == bindparam(f"sku_{i}") for i in range(sku_count)]
        keys.append(and_(c.customer == bindparam("customer"), c.sku.is_(None)))
        parts = [
            select(
                select(*columns)
                .where(c.flow == bindparam("flow"), c.instance == bindparam("instance"), key)
                .order_by(c.id.desc())
                .limit(bindparam("limit"))
                .subquery()
            )
            for key in keys
        ]
        statement = _HISTORY_READS[sku_count] = union_all(*parts) if len(parts) > 1 else parts[0]
    return statement


def _aware(value: datetime) -> datetime:
    """A subquery's column loses the table type's conversion: naive UTC comes back as it is."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def count_orders(session: AsyncSession, *, flow: str, instance: str, at_most: int) -> int:
    """How many orders of the flow the history holds, counted up to ``at_most`` (bounded)."""
    some = (
        select(_HISTORY.c.id)
        .where(_HISTORY.c.flow == flow, _HISTORY.c.instance == instance, _HISTORY.c.sku.is_(None))
        .limit(at_most)
        .subquery()
    )
    return int((await session.execute(select(func.count()).select_from(some))).scalar_one())


async def add_history(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of ``order_history`` (one per line and one per order), in one INSERT."""
    if rows:
        await session.execute(_INSERT_HISTORY, list(rows))


_HISTORY_INSERT = """INSERT INTO order_history (instance, flow, event_id, order_id, customer, sku,
   quantity, unit_price, amount, digest, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
   $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::timestamp[])"""
_HISTORY_COLUMNS = (
    "instance",
    "flow",
    "event_id",
    "order_id",
    "customer",
    "sku",
    "quantity",
    "unit_price",
    "amount",
    "digest",
)


def deferred_history(rows: Sequence[dict[str, Any]]) -> Deferred:
    """``add_history``, deferred to the outcome (FlowContext.defer): on PostgreSQL one more part
    of the outcome's single statement, so the history costs an order no round trip of its own."""
    columns = [[row.get(c) for row in rows] for c in _HISTORY_COLUMNS]
    args = (*columns, [naive_utc(row["at"]) for row in rows])
    return Deferred(
        lambda session: add_history(session, rows), Part((_HISTORY_INSERT,), args, ("order_history",))
    )


_FINDINGS_INSERT = """INSERT INTO anomaly_findings (event_id, flow, rule, action, summary, detail, created_at)
SELECT $1::bigint, $2::text, r, a, m, d::jsonb, $3::timestamp
FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) AS u(r, a, m, d)"""


def deferred_findings(event_id: int, flow: str, findings: Sequence[dict[str, Any]]) -> Deferred:
    """``add_findings``, deferred to the event's next durable write: a flagged order's findings
    ride in the outcome's one statement on PostgreSQL, as its history does."""
    args = (
        event_id,
        flow,
        naive_utc(utcnow()),
        [f["rule"] for f in findings],
        [f["action"] for f in findings],
        [f["summary"] for f in findings],
        [json_text(f["detail"]) for f in findings],
    )
    return Deferred(
        lambda session: add_findings(session, event_id, flow, findings),
        Part((_FINDINGS_INSERT,), args, ("anomaly_findings", event_id)),
    )


async def add_findings(
    session: AsyncSession, event_id: int, flow: str, findings: Sequence[dict[str, Any]]
) -> None:
    """The findings of one evaluation (each a dict of rule, action, summary, detail)."""
    if findings:
        now = utcnow()
        await session.execute(
            _INSERT_FINDINGS,
            [{**f, "event_id": event_id, "flow": flow, "created_at": now} for f in findings],
        )


async def findings_of(session: AsyncSession, event_id: int) -> list[AnomalyFinding]:
    """Every finding of one event, oldest first (an event held, released, flagged on re-run)."""
    rows = await session.execute(
        select(AnomalyFinding).where(AnomalyFinding.event_id == event_id).order_by(AnomalyFinding.id)
    )
    return list(rows.scalars())


@dataclass(frozen=True)
class HoldRow:
    """An open hold: the held event and the hold findings that stopped it."""

    event: Event
    findings: list[AnomalyFinding]


def _open_holds() -> ColumnElement[bool]:
    return and_(
        AnomalyFinding.action == HOLD,
        AnomalyFinding.resolved_at.is_(None),
        Event.status == EventStatus.HELD.value,
    )


async def list_holds(
    session: AsyncSession, *, flow: str | None = None, rule: str | None = None, limit: int = 100
) -> list[HoldRow]:
    """Open holds, newest first: events in ``held`` with their unresolved hold findings."""
    ids_query: Select[Any] = (
        select(Event.id)
        .join(AnomalyFinding, AnomalyFinding.event_id == Event.id)
        .where(_open_holds())
        .group_by(Event.id)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    if flow is not None:
        ids_query = ids_query.where(AnomalyFinding.flow == flow)
    if rule is not None:
        ids_query = ids_query.where(AnomalyFinding.rule == rule)
    ids = list((await session.execute(ids_query)).scalars())
    if not ids:
        return []
    events = {e.id: e for e in (await session.execute(select(Event).where(Event.id.in_(ids)))).scalars()}
    findings = await session.execute(
        select(AnomalyFinding)
        .where(AnomalyFinding.event_id.in_(ids), _open_holds())
        .join(Event, Event.id == AnomalyFinding.event_id)
        .order_by(AnomalyFinding.id)
    )
    grouped: dict[int, list[AnomalyFinding]] = {}
    for finding in findings.scalars():
        grouped.setdefault(finding.event_id, []).append(finding)
    return [HoldRow(events[i], grouped.get(i, [])) for i in ids if i in events]


@dataclass(frozen=True)
class HoldGroup:
    flow: str
    count: int
    latest_event_id: int
    latest_rule: str
    latest_summary: str
    latest_at: datetime


async def open_holds_by_flow(session: AsyncSession) -> list[HoldGroup]:
    """Per flow: how many events are held, and the newest hold (the alert's condition). One
    GROUP BY and one read of the newest finding per flow, whatever the number of holds."""
    groups = (
        await session.execute(
            select(
                AnomalyFinding.flow,
                func.count(func.distinct(AnomalyFinding.event_id)),
                func.max(AnomalyFinding.id),
            )
            .join(Event, Event.id == AnomalyFinding.event_id)
            .where(_open_holds())
            .group_by(AnomalyFinding.flow)
        )
    ).all()
    if not groups:
        return []
    newest = {
        f.id: f
        for f in (
            await session.execute(select(AnomalyFinding).where(AnomalyFinding.id.in_([g[2] for g in groups])))
        ).scalars()
    }
    return [
        HoldGroup(
            str(flow),
            int(count),
            newest[last].event_id,
            newest[last].rule,
            newest[last].summary,
            newest[last].created_at,
        )
        for flow, count, last in sorted(groups)
    ]


async def end_hold(
    session: AsyncSession,
    event_id: int,
    *,
    resolution: str,
    actor: str,
    checkpoint: dict[str, Any] | None = None,
) -> bool:
    """Release (back to ``pending``, with ``checkpoint``) or discard a held event, and resolve its
    hold findings; False when it is no longer held (someone else acted first)."""
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now, "lease_owner": None, "lease_expires_at": None}
    if resolution == RELEASED:
        values |= {
            "status": EventStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "finished_at": None,
            "last_error": None,
            "error_class": None,
            "checkpoint": checkpoint or {},
        }
    else:
        values |= {"status": EventStatus.DISCARDED.value, "finished_at": now}
    result = await session.execute(
        update(Event)
        .where(Event.id == event_id, Event.status == EventStatus.HELD.value)
        .values(**values)
        .returning(Event.id)
    )
    if result.scalar_one_or_none() is None:
        return False
    await session.execute(
        update(AnomalyFinding)
        .where(
            AnomalyFinding.event_id == event_id,
            AnomalyFinding.action == HOLD,
            AnomalyFinding.resolved_at.is_(None),
        )
        .values(resolved_at=now, resolution=resolution, resolved_by=actor[:128])
    )
    return True
