"""BNG supplier invoice → M3 supplier invoice batch (APS450MI AddHead → AddLine…), entered once.

(The product brief says PIS100MI; no such program exists in M3. APS450MI is the supplier
invoice batch API.)

* The head carries the BNG InvoiceID as SINO. Before a head is sent a checkpoint says so; an
  attempt that finds it first looks for *our* invoice (LstInvBySupInv by payee, supplier and SINO,
  then GetHead of each batch: same date, amount and currency) and continues with its batch
  number (INBN, checkpointed) instead of entering it again;
* "already exists" on AddHead that is not ours (entered by hand, or different data) is
  dead-lettered: M3 holds another invoice with this number and a person must decide;
* lines are checkpointed one by one; after a lost line answer the batch's lines are counted
  (LstLines) to tell whether it went in.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from m3bng.connectors.m3.errors import M3Duplicate
from m3bng.errors import PermanentError
from m3bng.flows.runtime import (
    ConflictInM3,
    FlowContext,
    FlowMappings,
    M3Work,
    UnresolvedOutcome,
    already_in_m3,
    step_name,
)
from m3bng.flows.vendors import ensure_supplier

ENTITY = "supplier_invoice"


async def supplier_invoice(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("supplier_invoice"))
    invoice_id = str(work.data["InvoiceID"])
    if await already_in_m3(work, ENTITY, invoice_id, "INBN", done="entered"):
        return
    suno = await ensure_supplier(work, mappings, str(work.data["VendorID"]))
    [head] = await work.records("head", SUNO=suno)
    has_lines = bool(work.data.get("Lines"))
    if has_lines:
        await work.records("line", INBN="0")  # mapping problems: dead before anything is written
    if not work.checkpoints.get("INBN"):
        await work.remember(INBN=await enter_head(work, head))
    if has_lines:
        await enter_lines(work)
    await work.remember(entered=True, head_sent=None, line_pending=None)
    await work.link(ENTITY, invoice_id, str(work.checkpoints["INBN"]))


async def enter_head(work: M3Work, head: dict[str, str]) -> str:
    if work.checkpoints.get("head_sent"):
        ours = await find_our_invoice(work, head)
        if ours is not None:
            await work.remember(found_by="LstInvBySupInv")
            return ours
    await work.remember(head_sent=True)
    try:
        result = await work.send("head", head)
    except M3Duplicate:
        raise ConflictInM3(
            f"supplier invoice {head['SINO']!r} of supplier {head['SUNO']!r} already exists in M3 and "
            f"is not the one this event entered (date {head['IVDT']}, amount {head['CUAM']} "
            f"{head.get('CUCD', '')}): check APS450 before replaying"
        ) from None
    inbn = result.record.get("INBN") or ""
    if not inbn:
        raise PermanentError("APS450MI/AddHead answered without an invoice batch number")
    return inbn


async def find_our_invoice(work: M3Work, head: dict[str, str]) -> str | None:
    """The batch of the head we sent, if M3 has it: the batches with our SINO (LstInvBySupInv
    answers only their numbers), each read (GetHead) and compared: date, amount, currency."""
    [find] = await work.records("find", SUNO=head["SUNO"])
    result = await work.get("find", find, step="find_invoice")
    for row in result.records if result else []:
        inbn = row.get("INBN", "")
        if not inbn:
            continue
        [get] = await work.records("get_head", INBN=inbn)
        found = await work.get("get_head", get, step="get_invoice_head")
        got = found.record if found else {}
        same = all(got.get(k, "") == head.get(k, "") for k in ("SUNO", "SINO", "IVDT", "CUCD"))
        if same and _amount(got.get("CUAM")) == _amount(head.get("CUAM")):
            return inbn
    return None


async def enter_lines(work: M3Work) -> None:
    lines = await work.records("line")
    done = int(work.checkpoints.get("lines_done") or 0)
    for index in range(done, len(lines)):
        if work.checkpoints.get("line_pending") == index:
            [count] = await work.records("lines")
            result = await work.get("lines", count, step="count_lines")
            held = len(result.records) if result else 0
            if held == index + 1:
                await work.remember(lines_done=index + 1, line_pending=None)
                continue
            if held != index:
                raise UnresolvedOutcome(
                    f"invoice batch {count['INBN']} holds {held} lines where {index} or {index + 1} "
                    "were expected after a lost AddLine answer: check it in APS450 before replaying"
                )
        await work.remember(line_pending=index)
        await work.send("line", lines[index], step=step_name("line", index, len(lines)))
        await work.remember(lines_done=index + 1, line_pending=None)


def _amount(value: str | None) -> Decimal | None:
    try:
        return Decimal(value or "")
    except InvalidOperation:
        return None
