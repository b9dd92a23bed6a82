"""What happened to an event: its step rows, the mapping version applied, the business keys it
is about (for "where is order X"). Written by the worker with the event's checkpoints and outcome.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import Event, EventKey, Step
from m3bng.store.queue import fenced
from m3bng.store.sql import dialect_insert

_STEPS = cast(Table, Step.__table__)
_INSERT_STEP = _STEPS.insert().returning(_STEPS.c.id)  # Core, built once


async def record_step(session: AsyncSession, **values: Any) -> int:
    result = await session.execute(_INSERT_STEP, values)
    return int(result.scalar_one())


async def set_mapping_hash(session: AsyncSession, event_id: int, owner: str, content_hash: str) -> bool:
    """Record which version of the mapping this event is applied with (fenced like a checkpoint)."""
    result = await session.execute(
        fenced(event_id, owner).values(mapping_hash=content_hash).returning(Event.id)
    )
    return result.scalar_one_or_none() is not None


async def index_event_keys(session: AsyncSession, event_id: int, keys: dict[str, str]) -> None:
    """Remember the business keys (value → kind) an event is about; known ones are ignored."""
    if not keys:
        return
    rows = [{"event_id": event_id, "value": value, "kind": kind} for value, kind in keys.items()]
    await session.execute(dialect_insert(session, EventKey.__table__).values(rows).on_conflict_do_nothing())
