"""BNG purchase order → M3 purchase order by PPS370MI entry, never two POs for one BNG PO.

(The product brief says PPS100MI; that program holds purchase agreements. PPS370MI is the real
PO entry API: StartEntry → AddHead → AddLine… → FinishEntry.)

* An entry is not a purchase order until FinishEntry, so a lost answer *before* it (AddHead, a
  line) is settled by deleting that entry (DeleteEntry) and starting a new one, rather than by
  guessing what the half-built entry holds; a lost StartEntry answer leaves an empty entry that
  is never finished (PPS370MI lists no entries to find it by);
* AddHead answers the PO number (PUNO), which is checkpointed; a checkpoint says FinishEntry was
  sent, and a later attempt that finds it asks M3 (PPS200MI GetHead) whether the PO exists
  before finishing anything again;
* the BNG id ⇄ PUNO cross-reference answers a second ``purchase_order.created`` for the same PO.
"""

from __future__ import annotations

from m3bng.connectors.m3.client import MIResult
from m3bng.connectors.m3.errors import M3UnknownOutcome
from m3bng.errors import PermanentError, ProcessingError
from m3bng.flows.orders import check_items
from m3bng.flows.runtime import FlowContext, FlowMappings, M3Work, already_in_m3, step_name
from m3bng.flows.vendors import ensure_supplier

ENTITY = "purchase_order"


async def purchase_order(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("purchase_order"))
    po_id = str(work.data["PurchaseOrderID"])
    if await already_in_m3(work, ENTITY, po_id, "PUNO", done="finished"):
        return
    if work.checkpoints.get("finish_sent") and await po_exists(work):
        await finished(work, po_id, found_by="PPS200MI/GetHead")
        return
    if not work.checkpoints.get("finish_sent"):
        await ensure_supplier(work, mappings, str(work.data["VendorID"]))
        await check_items(work)
        for call in ("start", "head", "line", "finish"):  # mapping problems: dead before any write
            await work.records(call, MSGN="0")  # rendered before the entry exists
        await enter(work)
    [finish] = await work.records("finish")
    await work.remember(finish_sent=True)
    await work.send("finish", finish)
    await finished(work, po_id)


async def po_exists(work: M3Work) -> bool:
    [find] = await work.records("find")
    return await work.get("find", find, step="find_purchase_order") is not None


async def enter(work: M3Work) -> None:
    """Start, head and lines, resumable line by line; an uncertain step starts a new entry."""
    if work.checkpoints.get("entry_pending") is not None:
        # An entry with a step of unknown outcome is deleted (DeleteEntry; gone already: fine)
        # and never finished, so it never becomes a purchase order.
        [drop] = await work.records("discard")
        await work.get("discard", drop, step="discard_uncertain_entry", flush=True)
        await work.remember(MSGN=None, PUNO=None, head_done=None, lines_done=None, entry_pending=None)
    if not work.checkpoints.get("MSGN"):
        [start] = await work.records("start")
        msgn = (await work.send("start", start)).record.get("MSGN") or ""
        if not msgn:
            raise PermanentError("PPS370MI/StartEntry answered without a message number")
        await work.remember(MSGN=msgn, lines_done=0)
    if not work.checkpoints.get("head_done"):
        [head] = await work.records("head")
        result = await send_in_entry(work, "head", head, "head")
        puno = result.record.get("PUNO") or ""
        if not puno:
            raise PermanentError("PPS370MI/AddHead answered without a purchase order number")
        await work.remember(PUNO=puno, head_done=True, entry_pending=None)
    lines = await work.records("line")
    for index in range(int(work.checkpoints.get("lines_done") or 0), len(lines)):
        await send_in_entry(work, "line", lines[index], step_name("line", index, len(lines)))
        await work.remember(lines_done=index + 1, entry_pending=None)


async def send_in_entry(work: M3Work, call: str, record: dict[str, str], step: str) -> MIResult:
    await work.remember(entry_pending=step)
    try:
        return await work.send(call, record, step=step)
    except M3UnknownOutcome:
        raise  # maybe in the entry, maybe not: the next attempt starts a new entry
    except ProcessingError:
        await work.remember(entry_pending=None)  # M3 refused it: the entry is as it was
        raise


async def finished(work: M3Work, po_id: str, **note: str) -> None:
    puno = str(work.checkpoints["PUNO"])
    await work.remember(finished=True, finish_sent=None, MSGN=None, entry_pending=None, **note)
    await work.link(ENTITY, po_id, puno)
