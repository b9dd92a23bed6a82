"""The writes and reads of replay, discard and bulk replay, each with why it is safe when two
people (or two processes) act on the same rows at once. What a replay means, and which
statements one transaction groups, is ``m3bng.ops.replay`` and ``m3bng.ops.bulk``.

Nothing here reads a status and then writes on the strength of it: every state change is one
conditional UPDATE whose WHERE repeats the state the caller saw (the event's status, the bulk
row's status and lease owner). On PostgreSQL a concurrent writer of the same row is waited for
and the condition re-checked on the committed row, so of two writers exactly one matches and the
other sees no row; SQLite serialises writers. Callers turn "no row" into a refusal, never into a
second effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import BulkReplay, DeadLetter, Event, EventStatus, Replay
from m3bng.store.search import EventFilter, event_conditions
from m3bng.store.sql import utcnow

# A bulk replay's life: running until its set is walked (done), stopped (cancelled), or it failed.
RUNNING, CANCELLED, DONE, FAILED = "running", "cancelled", "done", "failed"
MAX_ACTOR = 128  # replays.requested_by, bulk_replays.requested_by


# -- one event --------------------------------------------------------------------------------------


async def event_status(session: AsyncSession, event_id: int) -> str:
    """The status as committed now, asked after a conditional update matched nothing: a fresh
    statement sees what the other writer committed, while an ORM object loaded before still holds
    the status read then. Used only to say why a replay was refused."""
    return (await session.execute(select(Event.status).where(Event.id == event_id))).scalar_one()


async def reopen_events(
    session: AsyncSession,
    event_ids: Sequence[int],
    *,
    from_status: str,
    restart: bool,
    payload: dict[str, Any] | None = None,
    business_key: str | None = None,
) -> list[int]:
    """Put closed events back in line, at once, with a fresh retry budget; returns those reopened.

    ``restart`` drops the checkpoint and the recorded mapping version (a run from the top);
    ``payload`` (an edit) replaces the payload and, with it, the ``business_key`` computed from
    it, even when that is None. One UPDATE conditional on the status the caller saw: a row that
    changed meanwhile (replayed by someone else, claimed, discarded) is not matched and not
    reopened, so concurrent replays of one event have one effect. The single replay and the bulk
    runner both reopen through here.
    """
    if not event_ids:
        return []
    now = utcnow()
    values: dict[str, Any] = {
        "status": EventStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": None,
        "last_error": None,
        "error_class": None,
        "updated_at": now,
    }
    if restart:
        values["checkpoint"] = {}
        values["mapping_hash"] = None
    if payload is not None:
        values["payload"] = payload
        values["business_key"] = business_key
    result = await session.execute(
        update(Event)
        .where(Event.id.in_(list(event_ids)), Event.status == from_status)
        .values(**values)
        .returning(Event.id)
    )
    return sorted(result.scalars())


async def resolve_dead_letters(session: AsyncSession, event_ids: Sequence[int], resolution: str) -> None:
    """Only the open ones: a dead letter resolved before keeps the resolution it was given. Call
    it with the ids a conditional update actually changed, in that update's transaction, so a
    dead letter is resolved exactly when its event left ``dead``."""
    if event_ids:
        await session.execute(
            update(DeadLetter)
            .where(DeadLetter.event_id.in_(list(event_ids)), DeadLetter.resolved_at.is_(None))
            .values(resolved_at=utcnow(), resolution=resolution)
        )


def _replay_row(
    event_id: int, *, mode: str, requested_by: str, from_status: str, created_at: datetime
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "mode": mode,
        "requested_by": requested_by[:MAX_ACTOR],
        "from_status": from_status,
        "created_at": created_at,
    }


async def record_replay(
    session: AsyncSession,
    event_id: int,
    *,
    mode: str,
    requested_by: str,
    from_status: str,
    edited_payload: dict[str, Any] | None = None,
    previous_payload: Any = None,
) -> int:
    """The ``replays`` row of one replay, returning its id. Written in the reopening transaction,
    so there is a row for every replay that happened and none for one that did not; an edit keeps
    the payload it replaced, which the event row no longer has."""
    row = _replay_row(
        event_id, mode=mode, requested_by=requested_by, from_status=from_status, created_at=utcnow()
    )
    statement = (
        insert(Replay)
        .values(**row, edited_payload=edited_payload, previous_payload=previous_payload)
        .returning(Replay.id)
    )
    return int((await session.execute(statement)).scalar_one())


async def discard_event(session: AsyncSession, event_id: int, *, from_status: str) -> bool:
    """Close the event as discarded; False when it is no longer in ``from_status``. The status
    condition is what stops a discard from overwriting a worker that claimed the event since it
    was read (its outcome would then overwrite the discard's, or the other way round)."""
    now = utcnow()
    result = await session.execute(
        update(Event)
        .where(Event.id == event_id, Event.status == from_status)
        .values(
            status=EventStatus.DISCARDED.value,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        .returning(Event.id)
    )
    return result.scalar_one_or_none() is not None


# -- bulk replay: the set -----------------------------------------------------------------------


def _bulk_set(flt: EventFilter, cutoff: datetime) -> list[ColumnElement[bool]]:
    """Events of a bulk replay's set: ``flt`` (restricted to dead events by the caller), with an
    unresolved dead letter created up to the cutoff. The cutoff freezes the set: events that die
    after the bulk started are not swept up by it."""
    return [
        *event_conditions(flt),
        exists(
            select(DeadLetter.id).where(
                DeadLetter.event_id == Event.id,
                DeadLetter.resolved_at.is_(None),
                DeadLetter.created_at <= cutoff,
            )
        ),
    ]


async def count_bulk_set(session: AsyncSession, flt: EventFilter, cutoff: datetime) -> int:
    """Counted with the same conditions the runner walks, so the dry run, ``total`` and what is
    replayed agree (short of events that leave the set meanwhile, counted as skipped)."""
    statement = select(func.count()).select_from(Event).where(*_bulk_set(flt, cutoff))
    return int((await session.execute(statement)).scalar_one())


async def next_bulk_events(
    session: AsyncSession, flt: EventFilter, *, cutoff: datetime, after: int, limit: int
) -> list[int]:
    """The next ids of the set above the cursor, in id order: the cursor is a high-water mark, so
    a batch that did not commit leaves it (and its events) where they were."""
    statement = (
        select(Event.id).where(*_bulk_set(flt, cutoff), Event.id > after).order_by(Event.id).limit(limit)
    )
    return list((await session.execute(statement)).scalars())


# -- bulk replay: the row -------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkCounts:
    replayed: int
    skipped: int
    total: int


@dataclass(frozen=True)
class LeasedBulk:
    """What a batch needs of its bulk row, read by the same statement that renewed the lease."""

    filter: dict[str, Any]
    mode: str
    cursor: int
    cutoff: datetime
    rate: float
    total: int
    replayed: int
    skipped: int
    requested_by: str


async def create_bulk(
    session: AsyncSession,
    *,
    filter: dict[str, Any],
    mode: str,
    requested_by: str,
    total: int,
    rate: float,
    now: datetime,
) -> int:
    """A running bulk replay whose set is frozen at ``now`` (its cutoff), returning its id. No
    lease owner: any runner may take it on its next poll."""
    statement = (
        insert(BulkReplay)
        .values(
            filter=filter,
            mode=mode,
            requested_by=requested_by[:MAX_ACTOR],
            status=RUNNING,
            total=total,
            replayed=0,
            skipped=0,
            cursor=0,
            rate=rate,
            cutoff=now,
            created_at=now,
            updated_at=now,
        )
        .returning(BulkReplay.id)
    )
    return int((await session.execute(statement)).scalar_one())


async def get_bulk(session: AsyncSession, bulk_id: int) -> BulkReplay | None:
    return await session.get(BulkReplay, bulk_id)


async def list_bulks(session: AsyncSession, *, limit: int, before_id: int | None = None) -> list[BulkReplay]:
    """Newest first, keyset on the id, so a bulk started while someone pages never shifts a page."""
    statement = select(BulkReplay).order_by(BulkReplay.id.desc()).limit(limit)
    if before_id is not None:
        statement = statement.where(BulkReplay.id < before_id)
    return list((await session.execute(statement)).scalars())


async def cancel_bulk(session: AsyncSession, bulk_id: int, *, now: datetime) -> BulkCounts | None:
    """Stop a running bulk replay; its counters as the cancel left them, or None when it was not
    running (or does not exist).

    Conditional on ``running``. On PostgreSQL the UPDATE waits for the row lock a running batch
    holds (``renew_bulk_lease``) and then sees that batch's committed counters, so the counts
    returned are final and no batch replays anything after the cancel commits: the next one's
    lease renewal no longer matches.
    """
    result = await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id, BulkReplay.status == RUNNING)
        .values(status=CANCELLED, finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None)
        .returning(BulkReplay.replayed, BulkReplay.skipped, BulkReplay.total)
    )
    counts = result.one_or_none()
    return None if counts is None else BulkCounts(counts.replayed, counts.skipped, counts.total)


# -- bulk replay: the runner's lease ------------------------------------------------------------------


def _lease_free(owner: str, now: datetime) -> ColumnElement[bool]:
    """Nobody's, already ``owner``'s, or expired (its runner stopped or stalled)."""
    return or_(
        BulkReplay.lease_owner.is_(None),
        BulkReplay.lease_owner == owner,
        BulkReplay.lease_expires_at < now,
    )


async def claimable_bulks(session: AsyncSession, owner: str, *, now: datetime) -> list[int]:
    """Only a hint of what to try: taking one is ``take_bulk_lease``'s conditional update, which
    another runner may win in between."""
    statement = (
        select(BulkReplay.id)
        .where(BulkReplay.status == RUNNING, _lease_free(owner, now))
        .order_by(BulkReplay.id)
    )
    return list((await session.execute(statement)).scalars())


async def bulk_rate(session: AsyncSession, bulk_id: int) -> float | None:
    """The rate the lease's length is computed from, before taking it."""
    return (await session.execute(select(BulkReplay.rate).where(BulkReplay.id == bulk_id))).scalar()


async def take_bulk_lease(
    session: AsyncSession, bulk_id: int, owner: str, *, now: datetime, expires_at: datetime
) -> bool:
    """Take the bulk's lease when it is free, ours or expired: one conditional UPDATE, so of
    several processes asking at once exactly one wins (like the poller's scheduler lease)."""
    result = await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id, BulkReplay.status == RUNNING, _lease_free(owner, now))
        .values(lease_owner=owner, lease_expires_at=expires_at, updated_at=now)
        .returning(BulkReplay.id)
    )
    return result.scalar_one_or_none() is not None


async def renew_bulk_lease(
    session: AsyncSession, bulk_id: int, owner: str, *, now: datetime
) -> LeasedBulk | None:
    """A batch's first statement: None when the bulk was cancelled, finished elsewhere, or its
    lease taken over, and the batch must do nothing.

    Conditional on ``running`` and the lease owner, and on PostgreSQL it locks the bulk row until
    the batch commits: a cancel waits for the batch (and then sees its counters), or the batch
    sees the cancel and stops. The fields come from the same statement, so the batch works with
    the cursor and counters as committed by the batch before it.
    """
    row = (
        await session.execute(
            update(BulkReplay)
            .where(BulkReplay.id == bulk_id, BulkReplay.status == RUNNING, BulkReplay.lease_owner == owner)
            .values(updated_at=now)
            .returning(
                BulkReplay.filter,
                BulkReplay.mode,
                BulkReplay.cursor,
                BulkReplay.cutoff,
                BulkReplay.rate,
                BulkReplay.total,
                BulkReplay.replayed,
                BulkReplay.skipped,
                BulkReplay.requested_by,
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return LeasedBulk(
        filter=dict(row.filter or {}),
        mode=row.mode,
        cursor=row.cursor,
        cutoff=row.cutoff,
        rate=row.rate,
        total=row.total,
        replayed=row.replayed,
        skipped=row.skipped,
        requested_by=row.requested_by,
    )


async def record_bulk_replays(
    session: AsyncSession,
    bulk_id: int,
    event_ids: Sequence[int],
    *,
    mode: str,
    requested_by: str,
    from_status: str,
    now: datetime,
) -> None:
    """The ``replays`` rows of the events a batch reopened (pass only those), in the batch's
    transaction: one row per event actually replayed, tagged with the bulk."""
    if event_ids:
        rows = [
            {
                **_replay_row(
                    event_id, mode=mode, requested_by=requested_by, from_status=from_status, created_at=now
                ),
                "bulk_id": bulk_id,
            }
            for event_id in event_ids
        ]
        await session.execute(insert(Replay), rows)


async def advance_bulk(
    session: AsyncSession,
    bulk_id: int,
    *,
    cursor: int,
    replayed: int,
    skipped: int,
    lease_expires_at: datetime,
) -> None:
    """Move the high-water mark and add to the counters, in the transaction of the replays they
    count: a crash or a cancel can then never count a replay that did not happen, or replay an
    event twice. Increments in SQL, on the row ``renew_bulk_lease`` locked."""
    await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id)
        .values(
            cursor=cursor,
            replayed=BulkReplay.replayed + replayed,
            skipped=BulkReplay.skipped + skipped,
            lease_expires_at=lease_expires_at,
        )
    )


async def finish_bulk(
    session: AsyncSession, bulk_id: int, owner: str, *, skipped: int, now: datetime
) -> None:
    """Mark it done and free the lease; fenced by the lease owner, so a runner that lost the
    lease cannot close a bulk another one is walking."""
    await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id, BulkReplay.lease_owner == owner)
        .values(status=DONE, skipped=skipped, finished_at=now, lease_owner=None, lease_expires_at=None)
    )


async def release_bulk_lease(session: AsyncSession, bulk_id: int, owner: str) -> None:
    """Hand the lease back (on shutdown), so another process continues at once instead of after
    it expires; fenced, so a lease already taken over stays with its new owner."""
    await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id, BulkReplay.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


async def fail_bulk(session: AsyncSession, bulk_id: int, owner: str, *, error: str, now: datetime) -> None:
    """Give a running bulk up with the error; only while it is ours and running, so a cancel or
    another runner's progress is never overwritten by a failure."""
    await session.execute(
        update(BulkReplay)
        .where(BulkReplay.id == bulk_id, BulkReplay.lease_owner == owner, BulkReplay.status == RUNNING)
        .values(
            status=FAILED,
            error=error,
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
