"""The store side of alerting: the ``alerts`` rows (firing, resolved, what the webhook last
heard) and the reads the alert rules evaluate (dead letters, open events, late orders).

The rules themselves, their thresholds, texts and the throttling of messages are in
``ops/alerts.py``. Everything here is read or written in the caller's session, so one check
moves all the rows in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import OPEN_STATUSES, Alert, DeadLetter, Event, EventStatus

FIRING, RESOLVED = "firing", "resolved"


# --- reads the rules evaluate ----------------------------------------------------------------


def still_dead_letters(*columns: Any) -> Select[Any]:
    """``SELECT columns`` over the unresolved dead letters of events that are still dead.

    Both conditions: a replay or discard that moved the event on (reopened or closed it) takes
    its dead letter out even if the dead letter row were left unresolved, so an alert clears and
    a gauge drops as soon as the event has moved.
    """
    return (
        select(*columns)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(DeadLetter.resolved_at.is_(None), Event.status == EventStatus.DEAD.value)
    )


@dataclass(frozen=True)
class DeadLetterGroup:
    """A flow's unresolved dead letters: how many, the latest of them in full, and how many of
    them per BNG instance."""

    flow: str
    count: int
    latest: DeadLetter
    instances: dict[str, int] = field(default_factory=dict)


async def dead_letters_by_flow(session: AsyncSession) -> list[DeadLetterGroup]:
    """Per event type (in name order): the count of ``still_dead_letters`` and the latest one.

    Two queries whatever the backlog: one ``GROUP BY`` (event type and instance) for the counts
    and the highest id, then the latest rows by primary key, so a flow with thousands of dead
    letters loads one row.
    """
    rows = (
        await session.execute(
            still_dead_letters(
                Event.event_type, Event.instance, func.count(DeadLetter.id), func.max(DeadLetter.id)
            )
            .group_by(Event.event_type, Event.instance)
            .order_by(Event.event_type, Event.instance)
        )
    ).all()
    if not rows:
        return []
    flows: dict[str, tuple[int, dict[str, int]]] = {}
    for flow, instance, count, latest_id in rows:
        highest, by_instance = flows.get(flow, (0, {}))
        by_instance[instance] = int(count)
        flows[flow] = (max(highest, int(latest_id)), by_instance)
    latest_ids = [highest for highest, _by in flows.values()]
    latest = {
        row.id: row
        for row in (await session.execute(select(DeadLetter).where(DeadLetter.id.in_(latest_ids)))).scalars()
    }
    return [
        DeadLetterGroup(flow, sum(by.values()), latest[highest], by) for flow, (highest, by) in flows.items()
    ]


@dataclass(frozen=True)
class OpenFlow:
    """A flow's open (pending or processing) events: how many, when the oldest arrived, and how
    many per BNG instance."""

    flow: str
    count: int
    oldest_received_at: datetime
    instances: dict[str, int] = field(default_factory=dict)


async def open_events_by_flow(session: AsyncSession) -> list[OpenFlow]:
    """Open events per event type (in name order): one ``GROUP BY`` over pending and processing
    events, by ``received_at`` so a paused flow or a stuck worker shows as age, not as count."""
    rows = await session.execute(
        select(Event.event_type, Event.instance, func.count(Event.id), func.min(Event.received_at))
        .where(Event.status.in_(OPEN_STATUSES))
        .group_by(Event.event_type, Event.instance)
        .order_by(Event.event_type, Event.instance)
    )
    flows: dict[str, OpenFlow] = {}
    for flow, instance, count, oldest in rows.all():
        found = flows.get(flow)
        if found is None:
            flows[flow] = OpenFlow(flow, int(count), oldest, {instance: int(count)})
        else:
            found.instances[instance] = int(count)
            flows[flow] = OpenFlow(
                flow, found.count + int(count), min(found.oldest_received_at, oldest), found.instances
            )
    return list(flows.values())


@dataclass(frozen=True)
class LateEvent:
    id: int
    business_key: str | None
    status: str
    received_at: datetime


@dataclass(frozen=True)
class LateEvents:
    count: int  # all of them
    first: list[LateEvent]  # the oldest ``limit`` of them


async def late_events(
    session: AsyncSession,
    *,
    event_type: str,
    statuses: Sequence[str],
    received_before: datetime,
    limit: int,
) -> LateEvents:
    """Events of ``event_type`` in ``statuses`` received before ``received_before``: the count,
    and the oldest ``limit`` of them. The list is read only when the count is not 0, so a quiet
    check costs one ``COUNT``."""
    late = (
        Event.event_type == event_type,
        Event.status.in_(statuses),
        Event.received_at < received_before,
    )
    count = (await session.execute(select(func.count(Event.id)).where(*late))).scalar_one()
    if not count:
        return LateEvents(0, [])
    rows = (
        await session.execute(
            select(Event.id, Event.business_key, Event.status, Event.received_at)
            .where(*late)
            .order_by(Event.received_at, Event.id)
            .limit(limit)
        )
    ).all()
    return LateEvents(int(count), [LateEvent(r.id, r.business_key, r.status, r.received_at) for r in rows])


# --- alert rows ------------------------------------------------------------------------------


class Holding(Protocol):
    """A condition that holds now (``ops.alerts.Condition``): what its alert row records."""

    @property
    def key(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def detail(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RecordedAlerts:
    rows: list[Alert]  # every alert row, as it is now (firing and resolved)
    resolved: list[str]  # keys resolved by this call


async def record_conditions(
    session: AsyncSession, holding: Sequence[Holding], now: datetime
) -> RecordedAlerts:
    """Move the alert rows to what holds now: a holding condition fires (a new row, or a new
    episode of a resolved one) and refreshes its summary; a firing alert no longer holding
    resolves. ``notified_state`` is left alone: only ``mark_notified`` moves it.

    The rows are changed in the caller's session and written when its transaction commits, so
    a check's changes land together or not at all.
    """
    rows = {row.key: row for row in (await session.execute(select(Alert))).scalars()}
    for condition in holding:
        row = rows.get(condition.key)
        if row is None:
            row = Alert(
                key=condition.key,
                kind=condition.kind,
                state=FIRING,
                first_fired_at=now,
                notified_state=None,
            )
            session.add(row)
            rows[condition.key] = row
        elif row.state != FIRING:  # fires again: a new episode
            row.state, row.first_fired_at, row.resolved_at = FIRING, now, None
        row.summary, row.detail, row.last_seen_at = condition.summary, condition.detail, now
    keys = {c.key for c in holding}
    resolved = []
    for row in rows.values():
        if row.state == FIRING and row.key not in keys:
            row.state, row.resolved_at = RESOLVED, now
            resolved.append(row.key)
    return RecordedAlerts(list(rows.values()), resolved)


async def mark_notified(session: AsyncSession, key: str, state: str, now: datetime) -> None:
    """Note that the webhook heard ``key`` in ``state`` (after a 2xx only).

    Fenced by the state: if the alert moved on while the message was on its way (it resolved,
    or fired again), the row is left as it is, and the new state is still due at the next check.
    """
    await session.execute(
        update(Alert)
        .where(Alert.key == key, Alert.state == state)
        .values(notified_state=state, last_notified_at=now)
    )
