"""The read queries of the ops API, and the event filter they share with bulk replay.

The filter is plain data defined here, next to the SQL it turns into, because it is both what
these queries take and what a bulk replay stores (``bulk_replays.filter``, ``to_json``): "the 37
dead letters the list shows" and "the 37 events a bulk replay with the same filter replays" are
then the same set by construction (``store/replays.py`` builds its set from ``event_conditions``).
``m3bng.ops.filters`` re-exports it with the cursor and the errors the API answers with.

Every list pages by keyset on the id, newest first (``id < :before ORDER BY id DESC``), and asks
for one row more than it returns to know whether there is a next page without counting. A row
that arrives while someone pages has a higher id than any cursor handed out, so it never shifts
the pages being walked; it shows at the top of the next first page. The opaque cursor wrapping
the id is the ops layer's (``m3bng.ops.filters``); here it is a plain id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, Row, Select, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import AnomalyFinding, AuditEntry, DeadLetter, Event, EventKey, Replay, Step

T = TypeVar("T")
Resolved = Literal["false", "true", "all"]


MAX_KEY = 255  # event_keys.value


def normalise(value: Any) -> str | None:
    """A business key as ``event_keys`` holds it, trimmed and case-folded: one form for the
    worker that indexes an event and the search that looks it up, so the match is exact and an
    index lookup on both databases."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip().casefold()
    return text[:MAX_KEY] if text else None


@dataclass(frozen=True)
class EventFilter:
    """What ops look events up by; frozen plain data, so a bulk replay can store the one it was
    started with and walk exactly that set later."""

    status: tuple[str, ...] = ()
    event_type: tuple[str, ...] = ()
    source: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    error_class: str | None = None
    program: str | None = None  # M3 program (OIS100MI) or program/transaction (OIS100MI/Confirm)
    q: str | None = None  # a business key: BNG order id, M3 ORNO, customer number, BODID, ...
    reason: str | None = None  # dead-letter reason (permanent_error, retries_exhausted, no_flow)
    instance: str | None = None  # the BNG instance (instances.py)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra", None)
        for name in ("since", "until"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        data["status"], data["event_type"] = list(self.status), list(self.event_type)
        return {k: v for k, v in data.items() if v not in (None, [], "")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventFilter:
        values = dict(data)
        for name in ("since", "until"):
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name])
        values["status"] = tuple(values.get("status") or ())
        values["event_type"] = tuple(values.get("event_type") or ())
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def event_conditions(flt: EventFilter) -> list[ColumnElement[bool]]:
    """WHERE clauses on ``events`` (and, for ``reason``, its unresolved dead letter).

    ``q`` is looked up normalised (``normalise``), the way the worker indexed the keys,
    so the lookup is case-insensitive and still an index hit; it also matches the raw business
    key and external id, which are stored as sent.
    """
    where: list[ColumnElement[bool]] = []
    if flt.status:
        where.append(Event.status.in_(flt.status))
    if flt.event_type:
        where.append(Event.event_type.in_(flt.event_type))
    if flt.source:
        where.append(Event.source == flt.source)
    if flt.instance:
        where.append(Event.instance == flt.instance)
    if flt.since is not None:
        where.append(Event.received_at >= flt.since)
    if flt.until is not None:
        where.append(Event.received_at < flt.until)
    if flt.error_class:
        where.append(Event.error_class == flt.error_class)
    if flt.program:
        # Case-insensitive: transactions are mixed case (OIS100MI/Confirm), people type either.
        program = flt.program.strip().upper()
        stored = func.upper(Step.operation)
        operation = (
            stored == program if "/" in program else stored.like(_escape_like(program) + "/%", escape="\\")
        )
        where.append(exists(select(Step.id).where(Step.event_id == Event.id, operation)))
    if flt.q:
        key = normalise(flt.q)
        raw = flt.q.strip()
        where.append(
            or_(
                Event.id.in_(select(EventKey.event_id).where(EventKey.value == key)),
                Event.business_key == raw,
                Event.external_id == raw,
            )
        )
    if flt.reason:
        where.append(
            exists(
                select(DeadLetter.id).where(
                    DeadLetter.event_id == Event.id,
                    DeadLetter.resolved_at.is_(None),
                    DeadLetter.reason == flt.reason,
                )
            )
        )
    return where


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- keyset pages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeysetPage(Generic[T]):
    items: list[T]
    next_before: int | None  # the id the next page continues below; None on the last page


async def _keyset(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    id_column: Any,
    limit: int,
    before: int | None,
) -> KeysetPage[Row[*tuple[Any, ...]]]:
    """``limit + 1`` rows below ``before``, newest first: the extra row only says a next page
    exists, so no list ever counts its rows."""
    if before is not None:
        query = query.where(id_column < before)
    rows = list((await session.execute(query.order_by(id_column.desc()).limit(limit + 1))).all())
    if len(rows) <= limit:
        return KeysetPage(rows, None)
    rows = rows[:limit]
    return KeysetPage(rows, int(rows[-1][0].id))


# -- transactions ---------------------------------------------------------------------------------


async def find_events(
    session: AsyncSession, flt: EventFilter, *, limit: int, before: int | None = None
) -> KeysetPage[Event]:
    page = await _keyset(session, select(Event).where(*event_conditions(flt)), Event.id, limit, before)
    return KeysetPage([row[0] for row in page.items], page.next_before)


async def get_event(session: AsyncSession, event_id: int) -> Event | None:
    """The row alone: replay and discard decide on its status (and then change it only by a
    conditional UPDATE, ``store/replays.py``, so a status read here may already be stale)."""
    return (await session.execute(select(Event).where(Event.id == event_id))).scalar_one_or_none()


@dataclass(frozen=True)
class EventDetail:
    event: Event
    steps: list[Step]
    dead_letter: DeadLetter | None  # the newest one: after a replay that failed again, the latest
    replays: list[Replay]
    keys: list[EventKey]
    anomalies: list[AnomalyFinding] = field(default_factory=list)  # flags and holds


async def load_event_detail(session: AsyncSession, event_id: int) -> EventDetail | None:
    """One event's whole story, read in the caller's session; each part in id order, the order
    things happened."""
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
    anomalies = (
        await session.execute(
            select(AnomalyFinding).where(AnomalyFinding.event_id == event_id).order_by(AnomalyFinding.id)
        )
    ).scalars()
    return EventDetail(event, list(steps), dead_letter, list(replays), list(keys), list(anomalies))


# -- dead letters ---------------------------------------------------------------------------------


def _dead_letter_conditions(flt: EventFilter, resolved: Resolved) -> list[ColumnElement[bool]]:
    """The event-level part of the filter on the event, and reason/error class on the dead
    letter row itself: for an open dead letter the two agree (the event is dead with that class),
    for a resolved one the event has moved on and only the row still says why it failed."""
    where = event_conditions(dataclasses.replace(flt, reason=None, error_class=None, status=()))
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
    before: int | None = None,
) -> KeysetPage[tuple[DeadLetter, Event]]:
    """Paged on the dead letter's id, not the event's: a replayed event that died again has
    several dead letters, each its own row of the list."""
    query = (
        select(DeadLetter, Event)
        .join(Event, Event.id == DeadLetter.event_id)
        .where(*_dead_letter_conditions(flt, resolved))
    )
    page = await _keyset(session, query, DeadLetter.id, limit, before)
    return KeysetPage([(row[0], row[1]) for row in page.items], page.next_before)


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
    before: int | None = None,
) -> KeysetPage[AuditEntry]:
    """Filters combine with AND; an empty one does not filter (the API passes what it got)."""
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
    page = await _keyset(session, select(AuditEntry).where(*where), AuditEntry.id, limit, before)
    return KeysetPage([row[0] for row in page.items], page.next_before)


async def failed_operations(session: AsyncSession, event_ids: Sequence[int]) -> dict[int, str]:
    """The call each open dead letter failed at (``OIS100MI/AddBatchHead``), where a step failed:
    the studio offers a replay only when a new mapping version sends that call differently."""
    if not event_ids:
        return {}
    rows = await session.execute(
        select(DeadLetter.event_id, Step.operation)
        .join(Step, Step.id == DeadLetter.failed_step_id)
        .where(DeadLetter.event_id.in_(list(event_ids)), DeadLetter.resolved_at.is_(None))
    )
    return {event_id: operation for event_id, operation in rows.all()}
