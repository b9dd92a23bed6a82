"""BNG order → M3 customer order, entered in batch: AddBatchHead → AddBatchLine… → Confirm.

Never two M3 orders for one BNG order, whatever fails where:

* every key a step obtains is checkpointed (CUNO, the temporary batch ORNO, lines done, the
  final ORNO), so a retry or replay continues from the failed step; each is stored with the
  next write that needs it on record, never later than the next call that changes M3;
* a batch order is not an order until Confirm: if a line's answer is lost, the half-built batch
  is deleted (DelBatchHead) and entered again, rather than guessing whether the line is in it;
  a head whose answer is lost leaves at most an unconfirmed batch head behind, never an order;
* before Confirm is sent a checkpoint says so; a later attempt that finds it looks the order up
  by customer and ``CUOR`` (the BNG order id) before confirming anything;
* the BNG order id ⇄ ORNO cross-reference answers a second ``order.created`` for the same order.
"""

from __future__ import annotations

from m3bng.connectors.m3.errors import M3UnknownOutcome
from m3bng.errors import PermanentError, ProcessingError
from m3bng.flows.base import FlowMappings, M3Work, MissingReference, already_in_m3, step_name
from m3bng.flows.customers import ensure_customer
from m3bng.inbox.flows import FlowContext
from m3bng.mapping import Mapping

ENTITY = "order"


async def order_to_cash(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("order_to_cash"))
    order_id = str(work.data["OrderID"])
    if await already_in_m3(work, ENTITY, order_id, "ORNO"):
        return
    await ensure_customer(work, mappings, str(work.data["CustomerID"]))
    if work.checkpoints.get("confirm_sent") or ctx.event.attempts > 1:
        orno = await find_order(work, work.mapping)
        if orno is not None:
            await work.remember(ORNO=orno, found_by="CUOR")
            await work.link(ENTITY, order_id, orno)
            return
    await check_items(work)
    await enter_batch(work)
    [confirm] = await work.records("confirm")
    await work.remember(confirm_sent=True)  # with the lines' end mark: one write
    result = await work.send("confirm", confirm)
    orno = result.record.get("ORNO") or ""
    if not orno:
        raise PermanentError(f"OIS100MI/Confirm answered without an order number (batch {confirm['ORNO']})")
    # Stored with the outcome, not on its own: until then ``confirm_sent`` is on record, and an
    # attempt after a crash here finds the order by CUOR (as after a lost Confirm answer).
    work.note(ORNO=orno, ORNO_TEMP=None, confirm_sent=None, lines_done=None)
    await work.link(ENTITY, order_id, orno)


async def find_order(work: M3Work, mapping: Mapping) -> str | None:
    """The confirmed order that carries this BNG order id in CUOR, if a lost answer made one."""
    [record] = await work.records("find_by_reference", mapping=mapping)
    result = await work.get("find_by_reference", record, step="find_order_by_cuor", mapping=mapping)
    for row in result.records if result else []:
        if row.get("CUOR") == record["CUOR"] and row.get("ORNO"):
            return row["ORNO"]
    return None


async def check_items(work: M3Work) -> None:
    """Every line's item must exist in M3; a missing one dead-letters the order naming the SKU."""
    if work.checkpoints.get("items_checked"):
        return
    records = await work.records("check_item")
    skus = [str(line.get("SKU")) for line in work.data.get("Lines", [])]
    for index, record in enumerate(records):
        if await work.get("check_item", record, step=step_name("check_item", index, len(records))) is None:
            raise MissingReference(
                f"item missing: SKU {skus[index]!r} (line {index + 1}, M3 ITNO {record['ITNO']!r}) "
                "does not exist in M3 (MMS200MI/GetItmBasic)"
            )
    work.note(items_checked=True)


async def enter_batch(work: M3Work) -> None:
    """Batch head and lines, resumable line by line; a line with a lost answer restarts the batch."""
    pending = work.checkpoints.get("line_pending")
    if pending is not None and work.checkpoints.get("ORNO_TEMP"):
        [drop] = await work.records("discard_batch")
        await work.get("discard_batch", drop, step="discard_uncertain_batch", flush=True)  # gone: fine
        await work.remember(ORNO_TEMP=None, lines_done=None, line_pending=None)
    if not work.checkpoints.get("ORNO_TEMP"):
        [head] = await work.records("head")
        result = await work.send("head", head)
        temp = result.record.get("ORNO") or ""
        if not temp:
            raise PermanentError("OIS100MI/AddBatchHead answered without a batch order number")
        # Durable with the lines' mark below, before any line is sent (for an order without
        # lines, with ``confirm_sent`` before Confirm): one write instead of two.
        work.note(ORNO_TEMP=temp, lines_done=0)
    lines = await work.records("line")
    done = int(work.checkpoints.get("lines_done") or 0)
    if done < len(lines):
        # One durable mark for the run of lines, not one per line (an order may have hundreds):
        # if this attempt ends without an outcome (the worker died), any line from ``done`` on
        # may or may not be in the batch, and the next attempt rebuilds the batch.
        await work.remember(line_pending=done)
    for index in range(done, len(lines)):
        try:
            await work.send("line", lines[index], step=step_name("line", index, len(lines)), flush=False)
        except M3UnknownOutcome:
            raise  # maybe in the batch, maybe not: the next attempt rebuilds the batch
        except ProcessingError:
            # M3 refused it: the batch holds exactly the lines before it (stored with the outcome).
            work.note(lines_done=index, line_pending=None)
            raise
        work.note(lines_done=index + 1)
    # Stored with the caller's next write (``confirm_sent``, before Confirm is sent). A crash
    # before it leaves ``line_pending`` on record: the next attempt rebuilds the batch.
    work.note(lines_done=len(lines), line_pending=None)


async def order_update(ctx: FlowContext, mappings: FlowMappings) -> None:
    """``order.updated``: the mapping's conditional calls (e.g. Cancelled → DelHead) on the order."""
    work = await M3Work.begin(ctx, mappings.need("order_update"))
    order_id = str(work.data["OrderID"])
    orno = work.checkpoints.get("ORNO") or await work.xref(ENTITY, order_id)
    if orno is None:
        await ensure_customer(work, mappings, str(work.data["CustomerID"]))
        orno = await find_order(work, mappings.need("order_to_cash"))
        if orno is None:
            raise MissingReference(
                f"order missing: BNG order {order_id!r} is not in M3 (no ORNO, none by CUOR)"
            )
        await work.link(ENTITY, order_id, orno)
    await work.remember(ORNO=orno)
    applied = list(work.checkpoints.get("applied") or [])
    for name in work.mapping.applicable_calls(work.data, work.checkpoints):
        if name in applied:
            continue
        records = await work.records(name)
        for index, record in enumerate(records):
            await work.send(name, record, step=step_name(name, index, len(records)))
        applied.append(name)
        await work.remember(applied=applied)
