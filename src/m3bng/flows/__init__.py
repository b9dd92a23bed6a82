"""Business flows, one module per kind of object; ``default_registry()`` wires them to event types.

A mapping file names its flow (``flow: order_to_cash``), the event types that trigger it and
their source (BNG webhooks, ION BODs, the inventory poller); the flow function named here does
the work with that mapping. Every mapping that writes to BNG runs the one generic flow in
``to_bng``. A BNG event whose type has no flow is dead-lettered with the reason ``no_flow`` (and
can be replayed once a flow exists), never silently dropped; a BOD noun no flow handles is
closed as ``skipped`` (unsupported).
"""

from __future__ import annotations

from m3bng.errors import Skipped
from m3bng.flows.confirm import CONFIRM_EVENT, confirm_bod
from m3bng.flows.customers import customer_sync
from m3bng.flows.inventory import inventory_adjustment
from m3bng.flows.ledger import gl_entry, payment
from m3bng.flows.orders import order_to_cash, order_update
from m3bng.flows.payables import supplier_invoice
from m3bng.flows.products import product_sync
from m3bng.flows.purchasing import purchase_order
from m3bng.flows.routing import routed_to
from m3bng.flows.runtime import Flow, FlowContext, FlowMappings, FlowRegistry, MappedFlow, guarded
from m3bng.flows.to_bng import mapped_to_bng
from m3bng.flows.vendors import vendor_sync
from m3bng.mapping import Mapping, MappingFileError
from m3bng.reconcile import SOURCE as RECONCILE_SOURCE
from m3bng.sync import SOURCE as SYNC_SOURCE
from m3bng.sync import SYNC_FLOWS

# Reconciliation takes in lost orders and corrects stock, customers and items in BNG.
RECONCILE_FLOWS = {"order_to_cash", "inventory_poll", "customer_to_bng", "product_to_bng"}
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
            flow = guarded(FLOWS[name], shared, mapping)
        else:
            problems.append(
                f"{mapping.path}: flow {name!r} is not one m3bng knows (known: {', '.join(sorted(FLOWS))}; "
                "or set `target: bng` for a mapping that writes to BNG)"
            )
            continue
        # The initial load (m3bng sync) enqueues M3's records for the flow their BOD runs;
        # reconciliation takes in lost orders and corrects BNG from M3 (m3bng reconcile --fix).
        also = (
            *((SYNC_SOURCE,) if name in SYNC_FLOWS else ()),
            *((RECONCILE_SOURCE,) if name in RECONCILE_FLOWS else ()),
        )
        for trigger in mapping.spec.trigger:
            try:
                registry.register(
                    trigger, flow, source=mapping.spec.event_source, target=mapping.spec.target, also=also
                )
            except ValueError as exc:
                problems.append(f"{mapping.path}: trigger {trigger!r}: {exc}")
    if problems:
        raise MappingFileError(problems)
    return registry


def _to_bng(mapping: Mapping) -> Flow:
    per_instance: dict[str, Mapping] = {}  # with each instance's vars, built once

    linked = bool(mapping.option("require_link", False))

    async def run(ctx: FlowContext) -> None:
        instance = ctx.connectors.instance
        if instance is None:
            await mapped_to_bng(ctx, mapping)
            return
        bod = ctx.payload.get("bod") if isinstance(ctx.payload, dict) else None
        # A record of ``m3bng sync|reconcile --instance`` (payload ``sync``) was read in the
        # instance's own company for the instance an operator named: no routing rule to apply.
        directed = isinstance(ctx.payload, dict) and "sync" in ctx.payload
        if not linked and not directed and not routed_to(ctx.connectors.instances, instance.id, bod):
            raise Skipped(
                f"not routed: instance {instance.id}'s routing rule does not select accounting entity "
                f"{(bod or {}).get('accounting_entity')!r} / location {(bod or {}).get('location')!r}",
                error_class="not_routed",
            )
        view = per_instance.get(instance.id)
        if view is None:
            view = per_instance[instance.id] = mapping.with_vars(instance.vars)
        await mapped_to_bng(ctx, view)

    run.__name__ = run.__qualname__ = mapping.flow
    return run
