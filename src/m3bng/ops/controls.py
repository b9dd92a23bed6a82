"""Pause and resume: a flow (one event type), a target (m3, bng, ion, i.e. every flow that
writes to it) or a BNG instance (every event of that instance, instances.py).

A pause is a row in ``controls``, so it holds for every worker process on the database and
survives restarts. Workers stop *claiming* paused events; an event already in flight finishes
(stopping it half-way through a multi-step M3 entry would leave more to clean up than letting it
end). Paused events stay ``pending`` with their attempts untouched; nothing fails or dead-letters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.flows.runtime import FlowRegistry
from m3bng.store import control as control_store
from m3bng.store.db import single_statement
from m3bng.store.models import Control
from m3bng.store.sql import utcnow

KINDS = ("flow", "target", "instance")
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

    @classmethod
    def of(cls, row: Control) -> ControlState:
        return cls(row.kind, row.name, row.paused, row.reason, row.changed_by, row.changed_at)


async def list_controls(session: AsyncSession) -> list[ControlState]:
    return [ControlState.of(row) for row in await control_store.controls(session)]


async def set_paused(
    session: AsyncSession, kind: str, name: str, *, paused: bool, reason: str | None, actor: str
) -> tuple[ControlState | None, ControlState]:
    """Set one switch; returns (before, after) for the audit log."""
    before_row = await control_store.get_control(session, kind, name)
    before = None if before_row is None else ControlState.of(before_row)
    after = ControlState(kind, name, paused, reason, actor, utcnow())
    await control_store.put_control(
        session, kind, name, paused=paused, reason=reason, changed_by=actor, changed_at=after.changed_at
    )
    return before, after


async def paused_event_types(session: AsyncSession, registry: FlowRegistry) -> set[str]:
    types: set[str] = set()
    for kind, name in await control_store.paused_switches(session):
        if kind == "flow":
            types.add(name)
        elif kind == "target":
            types |= registry.event_types_for_target(name)
    return types


class PausedFlows:
    """The event types workers must not claim, read from the store at most once a second: a
    pause takes effect within a second everywhere, and costs one tiny query per second."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: FlowRegistry) -> None:
        self.sessions = sessions
        self.registry = registry
        self._types: set[str] = set()
        self._instances: set[str] = set()
        self._read_at = float("-inf")

    async def event_types(self) -> set[str]:
        await self._refresh()
        return self._types

    async def instances(self) -> set[str]:
        """The BNG instances whose events workers must not claim."""
        await self._refresh()
        return self._instances

    async def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= CACHE_SECONDS:
            async with single_statement(self.sessions) as session:
                switches = await control_store.paused_switches(session)
            types: set[str] = set()
            for kind, name in switches:
                if kind == "flow":
                    types.add(name)
                elif kind == "target":
                    types |= self.registry.event_types_for_target(name)
            self._types = types
            self._instances = {name for kind, name in switches if kind == "instance"}
            self._read_at = time.monotonic()

    def invalidate(self) -> None:
        self._read_at = float("-inf")
