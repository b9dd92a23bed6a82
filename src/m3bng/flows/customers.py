"""BNG customer → M3 customer (CRS610MI), and the lookup the order flow uses.

Create-or-change, decided by asking M3 (``add_or_change``): a ``customer.created`` that is
delivered twice, or whose Add answer was lost, finds the customer on the next try and changes it
with the same data instead of failing or creating a second one. The M3 number comes from the
mapping's ``keys.CUNO`` rule, so the same BNG customer always lands on the same CUNO.
"""

from __future__ import annotations

from typing import Any

from m3bng.flows.runtime import FlowContext, FlowMappings, M3Work, MissingReference, add_or_change
from m3bng.mapping import Mapping

ENTITY = "customer"


async def customer_sync(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("customer_sync"))
    customer = work.data
    cuno = await upsert_customer(work, customer, work.mapping)
    await link_customer(work, customer, cuno)


async def upsert_customer(work: M3Work, customer: dict[str, Any], mapping: Mapping) -> str:
    """Add the customer, or change it when M3 already has it; returns the CUNO."""
    cuno = await work.key("CUNO", ENTITY, str(customer["CustomerID"]), data=customer, mapping=mapping)
    result = await add_or_change(work, ENTITY, data=customer, mapping=mapping, CUNO=cuno)
    if result is not None:
        cuno = result.record.get("CUNO") or cuno
    await work.remember(CUNO=cuno)
    return cuno


async def link_customer(work: M3Work, customer: dict[str, Any], cuno: str) -> None:
    await work.link(ENTITY, str(customer["CustomerID"]), cuno)
    if customer.get("ExternalID"):
        await work.link(f"{ENTITY}.external", str(customer["ExternalID"]), cuno)


async def ensure_customer(work: M3Work, mappings: FlowMappings, customer_id: str) -> str:
    """The order's customer in M3: by cross-reference, else by lookup, else created or refused."""
    if work.checkpoints.get("CUNO"):
        return str(work.checkpoints["CUNO"])
    cuno = await work.xref(ENTITY, customer_id)
    if cuno is None:
        customer_mapping = mappings.need("customer_sync")
        block = work.data.get("Customer") or {}
        candidate = customer_mapping.key("CUNO", {**block, "CustomerID": customer_id})
        [lookup] = await work.records("lookup", data={}, mapping=customer_mapping, CUNO=candidate)
        if await work.get("lookup", lookup, mapping=customer_mapping, step="get_customer") is not None:
            cuno = candidate
        elif work.mapping.option("auto_create_customer", False) and block:
            cuno = await upsert_customer(work, {**block, "CustomerID": customer_id}, customer_mapping)
        else:
            shown = {k: v for k, v in block.items() if k in ("CompanyName", "FirstName", "LastName", "Email")}
            hint = (
                "the order carries no Customer block to create it from"
                if not block
                else "auto_create_customer is off in the mapping"
            )
            raise MissingReference(
                f"customer missing: BNG customer {customer_id!r} (M3 CUNO {candidate!r}) does not exist "
                f"in M3 and {hint}; customer data: {shown or 'none'}"
            )
        await work.link(ENTITY, customer_id, cuno)
    work.note(CUNO=cuno)  # found again by the cross-reference if lost
    return cuno
