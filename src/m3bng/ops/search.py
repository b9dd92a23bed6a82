"""The read side of the ops API: transactions, one transaction's whole story, dead letters, the
audit log. Queries only; HTTP shapes and masking live in ``m3bng.api.ops``.

Every list pages by keyset on the id, newest first (``id < :cursor ORDER BY id DESC``), and asks
for one row more than it returns to know whether there is a next page without counting. A row
that arrives while someone pages has a higher id than any cursor handed out, so it never shifts
the pages being walked; it shows at the top of the next first page.

Filters are :class:`~m3bng.ops.filters.EventFilter`, the same object bulk replay stores, so "the
dead letters this list shows" and "the events a bulk replay with this filter replays" are one set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.mapping import Mapping as MappingFile
from m3bng.ops.filters import EventFilter, FilterError, decode_cursor, encode_cursor
from m3bng.store.models import AuditEntry, DeadLetter, Event, EventKey, Replay, Step
from m3bng.timestamps import iso_utc

T = TypeVar("T")
Resolved = Literal["false", "true", "all"]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def parse_timestamp(name: str, value: str | None) -> datetime | None:
    """ISO 8601 (``2026-11-24``, ``2026-11-24T10:00:00Z``, ``…+01:00``); no zone means UTC."""
    if value is None or not value.strip():
        return None
    moment = iso_utc(value.strip())
    if moment is None:
        raise FilterError(
            f"{name}: {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T10:00:00Z or 2026-11-24)"
        )
    return moment


async def _page(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    id_column: Any,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Run ``query`` one page at a time: rows below the cursor's id, newest first, ``limit + 1``."""
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(id_column < after)
    rows = list((await session.execute(query.order_by(id_column.desc()).limit(limit + 1))).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1][0]
    return rows, encode_cursor(int(last.id))


# -- transactions ---------------------------------------------------------------------------------


async def find_events(
    session: AsyncSession, flt: EventFilter, *, limit: int, cursor: str | None = None
) -> Page[Event]:
    rows, next_cursor = await _page(session, select(Event).where(*flt.conditions()), Event.id, limit, cursor)
    return Page([row[0] for row in rows], next_cursor)


@dataclass(frozen=True)
class EventDetail:
    event: Event
    steps: list[Step]
    dead_letter: DeadLetter | None  # the newest one: after a replay that failed again, the latest
    replays: list[Replay]
    keys: list[EventKey]


async def load_event_detail(session: AsyncSession, event_id: int) -> EventDetail | None:
    event = await session.get(Event, event_id)
    if event is None:
        return None
    steps = (await session.execute(select(Step).where(Step.event_id == event_id).order_by(Step.id))).scalars()
    dead_letter = (
        await session.execute(
            select(DeadLetter).where(DeadLetter.event_id == event_id).order_by(DeadLetter.id.desc()).limit(1)
        )
    ).scalar_one_or_none()
    replays = (
        await session.execute(select(Replay).where(Replay.event_id == event_id).order_by(Replay.id))
    ).scalars()
    keys = (
        await session.execute(select(EventKey).where(EventKey.event_id == event_id).order_by(EventKey.id))
    ).scalars()
    return EventDetail(event, list(steps), dead_letter, list(replays), list(keys))


def mapping_for(mappings: Mapping[str, MappingFile], source: str, event_type: str) -> MappingFile | None:
    """The mapping file whose ``trigger:`` handles this event type from this source, as loaded now."""
    for mapping in mappings.values():
        if event_type in mapping.spec.trigger and mapping.spec.event_source == source:
            return mapping
    return None


# -- dead letters ---------------------------------------------------------------------------------


def _dead_letter_conditions(flt: EventFilter, resolved: Resolved) -> list[ColumnElement[bool]]:
    """The event-level part of the filter on the event, and reason/error class on the dead
    letter row itself: for an open dead letter the two agree (the event is dead with that class),
    for a resolved one the event has moved on and only the row still says why it failed."""
    where = dataclasses.replace(flt, reason=None, error_class=None, status=()).conditions()
    if flt.reason:
        where.append(DeadLetter.reason == flt.reason)
    if flt.error_class:
        where.append(DeadLetter.error_class == flt.error_class)
    if resolved == "false":
        where.append(DeadLetter.resolved_at.is_(None))
    elif resolved == "true":
        where.append(DeadLetter.resolved_at.is_not(None))
    return where


async def find_dead_letters(
    session: AsyncSession,
    flt: EventFilter,
    *,
    resolved: Resolved = "false",
    limit: int,
    cursor: str | None = None,
) -> Page[tuple[DeadLetter, Event]]:
    query = (
        select(DeadLetter, Event)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(*_dead_letter_conditions(flt, resolved))
    )
    rows, next_cursor = await _page(session, query, DeadLetter.id, limit, cursor)
    return Page([(row[0], row[1]) for row in rows], next_cursor)


@dataclass(frozen=True)
class DeadLetterGroup:
    event_type: str
    reason: str
    error_class: str | None
    count: int


async def dead_letter_summary(
    session: AsyncSession, flt: EventFilter, *, resolved: Resolved = "false"
) -> list[DeadLetterGroup]:
    """Counts per (event type, reason, error class), biggest first: "what is broken, how much"."""
    count = func.count(DeadLetter.id)
    query = (
        select(Event.event_type, DeadLetter.reason, DeadLetter.error_class, count)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(*_dead_letter_conditions(flt, resolved))
        .group_by(Event.event_type, DeadLetter.reason, DeadLetter.error_class)
        .order_by(count.desc(), Event.event_type, DeadLetter.reason, DeadLetter.error_class)
    )
    rows = (await session.execute(query)).all()
    return [DeadLetterGroup(str(t), str(r), c, int(n)) for t, r, c, n in rows]


# -- audit log ------------------------------------------------------------------------------------


async def find_audit_entries(
    session: AsyncSession,
    *,
    action: Sequence[str] = (),
    actor: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[AuditEntry]:
    where: list[ColumnElement[bool]] = []
    if action:
        where.append(AuditEntry.action.in_(list(action)))
    for column, value in ((AuditEntry.actor, actor), (AuditEntry.target_type, target_type)):
        if value:
            where.append(column == value)
    if target_id:
        where.append(AuditEntry.target_id == target_id)
    if since is not None:
        where.append(AuditEntry.at >= since)
    if until is not None:
        where.append(AuditEntry.at < until)
    rows, next_cursor = await _page(session, select(AuditEntry).where(*where), AuditEntry.id, limit, cursor)
    return Page([row[0] for row in rows], next_cursor)
