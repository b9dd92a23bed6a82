"""``POST /api/v1/mappings/{flow}/suggestions`` (``ops:read``): for one M3 call of a mapping,
the payload paths most likely to fill each field it does not fill yet, with scores and reasons
(``assist/suggest.py``); the examples' personal data is masked for callers without
``ops:admin``. The studio lists them beside the call; accepting one is an ordinary form edit
(``/mappings/{flow}/edit``, ``ops:admin``), so this route only reads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.api.ops.mappings import (
    FlowParam,
    M3FieldOut,
    PreviewIn,
    PreviewInputOut,
    _mappings,
    _payload,
    _tenant_fields,
)
from m3bng.assist import rerank
from m3bng.assist import suggest as assist
from m3bng.mapping.schema import CallSpec
from m3bng.ops import mapping_studio as studio
from m3bng.ops.masking import mask

router = APIRouter(tags=["mappings"])


def masked_example(path: str, example: str) -> str:
    """A candidate's example as a caller without ``ops:admin`` may see it: the logs' and the
    transaction pages' masking, by the key names along the path (``BillingAddress.Line1`` is an
    address, ``BillingAddress.Country`` is kept) and by value (an e-mail anywhere)."""
    names = [n.strip('"') for n in path.split(".")]
    nested: Any = example
    for name in reversed(names):
        nested = {name: nested}
    shown = mask(nested)
    for name in names:
        shown = shown[name]
    return str(shown)


class SuggestionsIn(PreviewIn):
    call: str = Field(min_length=1, max_length=64, description="the M3 call whose fields to suggest")
    top: int = Field(default=assist.TOP, ge=1, le=10, description="candidates per field")


class CandidateOut(BaseModel):
    path: str = Field(description="the JMESPath a rule's `from` takes")
    score: float = Field(description="0..1; from 0.35 on a good candidate")
    reasons: list[str]
    rule: dict[str, Any] = Field(description="the rule accepting it writes (with the conversion)")
    example: str = Field(description="its value in the payload (shortened)")
    in_sample: bool = Field(description="false: only another flow's mapping uses this path")


class FieldSuggestionOut(BaseModel):
    field: M3FieldOut
    good: bool = Field(description="the first candidate is a good one")
    candidates: list[CandidateOut]


class SuggestionsOut(BaseModel):
    flow: str
    call: str
    operation: str
    input: PreviewInputOut
    metadata: str = Field(description="`tenant`, or why M3's field list is not available")
    fields: list[FieldSuggestionOut] = Field(
        description="fields the call does not fill, mandatory first, then by best score"
    )
    missing_mandatory: list[M3FieldOut] = Field(description="mandatory fields no path fits")
    ranking: str = Field(
        description="`offline`, or what the configured model did (or why the offline ranking stands)"
    )


@router.post(
    "/mappings/{flow}/suggestions",
    response_model=SuggestionsOut,
    summary="For one M3 call, the payload paths most likely to fill each field it leaves empty",
)
async def suggestions(
    flow: FlowParam, body: SuggestionsIn, caller: ReadCaller, runtime: RuntimeDep
) -> SuggestionsOut:
    """Sends nothing but the metadata read (MRS001MI, cached). The payload is a recorded
    transaction, a pasted sample or the shipped sample, as for the preview."""
    async with runtime.sessions() as session:
        *_, mapping = await _mappings(session, runtime, flow, body.text)
        data, _context, shown = await _payload(session, body, mapping)
    call = mapping.spec.calls.get(body.call)
    if not isinstance(call, CallSpec):
        why = "is a BNG request" if call is not None else "does not exist"
        raise studio.PreviewInputError("call", f"{flow}.{body.call} {why}: suggestions are for M3 calls")
    operation = f"{call.program}/{call.transaction}"
    specs, metadata = await _tenant_fields(runtime, call.program, call.transaction)
    out = SuggestionsOut(
        flow=flow,
        call=body.call,
        operation=operation,
        input=shown,
        metadata=metadata,
        fields=[],
        missing_mandatory=[],
        ranking="offline",
    )
    if specs is None:
        return out
    pairs = assist.used_pairs(m.spec for m in runtime.mappings.values())
    found = assist.suggest(
        call.program,
        call.transaction,
        specs,
        data,
        for_each=call.for_each,
        pairs=pairs,
        exclude=call.fields,
        top=body.top,
    )
    endpoint = rerank.endpoint_of(runtime.settings)
    if endpoint is not None:
        out.ranking = await rerank.rerank(found, data, endpoint)
    out.fields = [
        FieldSuggestionOut(
            field=M3FieldOut.of(s.field),
            good=s.best is not None,
            candidates=[CandidateOut.model_validate(c, from_attributes=True) for c in s.candidates],
        )
        for s in found.fields
    ]
    if not caller.sees_personal_data:
        for item in out.fields:
            for candidate in item.candidates:
                candidate.example = masked_example(candidate.path, candidate.example)
    out.missing_mandatory = [M3FieldOut.of(s) for s in found.missing_mandatory]
    return out
