"""The inventory poller's snapshots (``inventory_snapshots``): the last balance seen per item and
warehouse, which is what lets a poll send only the changes and a restart resend nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store import sql
from m3bng.store.models import InventorySnapshot


async def known_digests(session: AsyncSession, warehouse: str) -> dict[str, str]:
    """Item → digest of the last balance stored for ``warehouse``: only the digests, because a
    poll compares hashes, and loading every stored balance with them would cost memory for
    nothing."""
    rows = await session.execute(
        select(InventorySnapshot.item, InventorySnapshot.digest).where(
            InventorySnapshot.warehouse == warehouse
        )
    )
    return {item: digest for item, digest in rows.all()}


async def put_snapshot(
    session: AsyncSession,
    *,
    warehouse: str,
    item: str,
    balance: dict[str, Any],
    digest: str,
    polled_at: datetime,
) -> None:
    """Store the balance just seen, in the caller's transaction: the caller writes it together
    with the event announcing the change, so a crash keeps both or neither and a change is never
    lost nor resent. One upsert on (warehouse, item), so a first sighting and a change are the
    same statement, and two writers of the same item (a lease that expired mid-poll) end with
    one row instead of a unique-key error."""
    values = {
        "warehouse": warehouse,
        "item": item,
        "balance": balance,
        "digest": digest,
        "polled_at": polled_at,
    }
    await session.execute(sql.upsert(session, InventorySnapshot.__table__, ["warehouse", "item"], values))
