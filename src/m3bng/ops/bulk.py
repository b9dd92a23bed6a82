"""Bulk replay: every dead letter a filter matches, replayed in the background at a set rate.

Creating one freezes its set: the unresolved dead letters (events ``dead``) that match the
filter (``ops/filters.py``, the same filter the dead-letter list uses, so the dry-run count is
the list's count) and were dead-lettered up to ``cutoff``, the moment it was created. Events
that die later are not swept up by a bulk replay started earlier.

The runner walks that set in id order, a small batch at a time (``rate`` events per second),
with ``cursor`` as the high-water mark. One batch is one transaction that

1. renews the bulk row's lease *conditionally* (``status = 'running' AND lease_owner = me``):
   a cancelled bulk, or one another process has taken over, stops here;
2. reopens each event of the batch with the single replay's conditional UPDATE
   (``status = 'dead'``, ``ops/replay.reopen``), resolves its dead letter and writes its
   ``replays`` row (with ``bulk_id``);
3. advances the cursor and the ``replayed``/``skipped`` counters.

So a cancel, a crash or a second runner can never replay an event twice: the cursor and the
counters move in the same commit as the replays they count, a batch that does not commit
replays nothing, and an event no longer dead when reached (someone replayed or discarded it)
matches no row and counts as skipped. On PostgreSQL the conditional update of the bulk row in
step 1 locks it, so a cancel waits for a running batch (or the batch sees the cancel); SQLite
serialises writers. The statements, and why each is safe, are in ``m3bng.store.replays``; this
module groups them into transactions and decides the rate, the lease and when to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.inbox.ingest import Notifier
from m3bng.observability import metrics
from m3bng.ops.filters import EventFilter
from m3bng.ops.replay import MODES, InvalidReplay, ReplayConflict, ReplayNotFound, reopen
from m3bng.store import audit
from m3bng.store import replays as store
from m3bng.store.db import single_statement
from m3bng.store.models import BulkReplay, EventStatus
from m3bng.store.replays import CANCELLED, DONE, RUNNING
from m3bng.store.sql import utcnow

log = structlog.get_logger(__name__)

LEASE_SECONDS = 30.0
POLL_SECONDS = 0.5
MAX_BATCH = 100
MAX_FAILURES = 5
MAX_ERROR_CHARS = 2000
# Events per second a bulk replay may be given. The floor keeps a batch's pause (1/rate seconds)
# and the lease computed from it within what a timestamp can hold: a rate of 1e-300 once made
# the lease overflow and, worse, stopped the runner from taking any later bulk replay.
MIN_RATE, MAX_RATE = 0.01, 10_000.0


@dataclass(frozen=True)
class BulkView:
    """A bulk replay as the API shows it."""

    id: int
    status: str
    total: int
    replayed: int
    skipped: int
    mode: str
    rate: float
    filter: dict[str, Any]
    requested_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None

    @property
    def progress(self) -> float:
        """Share of the set reached (replayed or skipped), 0..1."""
        if self.total <= 0:
            return 1.0 if self.status == DONE else 0.0
        return min(1.0, (self.replayed + self.skipped) / self.total)

    @classmethod
    def of(cls, row: BulkReplay) -> BulkView:
        return cls(
            id=row.id,
            status=row.status,
            total=row.total,
            replayed=row.replayed,
            skipped=row.skipped,
            mode=row.mode,
            rate=row.rate,
            filter=dict(row.filter or {}),
            requested_by=row.requested_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            error=row.error,
        )


def dead_letter_filter(flt: EventFilter) -> EventFilter:
    """The filter as a bulk replay applies it: dead events only, whatever status was asked."""
    return replace(flt, status=(EventStatus.DEAD.value,))


async def count_matching(session: AsyncSession, flt: EventFilter, cutoff: datetime | None = None) -> int:
    """How many dead letters a bulk replay with this filter would replay now (the dry run)."""
    return await store.count_bulk_set(session, dead_letter_filter(flt), cutoff or utcnow())


def check_mode_and_rate(mode: str, rate: float | None, settings: Settings) -> float:
    if mode not in MODES:
        raise InvalidReplay(
            f"mode: must be one of {', '.join(MODES)}",
            code="invalid_mode",
            fields=[{"field": "mode", "problem": "unknown mode"}],
        )
    chosen = settings.ops_replay_rate if rate is None else rate
    if not (MIN_RATE <= chosen <= MAX_RATE):
        raise InvalidReplay(
            f"rate: events per second, from {MIN_RATE:g} (one every {1 / MIN_RATE:g} s) to {MAX_RATE:g}",
            code="invalid_rate",
            fields=[{"field": "rate", "problem": "out of range"}],
        )
    return float(chosen)


async def start_bulk(
    sessions: async_sessionmaker[AsyncSession],
    flt: EventFilter,
    *,
    mode: str,
    rate: float,
    actor: str,
    reason: str | None = None,
) -> BulkView:
    """Create a running bulk replay (the runner picks it up within a poll interval)."""
    async with sessions.begin() as session:
        now = utcnow()
        total = await count_matching(session, flt, now)
        stored_filter = dead_letter_filter(flt).to_json()
        bulk_id = await store.create_bulk(
            session, filter=stored_filter, mode=mode, requested_by=actor, total=total, rate=rate, now=now
        )
        await audit.record(
            session,
            actor=actor,
            action="bulk_replay",
            target_type="bulk_replay",
            target_id=bulk_id,
            after={
                "filter": stored_filter,
                "mode": mode,
                "rate": rate,
                "total": total,
                "cutoff": now.isoformat(),
            },
            detail=reason,
        )
        row = await store.get_bulk(session, bulk_id)
        assert row is not None
        return BulkView.of(row)


async def get_bulk(sessions: async_sessionmaker[AsyncSession], bulk_id: int) -> BulkView:
    async with sessions() as session:
        row = await store.get_bulk(session, bulk_id)
        if row is None:
            raise ReplayNotFound(f"bulk replay {bulk_id} does not exist")
        return BulkView.of(row)


async def list_bulks(
    sessions: async_sessionmaker[AsyncSession], *, limit: int, before_id: int | None = None
) -> list[BulkView]:
    """Newest first; ``before_id`` pages on (keyset)."""
    async with sessions() as session:
        return [BulkView.of(row) for row in await store.list_bulks(session, limit=limit, before_id=before_id)]


async def cancel_bulk(
    sessions: async_sessionmaker[AsyncSession], bulk_id: int, *, actor: str, reason: str | None = None
) -> BulkView:
    """Stop a running bulk replay. Events already replayed stay replayed; the rest stay dead."""
    async with sessions.begin() as session:
        counts = await store.cancel_bulk(session, bulk_id, now=utcnow())
        if counts is None:
            row = await store.get_bulk(session, bulk_id)
            if row is None:
                raise ReplayNotFound(f"bulk replay {bulk_id} does not exist")
            raise ReplayConflict(f"bulk replay {bulk_id} is already {row.status}", code="already_finished")
        await audit.record(
            session,
            actor=actor,
            action="bulk_replay_cancel",
            target_type="bulk_replay",
            target_id=bulk_id,
            before={"status": RUNNING},
            after={
                "status": CANCELLED,
                "replayed": counts.replayed,
                "skipped": counts.skipped,
                "total": counts.total,
            },
            detail=reason,
        )
    return await get_bulk(sessions, bulk_id)


# -- the runner ---------------------------------------------------------------------------------


def batch_plan(rate: float) -> tuple[int, float]:
    """(events per batch, seconds per batch) for a rate: about one batch a second, never a burst
    of more than ``MAX_BATCH``, and one event every ``1/rate`` seconds for rates below one."""
    size = max(1, min(MAX_BATCH, math.floor(rate)))
    return size, size / rate


@dataclass(frozen=True)
class BatchOutcome:
    replayed: int
    skipped: int
    finished: bool  # nothing left (marked done)
    stopped: bool  # cancelled, or the lease is no longer ours
    interval: float = 1.0  # seconds this batch may take at the bulk's rate


class BulkRunner:
    """Runs the running bulk replays this process holds the lease of."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        notifier: Notifier | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.settings, self.sessions, self.notifier = settings, sessions, notifier
        self.owner = owner or f"bulk:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        log.info("bulk_replay.runner_started", owner=self.owner)
        try:
            while not stop.is_set():
                self._prune()
                try:
                    claimable = await self._claimable()
                except Exception as exc:  # database blip: keep polling
                    log.warning("bulk_replay.poll_failed", error=repr(exc)[:MAX_ERROR_CHARS])
                    claimable = []
                for bulk_id in claimable:
                    if bulk_id in self._tasks:
                        continue
                    try:  # one bulk that cannot be taken must not hold up the ones after it
                        taken = await self.take(bulk_id)
                    except Exception as exc:
                        log.warning("bulk_replay.take_failed", bulk_id=bulk_id, error=repr(exc)[:500])
                        continue
                    if taken:
                        self._tasks[bulk_id] = asyncio.create_task(
                            self.run_one(bulk_id, stop), name=f"bulk-replay-{bulk_id}"
                        )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            log.info("bulk_replay.runner_stopped", owner=self.owner)

    def _prune(self) -> None:
        for bulk_id, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[bulk_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("bulk_replay.task_crashed", bulk_id=bulk_id, error=repr(task.exception())[:500])

    async def _claimable(self) -> list[int]:
        now = utcnow()
        async with single_statement(self.sessions) as session:
            return await store.claimable_bulks(session, self.owner, now=now)

    async def take(self, bulk_id: int) -> bool:
        """Take the bulk's lease when it is free, ours or expired; of several processes asking at
        once exactly one wins (``store.replays.take_bulk_lease``)."""
        now = utcnow()
        async with self.sessions.begin() as session:
            rate = await store.bulk_rate(session, bulk_id)
            return await store.take_bulk_lease(
                session, bulk_id, self.owner, now=now, expires_at=now + self._lease(rate or 1.0)
            )

    @staticmethod
    def _lease(rate: float) -> timedelta:
        return timedelta(seconds=max(LEASE_SECONDS, 3 * batch_plan(max(rate, MIN_RATE))[1]))

    async def run_one(self, bulk_id: int, stop: asyncio.Event) -> None:
        """Batches until done, cancelled, the lease is lost or the process stops."""
        log.info("bulk_replay.started", bulk_id=bulk_id)
        failures = 0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                outcome = await self.run_batch(bulk_id)
            except Exception as exc:
                failures += 1
                log.warning(
                    "bulk_replay.batch_failed", bulk_id=bulk_id, attempt=failures, error=repr(exc)[:500]
                )
                if failures >= MAX_FAILURES:
                    await self._fail(bulk_id, exc)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(2.0**failures, 10.0))
                continue
            failures = 0
            if outcome.finished or outcome.stopped:
                log.info("bulk_replay.ended", bulk_id=bulk_id, finished=outcome.finished)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=max(0.0, outcome.interval - (loop.time() - started))
                )
        await self._release(bulk_id)

    async def run_batch(self, bulk_id: int) -> BatchOutcome:
        """One batch in one transaction (see the module docstring)."""
        async with self.sessions.begin() as session:
            now = utcnow()
            row = await store.renew_bulk_lease(session, bulk_id, self.owner, now=now)
            if row is None:  # cancelled, finished elsewhere, or our lease was taken over
                return BatchOutcome(0, 0, finished=False, stopped=True)
            size, interval = batch_plan(row.rate)
            flt = dead_letter_filter(EventFilter.from_json(row.filter))
            ids = await store.next_bulk_events(session, flt, cutoff=row.cutoff, after=row.cursor, limit=size)
            if not ids:
                # Events of the set that left it before being reached (replayed or discarded by
                # someone else) count as skipped, so progress ends at 100 %.
                skipped = max(row.skipped, row.total - row.replayed)
                await store.finish_bulk(session, bulk_id, self.owner, skipped=skipped, now=now)
                return BatchOutcome(0, 0, finished=True, stopped=False)
            dead = EventStatus.DEAD.value
            reopened = await reopen(session, ids, from_status=dead, mode=row.mode)
            await store.resolve_dead_letters(session, reopened, "replayed")
            await store.record_bulk_replays(
                session,
                bulk_id,
                reopened,
                mode=row.mode,
                requested_by=row.requested_by,
                from_status=dead,
                now=now,
            )
            skipped_now = len(ids) - len(reopened)
            await store.advance_bulk(
                session,
                bulk_id,
                cursor=max(ids),
                replayed=len(reopened),
                skipped=skipped_now,
                lease_expires_at=now + self._lease(row.rate),
            )
        if reopened:
            metrics.REPLAYS.labels(row.mode, "bulk").inc(len(reopened))
            if self.notifier is not None:
                self.notifier.notify()
        return BatchOutcome(len(reopened), skipped_now, finished=False, stopped=False, interval=interval)

    async def _release(self, bulk_id: int) -> None:
        """Hand the lease back on shutdown, so another process continues at once."""
        with contextlib.suppress(Exception):
            async with self.sessions.begin() as session:
                await store.release_bulk_lease(session, bulk_id, self.owner)

    async def _fail(self, bulk_id: int, exc: Exception) -> None:
        log.error("bulk_replay.failed", bulk_id=bulk_id, error=repr(exc)[:500])
        with contextlib.suppress(Exception):
            async with self.sessions.begin() as session:
                await store.fail_bulk(
                    session, bulk_id, self.owner, error=repr(exc)[:MAX_ERROR_CHARS], now=utcnow()
                )


async def run_bulk_replays(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier | None,
    stop: asyncio.Event,
) -> None:
    """The background loop: runs every running bulk replay whose lease this process gets."""
    await BulkRunner(settings, sessions, notifier).run(stop)
