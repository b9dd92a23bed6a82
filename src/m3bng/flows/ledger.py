"""BNG journal entries and captured payments → M3 GL interface batches (GLS840MI).

(The product brief says GLS200MI; that program only reads vouchers. GLS840MI is the generic GL
interface: AddBatchHead → AddBatchLine… → UpdBatch.)

The batch key KEY1 is ours to choose, derived from the EntryID / PaymentID by the mapping, so
the interface itself tells us what is there: after a lost answer the step is sent again and
"already exists" (head or line) means ours, continue. Lines are numbered 1, 2, … and checkpointed
one by one. An entry whose debits and credits do not balance is refused before anything is sent:
a half-posted, unbalanced batch would be worse than none.
"""

from __future__ import annotations

from contextlib import suppress
from decimal import Decimal, InvalidOperation
from typing import Any

from m3bng.connectors.m3.errors import M3Duplicate, M3NotFound
from m3bng.errors import PermanentError
from m3bng.flows.runtime import ConflictInM3, FlowContext, FlowMappings, M3Work, already_in_m3, step_name
from m3bng.mapping import MappingError


class UnbalancedEntry(PermanentError):
    error_class = "validation"


async def gl_entry(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("gl_entry"))
    await post(work, "gl_entry", str(work.data["EntryID"]), list(work.data["Lines"]))


async def payment(ctx: FlowContext, mappings: FlowMappings) -> None:
    """A payment becomes debit bank / credit receivables, accounts from the mapping's vars."""
    work = await M3Work.begin(ctx, mappings.need("payment"))
    if not work.data.get("CapturedAt"):
        # PARM is positional: an absent date would shift every later part. Received is the
        # closest truth m3bng has about when the money moved.
        work.data["CapturedAt"] = ctx.event.received_at.isoformat()
    accounts = work.mapping.spec.vars
    amount = work.data["Amount"]
    lines = []
    for var, side in (("bank_account", "Debit"), ("receivables_account", "Credit")):
        if not accounts.get(var):
            raise MappingError(work.mapping.flow, "vars", var, "the payment mapping must name this account")
        lines.append({"Account": str(accounts[var]), side: amount})
    await post(work, "payment", str(work.data["PaymentID"]), lines)


def check_balanced(lines: list[dict[str, Any]]) -> None:
    debit = credit = Decimal(0)
    for number, line in enumerate(lines, 1):
        try:
            d, c = Decimal(str(line.get("Debit") or 0)), Decimal(str(line.get("Credit") or 0))
        except InvalidOperation:
            raise UnbalancedEntry(f"line {number}: Debit/Credit is not a number") from None
        if d < 0 or c < 0 or (d and c):
            raise UnbalancedEntry(f"line {number}: one of Debit or Credit, not negative")
        debit, credit = debit + d, credit + c
    if len(lines) < 2 or debit != credit or not debit:
        raise UnbalancedEntry(f"debits ({debit}) and credits ({credit}) must balance and not be zero")


async def post(work: M3Work, entity: str, bng_id: str, lines: list[dict[str, Any]]) -> None:
    if await already_in_m3(work, entity, bng_id, "KEY1", done="posted"):
        return
    check_balanced(lines)
    key1 = work.mapping.key("KEY1", work.data)
    numbered = {**work.data, "Lines": lines}  # the mapping numbers them (_number)
    [head] = await work.records("head", KEY1=key1)
    records = await work.records("line", data=numbered, KEY1=key1)
    [update] = await work.records("update", KEY1=key1)
    await work.remember(KEY1=key1)
    if not work.checkpoints.get("head_done"):
        sent_before = bool(work.checkpoints.get("head_sent"))
        await work.remember(head_sent=True)
        try:
            await work.send("head", head)
        except M3Duplicate:
            if not sent_before:
                raise ConflictInM3(
                    f"GL batch {key1!r} already exists in M3 but this event did not create it: another "
                    f"event for {entity} {bng_id!r}? Check GLS840 before replaying"
                ) from None
        await work.remember(head_done=True)
    for index in range(int(work.checkpoints.get("lines_done") or 0), len(records)):
        with suppress(M3Duplicate):  # our batch, our line number: sent by an attempt whose answer was lost
            await work.send("line", records[index], step=step_name("line", index, len(records)))
        await work.remember(lines_done=index + 1)
    sent_before = bool(work.checkpoints.get("update_sent"))
    await work.remember(update_sent=True)
    try:
        await work.send("update", update)
    except M3NotFound:
        if not sent_before:
            raise
        # Gone after an update whose answer was lost: M3 has taken the batch for posting.
    await work.remember(posted=True, head_sent=None, update_sent=None)
    await work.link(entity, bng_id, key1)
