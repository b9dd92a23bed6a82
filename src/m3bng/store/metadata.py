"""The cached MRS001MI LstFields answers (``m3_field_metadata``), one row per program,
transaction and direction. What the fields mean, and how long a row is trusted, is
``connectors/m3/metadata.py``'s business; here they are rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store import sql
from m3bng.store.models import M3FieldMetadata

_KEY = ["program", "transaction", "direction"]


async def get_fields(
    session: AsyncSession, program: str, transaction: str, direction: str
) -> M3FieldMetadata | None:
    """The stored answer with when it was fetched, or None if M3 was never asked: the caller
    decides from ``fetched_at`` whether it is still fresh enough to save a call to M3."""
    result = await session.execute(
        select(M3FieldMetadata).where(
            M3FieldMetadata.program == program,
            M3FieldMetadata.transaction == transaction,
            M3FieldMetadata.direction == direction,
        )
    )
    return result.scalar_one_or_none()


async def put_fields(
    session: AsyncSession,
    program: str,
    transaction: str,
    direction: str,
    fields: list[dict[str, Any]],
    fetched_at: datetime,
) -> None:
    """Store a fresh answer over any older one, in one upsert on (program, transaction,
    direction): processes refreshing the same transaction at once (each worker has its own
    in-memory cache) each leave the row whole instead of one failing on the unique key."""
    values = {
        "program": program,
        "transaction": transaction,
        "direction": direction,
        "fields": fields,
        "fetched_at": fetched_at,
    }
    await session.execute(sql.upsert(session, M3FieldMetadata.__table__, _KEY, values))
