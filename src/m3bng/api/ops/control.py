"""``/api/v1/control``: what is paused, what is waiting, and the switches.

Pausing a flow (one event type), a target (every flow writing to m3, bng or ion) or a BNG
instance (every event of that instance, ``GET /api/v1/instances``) stops workers *claiming* its
events, within a second in every worker process. Events already in
flight finish; paused events stay ``pending`` with their attempts untouched, and nothing is
failed or dead-lettered. Resuming lets them through again, oldest first per business key.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import ApiError
from m3bng.api.ops.auth import AdminCaller, ReadCaller
from m3bng.api.ops.instances import instance_ids
from m3bng.ops import backlog, controls
from m3bng.runtime import Runtime
from m3bng.store import audit

router = APIRouter(tags=["ops"])


class FlowState(BaseModel):
    event_type: str
    source: str | None
    also: list[str] = Field(
        default_factory=list, description="other sources it also runs for (sync, reconcile); counted here"
    )
    target: str | None
    name: str = Field(description="the flow function handling this event type")
    paused: bool = Field(description="this flow's own switch")
    reason: str | None
    target_paused: bool = Field(description="held because its target is paused")
    pending: int
    processing: int
    oldest_pending_age_seconds: float | None = Field(
        description="seconds since the oldest pending or processing event arrived; null when none"
    )


class TargetState(BaseModel):
    name: str
    paused: bool
    reason: str | None
    circuit: str | None = Field(
        description="closed, open or half_open as this API process sees it; null: not configured"
    )


class ControlOverview(BaseModel):
    flows: list[FlowState]
    targets: list[TargetState]


class ControlChange(BaseModel):
    kind: Literal["flow", "target", "instance"]
    name: str = Field(
        min_length=1,
        max_length=128,
        description="an event type, m3 / bng / ion, or a BNG instance id (GET /api/v1/instances)",
    )
    reason: str | None = Field(default=None, max_length=1000)


class ControlSwitch(BaseModel):
    kind: str
    name: str
    paused: bool
    reason: str | None
    changed_by: str
    changed_at: datetime


@router.get("/control", response_model=ControlOverview)
async def get_control(caller: ReadCaller, runtime: RuntimeDep) -> ControlOverview:
    async with runtime.sessions() as session:
        overview = await backlog.control_overview(session, runtime.registry, runtime.connectors)
    return ControlOverview(
        flows=[FlowState(**dataclasses.asdict(flow)) for flow in overview.flows],
        targets=[TargetState(**dataclasses.asdict(target)) for target in overview.targets],
    )


@router.post("/control/pause", response_model=ControlSwitch)
async def pause(change: ControlChange, caller: AdminCaller, runtime: RuntimeDep) -> ControlSwitch:
    return await _switch(runtime, change, paused=True, actor=caller.name)


@router.post("/control/resume", response_model=ControlSwitch)
async def resume(change: ControlChange, caller: AdminCaller, runtime: RuntimeDep) -> ControlSwitch:
    return await _switch(runtime, change, paused=False, actor=caller.name)


async def _switch(runtime: Runtime, change: ControlChange, *, paused: bool, actor: str) -> ControlSwitch:
    _check_name(runtime, change)
    async with runtime.sessions.begin() as session:
        before, after = await controls.set_paused(
            session, change.kind, change.name, paused=paused, reason=change.reason, actor=actor
        )
        await audit.record(
            session,
            actor=actor,
            action="pause" if paused else "resume",
            target_type=change.kind,
            target_id=change.name,
            before=_jsonable(before),
            after=_jsonable(after),
            detail=change.reason,
        )
    for worker in runtime.workers:  # this process's workers see it at once; others within 1 s
        worker.paused.invalidate()
    return ControlSwitch(**dataclasses.asdict(after))


def _check_name(runtime: Runtime, change: ControlChange) -> None:
    if change.kind == "instance":
        ids = instance_ids(runtime)
        if change.name not in ids:
            shown = change.name if len(change.name) <= 64 else change.name[:64] + "…"
            raise ApiError(
                422,
                "invalid_request",
                f"name: unknown instance {shown!r}; instances are {', '.join(ids)}",
                fields=[{"field": "name", "problem": f"unknown instance {shown!r}"}],
            )
        return
    if change.kind == "target":
        if change.name not in controls.TARGETS:
            raise ApiError(
                422,
                "invalid_request",
                f"name: unknown target {change.name!r}; targets are {', '.join(controls.TARGETS)}",
                fields=[{"field": "name", "problem": f"unknown target {change.name!r}"}],
            )
        return
    known = sorted({info.event_type for info in runtime.registry.describe()})
    if change.name not in known:
        raise ApiError(
            404,
            "unknown_flow",
            f"name: no flow is registered for event type {change.name!r} (flows: {', '.join(known)})",
            fields=[{"field": "name", "problem": f"no flow for event type {change.name!r}"}],
        )


def _jsonable(state: controls.ControlState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    values = dataclasses.asdict(state)
    values["changed_at"] = state.changed_at.isoformat()
    return values
