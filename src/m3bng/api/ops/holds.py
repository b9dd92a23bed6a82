"""Anomaly holds: ``GET /api/v1/holds`` (open holds, with the rule, figures and history),
``POST /api/v1/holds/{event_id}/release`` and ``…/discard`` (``ops:replay``, audited). The
logic is in ``m3bng.ops.holds``; semantics in docs/assist.md."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import ApiError
from m3bng.api.ops.auth import ReadCaller, ReplayCaller
from m3bng.api.ops.replay import _COMMON, EventId, Reason, _no_nul
from m3bng.api.ops.transactions import AnomalyOut
from m3bng.ops import holds

router = APIRouter(tags=["ops"])

RULES = ("quantity", "price", "amount", "new_customer", "near_duplicate")


class HoldOut(BaseModel):
    event_id: int
    instance: str
    event_type: str
    business_key: str | None
    flow: str | None
    held_at: datetime | None
    received_at: datetime
    reason: str | None = Field(description="the hold findings' summaries")
    rules: list[str] = Field(description="the rules that hold it")
    findings: list[AnomalyOut] = Field(description="each hold finding with its figures and history")


class HoldList(BaseModel):
    items: list[HoldOut]


@router.get("/holds", response_model=HoldList, summary="Events held by an anomaly rule")
async def list_holds(
    caller: ReadCaller,
    runtime: RuntimeDep,
    flow: Annotated[str | None, Query(max_length=64, description="only this flow's holds")] = None,
    rule: Annotated[
        str | None, Query(max_length=32, description=f"only holds by this rule: {', '.join(RULES)}")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="at most this many, newest first")] = 100,
) -> HoldList:
    """Open holds (events in ``held``), newest first."""
    if rule is not None and rule not in RULES:
        raise ApiError(422, "invalid_rule", f"rule: must be one of {', '.join(RULES)}")
    items = await holds.list_holds(runtime.sessions, flow=flow, rule=rule, limit=limit)
    return HoldList(items=[HoldOut(**item) for item in items])


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = None

    _reason = field_validator("reason")(_no_nul)


class DiscardHoldRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=1000, description="Why it is given up (at least 3 characters; audited).")

    _reason = field_validator("reason")(_no_nul)


class HoldEndedOut(BaseModel):
    event_id: int
    resolution: str = Field(description="released or discarded")
    status: str = Field(description="the transaction's status now: pending (released) or discarded")


_ENDS: dict[int | str, dict[str, Any]] = {
    **_COMMON,
    409: {"description": "The transaction is not held (any more)"},
    422: {"description": "Bad body (the message names the field)"},
}


@router.post("/holds/{event_id}/release", response_model=HoldEndedOut, responses=_ENDS)
async def release_hold(
    event_id: EventId, caller: ReplayCaller, runtime: RuntimeDep, body: ReleaseRequest | None = None
) -> HoldEndedOut:
    """Put a held transaction back in line with its hold bypassed (audited)."""
    request = body or ReleaseRequest()
    ended = await holds.release(
        runtime.sessions, runtime.notifier, event_id, actor=caller.name, reason=request.reason
    )
    return HoldEndedOut(**vars(ended))


@router.post("/holds/{event_id}/discard", response_model=HoldEndedOut, responses=_ENDS)
async def discard_hold(
    event_id: EventId, body: DiscardHoldRequest, caller: ReplayCaller, runtime: RuntimeDep
) -> HoldEndedOut:
    """Close a held transaction without sending it, with a reason (audited)."""
    ended = await holds.discard(runtime.sessions, event_id, actor=caller.name, reason=body.reason)
    return HoldEndedOut(**vars(ended))
