"""BNG inventory adjustment → M3 MMS850MI AddAdjust, applied at most once.

M3 cannot tell us whether an adjustment was already made: AddAdjust has no caller key and
nothing lists adjustments by a reference. What M3 can tell us is the on-hand balance, so the flow
reads it before sending (checkpointed) and, when an attempt follows one that sent the
adjustment without learning the outcome, reads it again:

* balance == before + quantity → it was applied: done, nothing sent;
* balance == before → it was not applied: sent again;
* anything else → something else moved the stock meanwhile and the two cannot be told apart:
  dead-lettered (class ``unknown_outcome``) for a person to check M3 before replaying, because
  guessing either way leaves the stock wrong.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from m3bng.errors import PermanentError
from m3bng.flows.runtime import FlowContext, FlowMappings, M3Work, MissingReference, UnresolvedOutcome

ENTITY = "inventory_adjustment"


async def inventory_adjustment(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("inventory_adjustment"))
    if work.checkpoints.get("adjusted"):
        return
    adjustment_id = work.data.get("AdjustmentID")
    if adjustment_id and await work.xref(ENTITY, str(adjustment_id)) is not None:
        await work.remember(adjusted=True, already_in_m3=True)
        return
    [balance] = await work.records("balance")
    [adjust] = await work.records("adjust")
    quantity = Decimal(adjust["QLQT"])
    if "balance_before" not in work.checkpoints:
        before = await on_hand(work, balance, "get_balance")
        await work.remember(balance_before=str(before))
    before = Decimal(work.checkpoints["balance_before"])
    if work.checkpoints.get("adjust_sent"):
        now = await on_hand(work, balance, "recheck_balance")
        if now == before + quantity:
            await finish(work, found_by="balance")
            return
        if now != before:
            raise UnresolvedOutcome(
                f"adjustment of {quantity} for item {adjust['ITNO']!r} in warehouse {adjust['WHLO']!r} "
                f"was sent but its answer was lost, and the on-hand balance is now {now} (it was {before} "
                f"before): check the item's stock transactions in M3 (MMS080/MWS070) before replaying, "
                "or the adjustment may be applied twice"
            )
    await work.remember(adjust_sent=True)
    await work.send("adjust", adjust)
    await finish(work)


async def on_hand(work: M3Work, record: dict[str, str], step: str) -> Decimal:
    result = await work.get("balance", record, step=step)
    if result is None:
        raise MissingReference(
            f"item/warehouse missing: SKU {work.data.get('SKU')!r} (M3 ITNO {record['ITNO']!r}) is not "
            f"stocked in warehouse {record['WHLO']!r} in M3 (MMS200MI/GetItmWhsBal)"
        )
    try:
        return Decimal(result.record.get("STQT") or "0")
    except InvalidOperation:
        raise PermanentError(f"MMS200MI/GetItmWhsBal answered a non-numeric STQT: {result.record}") from None


async def finish(work: M3Work, **note: str) -> None:
    await work.remember(adjusted=True, adjust_sent=None, **note)
    adjustment_id = work.data.get("AdjustmentID")
    if adjustment_id:
        await work.link(ENTITY, str(adjustment_id), f"event {work.ctx.event.id}")
