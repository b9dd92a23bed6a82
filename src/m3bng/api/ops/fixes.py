"""``GET /api/v1/transactions/{id}/fix-suggestions`` (ops:read) and
``POST /api/v1/transactions/{id}/fix-suggestions/{n}/prepare`` (ops:replay).

The first lists what probably went wrong with the transaction's dead letter and candidate
fixes, each with its reasons; the second turns one into the edited payload and the replay's dry
run (its diff), without replaying: ops confirm by sending that payload to ``/replay``. The logic
is in ``m3bng.ops.fixes`` and ``m3bng.assist.fixes`` (docs/assist.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller, ReplayCaller
from m3bng.api.ops.transactions import masker
from m3bng.assist import fixes as assist
from m3bng.ops import fixes
from m3bng.ops.auth import Principal
from m3bng.ops.masking import mask, mask_text
from m3bng.runtime import Runtime

router = APIRouter(tags=["ops"])

MAX_ID = 2**63 - 1
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="Transaction (event) id")]
Number = Annotated[int, Path(ge=1, le=100, description="The suggestion's number in the list (1 = first)")]


class ChangeOut(BaseModel):
    path: str = Field(description="where in the payload: data.Lines[0].SKU")
    before: Any
    after: Any


class SuggestionOut(BaseModel):
    number: int = Field(description="what /prepare takes; 1 is the best candidate")
    kind: str = Field(
        description="replace_item, create_item, use_customer, create_customer, truncate, remedy"
    )
    title: str
    why: str = Field(description="why this candidate: the similarity, the fields that matched, the source")
    score: float = Field(description="0..1; the list is sorted by it")
    matched: dict[str, float] = Field(description="M3 field → similarity (1 = identical)")
    edit: list[ChangeOut] = Field(description="payload changes a replay would make (empty: an action)")
    action: str | None = Field(description="what to do outside the replay (in M3 or BNG), if anything")
    mode: str = Field(description="the replay mode that fits: from_start with an edit, else from_failed_step")


class CauseOut(BaseModel):
    kind: str = Field(description="missing_item, missing_customer, too_long, m3_message, unknown, none")
    message: str
    program: str | None
    transaction: str | None
    code: str | None
    field: str | None
    value: str | None
    limit: int | None


class FixSuggestions(BaseModel):
    event_id: int
    status: str
    cause: CauseOut
    suggestions: list[SuggestionOut]
    notes: list[str] = Field(description="limits met (records read, time) and M3 reads that failed")
    personal_data_masked: bool


class Prepared(BaseModel):
    event_id: int
    number: int
    suggestion: SuggestionOut
    dry_run: bool = Field(True, description="always true: nothing was replayed or audited")
    mode: str
    status: str = Field(description="the transaction's status now (unchanged)")
    payload: Any = Field(description="the payload to replay with (masked for callers without ops:admin)")
    diff: list[dict[str, Any]] = Field(
        description="what the replay would change: [{path, before, after, change}]"
    )
    replay: dict[str, Any] = Field(description="the request that replays it once ops confirm")
    personal_data_masked: bool


def services(runtime: Runtime) -> fixes.Services:
    return fixes.Services(
        mappings=runtime.mappings,
        has_flow=lambda source, event_type: runtime.registry.get(source, event_type) is not None,
        connectors=runtime.connectors,
        max_bod_bytes=runtime.settings.ion_max_bod_bytes,
    )


def _suggestion(number: int, suggestion: assist.Suggestion, caller: Principal) -> SuggestionOut:
    """Masked like the transaction detail for callers without ops:admin: e-mails in the texts,
    personal values in the edit; ``matched`` holds field names and scores only."""
    data = suggestion.to_dict()
    if not caller.sees_personal_data:
        data.update({k: mask_text(data[k]) for k in ("title", "why", "action") if data[k]})
        data["edit"] = [{**c, "before": mask(c["before"]), "after": mask(c["after"])} for c in data["edit"]]
    return SuggestionOut(number=number, **data)


@router.get(
    "/transactions/{event_id}/fix-suggestions",
    response_model=FixSuggestions,
    summary="Candidate fixes for a transaction's dead letter, each with its reasons",
    responses={404: {"description": "No transaction with this id"}},
)
async def fix_suggestions(event_id: EventId, caller: ReadCaller, runtime: RuntimeDep) -> FixSuggestions:
    """Worked out now from the dead letter, the payload and M3 (bounded reads; ``notes`` say
    what was cut). A transaction without a dead letter has cause ``none`` and no suggestions."""
    detail, report = await fixes.report_for(runtime.sessions, services(runtime), event_id)
    cause = report.cause
    shown = masker(caller)
    return FixSuggestions(
        event_id=event_id,
        status=detail.event.status,
        cause=CauseOut(**shown({k: getattr(cause, k) for k in CauseOut.model_fields})),
        suggestions=[_suggestion(n, s, caller) for n, s in enumerate(report.suggestions, 1)],
        notes=report.notes,
        personal_data_masked=not caller.sees_personal_data,
    )


@router.post(
    "/transactions/{event_id}/fix-suggestions/{number}/prepare",
    response_model=Prepared,
    summary="One suggestion as a replay's dry run: the edited payload and its diff (nothing replayed)",
    responses={
        404: {"description": "No such transaction or suggestion number"},
        409: {"description": "Not replayable now, or the payload changed since"},
        422: {"description": "The edited payload would be refused (the message names the field)"},
    },
)
async def prepare_fix(
    event_id: EventId, number: Number, caller: ReplayCaller, runtime: RuntimeDep
) -> Prepared:
    """Validated exactly as the replay will validate it; not audited (nothing happened). To
    replay, POST ``replay.body`` to ``replay.path``: that request is audited as any replay."""
    result = await fixes.prepare(runtime.sessions, services(runtime), event_id, number)
    shown = masker(caller)
    preview = result.preview
    body: dict[str, Any] = {
        "mode": preview.mode,
        "reason": f"fix suggestion {number}: {result.suggestion.title}"[:1000],  # the replay's limit
    }
    if result.suggestion.edit:
        body["payload"] = shown(preview.payload)
    return Prepared(
        event_id=event_id,
        number=number,
        suggestion=_suggestion(number, result.suggestion, caller),
        mode=preview.mode,
        status=preview.status,
        payload=shown(preview.payload),
        diff=shown(preview.diff),
        replay={"method": "POST", "path": f"/api/v1/transactions/{event_id}/replay", "body": body},
        personal_data_masked=not caller.sees_personal_data,
    )
