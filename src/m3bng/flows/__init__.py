"""Business flows, one module per kind of object; ``default_registry()`` wires them to event types.

A mapping file names its flow (``flow: order_to_cash``), the event types that trigger it and
their source (BNG webhooks, ION BODs, the inventory poller); the flow function named here does
the work with that mapping. Every mapping that writes to BNG runs the one generic flow in
``to_bng``. A BNG event whose type has no flow is dead-lettered with the reason ``no_flow`` (and
can be replayed once a flow exists), never silently dropped; a BOD noun no flow handles is
closed as ``skipped`` (unsupported).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from m3bng.errors import Skipped
from m3bng.flows.base import FlowMappings, MappedFlow
from m3bng.flows.confirm import CONFIRM_EVENT, confirm_bod
from m3bng.flows.customers import customer_sync
from m3bng.flows.echo import is_echo, split_names
from m3bng.flows.inventory import inventory_adjustment
from m3bng.flows.ledger import gl_entry, payment
from m3bng.flows.orders import order_to_cash, order_update
from m3bng.flows.payables import supplier_invoice
from m3bng.flows.products import product_sync
from m3bng.flows.purchasing import purchase_order
from m3bng.flows.to_bng import mapped_to_bng
from m3bng.flows.vendors import vendor_sync
from m3bng.inbox.flows import Flow, FlowContext, FlowRegistry
from m3bng.mapping import Mapping, MappingFileError
from m3bng.store import queries
from m3bng.timestamps import iso_utc

FLOWS: dict[str, MappedFlow] = {
    "order_to_cash": order_to_cash,
    "order_update": order_update,
    "customer_sync": customer_sync,
    "product_sync": product_sync,
    "vendor_sync": vendor_sync,
    "inventory_adjustment": inventory_adjustment,
    "purchase_order": purchase_order,
    "supplier_invoice": supplier_invoice,
    "gl_entry": gl_entry,
    "payment": payment,
}


def default_registry(mappings: dict[str, Mapping] | None = None) -> FlowRegistry:
    """One registration per trigger of every loaded mapping; a mapping for an unknown flow stops start-up.

    A mapping that writes to BNG (``target: bng``) needs no flow of its own: the generic
    ``to_bng`` flow runs it. ConfirmBOD is always registered: it is how ION hears of failures.
    """
    registry = FlowRegistry()
    registry.register(CONFIRM_EVENT, confirm_bod, source="m3bng", target="ion")
    if not mappings:
        return registry
    shared = FlowMappings(mappings)
    problems = []
    for name, mapping in mappings.items():
        if mapping.spec.target == "bng":
            flow: Flow = _to_bng(mapping)
        elif name in FLOWS:
            flow = _bound(FLOWS[name], shared, mapping)
        else:
            problems.append(
                f"{mapping.path}: flow {name!r} is not one m3bng knows (known: {', '.join(sorted(FLOWS))}; "
                "or set `target: bng` for a mapping that writes to BNG)"
            )
            continue
        for trigger in mapping.spec.trigger:
            try:
                registry.register(trigger, flow, source=mapping.spec.event_source, target=mapping.spec.target)
            except ValueError as exc:
                problems.append(f"{mapping.path}: trigger {trigger!r}: {exc}")
    if problems:
        raise MappingFileError(problems)
    return registry


def _to_bng(mapping: Mapping) -> Flow:
    async def run(ctx: FlowContext) -> None:
        await mapped_to_bng(ctx, mapping)

    run.__name__ = run.__qualname__ = mapping.flow
    return run


def _bound(flow: MappedFlow, mappings: FlowMappings, mapping: Mapping) -> Flow:
    """A BNG → M3 flow, with echo suppression when its mapping names ``echo_state``/``echo_id``.

    A webhook whose data BNG already held as far as m3bng knows (m3bng wrote it there from a
    BOD) is skipped; otherwise its data is recorded as what BNG holds, before the flow runs.
    With ``skip_stale``, a change older than the last one applied to the object is skipped.
    """
    state, id_field = mapping.option("echo_state"), mapping.option("echo_id")
    skip_stale = bool(mapping.option("skip_stale", False))
    # A new order is never an echo (m3bng creates no orders in BNG), and a re-sent one is caught
    # by the cross-reference; its data is still recorded, for the order.updated that follows.
    check = not mapping.option("echo_record_only", False)

    async def run(ctx: FlowContext) -> None:
        if skip_stale:
            await _skip_if_stale(ctx)
        await _echo_checked(ctx)
        if skip_stale:
            _record_version(ctx)  # applied: only now does it make older changes stale

    async def _echo_checked(ctx: FlowContext) -> None:
        data = ctx.payload.get("data") if isinstance(ctx.payload, dict) else None
        bng_id = data.get(str(id_field)) if state and id_field and isinstance(data, dict) else None
        if bng_id is None or not isinstance(data, dict):
            await flow(ctx, mappings)
            return
        async with ctx.sessions() as session:
            known = await queries.get_bng_state(session, str(state), str(bng_id), not_from_event=ctx.event.id)
        ignore = split_names(mapping.option("echo_ignore"))
        if check and is_echo(data, known, ignore=ignore, truncated_ok=False):
            raise Skipped(
                f"echo: {state} {bng_id} holds nothing m3bng did not already know (BNG announcing "
                "m3bng's own write, or an update that changes nothing)",
                error_class="echo",
            )
        # What BNG holds is a fact the webhook states, whatever M3 then does with it; recorded
        # first, so that M3's BOD for this change is recognised even if it overtakes this flow.
        await _remember_bng_state(ctx, str(state), str(bng_id), data)
        await flow(ctx, mappings)

    run.__name__ = run.__qualname__ = getattr(flow, "__name__", "flow")
    return run


async def _remember_bng_state(ctx: FlowContext, entity: str, bng_id: str, data: dict[str, Any]) -> None:
    """Stored with the flow's first write: before its first call that changes M3 (ctx.step)."""
    ctx.defer(
        lambda session: queries.put_bng_state(
            session, entity, bng_id, data, origin="bng", event_id=ctx.event.id
        )
    )


STALE_NOUN = "bng"  # document_versions rows of BNG objects, keyed by the event's business key


def _version_of(ctx: FlowContext) -> tuple[str, datetime] | None:
    key = ctx.event.business_key
    when = _timestamp(ctx.payload.get("timestamp") if isinstance(ctx.payload, dict) else None)
    return None if key is None or when is None else (key, when)


async def _skip_if_stale(ctx: FlowContext) -> None:
    """A webhook about an object older than the last one applied to it is skipped, not applied
    over newer data (mapping option ``skip_stale``: for events that carry the object's whole
    state, such as customer.updated; never for deltas such as inventory.adjusted).

    BNG retries a failed delivery later, after newer changes of the object may have gone
    through; events of one business key run in arrival order, so arrival alone cannot tell. The
    webhook body's ``timestamp`` (when the change happened) can: the newest applied per key is
    kept in ``document_versions`` and stored with the event's outcome. Equal times apply in
    arrival order; an event without a timestamp is always applied.
    """
    version = _version_of(ctx)
    if version is None:
        return
    key, when = version
    async with ctx.sessions() as session:
        applied = await queries.get_document_version(session, STALE_NOUN, key)
    if applied is not None and applied.created_at is not None and when < applied.created_at:
        raise Skipped(
            f"stale: {key} changed at {when.isoformat()}, but a change of "
            f"{applied.created_at.isoformat()} was applied already (event {applied.event_id}); "
            "not applied over newer data",
            error_class="stale",
        )


def _record_version(ctx: FlowContext) -> None:
    """Stored with the event's outcome (done), after everything the flow wrote."""
    version = _version_of(ctx)
    if version is not None:
        key, when = version
        ctx.defer(
            lambda session: queries.put_document_version(
                session, STALE_NOUN, key, variation_id=None, created_at=when, event_id=ctx.event.id
            )
        )


def _timestamp(value: Any) -> datetime | None:
    return iso_utc(value) if isinstance(value, str) and value else None
