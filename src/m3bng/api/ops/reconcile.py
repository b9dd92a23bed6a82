"""``GET /api/v1/reconcile/runs``, ``…/runs/{id}/findings`` and ``…/latest``: what
reconciliation found (``reconcile.py``), for the dashboard and for whoever follows up a finding."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import ApiError
from m3bng.api.ops.auth import ReadCaller
from m3bng.instances import ID_PATTERN
from m3bng.store import reconcile as store

router = APIRouter(tags=["ops"])
RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the reconciliation run")]
Kind = Literal["orders", "stock", "customers", "items"]
KindFilter = Annotated[Kind | None, Query(description="one kind")]
InstanceFilter = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="one BNG instance (docs/instances.md)")
]
Finding = Literal[
    "different",
    "never_arrived",
    "stuck",
    "in_flight",
    "unknown_in_bng",
    "drift",
    "missing_in_bng",
    "unknown_in_m3",
    "refused",
]
BusinessKey = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="one business key: a BNG order id, WAREHOUSE/SKU, a CUNO or ITNO",
    ),
]


class ReconcileRunOut(BaseModel):
    id: int
    instance: str = Field(description="the BNG instance compared (docs/instances.md)")
    kind: str = Field(description="orders, stock, customers, items")
    since: datetime = Field(description="orders: the window's start; the others are compared in full (1970)")
    fix: bool
    status: str = Field(description="running, done, failed")
    counts: dict[str, Any] = Field(
        description="objects per class, how many --fix took in or corrected (fixed), and M3 calls made"
    )
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class ReconcileRunList(BaseModel):
    items: list[ReconcileRunOut]


class FindingOut(BaseModel):
    key: str = Field(description="the business key: OrderID (or CUOR), WAREHOUSE/SKU, CUNO, ITNO")
    finding: str = Field(description="its class (docs/reconciliation.md)")
    detail: dict[str, Any]
    event_id: int | None = Field(description="the event --fix took in or enqueued for it")


class FindingList(BaseModel):
    items: list[FindingOut]


@router.get("/reconcile/runs", response_model=ReconcileRunList)
async def list_reconcile_runs(
    caller: ReadCaller,
    runtime: RuntimeDep,
    kind: KindFilter = None,
    instance: InstanceFilter = None,
    limit: int = Query(50, ge=1, le=500),
) -> ReconcileRunList:
    """Newest first."""
    async with runtime.sessions() as session:
        rows = await store.list_runs(session, kind=kind, instance=instance, limit=limit)
    return ReconcileRunList(items=[ReconcileRunOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/reconcile/runs/{run_id}/findings", response_model=FindingList)
async def list_findings(
    caller: ReadCaller,
    runtime: RuntimeDep,
    run_id: RunId,
    finding: Annotated[Finding | None, Query(description="one class")] = None,
    key: BusinessKey = None,
) -> FindingList:
    """A run's findings (everything but "matching"), in the order found."""
    async with runtime.sessions() as session:
        if not await store.list_runs(session, limit=1, run_id=run_id):
            raise ApiError(404, "not_found", f"no reconciliation run {run_id}")
        rows = await store.list_findings(session, run_id, finding=finding, key=key)
    return FindingList(items=[FindingOut.model_validate(r, from_attributes=True) for r in rows])


class LatestRun(BaseModel):
    run: ReconcileRunOut
    open: list[FindingOut] = Field(
        description="its findings still left for a person (not corrected by --fix, not in flight), "
        f"the first {store.OPEN_LIMIT}"
    )


class LatestList(BaseModel):
    items: list[LatestRun]


@router.get("/reconcile/latest", response_model=LatestList)
async def latest_reconcile_runs(
    caller: ReadCaller, runtime: RuntimeDep, kind: KindFilter = None, instance: InstanceFilter = None
) -> LatestList:
    """The newest run of each instance and kind and its open findings: the dashboard's
    reconciliation panel."""
    items = []
    async with runtime.sessions() as session:
        for run in await store.latest_runs(session, kind=kind, instance=instance):
            found = await store.open_findings(session, run.id)
            items.append(
                LatestRun(
                    run=ReconcileRunOut.model_validate(run, from_attributes=True),
                    open=[FindingOut.model_validate(f, from_attributes=True) for f in found],
                )
            )
    return LatestList(items=items)
