"""BNG vendor → M3 supplier (CRS620MI), and the supplier lookup purchasing and payables use.

Create-or-change by asking M3 (``add_or_change``) with a SUNO derived from the VendorID, so a
second delivery or a lost AddSupplier answer changes the one supplier instead of failing or
making another.
"""

from __future__ import annotations

from m3bng.flows.runtime import FlowContext, FlowMappings, M3Work, MissingReference, add_or_change

ENTITY = "supplier"


async def vendor_sync(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("vendor_sync"))
    vendor_id = str(work.data["VendorID"])
    suno = await work.key("SUNO", ENTITY, vendor_id)
    await add_or_change(work, ENTITY, SUNO=suno)
    await work.remember(SUNO=suno)
    await work.link(ENTITY, vendor_id, suno)


async def ensure_supplier(work: M3Work, mappings: FlowMappings, vendor_id: str) -> str:
    """The M3 supplier of a BNG vendor: by cross-reference, else the VendorID itself, if M3 has it.

    A purchase order or invoice for a supplier M3 does not know is dead-lettered naming the
    vendor (sync the vendor, then replay), never sent to be refused halfway through.
    """
    if work.checkpoints.get("SUNO"):
        return str(work.checkpoints["SUNO"])
    suno = await work.xref(ENTITY, vendor_id)
    if suno is None:
        vendor_mapping = mappings.get("vendor_sync")
        suno = vendor_mapping.key("SUNO", {"VendorID": vendor_id}) if vendor_mapping else vendor_id
    [check] = await work.records("check_supplier", SUNO=suno)
    if await work.get("check_supplier", check, step="get_supplier") is None:
        raise MissingReference(
            f"supplier missing: BNG vendor {vendor_id!r} (M3 SUNO {suno!r}) does not exist in M3 "
            "(CRS620MI/GetBasicData); sync the vendor, then replay"
        )
    await work.remember(SUNO=suno)
    return suno
