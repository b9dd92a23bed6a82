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

from sqlalchemy import Table, select, update
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


async def known_digests(
    session: AsyncSession, entity: str, keys: Sequence[str], *, instance: str = DEFAULT_INSTANCE
) -> dict[str, str]:
    if not keys:
        return {}
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
) -> None:
    """The page's digests and the run's progress, in the caller's transaction (with the page's
    events): the unit a killed run restarts after."""
    now = utcnow()
    if digests:
        await session.execute(
            _PUT_RECORD[dialect_name(session)],
            [
                {"instance": instance, "entity": entity, "m3_key": key, "digest": digest, "synced_at": now}
                for key, digest in digests
            ],
        )
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run_id)
        .values(cursor=cursor, counts=counts, refusals=refusals, updated_at=now)
    )


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
