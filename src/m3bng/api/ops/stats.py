"""``GET /api/v1/stats``: throughput and errors over time, backlog and dead letters (the dashboard's
charts and counters).

Everything is counted in the database, never by loading rows: each series is one ``GROUP BY`` over
an indexed timestamp (``events.received_at``, ``events.finished_at``, ``dead_letters.created_at``)
restricted to the window, so the cost grows with the number of buckets, not with the traffic.
Buckets are numbered from the window's start by integer division of epoch seconds; epoch
seconds are spelled per dialect by :class:`epoch_seconds`, the one non-portable expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import BigInteger, ColumnElement, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.store.models import OPEN_STATUSES, DeadLetter, Event, EventStatus
from m3bng.store.queries import utcnow

router = APIRouter(tags=["ops"])

MAX_HOURS = 168
# (window up to N hours, bucket seconds): at most ~56 points per chart, fine enough to see a spike.
BUCKET_STEPS = ((2, 300), (12, 900), (48, 3600), (MAX_HOURS, 3 * 3600))


class epoch_seconds(FunctionElement[int]):
    """Whole seconds since 1970 of a naive-UTC timestamp column, as an integer."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff', which strftime reads.
    (column,) = element.clauses
    return compiler.process(cast(func.strftime("%s", column), BigInteger), **kw)


@compiles(epoch_seconds)
def _epoch_default(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL: EXTRACT(EPOCH FROM timestamp without time zone) reads the value as UTC.
    (column,) = element.clauses
    return compiler.process(cast(func.floor(func.extract("epoch", column)), BigInteger), **kw)


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

    def index(self, column: Any) -> ColumnElement[int]:
        """The bucket number of a timestamp column (0 = the oldest bucket)."""
        offset = epoch_seconds(column) - int(self.start.timestamp())
        return (offset // self.seconds).label("bucket")


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


async def _series(session: AsyncSession, window: Window, column: Any, *where: Any) -> dict[int, int]:
    """How many rows fall in each bucket: ``SELECT bucket, count(*) ... GROUP BY bucket`` over a
    subquery, so the bucket expression is not repeated (PostgreSQL would not match it again
    once it carries bound parameters)."""
    inner = select(window.index(column)).where(column >= window.start, *where).subquery()
    rows = await session.execute(select(inner.c.bucket, func.count()).group_by(inner.c.bucket))
    return {int(bucket): int(count) for bucket, count in rows.all() if 0 <= bucket < window.count}


async def compute_stats(session: AsyncSession, hours: int, now: datetime | None = None) -> Stats:
    window = Window.ending_at(now or utcnow(), hours)
    received = await _series(session, window, Event.received_at)
    done = await _series(session, window, Event.finished_at, Event.status == EventStatus.DONE.value)
    skipped = await _series(session, window, Event.finished_at, Event.status == EventStatus.SKIPPED.value)
    # Dead letters by when they were written: a replay later does not erase the error from history.
    dead = await _series(session, window, DeadLetter.created_at)
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
    status_rows = await session.execute(select(Event.status, func.count()).group_by(Event.status))
    status_counts = {status.value: 0 for status in EventStatus}
    status_counts.update({str(status): int(count) for status, count in status_rows.all()})
    unresolved = await session.scalar(
        select(func.count()).select_from(DeadLetter).where(DeadLetter.resolved_at.is_(None))
    )
    return Stats(
        hours=hours,
        bucket_seconds=window.seconds,
        buckets=buckets,
        status_counts=status_counts,
        dead_letters=int(unresolved or 0),
        backlog=sum(status_counts.get(status, 0) for status in OPEN_STATUSES),
    )


@router.get("/stats", response_model=Stats)
async def stats(
    caller: ReadCaller,
    runtime: RuntimeDep,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="window, 1 to 168 hours")] = 24,
) -> Stats:
    async with runtime.sessions() as session:
        return await compute_stats(session, hours)
