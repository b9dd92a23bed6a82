"""What is waiting, per flow: open events, the oldest one's age, unresolved dead letters, and
the state of each target (paused, circuit breaker).

Read by ``GET /api/v1/control`` and by ``/metrics`` at scrape time. Each number is one grouped
query over the whole events table (store/control.py; served by ``ix_events_event_type_status``
and ``ix_events_due``), never one query per flow, so the cost does not grow with the flows.

"Oldest" is by ``received_at`` over pending *and* processing events: how long the oldest
unfinished event has waited since it arrived, whether it now waits for a worker, a retry, a
paused flow or a slow M3. The backlog alerts (ops/alerts.py) measure the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.flows.runtime import FlowInfo, FlowRegistry
from m3bng.observability.metrics import StoreGauges
from m3bng.ops.controls import TARGETS, ControlState, list_controls
from m3bng.store import control as control_store
from m3bng.store.models import DEFAULT_INSTANCE, EventStatus
from m3bng.store.sql import utcnow

if TYPE_CHECKING:
    from m3bng.connectors import Connectors
    from m3bng.connectors.protection import CircuitBreaker

FlowKey = tuple[str, str]  # (source, event_type)
InstanceFlowKey = tuple[str, str, str]  # (instance, source, event_type)


@dataclass
class Backlog:
    """The open events of one (source, event type)."""

    pending: int = 0
    processing: int = 0
    oldest_received_at: datetime | None = None

    def oldest_age_seconds(self, now: datetime) -> float | None:
        if self.oldest_received_at is None:
            return None
        return max((now - self.oldest_received_at).total_seconds(), 0.0)

    def add(self, other: Backlog) -> None:
        self.pending += other.pending
        self.processing += other.processing
        if other.oldest_received_at is not None and (
            self.oldest_received_at is None or other.oldest_received_at < self.oldest_received_at
        ):
            self.oldest_received_at = other.oldest_received_at


async def backlog_by_instance(session: AsyncSession) -> dict[InstanceFlowKey, Backlog]:
    """Open events by (instance, source, event type), pending and processing counted apart."""
    out: dict[InstanceFlowKey, Backlog] = {}
    for group in await control_store.open_events(session):
        part = (
            Backlog(pending=group.count, oldest_received_at=group.oldest_received_at)
            if group.status == EventStatus.PENDING.value
            else Backlog(processing=group.count, oldest_received_at=group.oldest_received_at)
        )
        out.setdefault((group.instance, group.source, group.event_type), Backlog()).add(part)
    return out


def by_flow(backlog: Mapping[InstanceFlowKey, Backlog]) -> dict[FlowKey, Backlog]:
    """The same summed over the instances: (source, event type)."""
    out: dict[FlowKey, Backlog] = {}
    for (_instance, source, event_type), part in backlog.items():
        out.setdefault((source, event_type), Backlog()).add(part)
    return out


async def backlog_by_flow(session: AsyncSession) -> dict[FlowKey, Backlog]:
    """Open events by (source, event type), pending and processing counted apart."""
    return by_flow(await backlog_by_instance(session))


def flow_backlog(
    backlog: dict[FlowKey, Backlog], event_type: str, source: str | None, also: tuple[str, ...] = ()
) -> Backlog:
    """The backlog of one registered flow (a flow registered for any source sums them all; one
    that also runs for other sources, such as reconciliation's, sums theirs too)."""
    total = Backlog()
    for (row_source, row_type), part in backlog.items():
        if row_type == event_type and (source is None or row_source == source or row_source in also):
            total.add(part)
    return total


def target_breakers(connectors: Connectors) -> dict[str, CircuitBreaker]:
    """The circuit breaker guarding each configured target, as this process sees it.

    ION has none of its own: ConfirmBODs go through the M3 gateway with the M3 client's OAuth
    token and transport, so they share M3's breaker. Breakers live in each process; a worker
    process's open circuit shows in that process's metrics (``m3bng_circuit_open``).
    """
    breakers: dict[str, CircuitBreaker] = {}
    if connectors.m3 is not None:
        breakers["m3"] = connectors.m3.breaker
        if connectors.ion is not None:
            breakers["ion"] = connectors.m3.breaker
    if connectors.bng is not None:
        breakers["bng"] = connectors.bng.breaker
    return breakers


async def store_gauges(
    session: AsyncSession,
    registry: FlowRegistry,
    now: datetime | None = None,
    instances: Sequence[str] = (DEFAULT_INSTANCE,),
) -> StoreGauges:
    """Everything ``/metrics`` reads from the store, with every registered flow and target
    present (0 when idle) for every configured instance, so a drained backlog reads 0 rather
    than its last value."""
    now = now or utcnow()
    backlog = await backlog_by_instance(session)
    dead = await control_store.dead_letter_depth(session)
    controls = await list_controls(session)
    flows = registry.describe()
    for instance in instances:
        present = {(s, t): b for (i, s, t), b in backlog.items() if i == instance}
        for source, event_type in _idle_keys(flows, present):
            backlog[(instance, source, event_type)] = Backlog()
        present_dead = {(s, t): n for (i, s, t), n in dead.items() if i == instance}
        for source, event_type in _idle_keys(flows, present_dead):
            dead[(instance, source, event_type)] = 0
    counts: dict[tuple[str, str, str, str], int] = {}
    ages: dict[InstanceFlowKey, float] = {}
    for (instance, source, event_type), part in backlog.items():
        counts[(instance, source, event_type, EventStatus.PENDING.value)] = part.pending
        counts[(instance, source, event_type, EventStatus.PROCESSING.value)] = part.processing
        ages[(instance, source, event_type)] = part.oldest_age_seconds(now) or 0.0
    paused = {("flow", info.event_type): False for info in flows}
    paused.update({("target", target): False for target in TARGETS})
    paused.update({("instance", instance): False for instance in instances})
    paused.update({(c.kind, c.name): c.paused for c in controls})
    return StoreGauges(backlog=counts, oldest_age=ages, dead_letters=dead, paused=paused)


def _idle_keys(flows: list[FlowInfo], present: Mapping[FlowKey, object]) -> list[FlowKey]:
    """Registered flows the query found nothing for. A flow registered for any source is
    labelled ``source="any"`` until events of its type exist."""
    types = {event_type for _source, event_type in present}
    keys = []
    for info in flows:
        if info.source is not None and (info.source, info.event_type) not in present:
            keys.append((info.source, info.event_type))
        elif info.source is None and info.event_type not in types:
            keys.append(("any", info.event_type))
    return keys


@dataclass(frozen=True)
class FlowControl:
    event_type: str
    source: str | None
    target: str | None
    name: str
    paused: bool
    reason: str | None
    target_paused: bool
    pending: int
    processing: int
    oldest_pending_age_seconds: float | None
    also: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetControl:
    name: str
    paused: bool
    reason: str | None
    circuit: str | None  # closed, open, half_open; None when the target is not configured


@dataclass(frozen=True)
class ControlOverview:
    flows: list[FlowControl]
    targets: list[TargetControl]


async def control_overview(
    session: AsyncSession, registry: FlowRegistry, connectors: Connectors, now: datetime | None = None
) -> ControlOverview:
    """Every registered flow with its switch and backlog; every target with its switch and circuit."""
    now = now or utcnow()
    backlog = await backlog_by_flow(session)
    controls: dict[tuple[str, str], ControlState] = {
        (c.kind, c.name): c for c in await list_controls(session)
    }

    def switch(kind: str, name: str) -> tuple[bool, str | None]:
        control = controls.get((kind, name))
        return (False, None) if control is None or not control.paused else (True, control.reason)

    flows = []
    for info in registry.describe():
        paused, reason = switch("flow", info.event_type)
        part = flow_backlog(backlog, info.event_type, info.source, info.also)
        flows.append(
            FlowControl(
                event_type=info.event_type,
                source=info.source,
                target=info.target,
                name=info.name,
                paused=paused,
                reason=reason,
                target_paused=info.target is not None and switch("target", info.target)[0],
                pending=part.pending,
                processing=part.processing,
                oldest_pending_age_seconds=_round(part.oldest_age_seconds(now)),
                also=info.also,
            )
        )
    breakers = target_breakers(connectors)
    targets = []
    for target in TARGETS:
        paused, reason = switch("target", target)
        breaker = breakers.get(target)
        targets.append(
            TargetControl(target, paused, reason, breaker.state.value if breaker is not None else None)
        )
    return ControlOverview(flows, targets)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
