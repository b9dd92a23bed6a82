"""``GET /api/v1/transactions`` and ``GET /api/v1/transactions/{id}``: find an event ("where is
order SO-1001?") and read its whole story: what came in, which mapping version applied it, every
call made with request and response, the dead letter, replays, and the keys it is found by.

Personal data (e-mails, phones, addresses) is masked for callers without ``ops:admin``
(``m3bng.ops.masking``). The query parameter types and helpers here are shared by the other
read routes (dead letters, audit).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import ApiError, refusal
from m3bng.api.ops.auth import ReadCaller
from m3bng.ops import search
from m3bng.ops.auth import Principal
from m3bng.ops.filters import EventFilter, FilterError
from m3bng.ops.holds import finding_view
from m3bng.ops.masking import mask, mask_text
from m3bng.runtime import Runtime
from m3bng.store import mapping_versions as mapping_store
from m3bng.store.models import Event, EventStatus

router = APIRouter(tags=["ops"])

# -- shared query parameters ----------------------------------------------------------------------

_TIME_HELP = "ISO 8601, e.g. 2026-11-24T10:00:00Z or 2026-11-24; without a zone, UTC"
SinceParam = Annotated[
    str | None,
    Query(description=f"received at or after ({_TIME_HELP})", json_schema_extra={"format": "date-time"}),
]
UntilParam = Annotated[
    str | None,
    Query(description=f"received before ({_TIME_HELP})", json_schema_extra={"format": "date-time"}),
]
EventTypeParam = Annotated[
    list[str] | None,
    Query(description="event type (order.created, SyncSalesOrder, ...); repeat for several"),
]
SourceParam = Annotated[str | None, Query(description="bng (webhooks), ion (BODs) or poller")]
ErrorClassParam = Annotated[
    str | None, Query(description="error class: missing_reference, bad_data, transient, ...")
]
ProgramParam = Annotated[
    str | None,
    Query(description="events with a step of this M3 program (OIS100MI) or program/transaction"),
]
QueryParam = Annotated[
    str | None,
    Query(
        max_length=255,
        description="a business key: BNG order/customer id, M3 ORNO or CUNO, BODID, ... "
        "(case-insensitive exact match)",
    ),
]
LimitParam = Annotated[int, Query(ge=1, le=1000, description="page size (at most M3BNG_OPS_PAGE_SIZE_MAX)")]
CursorParam = Annotated[str | None, Query(description="next_cursor of the previous page, unchanged")]
InstanceParam = Annotated[
    str | None,
    Query(max_length=32, description="the BNG instance (GET /api/v1/instances lists them); default: all"),
]


def invalid(exc: FilterError) -> ApiError:
    """A FilterError says ``name: problem``; the answer names the parameter like FastAPI's own do."""
    field, _, problem = exc.message.partition(": ")
    return refusal(exc, fields=[{"field": field, "problem": problem}])


def page_size(runtime: Runtime, limit: int) -> int:
    ceiling = runtime.settings.ops_page_size_max
    if limit > ceiling:
        raise ApiError(
            422,
            "invalid_request",
            f"limit: at most {ceiling} (M3BNG_OPS_PAGE_SIZE_MAX); page on with next_cursor",
            fields=[{"field": "limit", "problem": f"greater than {ceiling}"}],
        )
    return limit


def timestamp(name: str, value: str | None) -> datetime | None:
    try:
        return search.parse_timestamp(name, value)
    except FilterError as exc:
        raise invalid(exc) from None


def masker(caller: Principal) -> Callable[[Any], Any]:
    """What the caller may see: everything for admins, masked personal data for the others."""
    return (lambda value: value) if caller.sees_personal_data else mask


def _text(value: str | None, caller: Principal) -> str | None:
    return value if value is None or caller.sees_personal_data else mask_text(value)


# -- response models ------------------------------------------------------------------------------


class TxSummary(BaseModel):
    id: int
    instance: str = Field(description="the BNG instance it came from or is for (default: the only one)")
    source: str
    event_type: str
    external_id: str = Field(description="the sender's id: webhook-id, or the BODID")
    business_key: str | None = Field(description="events with one key run in order: order:SO-1001")
    status: EventStatus
    attempts: int
    error_class: str | None
    last_error: str | None
    received_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    correlation_id: str = Field(description="in every log line about this event")
    mapping_hash: str | None = Field(description="content hash of the mapping it was last applied with")

    @classmethod
    def of(cls, event: Event, caller: Principal) -> TxSummary:
        return cls(
            id=event.id,
            instance=event.instance,
            source=event.source,
            event_type=event.event_type,
            external_id=event.external_id,
            business_key=event.business_key,
            status=EventStatus(event.status),
            attempts=event.attempts,
            error_class=event.error_class,
            last_error=_text(event.last_error, caller),
            received_at=event.received_at,
            updated_at=event.updated_at,
            finished_at=event.finished_at,
            correlation_id=event.correlation_id,
            mapping_hash=event.mapping_hash,
        )


class TxPage(BaseModel):
    items: list[TxSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class MappingVersion(BaseModel):
    name: str | None = Field(description="the flow whose mapping handles this event type now")
    hash: str | None = Field(description="the mapping's content hash when this event was applied")
    current_hash: str | None = Field(description="the content hash of the mapping loaded now")
    changed: bool | None = Field(description="the mapping changed since; null when either is unknown")
    version: int | None = Field(
        default=None, description="the mapping version with this event's hash; null when none is stored"
    )
    url: str | None = Field(default=None, description="that version's text: GET it (ops:read)")


class StepOut(BaseModel):
    id: int
    attempt: int
    name: str
    target: str
    operation: str = Field(description="OIS100MI/AddBatchHead, PUT /customers/C-1, ...")
    status: str = Field(description="ok, failed, or unknown (sent, no answer)")
    error_class: str | None
    error: str | None
    duration_ms: float
    started_at: datetime
    request: Any
    response: Any


class DeadLetterOut(BaseModel):
    id: int
    reason: str
    error_class: str | None
    error: str | None
    attempts: int
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None
    failed_step_id: int | None


class ReplayOut(BaseModel):
    id: int
    mode: str
    requested_by: str
    created_at: datetime
    bulk_id: int | None
    edited: bool = Field(description="replayed with an edited payload (see the audit log)")
    from_status: str | None


class KeyOut(BaseModel):
    value: str = Field(description="normalised: trimmed and lower-case")
    kind: str = Field(description="order_id, orno, cuno, bodid, ...")


class AnomalyOut(BaseModel):
    id: int
    rule: str = Field(description="quantity, price, amount, new_customer or near_duplicate")
    action: str = Field(description="flag (the event went on) or hold (it waited for a person)")
    summary: str
    detail: Any = Field(
        description="the figures (value, median, MAD, robust z, thresholds, history size) and history"
    )
    created_at: datetime
    resolution: str | None = Field(description="a hold's end: released or discarded")
    resolved_by: str | None
    resolved_at: datetime | None


class TxDetail(TxSummary):
    payload: Any = Field(description="as received (null once purged by retention)")
    purged_at: datetime | None
    checkpoint: Any = Field(description="keys completed steps obtained (ORNO, CUNO, ...)")
    mapping: MappingVersion | None
    steps: list[StepOut]
    dead_letter: DeadLetterOut | None = Field(description="the newest dead letter, if any")
    replays: list[ReplayOut]
    keys: list[KeyOut]
    anomalies: list[AnomalyOut] = Field(description="anomaly rules that fired for it (docs/assist.md)")
    personal_data_masked: bool


# -- routes ---------------------------------------------------------------------------------------


def transaction_filter(
    status: Annotated[
        list[EventStatus] | None, Query(description="pending, processing, done, dead, ...; repeatable")
    ] = None,
    event_type: EventTypeParam = None,
    source: SourceParam = None,
    since: SinceParam = None,
    until: UntilParam = None,
    error_class: ErrorClassParam = None,
    program: ProgramParam = None,
    q: QueryParam = None,
    instance: InstanceParam = None,
) -> EventFilter:
    return EventFilter(
        status=tuple(s.value for s in status or ()),
        event_type=tuple(event_type or ()),
        source=source or None,
        since=timestamp("since", since),
        until=timestamp("until", until),
        error_class=error_class or None,
        program=program or None,
        q=(q or "").strip() or None,
        instance=instance or None,
    )


@router.get("/transactions", response_model=TxPage, summary="List and search transactions")
async def list_transactions(
    caller: ReadCaller,
    runtime: RuntimeDep,
    flt: Annotated[EventFilter, Depends(transaction_filter)],
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> TxPage:
    """Newest first. Filters combine with AND; ``q`` finds an event by any business key it is
    about (the BNG order id, the M3 ORNO its order got, a customer number, a BODID)."""
    size = page_size(runtime, limit)
    async with runtime.sessions() as session:
        try:
            page = await search.find_events(session, flt, limit=size, cursor=cursor)
        except FilterError as exc:
            raise invalid(exc) from None
    return TxPage(items=[TxSummary.of(e, caller) for e in page.items], next_cursor=page.next_cursor)


@router.get(
    "/transactions/{event_id}",
    response_model=TxDetail,
    summary="One transaction: payload, mapping version, steps, dead letter, replays",
    responses={404: {"description": "No transaction with this id"}},
)
async def get_transaction(
    caller: ReadCaller,
    runtime: RuntimeDep,
    event_id: Annotated[int, Path(ge=1, description="the transaction (event) id")],
) -> TxDetail:
    async with runtime.sessions() as session:
        detail = await search.load_event_detail(session, event_id)
        applied = None
        if detail is not None and detail.event.mapping_hash is not None:
            applied = await mapping_store.find_by_hash(session, detail.event.mapping_hash)
    if detail is None:
        raise ApiError(404, "not_found", f"no transaction with id {event_id}")
    out = detail_of(detail, runtime, caller)
    if out.mapping is not None and applied is not None:
        out.mapping.version = applied.version
        out.mapping.url = f"/api/v1/mappings/{applied.flow}/versions/{applied.version}"
    return out


def detail_of(detail: search.EventDetail, runtime: Runtime, caller: Principal) -> TxDetail:
    event, shown = detail.event, masker(caller)
    mapping = search.mapping_for(runtime.mappings, event.source, event.event_type)
    version = None
    if mapping is not None or event.mapping_hash is not None:
        current = mapping.content_hash if mapping is not None else None
        version = MappingVersion(
            name=mapping.flow if mapping is not None else None,
            hash=event.mapping_hash,
            current_hash=current,
            changed=None if current is None or event.mapping_hash is None else current != event.mapping_hash,
        )
    dead = detail.dead_letter
    return TxDetail(
        **TxSummary.of(event, caller).model_dump(),
        payload=shown(event.payload),
        purged_at=event.purged_at,
        checkpoint=shown(event.checkpoint),
        mapping=version,
        steps=[
            StepOut(
                id=step.id,
                attempt=step.attempt,
                name=step.name,
                target=step.target,
                operation=step.operation,
                status=step.status,
                error_class=step.error_class,
                error=_text(step.error, caller),
                duration_ms=step.duration_ms,
                started_at=step.started_at,
                request=shown(step.request),
                response=shown(step.response),
            )
            for step in detail.steps
        ],
        dead_letter=None
        if dead is None
        else DeadLetterOut(
            id=dead.id,
            reason=dead.reason,
            error_class=dead.error_class,
            error=_text(dead.error, caller),
            attempts=dead.attempts,
            created_at=dead.created_at,
            resolved_at=dead.resolved_at,
            resolution=dead.resolution,
            failed_step_id=dead.failed_step_id,
        ),
        replays=[
            ReplayOut(
                id=replay.id,
                mode=replay.mode,
                requested_by=replay.requested_by,
                created_at=replay.created_at,
                bulk_id=replay.bulk_id,
                edited=replay.edited_payload is not None,
                from_status=replay.from_status,
            )
            for replay in detail.replays
        ],
        keys=[KeyOut(value=_text(key.value, caller) or "", kind=key.kind) for key in detail.keys],
        anomalies=[AnomalyOut(**finding_view(finding)) for finding in detail.anomalies],
        personal_data_masked=not caller.sees_personal_data,
    )
