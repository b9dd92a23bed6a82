"""``GET /api/v1/stats``: throughput and errors over time, backlog and dead letters (the dashboard's
charts and counters).

This module chooses the buckets (a chart of at most ~56 points, aligned to multiples of the bucket
width) and shapes the answer; the counting is done in the database by ``store/stats.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.store import stats as store
from m3bng.store.models import OPEN_STATUSES, EventStatus
from m3bng.store.sql import utcnow

router = APIRouter(tags=["ops"])

MAX_HOURS = 168
# (window up to N hours, bucket seconds): at most ~56 points per chart, fine enough to see a spike.
BUCKET_STEPS = ((2, 300), (12, 900), (48, 3600), (MAX_HOURS, 3 * 3600))


def bucket_seconds_for(hours: int) -> int:
    return next(seconds for limit, seconds in BUCKET_STEPS if hours <= limit)


@dataclass(frozen=True)
class Window:
    """``count`` buckets of ``seconds`` each, aligned to multiples of ``seconds`` since the epoch;
    the last one holds ``now``."""

    start: datetime
    seconds: int
    count: int

    @classmethod
    def ending_at(cls, now: datetime, hours: int) -> Window:
        seconds = bucket_seconds_for(hours)
        count = -(-hours * 3600 // seconds)
        current = int(now.timestamp()) // seconds * seconds
        start = datetime.fromtimestamp(current - (count - 1) * seconds, UTC)
        return cls(start, seconds, count)


class Bucket(BaseModel):
    start: datetime
    received: int
    done: int
    dead: int
    skipped: int


class Stats(BaseModel):
    hours: int
    bucket_seconds: int
    buckets: list[Bucket]
    status_counts: dict[str, int]
    dead_letters: int
    backlog: int


async def compute_stats(
    session: AsyncSession, hours: int, now: datetime | None = None, *, instance: str | None = None
) -> Stats:
    window = Window.ending_at(now or utcnow(), hours)
    received = await store.received_per_bucket(session, window, instance)
    done = await store.finished_per_bucket(session, window, EventStatus.DONE, instance)
    skipped = await store.finished_per_bucket(session, window, EventStatus.SKIPPED, instance)
    dead = await store.dead_letters_per_bucket(session, window, instance)
    buckets = [
        Bucket(
            start=window.start + timedelta(seconds=i * window.seconds),
            received=received.get(i, 0),
            done=done.get(i, 0),
            dead=dead.get(i, 0),
            skipped=skipped.get(i, 0),
        )
        for i in range(window.count)
    ]
    status_counts = {status.value: 0 for status in EventStatus}
    status_counts.update(await store.count_by_status(session, instance))
    return Stats(
        hours=hours,
        bucket_seconds=window.seconds,
        buckets=buckets,
        status_counts=status_counts,
        dead_letters=await store.count_unresolved_dead_letters(session, instance),
        backlog=sum(status_counts.get(status, 0) for status in OPEN_STATUSES),
    )


@router.get("/stats", response_model=Stats)
async def stats(
    caller: ReadCaller,
    runtime: RuntimeDep,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="window, 1 to 168 hours")] = 24,
    instance: Annotated[
        str | None, Query(max_length=32, description="one BNG instance's events only (GET /instances)")
    ] = None,
) -> Stats:
    async with runtime.sessions() as session:
        return await compute_stats(session, hours, instance=instance)
