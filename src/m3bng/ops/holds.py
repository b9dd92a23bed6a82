"""Held events (anomaly holds): list them with the rule, the figures and the history that held
them, and end each hold by a release (back in line, the hold bypassed for this event) or a
discard (closed, never sent). Both are audited and need ``ops:replay`` (docs/assist.md).

A release keeps the event's checkpoint and adds ``anomaly_release`` (who, when) beside
``anomalies_checked``: the guard step sees the event was judged already and lets it through, on
this run and on any retry of it. A replay ``from_start`` later clears both, and the rules judge
the event again. Both ends are one conditional UPDATE on ``status = 'held'`` (``store/anomalies``):
of two people acting on one hold, one wins and the other gets a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.flows.runtime.anomalies import CHECKED, RELEASE
from m3bng.inbox.ingest import Notifier
from m3bng.observability import metrics
from m3bng.ops.replay import ReplayConflict, ReplayNotFound, check_reason
from m3bng.store import anomalies as store
from m3bng.store import audit
from m3bng.store.models import AnomalyFinding, Event, EventStatus
from m3bng.store.search import get_event
from m3bng.store.sql import utcnow


def finding_view(finding: AnomalyFinding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "rule": finding.rule,
        "action": finding.action,
        "summary": finding.summary,
        "detail": finding.detail,
        "created_at": finding.created_at,
        "resolution": finding.resolution,
        "resolved_by": finding.resolved_by,
        "resolved_at": finding.resolved_at,
    }


def hold_view(event: Event, findings: list[AnomalyFinding]) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "instance": event.instance,
        "event_type": event.event_type,
        "business_key": event.business_key,
        "flow": findings[0].flow if findings else None,
        "held_at": event.finished_at,
        "received_at": event.received_at,
        "reason": event.last_error,
        "rules": sorted({f.rule for f in findings}),
        "findings": [finding_view(f) for f in findings],
    }


async def list_holds(
    sessions: async_sessionmaker[AsyncSession], *, flow: str | None, rule: str | None, limit: int
) -> list[dict[str, Any]]:
    """Open holds, newest first."""
    async with sessions() as session:
        rows = await store.list_holds(session, flow=flow, rule=rule, limit=limit)
    return [hold_view(row.event, row.findings) for row in rows]


async def findings(session: AsyncSession, event_id: int) -> list[dict[str, Any]]:
    """Every finding of one event (flags and holds, open or ended): the transaction detail's."""
    return [finding_view(f) for f in await store.findings_of(session, event_id)]


@dataclass(frozen=True)
class HoldEnded:
    event_id: int
    resolution: str  # released, discarded
    status: str  # the event's status now


async def release(
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier | None,
    event_id: int,
    *,
    actor: str,
    reason: str | None = None,
) -> HoldEnded:
    """Put a held event back in line with its hold bypassed, audited; wakes this process's workers."""
    async with sessions.begin() as session:
        event = await _held(session, event_id)
        checkpoint = {
            **(event.checkpoint or {}),
            CHECKED: True,
            RELEASE: {"by": actor, "at": utcnow().isoformat()},
        }
        await _end(session, event, store.RELEASED, actor, reason, checkpoint)
    metrics.REPLAYS.labels("release_hold", "single").inc()
    if notifier is not None:
        notifier.notify()
    return HoldEnded(event_id, store.RELEASED, EventStatus.PENDING.value)


async def discard(
    sessions: async_sessionmaker[AsyncSession], event_id: int, *, actor: str, reason: Any
) -> HoldEnded:
    """Close a held event without sending it, audited; the reason is required."""
    text = check_reason(reason)
    async with sessions.begin() as session:
        event = await _held(session, event_id)
        await _end(session, event, store.DISCARDED, actor, text, None)
    return HoldEnded(event_id, store.DISCARDED, EventStatus.DISCARDED.value)


async def _held(session: AsyncSession, event_id: int) -> Event:
    event = await get_event(session, event_id)
    if event is None:
        raise ReplayNotFound(f"transaction {event_id} does not exist")
    if event.status != EventStatus.HELD.value:
        raise ReplayConflict(
            f"transaction {event_id} is {event.status}, not held: there is no hold to release or discard",
            code="not_held",
        )
    return event


async def _end(
    session: AsyncSession,
    event: Event,
    resolution: str,
    actor: str,
    reason: str | None,
    checkpoint: dict[str, Any] | None,
) -> None:
    event_id = event.id
    rules = sorted({f.rule for f in await store.findings_of(session, event_id) if f.action == store.HOLD})
    before = {"status": EventStatus.HELD.value, "rules": rules, "reason": event.last_error}
    if not await store.end_hold(session, event_id, resolution=resolution, actor=actor, checkpoint=checkpoint):
        raise ReplayConflict(
            f"transaction {event_id} changed while ending its hold (someone else released or "
            "discarded it); look at it again",
            code="not_held",
        )
    status = EventStatus.PENDING.value if resolution == store.RELEASED else EventStatus.DISCARDED.value
    await audit.record(
        session,
        actor=actor,
        action="release_hold" if resolution == store.RELEASED else "discard_hold",
        target_type="event",
        target_id=event_id,
        before=before,
        after={"status": status, "resolution": resolution},
        detail=reason,
    )
