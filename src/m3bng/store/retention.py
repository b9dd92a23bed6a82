"""The store side of retention (``ops/retention.py`` decides what goes when): batched purges of
payloads, steps and replay copies, deletion of old rows, and the reads of an erasure request.

Every write goes in batches of ``batch`` rows, each its own short transaction, so a first purge
of a large store never holds long locks. Each batch selects its rows ``FOR UPDATE SKIP
LOCKED``: on PostgreSQL, rows another transaction holds are skipped, not waited for, and picked
up by the next run (SQLite serialises the transactions instead). The conditions are checked
again by every batch, so a row that changed since the run began is judged as it is now. That
makes the purge safe to run at any time and from several processes. A dry run counts with the
same conditions and changes nothing.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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

from m3bng.store.models import (
    UNSETTLED_STATUSES,
    AuditEntry,
    BngState,
    Event,
    EventKey,
    OrderHistory,
    Replay,
    Step,
)

Sessions = async_sessionmaker[AsyncSession]
Digest = Callable[[Any], str]  # a payload's hash, kept in place of the payload
Scrub = Callable[[Any], dict[str, Any]]  # what of a checkpoint stays

_EVENTS = typing.cast(Table, Event.__table__)
# Built once, run as one executemany per batch: each row gets its own hash and checkpoint.
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


# --- erasure: what is about a business key ---------------------------------------------------


@dataclass(frozen=True)
class EventRef:
    id: int
    status: str


async def events_about(session: AsyncSession, key: str) -> list[EventRef]:
    """Every event about one normalised business key, as "where is X" finds them: through the
    ``event_keys`` index (BNG ids, M3 numbers, BODIDs) or by the event's own business key."""
    rows = await session.execute(
        select(Event.id, Event.status)
        .where(
            or_(
                Event.id.in_(select(EventKey.event_id).where(EventKey.value == key)),
                func.lower(Event.business_key) == key,
            )
        )
        .order_by(Event.id)
    )
    return [EventRef(row.id, row.status) for row in rows.all()]


# --- payloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgedPayloads:
    events: int  # events whose payload went
    steps: int  # their step rows deleted
    replays: int  # their replay rows whose payload copies were cleared


async def purge_finished_payloads(
    sessions: Sessions,
    *,
    statuses: Sequence[str],
    finished_before: datetime,
    finished_since: datetime,
    now: datetime,
    digest: Digest,
    scrub: Scrub,
    batch: int,
    dry_run: bool,
) -> PurgedPayloads:
    """Purge the payloads of events in ``statuses`` that finished in
    [``finished_since``, ``finished_before``) (older ones are for ``delete_finished_events``)."""
    where = (
        Event.status.in_(statuses),
        Event.finished_at < finished_before,
        Event.finished_at >= finished_since,
    )
    return await _purge_payloads(sessions, where, now, digest, scrub, batch, dry_run)


async def purge_event_payloads(
    sessions: Sessions,
    event_ids: Sequence[int],
    *,
    now: datetime,
    digest: Digest,
    scrub: Scrub,
    batch: int,
    dry_run: bool,
) -> PurgedPayloads:
    """Purge the payloads of these events, whatever their age, but never of an open or held one: the
    status is checked again in each batch, so an event a replay reopened since it was chosen
    keeps its payload."""
    where = (Event.id.in_(event_ids), Event.status.not_in(UNSETTLED_STATUSES))
    return await _purge_payloads(sessions, where, now, digest, scrub, batch, dry_run)


async def _purge_payloads(
    sessions: Sessions,
    where: Sequence[ColumnElement[bool]],
    now: datetime,
    digest: Digest,
    scrub: Scrub,
    batch: int,
    dry_run: bool,
) -> PurgedPayloads:
    """Payload to NULL with its ``digest`` kept and its checkpoint ``scrub``bed, steps deleted,
    replay copies cleared: all three for a batch of events in one transaction, so an event is
    never left half purged. ``purged_at IS NULL`` is part of the choice (and of the UPDATE), so a
    purged event is never purged twice, and its hash never replaced by the hash of NULL."""
    conditions = (*where, Event.purged_at.is_(None))
    replay_copies = or_(_has_value(Replay.edited_payload), _has_value(Replay.previous_payload))
    if dry_run:
        chosen = select(Event.id).where(*conditions)
        return PurgedPayloads(
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
                        "b_hash": digest(row.payload),
                        "b_checkpoint": scrub(row.checkpoint),
                        "b_now": now,
                    }
                    for row in rows
                ],
            )
            events += len(rows)
        if len(rows) < batch:
            break
    return PurgedPayloads(events, steps, replays)


# --- rows ------------------------------------------------------------------------------------


async def delete_finished_events(
    sessions: Sessions, *, finished_before: datetime, batch: int, dry_run: bool
) -> int:
    """Delete the rows of events that are not open and finished before ``finished_before``;
    steps, dead letters, replays, business keys and ION message ids go with them (ON DELETE
    CASCADE), document versions and BNG state keep their row (SET NULL)."""
    where = and_(Event.status.not_in(UNSETTLED_STATUSES), Event.finished_at < finished_before)
    return await _batched(sessions, select(Event.id).where(where), Event.id, delete(Event), batch, dry_run)


async def delete_stale_bng_state(
    sessions: Sessions, *, updated_before: datetime, batch: int, dry_run: bool
) -> int:
    """Delete ``bng_state`` rows (echo suppression's copies of what BNG holds) not updated since
    ``updated_before``."""
    return await _delete_bng_state(sessions, BngState.updated_at < updated_before, batch, dry_run)


async def delete_bng_state_about(
    sessions: Sessions, *, event_ids: Sequence[int], bng_id: str, batch: int, dry_run: bool
) -> int:
    """Delete the ``bng_state`` rows these events wrote, and those of this BNG id (compared
    case-folded, as business keys are normalised), whatever their age."""
    where = or_(BngState.event_id.in_(event_ids), func.lower(BngState.bng_id) == bng_id)
    return await _delete_bng_state(sessions, where, batch, dry_run)


async def _delete_bng_state(sessions: Sessions, where: ColumnElement[bool], batch: int, dry_run: bool) -> int:
    return await _batched(
        sessions, select(BngState.id).where(where), BngState.id, delete(BngState), batch, dry_run
    )


async def delete_old_order_history(sessions: Sessions, *, before: datetime, batch: int, dry_run: bool) -> int:
    """Delete the anomaly rules' history rows (``order_history``) written before ``before``."""
    return await _batched(
        sessions,
        select(OrderHistory.id).where(OrderHistory.at < before),
        OrderHistory.id,
        delete(OrderHistory),
        batch,
        dry_run,
    )


async def clear_old_audit_copies(sessions: Sessions, *, before: datetime, batch: int, dry_run: bool) -> int:
    """Clear the before/after copies of audit entries older than ``before``; who, what, when and
    why stay."""
    return await _clear_audit(sessions, AuditEntry.at < before, batch, dry_run)


async def clear_event_audit_copies(
    sessions: Sessions, event_ids: Sequence[int], *, batch: int, dry_run: bool
) -> int:
    """Clear the before/after copies of the audit entries about these events, whatever their age."""
    about = and_(AuditEntry.target_type == "event", AuditEntry.target_id.in_([str(i) for i in event_ids]))
    return await _clear_audit(sessions, about, batch, dry_run)


async def _clear_audit(sessions: Sessions, where: ColumnElement[bool], batch: int, dry_run: bool) -> int:
    """Only entries that still hold a copy are chosen, so a run after a run clears nothing."""
    copies = or_(_has_value(AuditEntry.before), _has_value(AuditEntry.after))
    return await _batched(
        sessions,
        select(AuditEntry.id).where(where, copies),
        AuditEntry.id,
        update(AuditEntry).values(before=null(), after=null()),
        batch,
        dry_run,
    )


# --- the batching ----------------------------------------------------------------------------


def _has_value(column: Any) -> ColumnElement[bool]:
    """A JSON column holding something: neither SQL NULL nor JSON null (both databases)."""
    return cast(column, Text) != "null"


def _rowcount(result: Any) -> int:
    return int(typing.cast(CursorResult[Any], result).rowcount)


async def _count(sessions: Sessions, query: Select[Any]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one())


async def _batched(
    sessions: Sessions,
    chosen: Select[Any],
    id_column: Any,
    statement: Any,
    batch: int,
    dry_run: bool,
) -> int:
    """Apply ``statement`` to the rows ``chosen`` selects, ``batch`` ids per transaction (the
    ids locked ``SKIP LOCKED``, see the module docstring), until a batch comes back short."""
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
