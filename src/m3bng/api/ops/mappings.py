"""``/api/v1/mappings``: the mapping versions flows run (ops/mapping_versions.py) and the
studio's tools around them (ops/mapping_studio.py).

``ops:read`` sees flows, versions, texts, diffs, previews, M3 field searches and the dead letters
a version could fix; ``ops:admin`` edits texts by form, creates drafts, publishes, rolls back and
moves bundles between installations; ``ops:replay`` replays the dead letters offered after a
publish. Publish and rollback are audited in the
same transaction as the change; every process runs a published version within
``M3BNG_MAPPINGS_REFRESH_SECONDS`` (this one at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import AdminCaller, ReadCaller, ReplayCaller
from m3bng.api.ops.transactions import masker
from m3bng.connectors.m3.metadata import FieldSpec
from m3bng.errors import M3bngError
from m3bng.mapping import Mapping
from m3bng.mapping import edit as edits
from m3bng.mapping.describe import describe_rule
from m3bng.mapping.schema import BngCallSpec, FieldRule, Scalar
from m3bng.ops import mapping_studio as studio
from m3bng.ops import mapping_versions as versions
from m3bng.ops import replay
from m3bng.runtime import Runtime
from m3bng.store import mapping_versions as store

router = APIRouter(tags=["mappings"])

PREFIX = "/api/v1/mappings"
MAX_VERSION = 2**31 - 1  # an INTEGER column: a larger number is no version (and overflows SQLite)
FlowParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the flow (mapping name), e.g. order_to_cash",
    ),
]
VersionParam = Annotated[int, Path(ge=1, le=MAX_VERSION, description="the version number within the flow")]


def version_url(flow: str, version: int) -> str:
    return f"{PREFIX}/{flow}/versions/{version}"


class VersionOut(BaseModel):
    flow: str
    version: int
    state: str = Field(description="draft, live or superseded")
    source: str = Field(description="file (imported at start-up), studio (the API) or bundle")
    content_hash: str = Field(description="what events record as their mapping_hash")
    file_name: str
    comment: str | None
    author: str
    based_on: int | None = Field(description="rollback: the version this one copies")
    created_at: datetime
    published_at: datetime | None
    url: str

    @classmethod
    def of(cls, v: store.Version) -> VersionOut:
        return cls(
            flow=v.flow,
            version=v.version,
            state=v.state,
            source=v.source,
            content_hash=v.content_hash,
            file_name=v.file_name,
            comment=v.comment,
            author=v.author,
            based_on=v.based_on,
            created_at=v.created_at,
            published_at=v.published_at,
            url=version_url(v.flow, v.version),
        )


class VersionText(VersionOut):
    text: str


class ConflictOut(BaseModel):
    file_name: str
    file_version: int | None = Field(description="the version last imported from (or found in) the file")
    live_version: int = Field(description="the live version, kept until someone decides")
    detected_at: datetime
    message: str


class FlowOut(BaseModel):
    flow: str
    live: VersionOut | None
    drafts: int
    conflict: ConflictOut | None


class FlowList(BaseModel):
    items: list[FlowOut]


class VersionList(BaseModel):
    items: list[VersionOut]


class DraftIn(BaseModel):
    text: str = Field(min_length=1, max_length=versions.MAX_TEXT_BYTES, description="the mapping YAML")
    comment: str | None = Field(default=None, max_length=2000)


class PublishIn(BaseModel):
    comment: str = Field(
        min_length=1, max_length=2000, description="why: kept with the version and in the audit log"
    )


class DiffOut(BaseModel):
    flow: str
    from_version: int
    to_version: int
    diff: str = Field(description="unified diff of the two texts; empty when they are the same")


class M3FieldOut(BaseModel):
    name: str
    description: str
    type: str = Field(description="A alphanumeric, N numeric, D date (yyyyMMdd)")
    length: int = Field(description="0: M3 gave no length")
    mandatory: bool

    @classmethod
    def of(cls, spec: FieldSpec) -> M3FieldOut:
        return cls.model_validate(spec, from_attributes=True)


class FieldOut(BaseModel):
    field: str = Field(description="the M3 field (or BNG JSON name / path parameter) the rule fills")
    source: str = Field(description="path, var, value, concat, lookup or condition")
    rule: str = Field(description="the whole rule in words (as `m3bng mappings describe` writes it)")
    path: str | None = Field(description="the event path the value is read from (`from`)")
    var: str | None
    value: str | None
    lookup: str | None = Field(description="the lookup table the path's value goes through")
    condition: str | None = Field(description="`when` cases in words")
    conversion: str | None = Field(description="type, case, truncation, maximum length")
    default: str | None = Field(description="what is used when the source is empty (`default`/`else`)")
    required: bool
    spec: Any = Field(description="the rule as the YAML writes it (what a form edit sends back)")
    m3: M3FieldOut | None = Field(
        default=None,
        description="the field in the tenant's metadata (MRS001MI LstFields); null for a BNG call, when "
        "the metadata is unavailable, or when M3 has no such input field (`CallOut.unknown_fields`)",
    )


class CallOut(BaseModel):
    call: str
    target: str = Field(description="m3 or bng")
    operation: str = Field(description="PROGRAM/Transaction, or METHOD /path for BNG")
    for_each: str | None
    condition: str | None = Field(description="the call's `if`: it is made only when this holds")
    fields: list[FieldOut]
    metadata: str | None = Field(
        default=None,
        description="for an M3 call: `tenant` when the fields were checked against the tenant's metadata, "
        "else why they could not be (M3 not configured or not answering)",
    )
    unknown_fields: list[str] = Field(
        default_factory=list, description="fields the rule fills that the transaction has no input for"
    )
    missing_mandatory: list[M3FieldOut] = Field(
        default_factory=list, description="fields M3 marks mandatory that no rule fills"
    )


class FieldTable(BaseModel):
    flow: str
    version: int | None = Field(description="null for a working copy's text (POST …/fields)")
    description: str
    trigger: list[str]
    vars: dict[str, Any]
    lookups: list[str] = Field(description="the lookup tables rules may name")
    calls: list[CallOut]


# The field list comes from the metadata cache (store, then M3 at most once a day per
# transaction); a page must not hang on an M3 that does not answer.
METADATA_WAIT_SECONDS = 10.0


async def _tenant_fields(
    runtime: Runtime, program: str, transaction: str
) -> tuple[dict[str, FieldSpec] | None, str]:
    """The transaction's input fields in the tenant's metadata, and ``tenant``; or None and why
    they could not be had (the table is shown without them)."""
    metadata = runtime.connectors.m3_metadata
    if metadata is None:
        return None, "M3 is not configured: fields not checked against the tenant's metadata"
    try:
        specs = await asyncio.wait_for(metadata.fields(program, transaction, "I"), METADATA_WAIT_SECONDS)
    except (M3bngError, TimeoutError, OSError) as exc:
        return None, f"M3's field list for {program}/{transaction} is not available: {exc}"[:300]
    if not specs:
        return None, f"M3 lists no input fields for {program}/{transaction}"
    return specs, "tenant"


def _words(rule: FieldRule | str | int | float | bool | None, variables: dict[str, object]) -> str | None:
    if rule is None:
        return None
    if isinstance(rule, (FieldRule, str)):
        return describe_rule(rule, variables)
    return f"`{rule}`"


def _field_out(name: str, rule: FieldRule, variables: dict[str, object]) -> FieldOut:
    if rule.when is not None:
        source = "condition"
    elif rule.lookup is not None:
        source = "lookup"
    elif rule.var is not None:
        source = "var"
    elif rule.value is not None:
        source = "value"
    elif rule.concat is not None:
        source = "concat"
    else:
        source = "path"
    condition = None
    if rule.when is not None:
        condition = "; ".join(f"if `{c.if_}` then {describe_rule(c.then, variables)}" for c in rule.when)
    conversion = ", ".join(
        n
        for n in (
            f"as {rule.type}" if rule.type else "",
            f"date read as {rule.date_input}" if rule.date_input else "",
            "upper case" if rule.upper else "",
            "lower case" if rule.lower else "",
            ("truncated" if rule.truncate is True else f"truncated to {rule.truncate}")
            if rule.truncate
            else "",
            f"at most {rule.max_length}" if rule.max_length else "",
        )
        if n
    )
    defaults = [d for d in (_words(rule.default, variables), _words(rule.else_, variables)) if d]
    return FieldOut(
        field=name,
        source=source,
        rule=describe_rule(rule, variables),
        path=rule.from_,
        var=f"{rule.var} = {variables.get(rule.var, '')}" if rule.var is not None else None,
        value=str(rule.value) if rule.value is not None else None,
        lookup=rule.lookup,
        condition=condition,
        conversion=conversion or None,
        default="; ".join(defaults) or None,
        required=rule.required,
        spec=rule.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    )


class BundleImportOut(BaseModel):
    drafts: list[VersionOut]


@router.get(
    "/mappings", response_model=FlowList, summary="Flows with their live mapping version and any conflict"
)
async def list_flows(caller: ReadCaller, runtime: RuntimeDep) -> FlowList:
    async with runtime.sessions() as session:
        found = await versions.flows(session)
    items = []
    for flow in found:
        conflict = None
        if flow.conflict is not None:
            c = flow.conflict
            conflict = ConflictOut(
                file_name=c.file_name,
                file_version=c.file_version,
                live_version=c.live_version,
                detected_at=c.detected_at,
                message=f"{c.file_name} changed after version {c.live_version} was published; the live "
                "version stays until the file is replaced by an export or the file's text is published",
            )
        live = VersionOut.of(flow.live) if flow.live is not None else None
        items.append(FlowOut(flow=flow.flow, live=live, drafts=flow.drafts, conflict=conflict))
    return FlowList(items=items)


@router.get(
    "/mappings/{flow}/versions", response_model=VersionList, summary="A flow's versions, newest first"
)
async def list_versions(flow: FlowParam, caller: ReadCaller, runtime: RuntimeDep) -> VersionList:
    async with runtime.sessions() as session:
        found = await store.list_versions(session, flow)
    if not found:
        raise versions.VersionNotFound(f"flow: no mapping versions of {flow!r}")
    return VersionList(items=[VersionOut.of(v) for v in found])


@router.get(
    "/mappings/{flow}/versions/{version}", response_model=VersionText, summary="One version with its YAML"
)
async def get_version(
    flow: FlowParam, version: VersionParam, caller: ReadCaller, runtime: RuntimeDep
) -> VersionText:
    async with runtime.sessions() as session:
        found = await versions.need_version(session, flow, version)
    return VersionText(**VersionOut.of(found).model_dump(), text=found.text)


async def _field_table(runtime: Runtime, flow: str, version: int | None, mapping: Mapping) -> FieldTable:
    spec = mapping.spec
    variables: dict[str, object] = dict(spec.vars)
    calls = []
    for name, call in spec.calls.items():
        if isinstance(call, BngCallSpec):
            target, operation = "bng", f"{call.method} {call.path}"
            rules = [(f"{{{k}}}", r) for k, r in call.params.items()] + list(call.fields.items())
        else:
            target, operation = "m3", f"{call.program}/{call.transaction}"
            rules = list(call.fields.items())
        out = CallOut(
            call=name,
            target=target,
            operation=operation,
            for_each=call.for_each,
            condition=call.if_,
            fields=[_field_out(field, rule, variables) for field, rule in rules],
        )
        if not isinstance(call, BngCallSpec):
            specs, out.metadata = await _tenant_fields(runtime, call.program, call.transaction)
            if specs is not None:
                for field in out.fields:
                    spec_of = specs.get(field.field)
                    field.m3 = M3FieldOut.of(spec_of) if spec_of is not None else None
                    if spec_of is None:
                        out.unknown_fields.append(field.field)
                filled = {f.field for f in out.fields}
                out.missing_mandatory = [
                    M3FieldOut.of(s) for n, s in specs.items() if s.mandatory and n not in filled
                ]
        calls.append(out)
    return FieldTable(
        flow=flow,
        version=version,
        description=spec.description,
        trigger=list(spec.trigger),
        vars=variables,
        lookups=sorted(spec.lookups),
        calls=calls,
    )


@router.get(
    "/mappings/{flow}/versions/{version}/fields",
    response_model=FieldTable,
    summary="One version as a table per call: every target field and the rule that fills it",
)
async def version_fields(
    flow: FlowParam, version: VersionParam, caller: ReadCaller, runtime: RuntimeDep
) -> FieldTable:
    async with runtime.sessions() as session:
        found = await versions.need_version(session, flow, version)
    mapping = versions.parse_text(found.text, found.file_name, runtime.settings.mappings_folder)
    return await _field_table(runtime, flow, version, mapping)


class TextIn(BaseModel):
    text: str = Field(min_length=1, max_length=versions.MAX_TEXT_BYTES, description="the mapping YAML")


async def _file_name(runtime: Runtime, flow: str) -> str:
    async with runtime.sessions() as session:
        live = await store.live_version(session, flow)
    return versions.file_name_of(flow, live)


@router.post(
    "/mappings/{flow}/fields",
    response_model=FieldTable,
    summary="A working copy's text as the same table (version null); 422 naming line and field",
)
async def text_fields(flow: FlowParam, body: TextIn, caller: ReadCaller, runtime: RuntimeDep) -> FieldTable:
    folder = runtime.settings.mappings_folder
    mapping = versions.checked_text(body.text, flow, await _file_name(runtime, flow), folder)
    return await _field_table(runtime, flow, None, mapping)


@router.get("/mappings/{flow}/diff", response_model=DiffOut, summary="Unified diff between two versions")
async def diff(
    flow: FlowParam,
    caller: ReadCaller,
    runtime: RuntimeDep,
    from_version: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION, description="the older version")],
    to_version: Annotated[int, Query(alias="to", ge=1, le=MAX_VERSION, description="the newer version")],
) -> DiffOut:
    async with runtime.sessions() as session:
        old = await versions.need_version(session, flow, from_version)
        new = await versions.need_version(session, flow, to_version)
    return DiffOut(flow=flow, from_version=from_version, to_version=to_version, diff=versions.diff(old, new))


@router.post(
    "/mappings/{flow}/drafts",
    response_model=VersionOut,
    status_code=201,
    summary="A draft from YAML text (422 naming the line and field when it does not load)",
)
async def create_draft(
    flow: FlowParam, body: DraftIn, caller: AdminCaller, runtime: RuntimeDep
) -> VersionOut:
    created = await versions.create_draft(
        runtime.sessions,
        runtime.settings.mappings_folder,
        flow=flow,
        text=body.text,
        author=caller.name,
        comment=body.comment,
    )
    return VersionOut.of(created)


async def _make_live(
    action: Callable[..., Awaitable[store.Version]],
    flow: str,
    version: int,
    body: PublishIn,
    caller: AdminCaller,
    runtime: Runtime,
) -> VersionOut:
    """Publish or roll back (``action``), then run the new live version in this process at once
    (the others follow within the refresh interval)."""
    published = await action(
        runtime.sessions,
        runtime.settings.mappings_folder,
        flow=flow,
        version=version,
        comment=body.comment,
        actor=caller.name,
        check=runtime.check_registry,
    )
    await runtime.mappings_published()
    return VersionOut.of(published)


@router.post(
    "/mappings/{flow}/versions/{version}/publish",
    response_model=VersionOut,
    summary="Make a draft the live version (audited)",
)
async def publish(
    flow: FlowParam, version: VersionParam, body: PublishIn, caller: AdminCaller, runtime: RuntimeDep
) -> VersionOut:
    return await _make_live(versions.publish, flow, version, body, caller, runtime)


@router.post(
    "/mappings/{flow}/versions/{version}/rollback",
    response_model=VersionOut,
    summary="Publish a copy of an older version as the new live one (audited)",
)
async def rollback(
    flow: FlowParam, version: VersionParam, body: PublishIn, caller: AdminCaller, runtime: RuntimeDep
) -> VersionOut:
    return await _make_live(versions.rollback, flow, version, body, caller, runtime)


@router.get("/mappings/bundle", summary="A bundle of live versions (manifest with checksums, and the texts)")
async def export_bundle(
    caller: AdminCaller,
    runtime: RuntimeDep,
    flow: Annotated[
        list[str] | None, Query(max_length=100, description="only these flows (repeat); default: all")
    ] = None,
) -> dict[str, Any]:
    async with runtime.sessions() as session:
        return await versions.export_bundle(session, flow or ())


@router.post(
    "/mappings/bundle",
    response_model=BundleImportOut,
    status_code=201,
    summary="Import a bundle as drafts: checksums, validation and the tenant's metadata checked first",
)
async def import_bundle(bundle: dict[str, Any], caller: AdminCaller, runtime: RuntimeDep) -> BundleImportOut:
    drafts = await versions.import_bundle(
        runtime.sessions,
        runtime.settings.mappings_folder,
        bundle,
        author=caller.name,
        check=versions.metadata_check(runtime.connectors.m3_metadata),
    )
    return BundleImportOut(drafts=[VersionOut.of(v) for v in drafts])


# -- the studio's tools: form edits, preview, metadata search, replay after a publish -------------


class EditIn(BaseModel):
    """One form edit of a mapping's text: a field's rule (set or removed) or a var's value."""

    text: str = Field(min_length=1, max_length=versions.MAX_TEXT_BYTES, description="the YAML being edited")
    call: str | None = Field(default=None, max_length=64, description="the call whose field is edited")
    field: str | None = Field(default=None, max_length=120, description="the M3 field or BNG JSON name")
    rule: dict[str, Any] | None = Field(
        default=None,
        description='the rule as the YAML writes it, e.g. {"from": "Warehouse", "default": {"value": '
        '"200"}}; null with `remove` to delete the field',
    )
    remove: bool = Field(default=False, description="delete `field` from `call`")
    var: str | None = Field(default=None, max_length=64, description="a var to set instead of a field")
    value: Scalar | None = Field(default=None, description="the var's value")
    base: str | None = Field(
        default=None,
        max_length=versions.MAX_TEXT_BYTES,
        description="the text `diff` is from (the live text: every edit so far); default `text`",
    )


class EditOut(BaseModel):
    text: str = Field(description="the edited YAML: the edited line changed, every other line as it was")
    diff: str = Field(description="unified diff from `base` (default: the text sent)")


@router.post(
    "/mappings/{flow}/edit",
    response_model=EditOut,
    summary="Apply a form edit (a field's rule, or a var) to YAML text; 422 naming the problem",
)
async def edit_text(flow: FlowParam, body: EditIn, caller: AdminCaller, runtime: RuntimeDep) -> EditOut:
    """Saves nothing: the studio keeps the edited text as the working copy a draft is saved from."""
    if body.var is not None:
        if body.value is None:
            raise edits.EditError("value", "a var edit needs a value")
        text = edits.set_var(body.text, body.var, body.value)
    else:
        if not body.call or not body.field:
            raise edits.EditError("call", "name the call and the field to edit (or a var)")
        if body.rule is None and not body.remove:
            raise edits.EditError("rule", "send the field's rule, or remove: true")
        text = edits.set_field(body.text, body.call, body.field, None if body.remove else body.rule)
    versions.checked_text(text, flow, await _file_name(runtime, flow), runtime.settings.mappings_folder)
    before = body.base if body.base is not None else body.text
    return EditOut(text=text, diff=versions.text_diff(before, text, f"{flow} (before)", f"{flow} (edited)"))


class PreviewIn(BaseModel):
    text: str | None = Field(
        default=None,
        max_length=versions.MAX_TEXT_BYTES,
        description="a draft's YAML to render beside the live version (omit: the live version alone)",
    )
    event_id: int | None = Field(default=None, ge=1, le=2**63 - 1, description="a recorded transaction")
    sample: dict[str, Any] | None = Field(
        default=None,
        description="a payload instead: a webhook body or its data (default: the shipped sample)",
    )


class FieldNoteOut(BaseModel):
    field: str
    problem: str


class RenderedCallOut(BaseModel):
    call: str
    target: str
    operation: str
    record: dict[str, Any] = Field(description="the MI record (M3) or JSON body (BNG) the call sends")
    note: str | None = Field(description="why the call is skipped or cannot be shown on its own")
    problems: list[FieldNoteOut] = Field(
        description="how M3 would refuse a value, from the tenant's metadata"
    )
    changed: list[str] = Field(description="fields whose value differs from the other version's same call")
    metadata: str | None = Field(description="`tenant` when the values were checked, else why not")


class RenderedOut(BaseModel):
    version: int | None = Field(description="the live version; null for the draft")
    calls: list[RenderedCallOut]


class PreviewInputOut(BaseModel):
    kind: str = Field(description="event, sample or shipped_sample")
    event_id: int | None = None
    event_type: str | None = None
    business_key: str | None = None
    status: str | None = None


class PreviewOut(BaseModel):
    flow: str
    input: PreviewInputOut
    live: RenderedOut | None
    draft: RenderedOut | None
    differing_calls: int = Field(description="calls whose values differ between draft and live")


def _rendered(
    version: int | None, calls: list[studio.RenderedCall], shown: Callable[[Any], Any]
) -> RenderedOut:
    """``shown``: the caller's view of personal data (masked without ``ops:admin``), applied
    after rendering, so values are judged against M3's metadata as they really are."""
    return RenderedOut(
        version=version,
        calls=[
            RenderedCallOut(
                call=c.name,
                target=c.target,
                operation=c.operation,
                record=shown(c.record),
                note=shown(c.note),
                problems=[FieldNoteOut(field=p.field, problem=shown(p.problem)) for p in c.problems],
                changed=c.changed,
                metadata=c.metadata,
            )
            for c in calls
        ],
    )


def _fields_of(runtime: Runtime) -> studio.FieldsOf:
    async def fields_of(program: str, transaction: str) -> tuple[dict[str, FieldSpec] | None, str]:
        return await _tenant_fields(runtime, program, transaction)

    return fields_of


async def _payload(
    session: AsyncSession, body: PreviewIn, mapping: Mapping
) -> tuple[dict[str, Any], dict[str, Any], PreviewInputOut]:
    """The payload a preview or the path picker works on: a recorded transaction (with the
    values its flow had found), a pasted sample, or the shipped sample of the flow's trigger."""
    if body.event_id is not None:
        event = await studio.recorded_event(session, body.event_id, mapping)
        data, context = studio.event_input(event.payload, event.checkpoint)
        shown = PreviewInputOut(
            kind="event",
            event_id=event.id,
            event_type=event.event_type,
            business_key=event.business_key,
            status=event.status,
        )
        return data, context, shown
    if body.sample is not None:
        data, context = studio.sample_input(body.sample)
        return data, context, PreviewInputOut(kind="sample")
    found = studio.shipped_sample(mapping)
    if found is None:
        raise studio.PreviewInputError(
            "event_id", f"no shipped sample for {', '.join(mapping.spec.trigger)}: pick a transaction"
        )
    return *found, PreviewInputOut(kind="shipped_sample", event_type=mapping.spec.trigger[0])


async def _mappings(
    session: AsyncSession, runtime: Runtime, flow: str, text: str | None
) -> tuple[store.Version | None, Mapping | None, Mapping | None, Mapping]:
    """The live version, its Mapping, the draft text's Mapping (None when not sent), and the
    one payloads are read for (the draft's, else the live one)."""
    folder = runtime.settings.mappings_folder
    live = await store.live_version(session, flow)
    draft = versions.checked_text(text, flow, versions.file_name_of(flow, live), folder) if text else None
    live_mapping = versions.parse_text(live.text, live.file_name, folder) if live is not None else None
    chosen = draft or live_mapping
    if chosen is None:
        raise versions.VersionNotFound(f"flow: {flow!r} has no live version; send a draft's text")
    return live, live_mapping, draft, chosen


@router.post(
    "/mappings/{flow}/preview",
    response_model=PreviewOut,
    summary="The exact MI calls (or BNG requests) a draft and the live version make for a payload",
)
async def preview(flow: FlowParam, body: PreviewIn, caller: ReadCaller, runtime: RuntimeDep) -> PreviewOut:
    """Sends nothing."""
    async with runtime.sessions() as session:
        live, live_mapping, draft, mapping = await _mappings(session, runtime, flow, body.text)
        data, context, shown = await _payload(session, body, mapping)
    fields_of, view = _fields_of(runtime), masker(caller)
    live_calls = await studio.render(live_mapping, data, context, fields_of) if live_mapping else None
    draft_calls = await studio.render(draft, data, context, fields_of) if draft else None
    differing = studio.mark_changes(live_calls or [], draft_calls) if draft_calls is not None else 0
    return PreviewOut(
        flow=flow,
        input=shown,
        live=_rendered(live.version, live_calls, view)
        if live is not None and live_calls is not None
        else None,
        draft=_rendered(None, draft_calls, view) if draft_calls is not None else None,
        differing_calls=differing,
    )


class PathsIn(PreviewIn):
    call: str | None = Field(
        default=None, max_length=64, description="a call with `for_each`: its element's paths as `_line.…`"
    )


class PathOut(BaseModel):
    path: str = Field(description="the JMESPath a rule's `from` takes")
    example: str = Field(description="its value in the payload (shortened)")


class PathsOut(BaseModel):
    input: PreviewInputOut
    paths: list[PathOut]


@router.post(
    "/mappings/{flow}/paths",
    response_model=PathsOut,
    summary="The paths a rule can read, with their values in a recorded transaction or a sample",
)
async def payload_paths(flow: FlowParam, body: PathsIn, caller: ReadCaller, runtime: RuntimeDep) -> PathsOut:
    async with runtime.sessions() as session:
        *_, mapping = await _mappings(session, runtime, flow, body.text)
        data, context, shown = await _payload(session, body, mapping)
    for_each = None
    if body.call is not None:
        if not mapping.has_call(body.call):
            raise studio.PreviewInputError("call", f"{flow} has no call {body.call!r}")
        for_each = mapping.spec.calls[body.call].for_each
    view = masker(caller)  # the paths are the same; values under personal keys are masked
    found = studio.payload_paths(view(data), view(context), for_each)
    return PathsOut(input=shown, paths=[PathOut(path=p, example=e) for p, e in found])


class FieldSearchOut(BaseModel):
    program: str
    transaction: str
    metadata: str = Field(description="`tenant`, or why M3's field list is not available")
    items: list[M3FieldOut]


@router.get(
    "/mappings/m3-fields/{program}/{transaction}",
    response_model=FieldSearchOut,
    summary="Search a transaction's input fields in the tenant's metadata by name or description",
)
async def search_m3_fields(
    program: Annotated[str, Path(pattern=r"^[A-Z]{3}\d{3}MI$", description="e.g. OIS100MI")],
    transaction: Annotated[
        str, Path(pattern=r"^[A-Za-z][A-Za-z0-9]{1,31}$", description="e.g. AddBatchHead")
    ],
    caller: ReadCaller,
    runtime: RuntimeDep,
    q: Annotated[str, Query(max_length=100, description="words of the name or description")] = "",
    exclude: Annotated[
        list[str] | None, Query(max_length=200, description="fields the call fills already (repeat)")
    ] = None,
) -> FieldSearchOut:
    specs, why = await _tenant_fields(runtime, program, transaction)
    found = studio.search_fields(specs, q, exclude=exclude or ()) if specs is not None else []
    return FieldSearchOut(
        program=program, transaction=transaction, metadata=why, items=[M3FieldOut.of(s) for s in found]
    )


class ReplayCandidateOut(BaseModel):
    event_id: int
    event_type: str
    business_key: str | None
    failed_with: int | None = Field(description="the version it failed under; null when unknown")
    error: str | None


class ReplayOfferOut(BaseModel):
    flow: str
    live_version: int
    dead: int = Field(description="dead letters of the flow's triggers looked at (newest 500)")
    same_version: int = Field(description="failed under the live version: a replay would meet the same end")
    unchanged: int = Field(
        description="the live version sends the call they failed at as the version they failed under did"
    )
    elsewhere: int = Field(description="failed at a call this flow's mapping does not make")
    not_compared: int = Field(description="offered without a comparison (old version or payload gone)")
    fixable: list[ReplayCandidateOut] = Field(description="what a replay with the live version could fix")


async def _candidates(flow: str, runtime: Runtime) -> tuple[store.Version, studio.Candidates]:
    folder = runtime.settings.mappings_folder
    async with runtime.sessions() as session:
        live = await store.live_version(session, flow)
        if live is None:
            raise versions.VersionNotFound(f"flow: {flow!r} has no live version")
        mapping = versions.parse_text(live.text, live.file_name, folder)
        found = await studio.replay_candidates(
            session, live, mapping, lambda text, name: versions.parse_text(text, name, folder)
        )
    return live, found


@router.get(
    "/mappings/{flow}/replay-candidates",
    response_model=ReplayOfferOut,
    summary="Dry run: the flow's dead letters the live version could fix (it sends other calls for them)",
)
async def replay_candidates(flow: FlowParam, caller: ReadCaller, runtime: RuntimeDep) -> ReplayOfferOut:
    live, found = await _candidates(flow, runtime)
    return ReplayOfferOut(
        flow=flow,
        live_version=live.version,
        dead=found.dead,
        same_version=found.same_version,
        unchanged=found.unchanged,
        elsewhere=found.elsewhere,
        not_compared=found.not_compared,
        fixable=[ReplayCandidateOut(**{**vars(c), "error": masker(caller)(c.error)}) for c in found.fixable],
    )


class ReplayCandidatesIn(BaseModel):
    event_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        min_length=1, max_length=studio.MAX_CANDIDATES, description="from the dry run's `fixable`"
    )
    reason: str | None = Field(default=None, max_length=1000, description="kept in the audit log")


class ReplayCandidatesOut(BaseModel):
    replayed: list[int]
    not_candidates: list[int] = Field(description="no longer a dead letter the live version could fix")


@router.post(
    "/mappings/{flow}/replay-candidates",
    response_model=ReplayCandidatesOut,
    summary="Replay, with the live version, dead letters the dry run offered (each audited)",
)
async def replay_fixable(
    flow: FlowParam, body: ReplayCandidatesIn, caller: ReplayCaller, runtime: RuntimeDep
) -> ReplayCandidatesOut:
    """Only ids the dry run still offers are replayed: a list sent from an older page cannot
    replay what has since been replayed, discarded or found unchanged."""
    live, found = await _candidates(flow, runtime)
    offered = {c.event_id for c in found.fixable}
    replayed, refused = [], []
    for event_id in dict.fromkeys(body.event_ids):
        if event_id not in offered:
            refused.append(event_id)
            continue
        await replay.replay(
            runtime.sessions,
            runtime.notifier,
            event_id,
            actor=caller.name,
            mode=None,
            payload=None,
            reason=body.reason or f"studio: replay with {flow} version {live.version}",
            has_flow=lambda source, event_type: runtime.registry.get(source, event_type) is not None,
            max_bod_bytes=runtime.settings.ion_max_bod_bytes,
        )
        replayed.append(event_id)
    return ReplayCandidatesOut(replayed=replayed, not_candidates=refused)
