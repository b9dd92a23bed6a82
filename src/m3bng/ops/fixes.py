"""Fix suggestions for one transaction, and preparing one as a replay's dry run.

The reasoning (cause, candidates, ranking) is in ``m3bng.assist.fixes``; this module feeds it
what the service knows about the event (its dead letter and failed step, its payload, the
loaded mappings and flows) and M3 through the flows' own client, so that a suggestion's reads
obey the same timeout, concurrency cap and circuit breaker as any flow. Suggestions are worked
out on request and never stored: M3 changes (an item is created), and a stored list would lie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.assist import fixes
from m3bng.connectors import Connectors
from m3bng.errors import M3bngError
from m3bng.mapping import Mapping as MappingFile
from m3bng.mapping import MappingError
from m3bng.mapping.schema import FieldRule
from m3bng.ops import replay
from m3bng.ops.search import mapping_for
from m3bng.store.search import EventDetail, load_event_detail


class FixNotFound(replay.ReplayNotFound):
    """No such transaction, or no suggestion with that number."""


@dataclass(frozen=True)
class Prepared:
    """A suggestion made ready: the payload to replay with and the replay's dry run."""

    event_id: int
    number: int
    suggestion: fixes.Suggestion
    preview: replay.ReplayPreview


@dataclass(frozen=True)
class Services:
    """What suggestions may use: the loaded mappings, which flows exist, the connectors."""

    mappings: Mapping[str, MappingFile]
    has_flow: Callable[[str, str], bool]  # (source, event type) → a flow handles it
    connectors: Connectors
    max_bod_bytes: int = 5_242_880
    max_records: int = fixes.MAX_RECORDS
    budget: float = fixes.LOOKUP_BUDGET


def _failed_step_error(detail: EventDetail) -> str | None:
    dead = detail.dead_letter
    if dead is None or dead.failed_step_id is None:
        return None
    for step in detail.steps:
        if step.id == dead.failed_step_id:
            return step.error
    return None


def _rule_sources(rule: FieldRule | None) -> list[str]:
    """Payload paths a field rule reads, its default chain included (``Warehouse``, ``_line.SKU``)."""
    out: list[str] = []
    while isinstance(rule, FieldRule):
        if rule.from_ and not rule.from_.startswith("_ctx."):
            out.append(rule.from_)
        rule = rule.default if isinstance(rule.default, FieldRule) else None
    return out


async def report_for(
    sessions: async_sessionmaker[AsyncSession], services: Services, event_id: int
) -> tuple[EventDetail, fixes.Report]:
    """The cause of the transaction's newest dead letter and every candidate fix, best first."""
    async with sessions() as session:
        detail = await load_event_detail(session, event_id)
    if detail is None:
        raise FixNotFound(f"transaction {event_id} does not exist")
    event, dead = detail.event, detail.dead_letter
    if dead is None or dead.resolved_at is not None:
        # A resolved dead letter was replayed or discarded: its cause is history, not a task.
        what = "no dead letter" if dead is None else f"no open dead letter ({dead.resolution})"
        return detail, fixes.Report(fixes.Cause("none", message=f"the transaction has {what}"), [])
    cause = fixes.classify(dead.error_class, dead.error, _failed_step_error(detail))
    mapping = mapping_for(services.mappings, event.source, event.event_type)
    if cause.call and mapping is not None and cause.program is None:
        try:
            spec = mapping.call(cause.call)
        except MappingError:  # a call the mapping no longer has: no M3 field length
            spec = None
        if spec is not None:
            cause = fixes.Cause(**{**vars(cause), "program": spec.program, "transaction": spec.transaction})
    connectors = services.connectors.for_instance(event.instance)
    m3, metadata = connectors.m3, connectors.m3_metadata

    async def lister(
        program: str, transaction: str, record: dict[str, str], maxrecs: int
    ) -> list[dict[str, str]]:
        assert m3 is not None
        return (await m3.execute(program, transaction, record, maxrecs=maxrecs)).records

    async def field_length(program: str, transaction: str, name: str) -> int | None:
        if metadata is None:
            return None
        try:
            spec = (await metadata.fields(program, transaction, "I")).get(name)
        except M3bngError:  # metadata unreachable: the error's own limit is used
            return None
        return spec.length if spec is not None and spec.length else None

    def rule_sources(call: str, name: str) -> list[str]:
        if mapping is None:
            return []
        try:
            rule = mapping.call(call).fields.get(name)
        except MappingError:  # not an MI call of this mapping
            return []
        return _rule_sources(rule)

    ctx = fixes.Context(
        event_type=event.event_type,
        source=event.source,
        payload=event.payload,
        has_flow=lambda event_type: services.has_flow("bng", event_type),
        lookups=fixes.Lookups(
            lister if m3 is not None else None, max_records=services.max_records, budget=services.budget
        ),
        field_length=field_length,
        option=(lambda name: mapping.option(name)) if mapping is not None else (lambda _name: None),
        rule_sources=rule_sources,
    )
    if event.payload is None:
        return detail, fixes.Report(cause, [], ["the payload was purged by retention: nothing to edit"])
    return detail, await fixes.suggest(cause, ctx)


async def prepare(
    sessions: async_sessionmaker[AsyncSession], services: Services, event_id: int, number: int
) -> Prepared:
    """Suggestion ``number`` (1-based, as listed) as a replay's dry run: the edited payload and
    its diff, validated as the replay will validate it. Nothing is replayed or audited."""
    detail, report = await report_for(sessions, services, event_id)
    if not 1 <= number <= len(report.suggestions):
        raise FixNotFound(
            f"transaction {event_id} has {len(report.suggestions)} suggestion(s); there is no number {number}"
        )
    suggestion = report.suggestions[number - 1]
    payload: Any = None
    if suggestion.edit:
        try:
            payload = fixes.apply_edit(detail.event.payload, suggestion.edit)
        except fixes.FixError as exc:
            raise replay.ReplayConflict(str(exc), code="payload_changed") from None
    preview = await replay.preview(
        sessions,
        event_id,
        mode=suggestion.mode,
        payload=payload,
        has_flow=services.has_flow,
        max_bod_bytes=services.max_bod_bytes,
    )
    return Prepared(event_id, number, suggestion, preview)
