"""``GET /api/v1/dead-letters`` and ``GET /api/v1/dead-letters/summary``: what gave up, why, and
how much of it, so ops can fix the cause and replay the lot.

Filters are the transaction list's (``EventFilter``), so the list and a bulk replay sent with
the same filter cover the same events. ``reason`` and ``error_class`` are read from the dead letter
itself; ``since``/``until`` are on when the event was received, as everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.api.ops.transactions import (
    CursorParam,
    ErrorClassParam,
    EventTypeParam,
    InstanceParam,
    LimitParam,
    ProgramParam,
    QueryParam,
    SinceParam,
    SourceParam,
    UntilParam,
    invalid,
    page_size,
    timestamp,
)
from m3bng.ops import search
from m3bng.ops.filters import EventFilter, FilterError
from m3bng.ops.masking import mask_text

router = APIRouter(tags=["ops"])

ResolvedParam = Annotated[
    Literal["false", "true", "all"],
    Query(description="false: open dead letters (default); true: replayed or discarded; all"),
]


class DeadLetterItem(BaseModel):
    id: int
    event_id: int
    instance: str = Field(description="the BNG instance of the event")
    event_type: str
    source: str
    business_key: str | None
    reason: str = Field(description="permanent_error, retries_exhausted or no_flow")
    error_class: str | None
    error: str | None
    attempts: int
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None = Field(description="replayed or discarded, once resolved")


class DeadLetterPage(BaseModel):
    items: list[DeadLetterItem]
    next_cursor: str | None


class DeadLetterGroup(BaseModel):
    event_type: str
    reason: str
    error_class: str | None
    count: int


class DeadLetterSummary(BaseModel):
    total: int
    groups: list[DeadLetterGroup] = Field(description="per event type, reason and error class; biggest first")


def dead_letter_filter(
    reason: Annotated[str | None, Query(description="permanent_error, retries_exhausted or no_flow")] = None,
    error_class: ErrorClassParam = None,
    event_type: EventTypeParam = None,
    source: SourceParam = None,
    since: SinceParam = None,
    until: UntilParam = None,
    program: ProgramParam = None,
    q: QueryParam = None,
    instance: InstanceParam = None,
) -> EventFilter:
    return EventFilter(
        reason=reason or None,
        error_class=error_class or None,
        event_type=tuple(event_type or ()),
        source=source or None,
        since=timestamp("since", since),
        until=timestamp("until", until),
        program=program or None,
        q=(q or "").strip() or None,
        instance=instance or None,
    )


FilterDep = Annotated[EventFilter, Depends(dead_letter_filter)]


@router.get("/dead-letters", response_model=DeadLetterPage, summary="List dead letters")
async def list_dead_letters(
    caller: ReadCaller,
    runtime: RuntimeDep,
    flt: FilterDep,
    resolved: ResolvedParam = "false",
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> DeadLetterPage:
    """Newest first. Error texts are masked like every other personal data without ops:admin."""
    size = page_size(runtime, limit)
    async with runtime.sessions() as session:
        try:
            page = await search.find_dead_letters(session, flt, resolved=resolved, limit=size, cursor=cursor)
        except FilterError as exc:
            raise invalid(exc) from None
    items = [
        DeadLetterItem(
            id=dead.id,
            event_id=event.id,
            instance=event.instance,
            event_type=event.event_type,
            source=event.source,
            business_key=event.business_key,
            reason=dead.reason,
            error_class=dead.error_class,
            error=dead.error if caller.sees_personal_data or dead.error is None else mask_text(dead.error),
            attempts=dead.attempts,
            created_at=dead.created_at,
            resolved_at=dead.resolved_at,
            resolution=dead.resolution,
        )
        for dead, event in page.items
    ]
    return DeadLetterPage(items=items, next_cursor=page.next_cursor)


@router.get(
    "/dead-letters/summary",
    response_model=DeadLetterSummary,
    summary="Dead letters counted by event type, reason and error class",
)
async def dead_letter_summary(
    caller: ReadCaller, runtime: RuntimeDep, flt: FilterDep, resolved: ResolvedParam = "false"
) -> DeadLetterSummary:
    async with runtime.sessions() as session:
        groups = await search.dead_letter_summary(session, flt, resolved=resolved)
    return DeadLetterSummary(
        total=sum(group.count for group in groups),
        groups=[
            DeadLetterGroup(
                event_type=group.event_type,
                reason=group.reason,
                error_class=group.error_class,
                count=group.count,
            )
            for group in groups
        ],
    )
