"""``GET /api/v1/audit`` (ops:admin): who replayed, discarded, paused or purged what, and when.

Admin only because entries carry before/after states, which may hold personal data (an edited
payload's diff), shown unmasked to those who may see it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import AdminCaller
from m3bng.api.ops.transactions import (
    CursorParam,
    LimitParam,
    invalid,
    page_size,
    timestamp,
)
from m3bng.ops import search
from m3bng.ops.filters import FilterError

router = APIRouter(tags=["ops"])


class AuditItem(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="the token's name or the JWT's subject")
    action: str = Field(description="replay, discard, bulk_replay, pause, resume, purge, ...")
    target_type: str
    target_id: str
    before: Any
    after: Any
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_cursor: str | None


@router.get("/audit", response_model=AuditPage, summary="The audit log (ops:admin)")
async def list_audit(
    caller: AdminCaller,
    runtime: RuntimeDep,
    action: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    actor: Annotated[str | None, Query()] = None,
    target_type: Annotated[str | None, Query(description="event, bulk_replay, control, ...")] = None,
    target_id: Annotated[str | None, Query(description="e.g. the transaction id")] = None,
    since: Annotated[str | None, Query(description="at or after (ISO 8601)")] = None,
    until: Annotated[str | None, Query(description="before (ISO 8601)")] = None,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> AuditPage:
    """Newest first."""
    size = page_size(runtime, limit)
    since_at, until_at = timestamp("since", since), timestamp("until", until)
    async with runtime.sessions() as session:
        try:
            page = await search.find_audit_entries(
                session,
                action=tuple(action or ()),
                actor=actor or None,
                target_type=target_type or None,
                target_id=target_id or None,
                since=since_at,
                until=until_at,
                limit=size,
                cursor=cursor,
            )
        except FilterError as exc:
            raise invalid(exc) from None
    return AuditPage(
        items=[
            AuditItem(
                id=entry.id,
                at=entry.at,
                actor=entry.actor,
                action=entry.action,
                target_type=entry.target_type,
                target_id=entry.target_id,
                before=entry.before,
                after=entry.after,
                detail=entry.detail,
            )
            for entry in page.items
        ],
        next_cursor=page.next_cursor,
    )
