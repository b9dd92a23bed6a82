"""``GET /api/v1/sync/runs``: the initial loads (``m3bng sync``), newest first, with their counts
and the reasons of the records they refused (``sync.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.instances import ID_PATTERN
from m3bng.store import sync as store

router = APIRouter(tags=["ops"])
InstanceFilter = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="one BNG instance (docs/instances.md)")
]


class SyncRunOut(BaseModel):
    id: int
    instance: str = Field(description="the BNG instance loaded (--to m3: whose BNG was read)")
    entity: str = Field(description="customers, items, suppliers, stock or prices (catalog prices)")
    target: str = Field(
        description="the system loaded into: bng, or m3 (customers where BNG is their master)"
    )
    dry_run: bool
    status: str = Field(description="running (or stopped mid-way: the next run continues it), done, failed")
    cursor: str | None = Field(
        description="how far the run got: the last M3 key, the last warehouse done (stock), BNG's cursor"
    )
    counts: dict[str, Any] = Field(description="read, new, changed, same, refused, pages")
    refusals: list[dict[str, Any]] = Field(description="key and reason of refused records (first 100)")
    error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class SyncRunList(BaseModel):
    items: list[SyncRunOut]


@router.get("/sync/runs", response_model=SyncRunList)
async def list_sync_runs(
    caller: ReadCaller,
    runtime: RuntimeDep,
    entity: Literal["customers", "items", "suppliers", "stock", "prices"] | None = None,
    instance: InstanceFilter = None,
    limit: int = Query(50, ge=1, le=500),
) -> SyncRunList:
    """Initial-load runs; a handful per go-live, so the newest ``limit`` without paging."""
    async with runtime.sessions() as session:
        rows = await store.list_runs(session, entity=entity, instance=instance, limit=limit)
    return SyncRunList(items=[SyncRunOut.model_validate(row, from_attributes=True) for row in rows])
