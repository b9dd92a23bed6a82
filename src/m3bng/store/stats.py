"""The reads behind the ops dashboard and the orchestrators' probes: throughput and errors per time
bucket, status counts, the alert list, and the database ping.

Everything is counted in the database, never by loading rows: each series is one ``GROUP BY`` over
an indexed timestamp (``events.received_at``, ``events.finished_at``, ``dead_letters.created_at``)
restricted to the window, so the cost grows with the number of buckets, not with the traffic.
Buckets are numbered from the window's start by integer division of epoch seconds; epoch
seconds are spelled per dialect by :class:`epoch_seconds`, the one non-portable expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import BigInteger, ColumnElement, SQLColumnExpression, case, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from m3bng.store.models import Alert, DeadLetter, Event, EventStatus


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


class BucketGrid(Protocol):
    """The time buckets to count into. The caller chooses them (``api/ops/stats.py``: the
    dashboard decides how fine a chart is); the store only needs where they start and how wide
    and how many they are."""

    @property
    def start(self) -> datetime: ...

    @property
    def seconds(self) -> int: ...

    @property
    def count(self) -> int: ...


def _bucket(grid: BucketGrid, column: SQLColumnExpression[datetime | None]) -> ColumnElement[int]:
    """The bucket number of a timestamp column (0 = the oldest bucket)."""
    offset = epoch_seconds(column) - int(grid.start.timestamp())
    return (offset // grid.seconds).label("bucket")


async def _series(
    session: AsyncSession,
    grid: BucketGrid,
    column: SQLColumnExpression[datetime | None],
    *where: ColumnElement[bool],
) -> dict[int, int]:
    """How many rows fall in each bucket: ``SELECT bucket, count(*) ... GROUP BY bucket`` over a
    subquery, so the bucket expression is not repeated (PostgreSQL would not match it again
    once it carries bound parameters)."""
    inner = select(_bucket(grid, column)).where(column >= grid.start, *where).subquery()
    rows = await session.execute(select(inner.c.bucket, func.count()).group_by(inner.c.bucket))
    return {int(bucket): int(count) for bucket, count in rows.all() if 0 <= bucket < grid.count}


# ``instance``: one BNG instance's events only (instances.py); None: all of them.


def _of(instance: str | None) -> list[ColumnElement[bool]]:
    return [] if instance is None else [Event.instance == instance]


def _dead_of(instance: str | None) -> list[ColumnElement[bool]]:
    """A dead letter's instance is its event's."""
    if instance is None:
        return []
    return [DeadLetter.event_id.in_(select(Event.id).where(Event.instance == instance))]


async def received_per_bucket(
    session: AsyncSession, grid: BucketGrid, instance: str | None = None
) -> dict[int, int]:
    """Events by when they arrived, so the chart shows the load offered, whatever became of it.
    Buckets with no event are absent."""
    return await _series(session, grid, Event.received_at, *_of(instance))


async def finished_per_bucket(
    session: AsyncSession, grid: BucketGrid, status: EventStatus, instance: str | None = None
) -> dict[int, int]:
    """Events now in ``status`` by when they finished: throughput is measured when work ends, not
    when it arrived. Buckets with no event are absent."""
    return await _series(session, grid, Event.finished_at, Event.status == status.value, *_of(instance))


async def dead_letters_per_bucket(
    session: AsyncSession, grid: BucketGrid, instance: str | None = None
) -> dict[int, int]:
    """Dead letters by when they were written: a replay later does not erase the error from
    history. Buckets with none are absent."""
    return await _series(session, grid, DeadLetter.created_at, *_dead_of(instance))


async def count_by_status(session: AsyncSession, instance: str | None = None) -> dict[str, int]:
    """How many events are in each status, in one ``GROUP BY`` (statuses with no event are
    absent: the caller decides how to show them)."""
    rows = await session.execute(
        select(Event.status, func.count()).where(*_of(instance)).group_by(Event.status)
    )
    return {str(status): int(count) for status, count in rows.all()}


async def count_unresolved_dead_letters(session: AsyncSession, instance: str | None = None) -> int:
    """Dead letters nobody has replayed or discarded yet: the ones an operator still owes a look."""
    unresolved = await session.scalar(
        select(func.count())
        .select_from(DeadLetter)
        .where(DeadLetter.resolved_at.is_(None), *_dead_of(instance))
    )
    return int(unresolved or 0)


async def list_alerts(session: AsyncSession, *, firing: str, state: str | None = None) -> Sequence[Alert]:
    """Alerts in state ``firing`` first, then the most recently seen; only those in ``state``
    unless it is None. One row per alert key, so the list is short and is not paged. The state
    names are the alerting job's (``ops/alerts.py``), passed in because the store sits below it."""
    query = select(Alert).order_by(case((Alert.state == firing, 0), else_=1), Alert.last_seen_at.desc())
    if state is not None:
        query = query.where(Alert.state == state)
    return (await session.execute(query)).scalars().all()


async def ping(engine: AsyncEngine) -> None:
    """The cheapest round trip through the engine's pool, raising whatever the database or the
    pool raise: the readiness probe tells "unreachable" from "migrations pending" by whether
    this or the schema check fails."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
