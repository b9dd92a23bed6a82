"""Replay, discard and bulk replay routes (writes need ``ops:replay``); the logic is in ``m3bng.ops``.

Semantics (from where, which mapping, concurrency, edits, bulk) are in docs/replay.md. A replay
that cannot be done raises a ``ReplayError``; the app-wide handler answers it (``api/errors.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import refusal
from m3bng.api.ops.auth import ReadCaller, ReplayCaller
from m3bng.api.ops.transactions import TxSummary
from m3bng.connectors.untrusted_json import problem_in
from m3bng.ops import bulk, replay, search
from m3bng.ops.auth import Principal
from m3bng.ops.filters import EventFilter, FilterError, decode_cursor, encode_cursor
from m3bng.runtime import Runtime
from m3bng.store.models import EventStatus

router = APIRouter(tags=["ops"])

Mode = Literal["from_failed_step", "from_start"]
MAX_ID = 2**63 - 1
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="Transaction (event) id")]
BulkId = Annotated[int, Path(ge=1, le=MAX_ID, description="Bulk replay id")]
Reason = Annotated[
    str | None, Field(default=None, max_length=1000, description="Why (kept in the audit log).")
]

_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or invalid token"},
    403: {"description": "The token lacks scope ops:replay"},
    404: {"description": "No such transaction or bulk replay"},
}


def _no_nul(value: Any) -> Any:
    """Text and JSON the databases can store: PostgreSQL refuses NUL and lone surrogates (which
    JSON can carry as escapes), and ``jsonb`` refuses NaN/Infinity (``1e400``). Refused here with
    a 422 naming the field, not deep down with a 500 (the rules of ``untrusted_json``)."""
    problem = problem_in(value, name="value")
    if problem is not None:
        raise ValueError(str(problem))
    return value


# -- single replay and discard ------------------------------------------------------------------


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = Field(
        default=None,
        description="from_failed_step keeps the checkpoint (resume); from_start clears it. "
        "Default: from_failed_step, or from_start when the payload is edited.",
    )
    payload: dict[str, Any] | None = Field(
        default=None,
        description='Edited payload. BNG: the webhook body {"type", "timestamp", "data"} (same type); '
        'ION: {"xml": "<BOD…>"} (same noun and verb). Validated like an inbound event.',
    )
    reason: Reason = None
    dry_run: bool = Field(
        default=False,
        description="Check and diff only: the same validation and refusals, nothing replayed, "
        "nothing audited; answers 200 with replay_id null.",
    )

    _text = field_validator("reason", "payload")(_no_nul)


class ReplayAccepted(BaseModel):
    event_id: int
    replay_id: int | None = Field(description="null for a dry run")
    mode: str
    status: str = Field(description="pending after a replay; the status unchanged after a dry run")
    diff: list[dict[str, Any]] = Field(description="What the edit changed: [{path, before, after, change}]")
    dry_run: bool = False


@router.post(
    "/transactions/{event_id}/replay",
    status_code=202,
    response_model=ReplayAccepted,
    responses={
        **_COMMON,
        200: {"description": "Dry run: what the replay would do (nothing done)", "model": ReplayAccepted},
        409: {"description": "Not replayable: pending/processing (already queued), done (already applied)"},
        422: {"description": "Invalid edited payload (the message names the field)"},
    },
)
async def replay_transaction(
    event_id: EventId, caller: ReplayCaller, runtime: RuntimeDep, body: ReplayRequest | None = None
) -> Any:
    """Put a dead, skipped or discarded transaction back in line, with the current mapping.

    With ``dry_run`` the request is checked and its diff computed as a replay would, and nothing
    else happens (200): what a fix suggestion's prepare step shows before ops confirm."""
    request = body or ReplayRequest()
    if request.dry_run:
        preview = await replay.preview(
            runtime.sessions,
            event_id,
            mode=request.mode,
            payload=request.payload,
            has_flow=lambda source, event_type: runtime.registry.get(source, event_type) is not None,
            max_bod_bytes=runtime.settings.ion_max_bod_bytes,
        )
        dry = ReplayAccepted(
            event_id=event_id,
            replay_id=None,
            mode=preview.mode,
            status=preview.status,
            diff=preview.diff,
            dry_run=True,
        )
        return JSONResponse(dry.model_dump(mode="json"), status_code=200)
    result = await replay.replay(
        runtime.sessions,
        runtime.notifier,
        event_id,
        actor=caller.name,
        mode=request.mode,
        payload=request.payload,
        reason=request.reason,
        has_flow=lambda source, event_type: runtime.registry.get(source, event_type) is not None,
        max_bod_bytes=runtime.settings.ion_max_bod_bytes,
    )
    return ReplayAccepted(**vars(result))


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(max_length=1000, description="Why it is given up (at least 3 characters; audited).")

    _reason = field_validator("reason")(_no_nul)


async def _summary(runtime: Runtime, event_id: int, caller: Principal) -> TxSummary:
    """The discarded transaction as the list shows it (masked like it for non-admins)."""
    async with runtime.sessions() as session:
        event = await search.get_event(session, event_id)
    assert event is not None  # just discarded: far too recent for retention to have deleted it
    return TxSummary.of(event, caller)


@router.post(
    "/transactions/{event_id}/discard",
    response_model=TxSummary,
    responses={
        **_COMMON,
        409: {"description": "Only dead or pending transactions can be discarded"},
        422: {"description": "Reason missing or shorter than 3 characters"},
    },
)
async def discard_transaction(
    event_id: EventId, body: DiscardRequest, caller: ReplayCaller, runtime: RuntimeDep
) -> TxSummary:
    """Give a dead or pending transaction up for good (until someone replays it), with a reason."""
    await replay.discard(runtime.sessions, event_id, actor=caller.name, reason=body.reason)
    return await _summary(runtime, event_id, caller)


# -- bulk replay -----------------------------------------------------------------------------------


class BulkFilter(BaseModel):
    """The dead-letter list's filter (``GET /dead-letters``); a bulk replay replays dead events."""

    model_config = ConfigDict(extra="forbid")

    status: list[str] = Field(default_factory=list, description='Only ["dead"] (or omitted).')
    event_type: list[str] = Field(default_factory=list, description="one type or a list")
    source: str | None = Field(default=None, max_length=32)
    since: datetime | None = Field(default=None, description="received at or after (ISO 8601; no zone = UTC)")
    until: datetime | None = Field(default=None, description="received before (ISO 8601; no zone = UTC)")
    error_class: str | None = Field(default=None, max_length=32)
    program: str | None = Field(default=None, max_length=64)
    q: str | None = Field(default=None, max_length=255, description="a business key (order id, ORNO, ...)")
    reason: str | None = Field(default=None, max_length=64, description="dead-letter reason")
    instance: str | None = Field(default=None, max_length=32, description="the BNG instance; default: all")

    _text = field_validator("event_type", "source", "error_class", "program", "q", "reason", "instance")(
        _no_nul
    )

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """No zone means UTC, as in the lists' ``since``/``until``."""
        if value is None:
            return None
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range") from None

    @field_validator("event_type", "status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("status")
    @classmethod
    def _dead_only(cls, value: list[str]) -> list[str]:
        if any(status != EventStatus.DEAD.value for status in value):
            raise ValueError('bulk replay replays dead letters only: omit status or send ["dead"]')
        return value

    def to_filter(self) -> EventFilter:
        """The shared EventFilter, the one the lists use."""
        return EventFilter(
            status=(EventStatus.DEAD.value,),
            event_type=tuple(self.event_type),
            source=self.source or None,
            since=self.since,
            until=self.until,
            error_class=self.error_class or None,
            program=self.program or None,
            q=(self.q or "").strip() or None,
            reason=self.reason or None,
            instance=self.instance or None,
        )


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: BulkFilter = Field(default_factory=BulkFilter)
    mode: Mode = "from_failed_step"
    dry_run: bool = Field(default=False, description="Only count what would be replayed.")
    rate: float | None = Field(
        default=None,
        ge=bulk.MIN_RATE,
        le=bulk.MAX_RATE,
        description="Replays per second (default M3BNG_OPS_REPLAY_RATE); at least 0.01 (one every 100 s).",
    )
    reason: Reason = None

    _reason = field_validator("reason")(_no_nul)


class DryRun(BaseModel):
    matched: int


class BulkStatus(BaseModel):
    id: int
    status: str = Field(description="running, cancelled, done or failed")
    total: int = Field(description="dead letters matched when it started")
    replayed: int
    skipped: int = Field(description="no longer dead when reached (replayed or discarded meanwhile)")
    progress: float = Field(description="(replayed + skipped) / total, 0..1")
    mode: str
    rate: float
    filter: dict[str, Any]
    requested_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, view: bulk.BulkView) -> BulkStatus:
        return cls(**vars(view), progress=view.progress)


class BulkList(BaseModel):
    items: list[BulkStatus]
    next_cursor: str | None


@router.post(
    "/replays/bulk",
    status_code=202,
    response_model=BulkStatus | DryRun,
    responses={
        200: {"model": DryRun, "description": "dry_run: how many dead letters match"},
        202: {"model": BulkStatus, "description": "Started; follow it at GET /replays/bulk/{id}"},
        401: _COMMON[401],
        403: _COMMON[403],
        422: {"description": "Invalid filter, mode or rate (the message names the field)"},
    },
)
async def start_bulk_replay(body: BulkRequest, caller: ReplayCaller, runtime: RuntimeDep) -> Any:
    """Replay every dead letter a filter matches, in the background at a limited rate."""
    flt = body.filter.to_filter()
    rate = bulk.check_mode_and_rate(body.mode, body.rate, runtime.settings)
    if body.dry_run:
        async with runtime.sessions() as session:
            return JSONResponse(DryRun(matched=await bulk.count_matching(session, flt)).model_dump())
    view = await bulk.start_bulk(
        runtime.sessions, flt, mode=body.mode, rate=rate, actor=caller.name, reason=body.reason
    )
    return JSONResponse(BulkStatus.of(view).model_dump(mode="json"), status_code=202)


@router.get("/replays/bulk", response_model=BulkList, responses={401: _COMMON[401]})
async def list_bulk_replays(
    caller: ReadCaller,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> BulkList:
    """Recent bulk replays, newest first."""
    try:
        before = decode_cursor(cursor)
        if before is not None and before > MAX_ID:
            raise FilterError("cursor: not a cursor this API returned (pass next_cursor unchanged)")
    except FilterError as exc:
        raise refusal(exc, fields=[{"field": "cursor", "problem": "not a cursor"}]) from None
    views = await bulk.list_bulks(runtime.sessions, limit=limit + 1, before_id=before)
    more = len(views) > limit
    views = views[:limit]
    return BulkList(
        items=[BulkStatus.of(v) for v in views],
        next_cursor=encode_cursor(views[-1].id) if more and views else None,
    )


@router.get("/replays/bulk/{bulk_id}", response_model=BulkStatus, responses=_COMMON)
async def get_bulk_replay(bulk_id: BulkId, caller: ReadCaller, runtime: RuntimeDep) -> BulkStatus:
    """One bulk replay's progress."""
    return BulkStatus.of(await bulk.get_bulk(runtime.sessions, bulk_id))


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = None

    _reason = field_validator("reason")(_no_nul)


@router.post(
    "/replays/bulk/{bulk_id}/cancel",
    response_model=BulkStatus,
    responses={**_COMMON, 409: {"description": "Already finished (done, cancelled or failed)"}},
)
async def cancel_bulk_replay(
    bulk_id: BulkId, caller: ReplayCaller, runtime: RuntimeDep, body: CancelRequest | None = None
) -> BulkStatus:
    """Stop a running bulk replay: what it replayed stays replayed, the rest stays dead."""
    view = await bulk.cancel_bulk(
        runtime.sessions, bulk_id, actor=caller.name, reason=body.reason if body else None
    )
    return BulkStatus.of(view)
