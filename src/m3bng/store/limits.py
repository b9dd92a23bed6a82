"""Installation-wide limits shared by worker processes (connectors/shares.py), PostgreSQL only.

Each worker process holds ``slots`` of a limit (the M3 concurrency cap, BNG's rate) and renews
its row every period. Rebalancing is one transaction under the limit's anchor row lock
(``holder = ''``), so processes take turns: expired rows (a process that died) are deleted,
the fair share of each live process is worked out, and a process grows only into what nobody
holds. A process never records less than it uses locally (``holding``): it shrinks its own
gate first and records the smaller share on its next turn. So the rows never add up to more
than the limit, and no process uses more than its row. Time is the database's, the same for
every host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_SHARE_ANCHOR = text(
    "INSERT INTO limit_shares (name, holder, slots, expires_at, updated_at) "
    "VALUES (:name, '', 0, timezone('utc', now()) + interval '100 years', timezone('utc', now())) "
    "ON CONFLICT DO NOTHING"
)
_SHARE_LOCK = text("SELECT 1 FROM limit_shares WHERE name = :name AND holder = '' FOR UPDATE")
_SHARE_PRUNE = text(
    "DELETE FROM limit_shares WHERE name = :name AND holder <> '' AND expires_at < timezone('utc', now())"
)
_SHARE_ROWS = text("SELECT holder, slots FROM limit_shares WHERE name = :name AND holder <> ''")
_SHARE_PUT = text(
    "INSERT INTO limit_shares (name, holder, slots, expires_at, updated_at) "
    "VALUES (:name, :holder, :slots, timezone('utc', now()) + make_interval(secs => :ttl), "
    "timezone('utc', now())) "
    "ON CONFLICT (name, holder) DO UPDATE SET slots = excluded.slots, expires_at = excluded.expires_at, "
    "updated_at = excluded.updated_at"
)
_SHARE_DROP = text("DELETE FROM limit_shares WHERE name = :name AND holder = :holder")


@dataclass(frozen=True)
class ShareGrant:
    slots: int  # what this process may use now (recorded, renewed)
    fair: int  # what it should hold once the others have moved: shrink to it when below slots
    holders: int  # live processes sharing the limit


def fair_share(total: int, holders: Sequence[str], holder: str) -> int:
    """``total`` split evenly; the remainder goes to the first holders in name order."""
    ordered = sorted(holders)
    base, extra = divmod(total, len(ordered))
    return base + (1 if ordered.index(holder) < extra else 0)


async def take_share(
    session: AsyncSession, name: str, holder: str, total: int, ttl_seconds: float, *, holding: int
) -> ShareGrant:
    """Renew this process's share of ``name`` and grow it toward its fair share (see above)."""
    params = {"name": name}
    await session.execute(_SHARE_ANCHOR, params)
    await session.execute(_SHARE_LOCK, params)
    await session.execute(_SHARE_PRUNE, params)
    rows = {row.holder: int(row.slots) for row in await session.execute(_SHARE_ROWS, params)}
    fair = fair_share(total, [*rows.keys() - {holder}, holder], holder)
    others = sum(slots for other, slots in rows.items() if other != holder)
    mine = max(holding, min(fair, total - others))
    await session.execute(
        _SHARE_PUT, {"name": name, "holder": holder, "slots": mine, "ttl": float(ttl_seconds)}
    )
    return ShareGrant(slots=mine, fair=fair, holders=len(rows.keys() | {holder}))


async def drop_share(session: AsyncSession, name: str, holder: str) -> None:
    """Give a share back at once (a process stopping), instead of letting it expire."""
    await session.execute(_SHARE_DROP, {"name": name, "holder": holder})
