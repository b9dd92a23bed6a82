"""``/api/v1/mappings``: the mapping versions flows run (ops/mapping_versions.py).

``ops:read`` sees flows, versions, texts and diffs; ``ops:admin`` creates drafts, publishes,
rolls back and moves bundles between installations. Publish and rollback are audited in the
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

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import AdminCaller, ReadCaller
from m3bng.connectors.m3.metadata import FieldSpec
from m3bng.errors import M3bngError
from m3bng.mapping.describe import describe_rule
from m3bng.mapping.schema import BngCallSpec, FieldRule
from m3bng.ops import mapping_versions as versions
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
    version: int
    description: str
    trigger: list[str]
    vars: dict[str, Any]
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
        calls=calls,
    )


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
