"""BNG order → M3 customer order, entered in batch: AddBatchHead → AddBatchLine… → Confirm.

Never two M3 orders, never a line twice, whatever fails where. The item checks go to M3 in
one bulk request and the lines in another: an order costs four round trips (items, head,
lines, Confirm) whatever its number of lines (up to ``BULK_SIZE``). Each write has a durable mark
on record before it is sent and a read-back that settles it when its answer is lost (a gateway
5xx, a timeout, a reset, a worker killed mid-call): the flow asks M3 what is there and never
resends on a guess.

* ``head_sent`` → the batch head: the customer's batch heads (LstBatchHead) with our CUOR (the
  BNG order id); found, it is used; not found, the head is sent again;
* ``line_pending`` → the lines: the batch's lines (LstBatchLine), each known by its CUPO (the
  BNG line number); only the missing ones are sent. The lines need no durable mark of their
  own: ``line_pending`` is noted before they are sent and stored with whatever is written next
  (a failed call's step, the outcome, the Confirm mark). A worker killed before any of those
  leaves no batch number on record either, so the next attempt finds the batch by
  LstBatchHead, and a batch found that way always has its lines read back;
* ``confirm_sent`` → Confirm: ``GetOrderNo`` on the batch number answers the real order number
  once the batch is confirmed, blank while it is not (then Confirm is sent again);
* the BNG order id ⇄ ORNO cross-reference answers a second ``order.created`` for the same order.

Keys obtained by a step (CUNO, the batch ORNO) are checkpointed with the next write that needs
them on record, never later than the next call that changes M3.
"""

from __future__ import annotations

from m3bng.errors import PermanentError
from m3bng.flows.customers import ensure_customer
from m3bng.flows.runtime import (
    FlowContext,
    FlowMappings,
    M3Work,
    MissingReference,
    UnresolvedOutcome,
    already_in_m3,
    step_name,
)
from m3bng.flows.runtime.anomalies import record_order
from m3bng.mapping import Mapping

ENTITY = "order"


async def order_to_cash(ctx: FlowContext, mappings: FlowMappings) -> None:
    work = await M3Work.begin(ctx, mappings.need("order_to_cash"))
    order_id = str(work.data["OrderID"])
    if await already_in_m3(work, ENTITY, order_id, "ORNO"):
        return
    await ensure_customer(work, mappings, str(work.data["CustomerID"]))
    if work.checkpoints.get("confirm_sent"):
        orno = await confirmed_order(work)
        if orno:
            await done(work, order_id, orno, found_by="GetOrderNo")
            return
    await check_items(work)
    await enter_batch(work)
    [confirm] = await work.records("confirm")
    await work.remember(confirm_sent=True)  # with the lines' end mark: one write
    result = await work.send("confirm", confirm)
    orno = result.record.get("ORNO") or ""
    if not orno:
        raise PermanentError(f"OIS100MI/Confirm answered without an order number (batch {confirm['ORNO']})")
    await done(work, order_id, orno)


async def done(work: M3Work, order_id: str, orno: str, **note: str) -> None:
    # Stored with the outcome, not on its own: until then ``confirm_sent`` is on record, and an
    # attempt after a crash here asks GetOrderNo (as after a lost Confirm answer).
    work.note(ORNO=orno, ORNO_TEMP=None, confirm_sent=None, head_sent=None, **note)
    await work.link(ENTITY, order_id, orno)
    # Entered in M3: what the anomaly rules compare the next orders with (stored with the outcome).
    record_order(work.ctx, work.mapping.flow, work.mapping.spec.anomalies)


async def confirmed_order(work: M3Work) -> str | None:
    """The order the batch became, if Confirm went through; None if the batch is unconfirmed."""
    [record] = await work.records("order_number")
    result = await work.get("order_number", record, step="get_order_number")
    if result is None:
        raise UnresolvedOutcome(
            f"batch order {record['ORNO']} was sent for confirmation, its answer was lost, and M3 "
            "now knows neither the batch nor an order made from it (OIS100MI/GetOrderNo): check "
            "the batch's errors in OIS275 before replaying"
        )
    return result.record.get("ORNR") or None


async def find_order(work: M3Work, mapping: Mapping) -> str | None:
    """The confirmed order that carries this BNG order id in CUOR (the customer's whole list:
    LstHead takes no CUOR, so it is read to the end and matched here)."""
    cuor = await expected_cuor(work, mapping)
    [record] = await work.records("find_by_reference", mapping=mapping)
    result = await work.get("find_by_reference", record, step="find_order_by_cuor", mapping=mapping)
    for row in result.records if result else []:
        if row.get("CUOR") == cuor and row.get("ORNO"):
            return row["ORNO"]
    return None


async def expected_cuor(work: M3Work, mapping: Mapping) -> str:
    """The CUOR the head call sends for this order: what a read-back matches M3's rows by."""
    [head] = await work.records("head", mapping=mapping, ORNO_TEMP="-")
    return head["CUOR"]


async def check_items(work: M3Work) -> None:
    """Every line's item must exist in M3; a missing one dead-letters the order naming the SKU."""
    if work.checkpoints.get("items_checked"):
        return
    records = await work.records("check_item")
    skus = [str(line.get("SKU")) for line in work.data.get("Lines", [])]
    answers = await work.send_many("check_item", records, step="check_items", flush=False, missing_ok=True)
    for index, (record, answer) in enumerate(zip(records, answers, strict=True)):
        if answer is None:
            raise MissingReference(
                f"item missing: SKU {skus[index]!r} (line {index + 1}, M3 ITNO {record['ITNO']!r}) "
                "does not exist in M3 (MMS200MI/GetItmBasic)"
            )
    work.note(items_checked=True)


async def enter_batch(work: M3Work) -> None:
    """Batch head and lines; what an earlier attempt may have sent is read back first."""
    if not work.checkpoints.get("ORNO_TEMP") and work.checkpoints.get("head_sent"):
        temp = await find_batch(work)
        if temp is not None:  # made by an earlier attempt, which may have sent lines too
            work.note(ORNO_TEMP=temp, found_by="LstBatchHead", line_pending=True)
    if not work.checkpoints.get("ORNO_TEMP"):
        [head] = await work.records("head")
        await work.remember(head_sent=True)
        result = await work.send("head", head)
        temp = result.record.get("ORNO") or ""
        if not temp:
            raise PermanentError("OIS100MI/AddBatchHead answered without a batch order number")
        # Stored with the next write: the Confirm mark, or the outcome of a failed line call.
        work.note(ORNO_TEMP=temp, lines_done=0)
    lines = await work.records("line")
    done_count = int(work.checkpoints.get("lines_done") or 0)
    present: set[str] = set()
    if work.checkpoints.get("line_pending") is not None:
        present = await lines_in_batch(work)
        done_count = 0
    if done_count < len(lines):
        # Whatever ends this attempt early, the next one reads the batch's lines first (module
        # docstring: noted, not stored on its own).
        work.note(line_pending=True)
    missing = [line for line in lines[done_count:] if line_id(line["CUPO"]) not in present]
    if missing:  # all in one bulk request: M3 answers each line on its own
        await work.send_many("line", missing, step="lines", flush=False)
    # Stored with the caller's next write (``confirm_sent``, before Confirm is sent).
    work.note(lines_done=len(lines), line_pending=None)


async def find_batch(work: M3Work) -> str | None:
    """The batch head a lost AddBatchHead answer made, by customer and CUOR."""
    cuor = await expected_cuor(work, work.mapping)
    [record] = await work.records("find_batch")
    result = await work.get("find_batch", record, step="find_batch_head")
    found = [row["ORNO"] for row in (result.records if result else []) if row.get("CUOR") == cuor]
    if len(found) > 1:
        raise UnresolvedOutcome(
            f"customer {record['CUNO']} has {len(found)} unconfirmed batch orders with CUOR {cuor!r} "
            f"({', '.join(found)}): delete the extra ones in OIS275 before replaying"
        )
    return found[0] if found else None


async def lines_in_batch(work: M3Work) -> set[str]:
    """The CUPO of every line the batch holds."""
    [record] = await work.records("batch_lines")
    result = await work.get("batch_lines", record, step="list_batch_lines")
    return {line_id(row.get("CUPO", "")) for row in (result.records if result else [])}


def line_id(cupo: str) -> str:
    """CUPO as a line identity: M3 may answer it zero-padded or space-padded."""
    return cupo.strip().lstrip("0") or "0"


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
        if work.checkpoints.get("call_sent") == name and await order_gone(work, name):
            applied.append(name)  # a delete whose answer was lost: the order is gone, it went in
        else:
            records = await work.records(name)
            await work.remember(call_sent=name)
            for index, record in enumerate(records):
                await work.send(name, record, step=step_name(name, index, len(records)))
            applied.append(name)
        await work.remember(applied=applied, call_sent=None)


async def order_gone(work: M3Work, call: str) -> bool:
    """After a lost answer of a delete (DelHead): is the order gone from M3 (GetHead)?"""
    if not work.mapping.call(call).transaction.startswith("Del"):
        return False
    [record] = await work.records("get_order")
    return await work.get("get_order", record, step="get_order") is None
