"""Retention: personal data leaves the store on a schedule; the ids that deduplicate stay longer.

Personal data (names, addresses, emails of customers and contacts) lives in event payloads, in
the requests and responses of steps, in ``bng_state`` (echo suppression's copy of what BNG
holds), in the payload copies of edited replays, and in the before/after copies of the audit
log. What is kept, and for how long (docs/alerts-and-retention.md):

* after ``M3BNG_RETENTION_PAYLOAD_DAYS`` (from when the event finished): the payload of a done,
  skipped or discarded event becomes NULL (its SHA-256 stays in ``payload_hash``, ``purged_at``
  says when); its steps are deleted; its replays lose their payload copies; nested values leave
  its checkpoint (the M3 keys and progress flags stay: they are business keys, not personal
  data). ``bng_state`` rows not updated since the cutoff are deleted; audit entries older than
  the cutoff keep who, what, when and why, and lose their before/after copies;
* after ``M3BNG_RETENTION_DEAD_LETTER_DAYS``: the same for events still dead (unresolved dead
  letters), which are kept longer so that there is time to fix and replay them;
* after ``M3BNG_RETENTION_KEY_DAYS``: the event rows themselves go (ids, business keys, hashes,
  dead letters, business-key index, ION message ids, by foreign-key cascade). Until then a
  re-sent webhook or BOD with the same id is recognised as a duplicate, which is why the design
  keeps (source, external id) unique "for the whole retention period".

Open events (pending, processing) are never touched, however old. Work goes in batches of
``BATCH`` rows, each its own short transaction, so a first purge of a large store never holds
long locks; on PostgreSQL rows another transaction holds are skipped (``SKIP LOCKED``) and
picked up by the next run. A dry run counts with the same conditions and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.ops.filters import FilterError
from m3bng.ops.keys import normalise
from m3bng.ops.scheduler import ScheduledJob
from m3bng.store import audit
from m3bng.store.models import (
    OPEN_STATUSES,
    AuditEntry,
    BngState,
    Event,
    EventKey,
    EventStatus,
    Replay,
    Step,
)
from m3bng.store.queries import utcnow

log = structlog.get_logger(__name__)

JOB = "retention"
BATCH = 500
FINISHED = (EventStatus.DONE.value, EventStatus.SKIPPED.value, EventStatus.DISCARDED.value)
SYSTEM_ACTOR = "retention"

_EVENTS = typing.cast(Table, Event.__table__)
_PURGE_PAYLOAD = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("b_id"), _EVENTS.c.purged_at.is_(None))
    .values(
        payload=null(),  # SQL NULL, not JSON null
        payload_hash=bindparam("b_hash"),
        checkpoint=bindparam("b_checkpoint", type_=_EVENTS.c.checkpoint.type),
        purged_at=bindparam("b_now", type_=_EVENTS.c.purged_at.type),
    )
)


@dataclass
class PurgeCounts:
    """What a purge removed (or, in a dry run, would remove)."""

    payloads: int = 0  # finished events whose payload was purged
    dead_letter_payloads: int = 0  # events still dead whose payload was purged
    steps: int = 0  # step rows (requests and responses) deleted with those payloads
    replays: int = 0  # replay rows whose payload copies were cleared
    bng_state: int = 0  # bng_state rows deleted
    audit_entries: int = 0  # audit entries whose before/after copies were cleared
    events: int = 0  # event rows deleted after the key retention (with keys and dead letters)

    def add(self, other: PurgeCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


@dataclass(frozen=True)
class Cutoffs:
    payloads: datetime
    dead_letters: datetime
    keys: datetime

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Cutoffs:
        return cls(
            payloads=now - timedelta(days=settings.retention_payload_days),
            dead_letters=now - timedelta(days=settings.retention_dead_letter_days),
            keys=now - timedelta(days=settings.retention_key_days),
        )


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces): the same digest the audit log uses,
    so a purged payload can still be matched against a copy someone holds."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scrub_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """Keep the scalar entries (ORNO, CUNO, flags, counters); drop nested structures, the only
    place a flow could have kept more than a key."""
    if not isinstance(checkpoint, dict):
        return {}
    return {k: v for k, v in checkpoint.items() if v is None or isinstance(v, (str, int, float, bool))}


async def purge(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
) -> PurgeCounts:
    """Apply the retention settings once. Safe to run at any time and from several processes."""
    now = now or utcnow()
    cut = Cutoffs.from_settings(settings, now)
    counts = PurgeCounts()
    # Event rows past the key retention go first: their payloads need no separate purge.
    deletable = and_(Event.status.not_in(OPEN_STATUSES), Event.finished_at < cut.keys)
    counts.events = await _delete_events(sessions, deletable, batch, dry_run)
    kept = Event.finished_at >= cut.keys
    finished = (Event.status.in_(FINISHED), Event.finished_at < cut.payloads, kept)
    counts.payloads, steps, replays = await _purge_payloads(sessions, finished, now, batch, dry_run)
    dead = (Event.status == EventStatus.DEAD.value, Event.finished_at < cut.dead_letters, kept)
    counts.dead_letter_payloads, more_steps, more_replays = await _purge_payloads(
        sessions, dead, now, batch, dry_run
    )
    counts.steps, counts.replays = steps + more_steps, replays + more_replays
    counts.bng_state = await _delete_bng_state(sessions, BngState.updated_at < cut.payloads, batch, dry_run)
    counts.audit_entries = await _clear_audit(sessions, AuditEntry.at < cut.payloads, batch, dry_run)
    return counts


@dataclass(frozen=True)
class EraseResult:
    matched: int  # events about this business key
    open: int  # of them pending or processing: not erased now (run again when they finished)
    counts: PurgeCounts


async def erase(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> EraseResult:
    """Purge the personal data of every event about one business key (an erasure request).

    The events are found as "where is X" finds them (``event_keys``: BNG ids, M3 numbers, the
    business key). Their payloads, steps and replay copies, the ``bng_state`` rows they wrote or
    that have this BNG id, and the audit copies about them go now, whatever their age. The rows
    themselves stay until the key retention, so deduplication still holds.
    """
    now = now or utcnow()
    value = normalise(key)
    if value is None:
        raise FilterError("q: give the business key to erase (a BNG id, M3 number, BODID ...)")
    async with sessions() as session:
        matched = list(
            (
                await session.execute(
                    select(Event.id, Event.status)
                    .where(
                        or_(
                            Event.id.in_(select(EventKey.event_id).where(EventKey.value == value)),
                            func.lower(Event.business_key) == value,
                        )
                    )
                    .order_by(Event.id)
                )
            ).all()
        )
    ids = [row.id for row in matched if row.status not in OPEN_STATUSES]
    counts = PurgeCounts()
    if ids:
        where = (Event.id.in_(ids), Event.status.not_in(OPEN_STATUSES))
        purged, counts.steps, counts.replays = await _purge_payloads(sessions, where, now, BATCH, dry_run)
        counts.payloads = purged
        counts.bng_state = await _delete_bng_state(
            sessions, or_(BngState.event_id.in_(ids), func.lower(BngState.bng_id) == value), BATCH, dry_run
        )
        about = and_(AuditEntry.target_type == "event", AuditEntry.target_id.in_([str(i) for i in ids]))
        counts.audit_entries = await _clear_audit(sessions, about, BATCH, dry_run)
    return EraseResult(len(matched), len(matched) - len(ids), counts)


async def record_run(
    sessions: async_sessionmaker[AsyncSession], *, actor: str, action: str, target: str, after: Any
) -> None:
    """The audit entry of a purge or erasure: counts only (the purge ran in many transactions,
    so the record comes after them, with what was actually done)."""
    async with sessions.begin() as session:
        await audit.record(
            session, actor=actor, action=action, target_type="retention", target_id=target, after=after
        )


class Retention:
    """The scheduled purge: every ``M3BNG_RETENTION_RUN_SECONDS`` in the process holding the lease."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings, self.sessions = settings, sessions

    def job(self) -> ScheduledJob | None:
        if not self.settings.retention_run_seconds:
            return None
        return ScheduledJob(JOB, self.settings.retention_run_seconds, self.sessions, self.run_once)

    async def run_once(self) -> PurgeCounts:
        counts = await purge(self.sessions, self.settings)
        log.info("retention.purged", **counts.as_dict())
        if counts.total:
            await record_run(
                self.sessions,
                actor=SYSTEM_ACTOR,
                action="retention.purge",
                target="scheduled",
                after=counts.as_dict(),
            )
        return counts


# --- the batched statements ------------------------------------------------------------------


def _has_value(column: Any) -> ColumnElement[bool]:
    """A JSON column holding something: neither SQL NULL nor JSON null (both databases)."""
    return cast(column, Text) != "null"


def _rowcount(result: Any) -> int:
    return int(typing.cast(CursorResult[Any], result).rowcount)


async def _count(sessions: async_sessionmaker[AsyncSession], query: Select[Any]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one())


async def _purge_payloads(
    sessions: async_sessionmaker[AsyncSession],
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    batch: int,
    dry_run: bool,
) -> tuple[int, int, int]:
    """(events, steps, replays) purged: payload to NULL with its hash kept, steps deleted,
    replay copies cleared."""
    conditions = (*where, Event.purged_at.is_(None))
    replay_copies = or_(_has_value(Replay.edited_payload), _has_value(Replay.previous_payload))
    if dry_run:
        chosen = select(Event.id).where(*conditions)
        return (
            await _count(sessions, chosen),
            await _count(sessions, select(Step.id).where(Step.event_id.in_(chosen))),
            await _count(sessions, select(Replay.id).where(Replay.event_id.in_(chosen), replay_copies)),
        )
    events = steps = replays = 0
    while True:
        async with sessions.begin() as session:
            rows = (
                await session.execute(
                    select(Event.id, Event.payload, Event.checkpoint)
                    .where(*conditions)
                    .order_by(Event.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                break
            ids = [row.id for row in rows]
            steps += _rowcount(await session.execute(delete(Step).where(Step.event_id.in_(ids))))
            replays += _rowcount(
                await session.execute(
                    update(Replay)
                    .where(Replay.event_id.in_(ids), replay_copies)
                    .values(edited_payload=null(), previous_payload=null())
                )
            )
            await session.execute(
                _PURGE_PAYLOAD,
                [
                    {
                        "b_id": row.id,
                        "b_hash": payload_hash(row.payload),
                        "b_checkpoint": scrub_checkpoint(row.checkpoint),
                        "b_now": now,
                    }
                    for row in rows
                ],
            )
            events += len(rows)
        if len(rows) < batch:
            break
    return events, steps, replays


async def _delete_events(
    sessions: async_sessionmaker[AsyncSession], where: ColumnElement[bool], batch: int, dry_run: bool
) -> int:
    """Delete event rows; steps, dead letters, replays, business keys and ION message ids go
    with them (ON DELETE CASCADE), document versions and BNG state keep their row (SET NULL)."""
    return await _batched(sessions, select(Event.id).where(where), Event.id, delete(Event), batch, dry_run)


async def _delete_bng_state(
    sessions: async_sessionmaker[AsyncSession], where: ColumnElement[bool], batch: int, dry_run: bool
) -> int:
    return await _batched(
        sessions, select(BngState.id).where(where), BngState.id, delete(BngState), batch, dry_run
    )


async def _clear_audit(
    sessions: async_sessionmaker[AsyncSession], where: ColumnElement[bool], batch: int, dry_run: bool
) -> int:
    copies = or_(_has_value(AuditEntry.before), _has_value(AuditEntry.after))
    return await _batched(
        sessions,
        select(AuditEntry.id).where(where, copies),
        AuditEntry.id,
        update(AuditEntry).values(before=null(), after=null()),
        batch,
        dry_run,
    )


async def _batched(
    sessions: async_sessionmaker[AsyncSession],
    chosen: Select[Any],
    id_column: Any,
    statement: Any,
    batch: int,
    dry_run: bool,
) -> int:
    """Apply ``statement`` to the rows ``chosen`` selects, ``batch`` ids per transaction."""
    if dry_run:
        return await _count(sessions, chosen)
    done = 0
    while True:
        async with sessions.begin() as session:
            ids = list(
                (
                    await session.execute(
                        chosen.order_by(id_column).limit(batch).with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not ids:
                break
            await session.execute(statement.where(id_column.in_(ids)))
            done += len(ids)
        if len(ids) < batch:
            break
    return done
