"""``GET /api/v1/alerts``: what is firing now, and what fired and resolved (``ops/alerts.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.ops.alerts import FIRING
from m3bng.store import stats as store

router = APIRouter(tags=["ops"])


class AlertOut(BaseModel):
    key: str
    kind: str
    state: str
    summary: str
    detail: dict[str, Any] | None
    first_fired_at: datetime
    last_seen_at: datetime
    last_notified_at: datetime | None
    notified_state: str | None
    resolved_at: datetime | None


class AlertList(BaseModel):
    items: list[AlertOut]


@router.get("/alerts", response_model=AlertList)
async def list_alerts(
    caller: ReadCaller, runtime: RuntimeDep, state: Literal["firing", "resolved", "all"] = "all"
) -> AlertList:
    """Firing alerts first, then the most recently seen. One row per alert key, so no paging."""
    async with runtime.sessions() as session:
        rows = await store.list_alerts(session, firing=FIRING, state=None if state == "all" else state)
    return AlertList(items=[AlertOut.model_validate(row, from_attributes=True) for row in rows])
