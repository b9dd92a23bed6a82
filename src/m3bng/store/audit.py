"""The audit log: every write made through the ops API or CLI, in the same transaction as the
write itself, so there is never a change without its record or a record without its change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import AuditEntry
from m3bng.store.sql import utcnow


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int,
    before: Any = None,
    after: Any = None,
    detail: str | None = None,
) -> None:
    await session.execute(
        insert(AuditEntry).values(
            at=utcnow(),
            actor=actor[:128],
            action=action[:64],
            target_type=target_type[:64],
            target_id=str(target_id)[:255],
            before=before,
            after=after,
            detail=detail,
        )
    )
