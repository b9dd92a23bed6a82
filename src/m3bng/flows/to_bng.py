"""M3 → BNG: BODs from ION (and balances from the inventory poller) applied to BNG's REST API.

Every one of these flows is the same few steps, driven by its mapping file, so a tenant whose
BODs or BNG look different edits YAML:

1. **Current?** BODs for one document are applied in order (the inbox orders them by business
   key); a variation older than the newest applied one arrived late and is skipped, never
   applied over newer data (``document_versions``).
2. **Which BNG object?** The mapping's ``keys.M3Key`` names the M3 object (ORNO, CUNO …). Its BNG
   id comes from the cross-reference, else from ``keys.BngID`` (an order's CUOR is BNG's order
   id), else — for master data born in M3 — the M3 key itself. With ``require_link`` an object
   BNG never had (an order entered in M3) is skipped.
3. **Echo?** When BNG already holds every value the requests would write, the BOD is M3
   announcing a change m3bng made from BNG: nothing is sent (``flows/runtime/guards.py``).
4. **Send.** Each request carries an ``Idempotency-Key`` derived from the event, call and body,
   so a retry after a lost answer is applied once. Each is recorded as a step.
5. **Remember** what BNG now holds, the link, and the applied variation.

With ``link``, the BNG id ⇄ M3 key link is written once BNG has shown it knows the id: after
BNG accepted the requests, or when the BOD was an echo of what BNG holds. Not before: an
order's CUOR may be a customer's own PO number that BNG never saw, and a link to it would make
order_to_cash take a later BNG order of that number for one already in M3. Once written, later
BODs of the object that do not carry BNG's id (a Delete with only the ORNO) still find it.

Options ``sum.<Name>: <JMESPath>`` put the exact decimal sum of the values the path gives into
``_ctx.sum.<Name>`` (a string; null when it gives none). JMESPath's own ``sum()`` adds binary
floats, and an amount must not arrive in BNG as ``74.95000000000002``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from m3bng.errors import Skipped, TargetUnavailable
from m3bng.flows.runtime import (
    FlowContext,
    InvalidPayload,
    is_echo,
    merged,
    note_mapping_version,
    split_names,
)
from m3bng.mapping import Mapping, MappingError
from m3bng.mapping.engine import BngRequest, JMESPathError, compile_path
from m3bng.mapping.schema import BngCallSpec
from m3bng.store import documents

if TYPE_CHECKING:
    from m3bng.connectors.bng.client import BngClient


@dataclass
class BngWork:
    ctx: FlowContext
    mapping: Mapping
    data: dict[str, Any]
    bod: dict[str, Any] | None
    values: dict[str, Any] = field(default_factory=dict)  # what the rules see as _ctx

    @classmethod
    async def begin(cls, ctx: FlowContext, mapping: Mapping) -> BngWork:
        payload = ctx.payload
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise InvalidPayload("the event has no `data` object (the BOD's noun, or the polled balance)")
        bod = payload.get("bod") if isinstance(payload.get("bod"), dict) else None
        await note_mapping_version(ctx, mapping)
        return cls(ctx, mapping, data, bod, {"bod": bod or {}, "sum": OptionSums(mapping, data)})

    @property
    def bng(self) -> BngClient:
        if self.ctx.connectors.bng is None:
            raise TargetUnavailable("bng", "BNG is not configured (set M3BNG_BNG_BASE_URL)", retry_after=300)
        return self.ctx.connectors.bng

    # -- 1. current? -----------------------------------------------------------------------------

    def _document(self) -> tuple[str, str] | None:
        if not self.bod or not self.bod.get("document_id"):
            return None
        return str(self.bod["noun"]), f"{self.bod.get('accounting_entity') or ''}:{self.bod['document_id']}"

    async def ensure_current(self) -> None:
        """Skip a BOD older than the newest one applied for the same document."""
        document = self._document()
        if document is None or self.bod is None:
            return
        async with self.ctx.sessions() as session:
            applied = await documents.get_document_version(session, *document)
        if applied is None:
            return
        mine_var, mine_at = self.bod.get("variation_id"), _when(self.bod.get("creation_datetime"))
        if mine_var is not None and applied.variation_id is not None:
            stale = int(mine_var) < applied.variation_id
            shown = f"variation {mine_var} arrived after variation {applied.variation_id}"
        elif mine_at is not None and applied.created_at is not None:
            stale = mine_at < applied.created_at
            shown = (
                f"created {mine_at.isoformat()} arrived after one created {applied.created_at.isoformat()}"
            )
        else:
            return
        if stale:
            raise Skipped(
                f"stale {self.bod.get('noun')} {self.bod.get('document_id')}: {shown} was applied "
                f"(event {applied.event_id}); not applied over newer data",
                error_class="stale",
            )

    # -- 2. which BNG object? -------------------------------------------------------------------

    async def resolve_ids(self) -> tuple[str, str]:
        m3_key = self.mapping.key("M3Key", self.data, self.values)
        entity = self.mapping.option("entity")
        bng_id: str | None = None
        if entity:
            async with self.ctx.sessions() as session:
                bng_id = await documents.get_xref_by_m3(
                    session, str(entity), m3_key, instance=self.ctx.event.instance
                )
        if bng_id is None and "BngID" in self.mapping.spec.keys:
            try:
                bng_id = self.mapping.key("BngID", self.data, self.values)
            except MappingError:
                bng_id = None
        if bng_id is None:
            if self.mapping.option("require_link", False):
                raise Skipped(
                    f"{entity or 'object'} {m3_key} is not one BNG knows (no cross-reference and no "
                    "BNG id in the BOD): nothing to update in BNG",
                    error_class="not_linked",
                )
            bng_id = m3_key
        self.values.update(M3Key=m3_key, BngID=bng_id)
        return m3_key, bng_id

    # -- 3-5. echo, send, remember --------------------------------------------------------------

    def requests(self) -> list[tuple[str, BngRequest]]:
        applicable = set(self.mapping.applicable_calls(self.data, self.values))
        out: list[tuple[str, BngRequest]] = []
        for name, spec in self.mapping.spec.calls.items():
            if not isinstance(spec, BngCallSpec) or (spec.if_ and name not in applicable):
                continue
            out.extend((name, request) for request in self.mapping.requests(name, self.data, self.values))
        return out

    async def known_state(self, bng_id: str) -> dict[str, Any] | None:
        entity = self.mapping.option("echo_state")
        if not entity:
            return None
        async with self.ctx.sessions() as session:
            return await documents.get_bng_state(
                session,
                str(entity),
                bng_id,
                not_from_event=self.ctx.event.id,
                instance=self.ctx.event.instance,
            )

    async def send(self, name: str, index: int, request: BngRequest) -> Any:
        body = request.body
        key = None
        if request.method != "GET":
            fingerprint = json.dumps(
                [self.ctx.event.id, name, index, request.method, request.path, body],
                sort_keys=True,
                default=str,
            )
            key = "m3bng-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40]
        bng = self.bng
        async with self.ctx.step(
            name if index == 0 else f"{name}[{index}]",
            target="bng",
            operation=f"{request.method} {request.path}",
            request={"body": body, "idempotency_key": key},
            flush=request.method != "GET",
        ) as step:
            response = await bng.request(request.method, request.path, json=body, idempotency_key=key)
            step.response = {"status": response.status, "body": response.body, "replayed": response.replayed}
        return response

    async def expect_state(self, bng_id: str, state: dict[str, Any] | None, *, restore: bool = False) -> None:
        """Record (or, after a failed attempt, put back) what BNG holds for the object."""
        entity = self.mapping.option("echo_state")
        if not entity or (state is None and not restore):
            return
        async with self.ctx.sessions.begin() as session:
            if state is None:
                await documents.delete_bng_state(
                    session, str(entity), bng_id, instance=self.ctx.event.instance
                )
            else:
                await documents.put_bng_state(
                    session,
                    str(entity),
                    bng_id,
                    state,
                    origin="m3bng",
                    event_id=self.ctx.event.id,
                    instance=self.ctx.event.instance,
                )

    def link_with_outcome(self, m3_key: str, bng_id: str) -> None:
        """The link, stored with the event's outcome: for a BOD skipped as an echo, which still
        proves BNG holds ``bng_id``, so that a later BOD without BNG's id finds it."""
        entity = self.mapping.option("entity")
        if entity and self.mapping.option("link", False):
            instance = self.ctx.event.instance
            self.ctx.defer(documents.deferred_xref(str(entity), bng_id, m3_key, instance=instance))

    async def finish(self, m3_key: str, bng_id: str) -> None:
        """One transaction: the link and the variation applied (BNG's state is recorded already)."""
        entity = self.mapping.option("entity")
        document = self._document()
        async with self.ctx.sessions.begin() as session:
            if entity and self.mapping.option("link", False):
                await documents.put_xref(
                    session, str(entity), bng_id, m3_key, instance=self.ctx.event.instance
                )
            if document is not None and self.bod is not None:
                await documents.put_document_version(
                    session,
                    *document,
                    variation_id=self.bod.get("variation_id"),
                    created_at=_when(self.bod.get("creation_datetime")),
                    event_id=self.ctx.event.id,
                )


async def mapped_to_bng(ctx: FlowContext, mapping: Mapping) -> None:
    """The M3 → BNG flow every outbound mapping runs (see the module docstring)."""
    work = await BngWork.begin(ctx, mapping)
    await work.ensure_current()
    m3_key, bng_id = await work.resolve_ids()
    requests = work.requests()
    if not requests:
        raise Skipped(
            f"no request of {mapping.flow} applies to this {ctx.event.event_type} "
            f"(action {(work.bod or {}).get('action_code')})",
            error_class="not_applicable",
        )
    written: dict[str, Any] = {}
    for _name, request in requests:
        if request.method != "GET" and request.body:
            written = merged(written, request.body)
    known = await work.known_state(bng_id)
    ignore = split_names(mapping.option("echo_ignore"))
    if written and is_echo(written, known, ignore=ignore, truncated_ok=True):
        work.link_with_outcome(m3_key, bng_id)
        raise Skipped(
            f"echo: BNG already holds these values for {mapping.option('echo_state')} {bng_id} "
            "(the BOD announces a change m3bng made, or one that touches no mapped field)",
            error_class="echo",
        )
    # BNG announces the write with a webhook that may arrive before this flow has finished:
    # what BNG is about to hold is recorded first, and put back if the attempt fails.
    await work.expect_state(bng_id, merged(known, written) if written else None)
    try:
        counts: dict[str, int] = {}
        for name, request in requests:
            index = counts.get(name, 0)
            counts[name] = index + 1
            await work.send(name, index, request)
    except BaseException:
        await asyncio.shield(work.expect_state(bng_id, known, restore=True))
        raise
    await work.finish(m3_key, bng_id)


SUM_PREFIX = "sum."


class OptionSums(dict[str, str | None]):
    """``_ctx.sum``: each ``sum.<Name>`` option's values added as decimals (module docstring).

    A sum is worked out when a rule first reads it (JMESPath reads fields with ``get``), so a
    bad value only stops a BOD whose rules need that sum: an invoice with a TotalTaxAmount is
    not held up by its lines' tax.
    """

    def __init__(self, mapping: Mapping, data: dict[str, Any]) -> None:
        super().__init__()
        self.mapping, self.data = mapping, data

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self and f"{SUM_PREFIX}{key}" in self.mapping.spec.options:
            self[key] = option_sum(self.mapping, f"{SUM_PREFIX}{key}", self.data)
        return super().get(key, default)


def option_sum(mapping: Mapping, option: str, data: dict[str, Any]) -> str | None:
    """The exact sum of what the option's path gives; None when it gives no value.

    A value that is not a number dead-letters the BOD naming it: a total missing a part would
    reach BNG looking complete.
    """
    expression = str(mapping.spec.options[option])
    try:
        found = compile_path(expression).search(data)
    except JMESPathError as exc:
        raise MappingError(mapping.flow, "options", option, f"bad path {expression!r}: {exc}") from None
    total: Decimal | None = None
    for value in found if isinstance(found, list) else [found]:
        if value is None or value == "":
            continue
        try:
            number = Decimal(str(value).strip()) if isinstance(value, (str, int, float)) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise MappingError(mapping.flow, "options", option, f"{value!r} is not a number")
        total = number if total is None else total + number
    return None if total is None else format(total, "f")


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # Infor writes UTC
