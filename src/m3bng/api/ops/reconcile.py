"""``GET /api/v1/reconcile/runs`` and ``…/runs/{id}/findings``: what reconciliation found
(``reconcile.py``), for the dashboard and for whoever follows up a finding."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import ApiError
from m3bng.api.ops.auth import ReadCaller
from m3bng.store import reconcile as store

router = APIRouter(tags=["ops"])
RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the reconciliation run")]
Finding = Literal["different", "never_arrived", "stuck", "in_flight"]


class ReconcileRunOut(BaseModel):
    id: int
    kind: str = Field(description="orders")
    since: datetime = Field(description="the window's start: BNG's objects changed since then")
    fix: bool
    status: str = Field(description="running, done, failed")
    counts: dict[str, Any] = Field(description="objects per class, and how many were taken in (fixed)")
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class ReconcileRunList(BaseModel):
    items: list[ReconcileRunOut]


class FindingOut(BaseModel):
    key: str = Field(description="the BNG id (OrderID)")
    finding: str = Field(description="different, never_arrived, stuck, in_flight")
    detail: dict[str, Any]
    event_id: int | None = Field(description="the event --fix took in for it")


class FindingList(BaseModel):
    items: list[FindingOut]


@router.get("/reconcile/runs", response_model=ReconcileRunList)
async def list_reconcile_runs(
    caller: ReadCaller,
    runtime: RuntimeDep,
    kind: Literal["orders"] | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> ReconcileRunList:
    """Newest first."""
    async with runtime.sessions() as session:
        rows = await store.list_runs(session, kind=kind, limit=limit)
    return ReconcileRunList(items=[ReconcileRunOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/reconcile/runs/{run_id}/findings", response_model=FindingList)
async def list_findings(
    caller: ReadCaller,
    runtime: RuntimeDep,
    run_id: RunId,
    finding: Annotated[Finding | None, Query(description="one class")] = None,
    key: Annotated[
        str | None, Query(max_length=255, pattern=r"^[^\x00-\x1f]*$", description="one BNG id")
    ] = None,
) -> FindingList:
    """A run's findings (everything but "matching"), in the order found."""
    async with runtime.sessions() as session:
        if not await store.list_runs(session, limit=1, run_id=run_id):
            raise ApiError(404, "not_found", f"no reconciliation run {run_id}")
        rows = await store.list_findings(session, run_id, finding=finding, key=key)
    return FindingList(items=[FindingOut.model_validate(r, from_attributes=True) for r in rows])
