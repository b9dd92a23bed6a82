"""The mapping studio's judgements: what a draft would send, which M3 fields a search finds,
and which dead letters a newly published version could fix.

Why here and not in the browser: the preview must render with the engine the workers run
(``Mapping.preview``) and check values against the tenant's metadata with the same rules the
M3 client applies before a call (``check_record``), so what the studio shows is what M3 would
get and how it would answer, not a second implementation that drifts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import Any

import jmespath
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.client import COMPANY_FIELDS
from m3bng.connectors.m3.metadata import FieldSpec, check_record
from m3bng.errors import FieldInvalid, NotFound
from m3bng.mapping import Mapping, MappingError
from m3bng.mapping.engine import CallPreview
from m3bng.mapping.schema import BngCallSpec, CallSpec
from m3bng.store import mapping_versions as versions_store
from m3bng.store import search as search_store
from m3bng.store.models import Event, EventStatus

# The fields of one M3 transaction in the tenant's metadata, or None and why not.
FieldsOf = Callable[[str, str], Awaitable[tuple[dict[str, FieldSpec] | None, str]]]

MAX_CANDIDATES = 500  # dead letters looked at after a publish (newest first)
MAX_SEARCH_HITS = 25


class PreviewInputError(FieldInvalid):
    code = "invalid_preview_input"


class PreviewEventNotFound(NotFound):
    code = "not_found"


# -- what a payload gives the rules ----------------------------------------------------------------


def bng_keys(mapping: Mapping, data: MappingABC[str, Any], context: dict[str, Any]) -> None:
    """What an M3 → BNG flow does first: the BNG id is the BOD's own (``keys.BngID``), else the
    M3 key (a cross-reference, which a preview cannot read, may name another)."""
    if mapping.spec.target != "bng" or "M3Key" not in mapping.spec.keys or "BngID" in context:
        return
    with contextlib.suppress(MappingError):
        context["M3Key"] = mapping.key("M3Key", data, context)
        context["BngID"] = context["M3Key"]
        context["BngID"] = mapping.key("BngID", data, context)


def event_input(payload: Any, checkpoint: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored event's data and the values its flow had found (the checkpoint: CUNO, the batch
    ORNO …), so a preview of a recorded order shows its real customer, not a placeholder."""
    if payload is None:
        raise PreviewInputError("event_id", "the event's payload was purged by retention")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise PreviewInputError("event_id", "the event has no `data` object to map")
    context: dict[str, Any] = {
        k: v for k, v in (checkpoint or {}).items() if isinstance(k, str) and not k.startswith("_")
    }
    if isinstance(payload.get("bod"), dict):
        context["bod"] = payload["bod"]
    return data, context


def sample_input(sample_body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pasted sample: a webhook body (``{"type", "data"}``) or its ``data`` alone."""
    if not isinstance(sample_body, dict):
        raise PreviewInputError("sample", "a JSON object: a webhook body or its data")
    data = sample_body.get("data", sample_body)
    if not isinstance(data, dict):
        raise PreviewInputError("sample.data", "a JSON object")
    return data, {}


def shipped_sample(mapping: Mapping) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The documentation's example payload of the mapping's first trigger, where there is one."""
    for event_type in mapping.spec.trigger:
        with contextlib.suppress(KeyError):
            return sample(event_type), {}
    return None


async def recorded_event(session: AsyncSession, event_id: int, mapping: Mapping) -> Event:
    event = await search_store.get_event(session, event_id)
    if event is None:
        raise PreviewEventNotFound(f"no transaction {event_id}")
    if event.event_type not in mapping.spec.trigger:
        raise PreviewInputError(
            "event_id",
            f"transaction {event_id} is a {event.event_type}; {mapping.flow} maps "
            f"{', '.join(mapping.spec.trigger)}",
        )
    return event


# -- the path picker --------------------------------------------------------------------------------

MAX_PATHS = 400
_SIMPLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _key(name: str) -> str:
    return name if _SIMPLE_NAME.match(name) else '"' + name.replace('"', '\\"') + '"'


def _walk(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if len(out) >= MAX_PATHS:
        return
    if isinstance(value, dict):
        for name, item in value.items():
            _walk(item, f"{path}.{_key(str(name))}" if path else _key(str(name)), out)
    elif isinstance(value, list):
        out.append((path, f"a list of {len(value)}"))
        if value:
            _walk(value[0], f"{path}[0]", out)
    else:
        text = "" if value is None else str(value)
        out.append((path, text if len(text) <= 60 else text[:57] + "…"))


def payload_paths(
    data: MappingABC[str, Any], context: MappingABC[str, Any], for_each: str | None
) -> list[tuple[str, str]]:
    """Every path of the payload with its value, as a rule's ``from`` writes it: the event's
    fields, then (for a call with ``for_each``) the first element's as ``_line.…`` with
    ``_number``, then what the flow had found (``_ctx.…``)."""
    out: list[tuple[str, str]] = []
    _walk(dict(data), "", out)
    if for_each is not None:
        with contextlib.suppress(Exception):  # a for_each the payload has no list for: no _line paths
            items = jmespath.search(for_each, dict(data))
            if isinstance(items, list) and items:
                _walk(items[0], "_line", out)
                out.append(("_number", "1 (the element's position, from 1)"))
    _walk({k: v for k, v in context.items() if k != "bod"}, "_ctx", out)
    return [(p, e) for p, e in out if p and p != "_ctx"][:MAX_PATHS]


# -- the preview ------------------------------------------------------------------------------------


@dataclass
class FieldNote:
    field: str
    problem: str


@dataclass
class RenderedCall:
    """One call a mapping makes for the payload, with what M3's metadata says of its values."""

    name: str
    target: str
    operation: str
    record: dict[str, Any]
    note: str | None
    problems: list[FieldNote] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # fields whose value differs from the other side
    metadata: str | None = None  # `tenant`, or why the values were not checked


def _placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


async def render(
    mapping: Mapping, data: MappingABC[str, Any], context: MappingABC[str, Any], fields_of: FieldsOf | None
) -> list[RenderedCall]:
    """Every call ``mapping`` renders for the payload, each M3 record checked against the
    tenant's field list (values only a running flow knows, shown as ``<NAME>``, are not judged)."""
    ctx = dict(context)
    bng_keys(mapping, data, ctx)
    try:
        previews: list[CallPreview] = mapping.preview(data, ctx)
    except MappingError as exc:
        return [RenderedCall(exc.call, "", "", {}, f"cannot map: {exc.problem}")]
    out: list[RenderedCall] = []
    for p in previews:
        call = RenderedCall(p.name, p.target, p.operation, dict(p.record), p.note)
        if p.target == "m3" and p.note is None and fields_of is not None:
            program, transaction = p.operation.split("/", 1)
            specs, call.metadata = await fields_of(program, transaction)
            if specs is not None:
                judged = {k: v for k, v in p.record.items() if not _placeholder(v)}
                filled = {k for k, v in p.record.items() if _placeholder(v)} | set(COMPANY_FIELDS)
                for problem in check_record(program, transaction, specs, judged):
                    if problem.field not in filled:
                        call.problems.append(FieldNote(problem.field, problem.problem))
        out.append(call)
    return out


def mark_changes(left: list[RenderedCall], right: list[RenderedCall]) -> int:
    """Mark, on both sides, the fields whose values differ between calls of the same name and
    position (the third ``line`` of one against the third of the other); returns how many calls
    differ, counting a call made on one side only."""

    def keyed(calls: list[RenderedCall]) -> dict[tuple[str, int], RenderedCall]:
        seen: dict[str, int] = {}
        out = {}
        for call in calls:
            index = seen.get(call.name, 0)
            seen[call.name] = index + 1
            out[(call.name, index)] = call
        return out

    a, b = keyed(left), keyed(right)
    differing = 0
    for key in a.keys() | b.keys():
        one, other = a.get(key), b.get(key)
        if one is None or other is None:
            differing += 1
            continue
        names = sorted(
            n for n in one.record.keys() | other.record.keys() if one.record.get(n) != other.record.get(n)
        )
        if one.note != other.note or names:
            differing += 1
        one.changed, other.changed = names, names
    return differing


# -- metadata search --------------------------------------------------------------------------------


def search_fields(specs: dict[str, FieldSpec], query: str, *, exclude: Iterable[str] = ()) -> list[FieldSpec]:
    """A transaction's fields by name or description: the exact name first, then names that
    start with the query, then descriptions holding every word of it; mandatory ones first
    within each rank. ``exclude``: fields the call fills already."""
    words = [w for w in query.lower().split() if w]
    skip = set(exclude) | set(COMPANY_FIELDS)
    ranked: list[tuple[int, bool, str, FieldSpec]] = []
    for name, spec in specs.items():
        if name in skip:
            continue
        lname, description = name.lower(), spec.description.lower()
        if not words:
            rank = 3
        elif lname == query.strip().lower():
            rank = 0
        elif lname.startswith(words[0]) and len(words) == 1:
            rank = 1
        elif all(w in description or w in lname for w in words):
            rank = 2
        else:
            continue
        ranked.append((rank, not spec.mandatory, name, spec))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked[:MAX_SEARCH_HITS]]


# -- dead letters a new version could fix -----------------------------------------------------------


@dataclass
class Candidate:
    event_id: int
    event_type: str
    business_key: str | None
    failed_with: int | None  # the version it failed under (None: unknown to the store)
    error: str | None


@dataclass
class Candidates:
    dead: int = 0  # dead letters of the flow's triggers looked at
    same_version: int = 0  # failed under the live version already: replaying changes nothing
    unchanged: int = 0  # the live version sends the failed call as the one they failed under did
    elsewhere: int = 0  # failed at a call this mapping does not make (another flow's, BNG's)
    fixable: list[Candidate] = field(default_factory=list)
    not_compared: int = 0  # payload purged, or the old version not in the store


def _of_operation(calls: list[RenderedCall], operation: str | None) -> list[RenderedCall]:
    return calls if operation is None else [c for c in calls if c.operation == operation]


async def replay_candidates(
    session: AsyncSession,
    live: versions_store.Version,
    mapping: Mapping,
    parse: Callable[[str, str], Mapping],
) -> Candidates:
    """The flow's dead letters the live version could fix: those that failed under another
    version *and* whose failed call the live version sends differently (the same call would meet
    the same refusal). Without a failed call (the old version could not map the payload), every
    call is compared. ``parse`` turns a stored version's text into a Mapping."""
    flt = search_store.EventFilter(status=(EventStatus.DEAD.value,), event_type=tuple(mapping.spec.trigger))
    page = await search_store.find_events(session, flt, limit=MAX_CANDIDATES)
    failed_at = await search_store.failed_operations(session, [e.id for e in page.items])
    operations = {
        f"{c.program}/{c.transaction}" for c in mapping.spec.calls.values() if isinstance(c, CallSpec)
    } | {f"{c.method} {c.path}" for c in mapping.spec.calls.values() if isinstance(c, BngCallSpec)}
    out = Candidates()
    old_versions: dict[str, tuple[int, Mapping] | None] = {}
    for event in page.items:
        out.dead += 1
        if event.mapping_hash == live.content_hash:
            out.same_version += 1
            continue
        operation = failed_at.get(event.id)
        if operation is not None and operation not in operations:
            out.elsewhere += 1
            continue
        old: tuple[int, Mapping] | None = None
        if event.mapping_hash is not None:
            if event.mapping_hash not in old_versions:
                found = await versions_store.find_by_hash(session, event.mapping_hash)
                old_versions[event.mapping_hash] = (
                    (found.version, parse(found.text, found.file_name)) if found is not None else None
                )
            old = old_versions[event.mapping_hash]
        candidate = Candidate(
            event.id, event.event_type, event.business_key, old[0] if old else None, event.last_error
        )
        if old is None or event.payload is None:
            out.not_compared += 1
            out.fixable.append(candidate)  # cannot tell: offered, and counted apart
            continue
        try:
            data, context = event_input(event.payload, event.checkpoint)
        except PreviewInputError:
            out.not_compared += 1
            continue
        before = _of_operation(await render(old[1], data, context, None), operation)
        after = _of_operation(await render(mapping, data, context, None), operation)
        if mark_changes(before, after):
            out.fixable.append(candidate)
        else:
            out.unchanged += 1
    return out
