"""The store side of operating the service: pause switches, scheduler leases, and the backlog
reads behind ``GET /api/v1/control`` and ``/metrics``.

A pause is a row in ``controls`` and a scheduled job's turn a row in ``scheduler_leases``, so
both hold for every process on the database and survive restarts. The backlog reads are one
grouped query each over the whole events table, never one query per flow, so their cost does
not grow with the number of flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store import sql
from m3bng.store.alerts import still_dead_letters
from m3bng.store.models import OPEN_STATUSES, Control, DeadLetter, Event, EventStatus, SchedulerLease

# --- pause switches --------------------------------------------------------------------------


async def controls(session: AsyncSession) -> list[Control]:
    """Every switch ever set, paused or not, by kind and name: a resumed switch keeps its row so
    the overview can say who resumed it and when."""
    return list((await session.execute(select(Control).order_by(Control.kind, Control.name))).scalars())


async def get_control(session: AsyncSession, kind: str, name: str) -> Control | None:
    """One switch as it is before a change, for the audit log's "before"."""
    return await session.get(Control, (kind, name))


async def put_control(
    session: AsyncSession,
    kind: str,
    name: str,
    *,
    paused: bool,
    reason: str | None,
    changed_by: str,
    changed_at: datetime,
) -> None:
    """Set one switch with a single upsert, so two operators flipping the same switch at once
    cannot fail on the primary key: the later write wins, each with its own audit entry (written
    by the caller in the same transaction)."""
    values = {
        "kind": kind,
        "name": name,
        "paused": paused,
        "reason": reason,
        "changed_by": changed_by,
        "changed_at": changed_at,
    }
    await session.execute(sql.upsert(session, Control.__table__, ["kind", "name"], values))


async def paused_switches(session: AsyncSession) -> list[tuple[str, str]]:
    """(kind, name) of every switch that is paused now. Workers read it about once a second, so
    it is one query over the tiny ``controls`` table, with nothing joined."""
    rows = await session.execute(select(Control.kind, Control.name).where(Control.paused.is_(True)))
    return [(kind, name) for kind, name in rows.all()]


# --- scheduler leases ------------------------------------------------------------------------


async def take_lease(
    session: AsyncSession,
    name: str,
    owner: str,
    *,
    now: datetime,
    ran_before: datetime,
    expires_at: datetime,
) -> bool:
    """Take the lease ``name`` for ``owner`` until ``expires_at`` and note a run at ``now``, if
    the lease is free, ours or expired and its last run was at or before ``ran_before``.

    The row is created first if missing (``INSERT … ON CONFLICT DO NOTHING``), then one
    conditional UPDATE decides, so two processes asking at once cannot both win: on PostgreSQL
    the second waits for the first's row lock and then no longer matches the WHERE clause; on
    SQLite the transactions are serialised (BEGIN IMMEDIATE). Both statements must run in the
    caller's one transaction.
    """
    await session.execute(sql.insert_ignore(session, SchedulerLease.__table__, {"name": name}))
    result = await session.execute(
        update(SchedulerLease)
        .where(
            SchedulerLease.name == name,
            or_(
                SchedulerLease.owner.is_(None),
                SchedulerLease.owner == owner,
                SchedulerLease.expires_at < now,
            ),
            or_(SchedulerLease.last_run_at.is_(None), SchedulerLease.last_run_at <= ran_before),
        )
        .values(owner=owner, expires_at=expires_at, last_run_at=now)
        .returning(SchedulerLease.name)
    )
    return result.scalar_one_or_none() is not None


# --- backlog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenEvents:
    """The open events of one (instance, source, event type) in one status."""

    instance: str
    source: str
    event_type: str
    status: str
    count: int
    oldest_received_at: datetime


async def open_events(session: AsyncSession) -> list[OpenEvents]:
    """Pending and processing events by instance, source, event type and status: one
    ``GROUP BY`` over the open events, whatever the number of flows. "Oldest" is by
    ``received_at``: how long the oldest unfinished event has waited since it arrived."""
    rows = await session.execute(
        select(
            Event.instance,
            Event.source,
            Event.event_type,
            Event.status,
            func.count(Event.id),
            func.min(Event.received_at),
        )
        .where(Event.status.in_(OPEN_STATUSES))
        .group_by(Event.instance, Event.source, Event.event_type, Event.status)
    )
    return [
        OpenEvents(instance, source, event_type, status, int(count), oldest)
        for instance, source, event_type, status, count, oldest in rows.all()
    ]


async def dead_letter_depth(session: AsyncSession) -> dict[tuple[str, str, str], int]:
    """Unresolved dead letters of events that are still dead, by (instance, source, event type):
    the same two conditions as the dead-letter alerts (``still_dead_letters``)."""
    key = (Event.instance, Event.source, Event.event_type)
    rows = await session.execute(still_dead_letters(*key, func.count(DeadLetter.id)).group_by(*key))
    return {(instance, source, event_type): int(count) for instance, source, event_type, count in rows.all()}


@dataclass(frozen=True)
class InstanceCounts:
    """One BNG instance's events waiting (pending) and given up (dead)."""

    pending: int = 0
    dead: int = 0


async def counts_by_instance(session: AsyncSession) -> dict[str, InstanceCounts]:
    """Pending and dead events per instance, in one ``GROUP BY`` (instances with none are absent)."""
    pending, dead = EventStatus.PENDING.value, EventStatus.DEAD.value
    rows = await session.execute(
        select(Event.instance, Event.status, func.count(Event.id))
        .where(Event.status.in_((pending, dead)))
        .group_by(Event.instance, Event.status)
    )
    found: dict[str, dict[str, int]] = {}
    for instance, status, count in rows.all():
        found.setdefault(str(instance), {})[str(status)] = int(count)
    return {
        instance: InstanceCounts(pending=by.get(pending, 0), dead=by.get(dead, 0))
        for instance, by in found.items()
    }
