"""The initial load's memory (``m3bng sync``): the digest of each object last enqueued (keyed by
its source's key: an M3 key, or BNG's id for ``customers:m3``, the load into M3), and the runs
with their cursor in the source's list.

A page is one transaction: its events, its digests and the run's new cursor are stored
together, so a run killed anywhere continues after the last page it stored and enqueues
nothing twice (the events are deduplicated by an id that contains the digest, as well).

Both are per BNG instance (instances.py): a load for one instance neither continues another's
run nor takes another's digests for its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import DEFAULT_INSTANCE, SyncRecord, SyncRun
from m3bng.store.sql import dialect_name, upserts, utcnow

_RECORDS = cast(Table, SyncRecord.__table__)
_PUT_RECORD = upserts(_RECORDS, ["instance", "entity", "m3_key"], ["digest", "synced_at"])
UNFINISHED = "running"


async def continue_or_start(
    session: AsyncSession,
    entity: str,
    target: str,
    *,
    dry_run: bool,
    restart: bool,
    counts: dict[str, Any],
    instance: str = DEFAULT_INSTANCE,
) -> SyncRun:
    """The unfinished run of this instance, entity and target (a real run, not a dry one), else a new run.
    ``restart`` closes an unfinished one and starts from the beginning of M3's list."""
    now = utcnow()
    unfinished = None
    if not dry_run:
        unfinished = await session.scalar(
            select(SyncRun)
            .where(
                SyncRun.instance == instance,
                SyncRun.entity == entity,
                SyncRun.target == target,
                SyncRun.dry_run.is_(False),
                SyncRun.status.in_([UNFINISHED, "failed"]),
            )
            .order_by(SyncRun.id.desc())
            .limit(1)
            .with_for_update()
        )
    if unfinished is not None and restart:
        unfinished.status, unfinished.finished_at, unfinished.updated_at = "abandoned", now, now
        unfinished = None
    if unfinished is not None:
        unfinished.status, unfinished.error, unfinished.updated_at = UNFINISHED, None, now
        return unfinished
    run = SyncRun(
        instance=instance,
        entity=entity,
        target=target,
        dry_run=dry_run,
        status=UNFINISHED,
        cursor=None,
        counts=counts,
        refusals=[],
        started_at=now,
        updated_at=now,
    )
    session.add(run)
    await session.flush()
    return run


# One primary-key lookup per key, whatever the planner believes of the table. ``m3_key IN (…)``
# (or ``= ANY``) is planned from the statistics, and a table the load is filling has stale ones
# (empty when last analyzed): PostgreSQL then scans every digest of the entity and compares it
# with each key of the page, 0.1-0.4 s a page of 500 by the 10,000th record (docs/benchmarks.md,
# initial load). The LIMIT keeps the lateral subquery from being flattened into that plan.
_PG_KNOWN = text(
    """
SELECT u.k, d.digest FROM unnest(CAST(:keys AS text[])) AS u(k)
CROSS JOIN LATERAL (
    SELECT r.digest FROM sync_records r
    WHERE r.instance = :instance AND r.entity = :entity AND r.m3_key = u.k LIMIT 1
) AS d
"""
)


# The page's digests as two arrays in one statement: SQLAlchemy's insert of the same 500 rows
# binds and processes every value of every row in Python.
_PG_PUT_RECORDS = text(
    """
INSERT INTO sync_records (instance, entity, m3_key, digest, synced_at)
SELECT :instance, :entity, u.k, u.d, CAST(:now AS timestamp)
FROM unnest(CAST(:keys AS text[]), CAST(:digests AS text[])) AS u(k, d)
ON CONFLICT (instance, entity, m3_key) DO UPDATE SET digest = excluded.digest, synced_at = excluded.synced_at
"""
)


async def known_digests(
    session: AsyncSession, entity: str, keys: Sequence[str], *, instance: str = DEFAULT_INSTANCE
) -> dict[str, str]:
    if not keys:
        return {}
    if dialect_name(session) == "postgresql":
        found = await session.execute(_PG_KNOWN, {"keys": list(keys), "instance": instance, "entity": entity})
        return {key: digest for key, digest in found}
    rows = await session.execute(
        select(SyncRecord.m3_key, SyncRecord.digest).where(
            SyncRecord.instance == instance, SyncRecord.entity == entity, SyncRecord.m3_key.in_(list(keys))
        )
    )
    return {key: digest for key, digest in rows}


async def store_page(
    session: AsyncSession,
    run_id: int,
    entity: str,
    *,
    digests: Sequence[tuple[str, str]],
    cursor: str | None,
    counts: dict[str, Any],
    refusals: list[dict[str, str]],
    instance: str = DEFAULT_INSTANCE,
    segments: list[dict[str, Any]] | None = None,
) -> None:
    """The page's digests and the run's progress, in the caller's transaction (with the page's
    events): the unit a killed run restarts after. ``segments``: the chain of key ranges read
    side by side (sync_ranges.py), each with its last stored key."""
    now = utcnow()
    if digests and dialect_name(session) == "postgresql":
        last = dict(digests)  # a key twice in one statement is an error; one after the other, the last wins
        await session.execute(
            _PG_PUT_RECORDS,
            {
                "instance": instance,
                "entity": entity,
                "now": now.replace(tzinfo=None),  # UTC, as UTCDateTime stores it
                "keys": list(last),
                "digests": list(last.values()),
            },
        )
    elif digests:
        await session.execute(
            _PUT_RECORD[dialect_name(session)],
            [
                {"instance": instance, "entity": entity, "m3_key": key, "digest": digest, "synced_at": now}
                for key, digest in digests
            ],
        )
    progress: dict[str, Any] = {"cursor": cursor, "counts": counts, "refusals": refusals, "updated_at": now}
    if segments is not None:
        progress["segments"] = segments
    await session.execute(update(SyncRun).where(SyncRun.id == run_id).values(**progress))


async def finish_run(
    session: AsyncSession,
    run_id: int,
    *,
    status: str,
    counts: dict[str, Any],
    refusals: list[dict[str, str]],
    error: str | None = None,
) -> None:
    now = utcnow()
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(
            status=status,
            counts=counts,
            refusals=refusals,
            error=error,
            updated_at=now,
            finished_at=None if status == UNFINISHED else now,
        )
    )


async def last_read_count(
    session: AsyncSession, entity: str, target: str, *, before: int, instance: str = DEFAULT_INSTANCE
) -> int | None:
    """How many records the newest complete run of this entity and target read: M3's lists give
    no total, so this is the only estimate of one (the progress line's ETA)."""
    counts = await session.scalar(
        select(SyncRun.counts)
        .where(SyncRun.instance == instance, SyncRun.entity == entity, SyncRun.target == target)
        .where(SyncRun.id < before)
        .where(SyncRun.status == "done")
        .order_by(SyncRun.id.desc())
        .limit(1)
    )
    read = counts.get("read") if isinstance(counts, dict) else None
    return int(read) if isinstance(read, int) and read > 0 else None


async def list_runs(
    session: AsyncSession, *, entity: str | None = None, instance: str | None = None, limit: int = 50
) -> list[SyncRun]:
    query = select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)
    if entity:
        query = query.where(SyncRun.entity == entity)
    if instance:
        query = query.where(SyncRun.instance == instance)
    return list((await session.scalars(query)).all())
