"""BNG product → M3 item (MMS200MI): add it, or change it when M3 already has it.

The item number is the SKU (the mapping's ``keys.ITNO``), so a lost AddItmBasic answer or a
second delivery finds the item with GetItmBasic and updates it with the same data: one item per
SKU whatever is retried. The SKU ⇄ ITNO cross-reference is what other flows can read.
"""

from __future__ import annotations

from m3bng.flows.runtime import FlowContext, FlowMappings, M3Work, add_or_change

ENTITY = "item"


async def product_sync(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("product_sync"))
    sku = str(work.data["SKU"])
    itno = work.mapping.key("ITNO", work.data)
    await add_or_change(work, ENTITY, ITNO=itno)
    await work.remember(ITNO=itno)
    await work.link(ENTITY, sku, itno)
