"""Reconciliation's reads of what m3bng holds about an object, and its runs and findings.

Reconciliation compares one BNG instance's BNG (instances.py; ``m3bng reconcile --instance``):
every read here is of that instance's events, links and BNG state, never another instance's
object of the same id, and each run records its instance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import (
    DEFAULT_INSTANCE,
    BngState,
    CrossReference,
    Event,
    ReconcileFinding,
    ReconcileRun,
)
from m3bng.store.sql import utcnow


@dataclass(frozen=True)
class KnownEvent:
    id: int
    source: str
    event_type: str
    status: str
    received_at: datetime


async def events_by_key(
    session: AsyncSession, instance: str, keys: Sequence[str], event_types: Sequence[str]
) -> dict[str, list[KnownEvent]]:
    """The events of these business keys and types, whatever their source (a webhook, a replay,
    reconciliation itself), oldest first: did the object ever arrive, and how far did it get."""
    out: dict[str, list[KnownEvent]] = {key: [] for key in keys}
    if not keys:
        return out
    rows = await session.execute(
        select(Event.id, Event.source, Event.event_type, Event.status, Event.received_at, Event.business_key)
        .where(
            Event.instance == instance,
            Event.business_key.in_(list(keys)),
            Event.event_type.in_(list(event_types)),
        )
        .order_by(Event.id)
    )
    for row in rows:
        out[row.business_key].append(
            KnownEvent(row.id, row.source, row.event_type, row.status, row.received_at)
        )
    return out


async def xrefs(session: AsyncSession, instance: str, entity: str, bng_ids: Sequence[str]) -> dict[str, str]:
    """BNG id → M3 key for the objects m3bng has applied to M3."""
    if not bng_ids:
        return {}
    rows = await session.execute(
        select(CrossReference.bng_id, CrossReference.m3_key).where(
            CrossReference.instance == instance,
            CrossReference.entity == entity,
            CrossReference.bng_id.in_(list(bng_ids)),
        )
    )
    return {bng_id: m3_key for bng_id, m3_key in rows}


async def links_by_m3(
    session: AsyncSession, instance: str, entity: str, m3_keys: Sequence[str]
) -> dict[str, str]:
    """M3 key → BNG id, for the keys that have one (the other way round from ``xrefs``)."""
    out: dict[str, str] = {}
    keys = list(m3_keys)
    for start in range(0, len(keys), 500):  # bounded IN lists, whatever the number of records
        rows = await session.execute(
            select(CrossReference.m3_key, CrossReference.bng_id).where(
                CrossReference.instance == instance,
                CrossReference.entity == entity,
                CrossReference.m3_key.in_(keys[start : start + 500]),
            )
        )
        out.update({m3_key: bng_id for m3_key, bng_id in rows})
    return out


async def all_links(session: AsyncSession, instance: str, entity: str) -> dict[str, str]:
    """BNG id → M3 key of every object of ``entity`` m3bng has linked (a full comparison)."""
    rows = await session.execute(
        select(CrossReference.bng_id, CrossReference.m3_key).where(
            CrossReference.instance == instance, CrossReference.entity == entity
        )
    )
    return {bng_id: m3_key for bng_id, m3_key in rows}


async def forget_bng_state(session: AsyncSession, instance: str, entity: str, bng_ids: Sequence[str]) -> None:
    """Drop what m3bng believed BNG holds for these objects: reconciliation read that BNG holds
    something else, and a flow's echo check must not skip the correction on the old belief."""
    if bng_ids:
        await session.execute(
            delete(BngState).where(
                BngState.instance == instance,
                BngState.entity == entity,
                BngState.bng_id.in_(list(bng_ids)),
            )
        )


async def start_run(
    session: AsyncSession, kind: str, since: datetime, *, fix: bool, instance: str = DEFAULT_INSTANCE
) -> int:
    run = ReconcileRun(
        instance=instance, kind=kind, since=since, fix=fix, status="running", counts={}, started_at=utcnow()
    )
    session.add(run)
    await session.flush()
    return run.id


async def add_findings(session: AsyncSession, run_id: int, findings: Sequence[dict[str, Any]]) -> None:
    """``findings``: ``{key, finding, detail, event_id}`` each."""
    if findings:
        await session.execute(insert(ReconcileFinding), [{"run_id": run_id, **f} for f in findings])


async def finish_run(
    session: AsyncSession, run_id: int, *, status: str, counts: dict[str, int], error: str | None = None
) -> None:
    await session.execute(
        update(ReconcileRun)
        .where(ReconcileRun.id == run_id)
        .values(status=status, counts=counts, error=error, finished_at=utcnow())
    )


async def list_runs(
    session: AsyncSession,
    *,
    kind: str | None = None,
    limit: int = 50,
    run_id: int | None = None,
    instance: str | None = None,
) -> list[ReconcileRun]:
    query = select(ReconcileRun).order_by(ReconcileRun.id.desc()).limit(limit)
    if kind:
        query = query.where(ReconcileRun.kind == kind)
    if instance:
        query = query.where(ReconcileRun.instance == instance)
    if run_id is not None:
        query = query.where(ReconcileRun.id == run_id)
    return list((await session.scalars(query)).all())


async def list_findings(
    session: AsyncSession,
    run_id: int,
    *,
    finding: str | None = None,
    key: str | None = None,
    limit: int = 500,
) -> list[ReconcileFinding]:
    query = (
        select(ReconcileFinding)
        .where(ReconcileFinding.run_id == run_id)
        .order_by(ReconcileFinding.id)
        .limit(limit)
    )
    if finding:
        query = query.where(ReconcileFinding.finding == finding)
    if key:
        query = query.where(ReconcileFinding.key == key)
    return list((await session.scalars(query)).all())


@dataclass(frozen=True)
class OpenFindings:
    run_id: int
    findings: list[ReconcileFinding]


async def run_instances(session: AsyncSession, kind: str) -> list[str]:
    """The instances that have runs of ``kind``, ``default`` first."""
    rows = await session.scalars(select(ReconcileRun.instance).where(ReconcileRun.kind == kind).distinct())
    return sorted(set(rows), key=lambda i: (i != DEFAULT_INSTANCE, i))


async def latest_open_findings(
    session: AsyncSession,
    kind: str,
    classes: Sequence[str] = ("never_arrived", "stuck"),
    *,
    instance: str = DEFAULT_INSTANCE,
) -> OpenFindings | None:
    """The newest finished run of ``kind`` for ``instance`` and its findings of ``classes`` that
    its ``--fix`` did not correct (no event): what the ``reconcile`` alerts report. For orders:
    never arrived and not taken in, or stuck."""
    run_id = await session.scalar(
        select(ReconcileRun.id)
        .where(ReconcileRun.instance == instance, ReconcileRun.kind == kind, ReconcileRun.status == "done")
        .order_by(ReconcileRun.id.desc())
        .limit(1)
    )
    if run_id is None:
        return None
    rows = await session.scalars(
        select(ReconcileFinding)
        .where(
            ReconcileFinding.run_id == run_id,
            ReconcileFinding.finding.in_(list(classes)),
            ReconcileFinding.event_id.is_(None),
        )
        .order_by(ReconcileFinding.id)
    )
    return OpenFindings(run_id, list(rows))


OPEN_LIMIT = 50


async def latest_runs(
    session: AsyncSession, *, kind: str | None = None, instance: str | None = None
) -> list[ReconcileRun]:
    """The newest run of each instance and kind, or of ``kind`` / ``instance`` (whatever its
    status: a failed one is news too)."""
    newest = select(func.max(ReconcileRun.id)).group_by(ReconcileRun.instance, ReconcileRun.kind)
    if kind:
        newest = newest.where(ReconcileRun.kind == kind)
    if instance:
        newest = newest.where(ReconcileRun.instance == instance)
    rows = await session.scalars(
        select(ReconcileRun)
        .where(ReconcileRun.id.in_(newest))
        .order_by(ReconcileRun.instance != DEFAULT_INSTANCE, ReconcileRun.instance, ReconcileRun.kind)
    )
    return list(rows.all())


async def open_findings(
    session: AsyncSession, run_id: int, *, limit: int = OPEN_LIMIT
) -> list[ReconcileFinding]:
    """A run's findings that still want a person: not corrected by its ``--fix`` (no event) and
    not merely in flight."""
    rows = await session.scalars(
        select(ReconcileFinding)
        .where(
            ReconcileFinding.run_id == run_id,
            ReconcileFinding.event_id.is_(None),
            ReconcileFinding.finding != "in_flight",
        )
        .order_by(ReconcileFinding.id)
        .limit(limit)
    )
    return list(rows.all())
