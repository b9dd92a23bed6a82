"""The M3 side of the flow runtime: the calls every BNG → M3 flow is built from.

A flow is short business logic ("find the customer, check the items, enter the order") over a
few operations that carry the guarantees, written once here:

* ``records(call)``: the mapping renders the call's MI records, truncated and checked against
  M3's own field metadata, so bad data is dead-lettered *before* anything is sent;
* ``send(call, record)``: one MI transaction, recorded as a step whatever its outcome;
* ``get(call, record)``: a lookup, ``None`` when M3 says the record does not exist;
* ``remember`` / ``checkpoints``: keys obtained by completed steps survive a retry or replay;
* ``xref`` / ``link``: BNG id ⇄ M3 key, kept in the store;
* ``add_or_change``: create-or-change decided by asking M3, for master data with a caller-chosen key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from m3bng.connectors.bng.models import UnknownEventType, validate_event_data
from m3bng.connectors.m3.client import COMPANY_FIELDS, M3Client, MIResult, is_list
from m3bng.connectors.m3.errors import M3Duplicate, M3NotFound
from m3bng.connectors.m3.metadata import check_record
from m3bng.errors import PermanentError, TargetUnavailable
from m3bng.flows.runtime.context import FlowContext
from m3bng.instances import Instance, with_instance_vars
from m3bng.mapping import Mapping, MappingError
from m3bng.observability import tracing
from m3bng.store import documents

MappedFlow = Callable[[FlowContext, "FlowMappings"], Awaitable[None]]
# Transactions per bulk request (``send_many``): an order of up to this many lines costs one
# round trip for its item checks and one for its lines.
BULK_SIZE = 100


class InvalidPayload(PermanentError):
    """The stored event does not match its model (e.g. an edited replay payload)."""

    error_class = "invalid_payload"


class MissingReference(PermanentError):
    """Something the event refers to (customer, item, supplier) does not exist in M3."""

    error_class = "missing_reference"


class ConflictInM3(PermanentError):
    """M3 holds a record under our key (invoice number, batch key) that this event did not make."""

    error_class = "duplicate"


class UnresolvedOutcome(PermanentError):
    """A write whose answer was lost, and what M3 shows cannot tell whether it was applied.

    Dead-lettered rather than retried: guessing either way may apply it twice or not at all,
    so a person checks M3 before replaying.
    """

    error_class = "unknown_outcome"


class FlowMappings(dict[str, Mapping]):
    """Every loaded mapping by flow name; a flow may borrow another's calls (order → customer)."""

    def for_instance(self, instance: Instance | None) -> FlowMappings:
        """The mappings with a BNG instance's ``vars`` (warehouse, order type …), built once."""
        if instance is None or not instance.vars:
            return self
        views: dict[str, FlowMappings] = self.__dict__.setdefault("_views", {})
        view = views.get(instance.id)
        if view is None:
            view = views[instance.id] = FlowMappings(with_instance_vars(self, instance))
        return view

    def need(self, flow: str) -> Mapping:
        try:
            return self[flow]
        except KeyError:
            raise PermanentError(f"no mapping for flow {flow!r} is loaded") from None


@dataclass
class M3Work:
    ctx: FlowContext
    mapping: Mapping
    data: dict[str, Any]

    @classmethod
    async def begin(cls, ctx: FlowContext, mapping: Mapping) -> M3Work:
        """Validate the stored payload again and note the mapping version applied to it."""
        payload = ctx.payload
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise InvalidPayload("the event has no `data` object")
        try:
            validate_event_data(ctx.event.event_type, data)
        except UnknownEventType:
            pass  # a plugin's type routed to a built-in flow: the mapping decides what it needs
        except ValidationError as exc:
            problems = "; ".join(
                f"data.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidPayload(problems) from None
        await note_mapping_version(ctx, mapping)
        return cls(ctx, mapping, data)

    @property
    def m3(self) -> M3Client:
        if self.ctx.connectors.m3 is None:
            # Waiting (not dead-lettering) lets the events go through once M3 is configured.
            raise TargetUnavailable("m3", "M3 is not configured (set M3BNG_IONAPI_FILE)", retry_after=300)
        return self.ctx.connectors.m3

    @property
    def checkpoints(self) -> dict[str, Any]:
        return self.ctx.checkpoints

    async def remember(self, **values: Any) -> None:
        """Persist several checkpoint values in one fenced write (``None`` removes a key)."""
        self.ctx.note(**values)
        await self.ctx.save_checkpoint(sorted(values))

    def note(self, **values: Any) -> None:
        """Checkpoint values that can be worked out again: stored with the next write."""
        self.ctx.note(**values)

    async def records(
        self,
        call: str,
        *,
        data: MappingABC[str, Any] | None = None,
        mapping: Mapping | None = None,
        **extra: Any,
    ) -> list[dict[str, str]]:
        """The MI records of ``call``, fitted to and checked against M3's field metadata."""
        mapping = mapping or self.mapping
        spec = mapping.call(call)
        with tracing.span(
            "mapping", correlation_id=self.ctx.event.correlation_id, flow=mapping.flow, call=call
        ):
            metadata = self.ctx.connectors.m3_metadata
            fields = await metadata.fields(spec.program, spec.transaction) if metadata is not None else None
            lengths = (
                {name: f.length for name, f in fields.items() if f.type != "N" and f.length}
                if fields
                else None
            )
            records = mapping.render(
                call,
                self.data if data is None else data,
                {**self.checkpoints, **extra},
                field_lengths=lengths,
            )
            if fields:
                await self._company_fields(fields, records)
                for record in records:
                    problems = check_record(spec.program, spec.transaction, fields, record)
                    if problems:
                        raise MappingError(
                            mapping.flow, call, problems[0].field, "; ".join(str(p) for p in problems)
                        )
        return records

    async def _company_fields(self, fields: MappingABC[str, Any], records: list[dict[str, str]]) -> None:
        """CONO and DIVI as fields wherever the transaction lists them and the mapping does not
        set them: a matrix parameter does not fill a mandatory input (GLS840MI needs CONO)."""
        wanted = [name for name in COMPANY_FIELDS if name in fields]
        if not wanted:
            return
        company = await self.m3.company()
        for record in records:
            for name in wanted:
                if not record.get(name) and company.get(name):
                    record[name] = company[name]

    async def send(
        self,
        call: str,
        record: dict[str, str],
        *,
        step: str | None = None,
        mapping: Mapping | None = None,
        flush: bool = True,
    ) -> MIResult:
        spec = (mapping or self.mapping).call(call)
        m3 = self.m3
        async with self.ctx.step(
            step or call,
            target="m3",
            operation=f"{spec.program}/{spec.transaction}",
            request=record,
            flush=flush,
        ) as recorded:
            # A lookup reads the whole list: M3 answers one page (100 records) when asked for
            # none, and the record sought may be beyond it.
            result = await m3.execute(
                spec.program, spec.transaction, record, maxrecs=0 if is_list(spec.transaction) else None
            )
            recorded.response = result.records
        return result

    async def get(
        self,
        call: str,
        record: dict[str, str],
        *,
        step: str | None = None,
        mapping: Mapping | None = None,
        flush: bool = False,
    ) -> MIResult | None:
        """A call whose "not found" answer is an answer (None), not an error: a lookup, unless
        ``flush`` says it changes M3 (a delete of something maybe gone already)."""
        try:
            return await self.send(call, record, step=step, mapping=mapping, flush=flush)
        except M3NotFound:
            return None

    async def send_many(
        self,
        call: str,
        records: list[dict[str, str]],
        *,
        step: str | None = None,
        mapping: Mapping | None = None,
        flush: bool = True,
        missing_ok: bool = False,
    ) -> list[MIResult | None]:
        """Many records of one call in M3's bulk request (one round trip per ``BULK_SIZE``), one
        step each. The first transaction M3 refused raises, as ``send`` would; with
        ``missing_ok`` a "does not exist" is an answer (None) instead, as with ``get``. A lost
        bulk answer is an unknown outcome for every write in it: the flow's read-back settles it.
        """
        spec = (mapping or self.mapping).call(call)
        m3 = self.m3
        out: list[MIResult | None] = []
        for start in range(0, len(records), BULK_SIZE):
            chunk = records[start : start + BULK_SIZE]
            async with self.ctx.step(
                step or call,
                target="m3",
                operation=f"{spec.program}/{spec.transaction}",
                request=chunk,
                flush=flush,
            ) as recorded:
                answers = await m3.execute_many(spec.program, [(spec.transaction, r) for r in chunk])
                recorded.response = [a.records if isinstance(a, MIResult) else None for a in answers]
                for answer in answers:
                    if isinstance(answer, M3NotFound) and missing_ok:
                        out.append(None)
                    elif isinstance(answer, Exception):
                        raise answer
                    else:
                        out.append(answer)
        return out

    async def xref(self, entity: str, bng_id: str) -> str | None:
        return await documents.read_xref(self.ctx.sessions, entity, bng_id, instance=self.ctx.event.instance)

    async def key(
        self,
        name: str,
        entity: str,
        bng_id: str,
        *,
        data: MappingABC[str, Any] | None = None,
        mapping: Mapping | None = None,
    ) -> str:
        """The M3 key of a BNG object: this event's checkpoint, else the cross-reference (an
        object M3 already has keeps its number even if the ``keys:`` rule changed), else the
        mapping's ``keys:`` rule for a new one."""
        return str(
            self.checkpoints.get(name)
            or await self.xref(entity, bng_id)
            or (mapping or self.mapping).key(name, self.data if data is None else data)
        )

    async def link(self, entity: str, bng_id: str, m3_key: str) -> None:
        """BNG id ⇄ M3 key, stored with the flow's next write (at the latest with its outcome,
        before any later event of the same business key runs)."""
        instance = self.ctx.event.instance
        self.ctx.defer(documents.deferred_xref(entity, bng_id, m3_key, instance=instance))


async def note_mapping_version(ctx: FlowContext, mapping: Mapping) -> None:
    """Record which version of the mapping this event is applied with (replays can tell); set
    on the event row by the flow's first write, fenced like it."""
    ctx.set_on_event(mapping_hash=mapping.content_hash)


def step_name(call: str, index: int, count: int) -> str:
    """``line[2]`` for the third of several records, plain ``line`` for a single one."""
    return call if count == 1 else f"{call}[{index}]"


async def already_in_m3(work: M3Work, entity: str, bng_id: str, key: str, *, done: str | None = None) -> bool:
    """Whether this BNG object is in M3 already, by this event's checkpoints or the cross-reference.

    ``key`` is the checkpoint holding the M3 key (ORNO, PUNO …); ``done`` names a separate
    "finished" checkpoint for flows whose key is known before the object is complete. A second
    event for the same object (BNG sent it again under a new webhook id) stops here.
    """
    if work.checkpoints.get(done or key):
        await work.link(entity, bng_id, str(work.checkpoints[key]))
        return True
    existing = await work.xref(entity, bng_id)
    if existing is None:
        return False
    await work.remember(**{key: existing, **({done: True} if done else {})}, already_in_m3=True)
    return True


async def add_or_change(
    work: M3Work,
    noun: str,
    *,
    data: MappingABC[str, Any] | None = None,
    mapping: Mapping | None = None,
    **ctx: Any,
) -> MIResult | None:
    """Master data (customer, item, supplier) with the mapping's ``lookup``/``add``/``change`` calls.

    Decided by asking M3, not by the event's name: a ``*.created`` delivered twice, or whose Add
    answer was lost, finds the record on the next try (its key is deterministic) and changes it
    with the same data; "already exists" on Add means the same. Returns the Add result when this
    attempt created the record, ``None`` when it changed an existing one.
    """
    added = f"{noun}_added"
    if not work.checkpoints.get(added):
        [lookup] = await work.records("lookup", data=data, mapping=mapping, **ctx)
        if await work.get("lookup", lookup, mapping=mapping, step=f"get_{noun}") is None:
            [record] = await work.records("add", data=data, mapping=mapping, **ctx)
            try:
                result = await work.send("add", record, mapping=mapping, step=f"add_{noun}")
            except M3Duplicate:
                pass  # created meanwhile (or by our own Add whose answer was lost): change it
            else:
                await work.remember(**{added: True})
                return result
    [change] = await work.records("change", data=data, mapping=mapping, **ctx)
    await work.send("change", change, mapping=mapping, step=f"change_{noun}")
    return None
