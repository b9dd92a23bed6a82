"""Business flows, one module per kind of object; ``default_registry()`` wires them to event types.

A mapping file names its flow (``flow: order_to_cash``) and the event types that trigger it; the
flow function named here does the work with that mapping. An event whose type has no flow is
dead-lettered with the reason ``no_flow`` (and can be replayed once a flow exists), never
silently dropped.
"""

from __future__ import annotations

from m3bng.flows.base import FlowMappings, MappedFlow
from m3bng.flows.customers import customer_sync
from m3bng.flows.inventory import inventory_adjustment
from m3bng.flows.ledger import gl_entry, payment
from m3bng.flows.orders import order_to_cash, order_update
from m3bng.flows.payables import supplier_invoice
from m3bng.flows.products import product_sync
from m3bng.flows.purchasing import purchase_order
from m3bng.flows.vendors import vendor_sync
from m3bng.inbox.flows import Flow, FlowContext, FlowRegistry
from m3bng.mapping import Mapping, MappingFileError

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
    """One registration per trigger of every loaded mapping; a mapping for an unknown flow stops start-up."""
    registry = FlowRegistry()
    if not mappings:
        return registry
    shared = FlowMappings(mappings)
    problems = []
    for name, mapping in mappings.items():
        flow = FLOWS.get(name)
        if flow is None:
            problems.append(
                f"{mapping.path}: flow {name!r} is not one m3bng knows (known: {', '.join(sorted(FLOWS))})"
            )
            continue
        for trigger in mapping.spec.trigger:
            registry.register(trigger, _bound(flow, shared), source="bng")
    if problems:
        raise MappingFileError(problems)
    return registry


def _bound(flow: MappedFlow, mappings: FlowMappings) -> Flow:
    async def run(ctx: FlowContext) -> None:
        await flow(ctx, mappings)

    run.__name__ = run.__qualname__ = getattr(flow, "__name__", "flow")
    return run
