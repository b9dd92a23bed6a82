"""What happened to an event: its step rows and the business keys it is about (for "where is
order X"). Written with the flow's durable writes and the event's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import Event, EventKey, Step
from m3bng.store.sql import dialect_name, inserts_ignoring

_STEPS = cast(Table, Step.__table__)
_INSERT_STEPS = _STEPS.insert()  # Core, built once
_INSERT_STEP = _INSERT_STEPS.returning(_STEPS.c.id)
_INSERT_KEYS = inserts_ignoring(EventKey.__table__)


async def record_steps(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The rows of several successful steps in one statement (executemany): a flow's reads ride
    with its next write, and an order has a handful of them."""
    if rows:
        await session.execute(_INSERT_STEPS, rows)


async def record_step(session: AsyncSession, **values: Any) -> int:
    result = await session.execute(_INSERT_STEP, values)
    return int(result.scalar_one())


async def index_event_keys(session: AsyncSession, event_id: int, keys: dict[str, str]) -> None:
    """Remember the business keys (value → kind) an event is about; known ones are ignored."""
    if not keys:
        return
    rows = [{"event_id": event_id, "value": value, "kind": kind} for value, kind in keys.items()]
    await session.execute(_INSERT_KEYS[dialect_name(session)], rows)


async def last_event_id(session: AsyncSession) -> int:
    """The newest event's id (0 in an empty store): where a follower of new events starts."""
    return int((await session.execute(select(func.max(Event.id)))).scalar_one() or 0)


async def events_after(
    session: AsyncSession, after_id: int, *, source: str, event_types: Sequence[str], limit: int
) -> list[tuple[int, str, Any]]:
    """(id, event type, payload) of the events of ``source`` and these types stored after
    ``after_id``, oldest first, at most ``limit``: read by the primary key's order from where the
    reader stopped, so each poll reads only what is new."""
    rows = await session.execute(
        select(Event.id, Event.event_type, Event.payload)
        .where(Event.id > after_id, Event.source == source, Event.event_type.in_(list(event_types)))
        .order_by(Event.id)
        .limit(limit)
    )
    return [(int(r[0]), str(r[1]), r[2]) for r in rows.all()]
