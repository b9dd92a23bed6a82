"""Pause and resume: a flow (one event type) or a target (m3, bng, ion, i.e. every flow that
writes to it).

A pause is a row in ``controls``, so it holds for every worker process on the database and
survives restarts. Workers stop *claiming* paused events; an event already in flight finishes
(stopping it half-way through a multi-step M3 entry would leave more to clean up than letting it
end). Paused events stay ``pending`` with their attempts untouched; nothing fails or dead-letters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.inbox.flows import FlowRegistry
from m3bng.store import queries
from m3bng.store.models import Control

KINDS = ("flow", "target")
TARGETS = ("m3", "bng", "ion")
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class ControlState:
    kind: str
    name: str
    paused: bool
    reason: str | None
    changed_by: str
    changed_at: datetime


async def list_controls(session: AsyncSession) -> list[ControlState]:
    rows = (await session.execute(select(Control).order_by(Control.kind, Control.name))).scalars()
    return [ControlState(r.kind, r.name, r.paused, r.reason, r.changed_by, r.changed_at) for r in rows]


async def set_paused(
    session: AsyncSession, kind: str, name: str, *, paused: bool, reason: str | None, actor: str
) -> tuple[ControlState | None, ControlState]:
    """Set one switch; returns (before, after) for the audit log."""
    before_row = await session.get(Control, (kind, name))
    before = (
        None
        if before_row is None
        else ControlState(
            before_row.kind,
            before_row.name,
            before_row.paused,
            before_row.reason,
            before_row.changed_by,
            before_row.changed_at,
        )
    )
    now = queries.utcnow()
    values = {
        "kind": kind,
        "name": name,
        "paused": paused,
        "reason": reason,
        "changed_by": actor,
        "changed_at": now,
    }
    await session.execute(queries.upsert(session, Control.__table__, ["kind", "name"], values))
    return before, ControlState(kind, name, paused, reason, actor, now)


async def paused_event_types(session: AsyncSession, registry: FlowRegistry) -> set[str]:
    rows = (await session.execute(select(Control.kind, Control.name).where(Control.paused.is_(True)))).all()
    types: set[str] = set()
    for kind, name in rows:
        if kind == "flow":
            types.add(name)
        else:
            types |= registry.event_types_for_target(name)
    return types


class PausedFlows:
    """The event types workers must not claim, read from the store at most once a second: a
    pause takes effect within a second everywhere, and costs one tiny query per second."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: FlowRegistry) -> None:
        self.sessions = sessions
        self.registry = registry
        self._types: set[str] = set()
        self._read_at = float("-inf")

    async def event_types(self) -> set[str]:
        if time.monotonic() - self._read_at >= CACHE_SECONDS:
            async with self.sessions() as session:
                self._types = await paused_event_types(session, self.registry)
            self._read_at = time.monotonic()
        return self._types

    def invalidate(self) -> None:
        self._read_at = float("-inf")
