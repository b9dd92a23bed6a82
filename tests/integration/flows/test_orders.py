"""order.created → OIS100MI batch entry, exactly one M3 order per BNG order whatever fails."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from m3bng.store.models import CrossReference
from tests.integration.flows.conftest import Service


def orders_for(state: dict[str, Any], cuor: str) -> list[dict[str, Any]]:
    return [o for o in state["orders"].values() if o["head"].get("CUOR") == cuor]


def calls(steps: list[Any], operation: str) -> int:
    return sum(1 for s in steps if s.operation == operation)


async def test_order_becomes_one_confirmed_m3_order(service: Service) -> None:
    event_id = await service.send("order.created", msg_id="msg_order_1")
    event = await service.settle(event_id)
    assert event.status == "done", event.last_error
    [order] = orders_for(await service.state(), "SO-1001")
    head, lines = order["head"], order["lines"]
    assert head["CUNO"] == "10001" and head["ORDT"] == "20261124" and head["WHLO"] == "100"
    assert [(line["ITNO"], line["ORQT"], line.get("SAPR")) for line in lines] == [
        ("BIKE-100", "2", "499"),
        ("HELMET-1", "1", "59.9"),
        ("TUBE-26", "3", "19.5"),
    ]
    assert event.checkpoint["ORNO"] == head["ORNO"] and event.mapping_hash
    steps = await service.steps(event_id)
    assert [s.operation for s in steps if s.operation.startswith(("OIS100MI", "MMS200MI"))] == [
        "MMS200MI/GetItmBasic",  # the three items in one bulk request
        "OIS100MI/AddBatchHead",
        "OIS100MI/AddBatchLine",  # the three lines in one bulk request
        "OIS100MI/Confirm",
    ]
    assert [len(s.request) for s in steps if s.operation == "OIS100MI/AddBatchLine"] == [3]
    assert all(s.status == "ok" for s in steps) and steps[-1].response == [
        {"ORNO": head["ORNO"], "STAT": "22"}
    ]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "order", "SO-1001") == head["ORNO"]


async def test_duplicate_deliveries_make_one_order(service: Service) -> None:
    first = await service.send("order.created", msg_id="msg_dup")
    again = await service.send("order.created", msg_id="msg_dup")  # same webhook-id: same event
    resent = await service.send("order.created", msg_id="msg_dup_resent")  # BNG re-sent with a new id
    assert first == again != resent
    assert (await service.settle(first)).status == "done"
    second = await service.settle(resent)
    assert second.status == "done" and second.checkpoint.get("already_in_m3") is True
    assert len(orders_for(await service.state(), "SO-1001")) == 1


async def test_lost_confirm_answer_still_makes_one_order(service: Service) -> None:
    await service.sim.faults(programs=["OIS100MI/Confirm"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("order.created"))
    assert event.status == "done", event.last_error
    assert len(orders_for(await service.state(), "SO-1001")) == 1
    steps = await service.steps(event.id)
    confirm = [s for s in steps if s.operation == "OIS100MI/Confirm"]
    assert [s.error_class for s in confirm] == ["unknown_outcome"]  # never sent twice
    assert event.checkpoint["found_by"] == "GetOrderNo"
    assert calls(steps, "OIS100MI/GetOrderNo") == 1


async def test_lost_batch_head_answer_still_makes_one_order(service: Service) -> None:
    await service.sim.faults(
        programs=["OIS100MI/AddBatchHead"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("order.created"))
    assert event.status == "done", event.last_error
    state = await service.state()
    [order] = orders_for(state, "SO-1001")
    assert len(order["lines"]) == 3
    assert state["batches"] == {}  # the head whose answer was lost was found and used
    steps = await service.steps(event.id)
    assert calls(steps, "OIS100MI/AddBatchHead") == 1 and calls(steps, "OIS100MI/LstBatchHead") == 1
    assert event.checkpoint["found_by"] == "LstBatchHead"


async def test_lost_line_answer_sends_only_the_missing_lines(service: Service) -> None:
    await service.sim.faults(
        programs=["OIS100MI/AddBatchLine"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("order.created"))
    assert event.status == "done", event.last_error
    state = await service.state()
    [order] = orders_for(state, "SO-1001")
    assert [line["ITNO"] for line in order["lines"]] == ["BIKE-100", "HELMET-1", "TUBE-26"]
    assert [line["CUPO"] for line in order["lines"]] == ["1", "2", "3"]
    steps = await service.steps(event.id)
    assert calls(steps, "OIS100MI/AddBatchHead") == 1 and calls(steps, "OIS100MI/LstBatchLine") == 1
    # The bulk request's answer was lost after M3 entered all three: none is sent again.
    assert (await service.sim.stats())["OIS100MI/AddBatchLine"] == 3


async def test_transient_error_resumes_from_the_failed_step(service: Service) -> None:
    await service.sim.faults(
        programs=["OIS100MI/AddBatchLine"], error_rate=1.0, limit=3
    )  # > one call's tries
    event = await service.settle(await service.send("order.created"))
    assert event.status == "done", event.last_error
    steps = await service.steps(event.id)
    assert calls(steps, "OIS100MI/AddBatchHead") == 1  # not started over
    assert any(s.operation == "OIS100MI/AddBatchLine" and s.status == "failed" for s in steps)
    assert len(orders_for(await service.state(), "SO-1001")) == 1


async def test_missing_item_dead_letters_naming_the_sku(service: Service) -> None:
    data = sample("order.created")
    data["Lines"][1]["SKU"] = "NO-SUCH-SKU"
    event = await service.settle(await service.send("order.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference"
    assert "SKU 'NO-SUCH-SKU' (line 2" in (dead.error or "")
    state = await service.state()
    assert orders_for(state, "SO-1001") == [] and state["batches"] == {}


async def test_missing_customer_dead_letters_with_its_data(service: Service) -> None:
    data = {**sample("order.created"), "CustomerID": "C-NEW"}
    event = await service.settle(await service.send("order.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference" and "customer missing" in (dead.error or "")
    assert "C-NEW" in (dead.error or "")


async def test_missing_customer_is_created_from_the_order(service: Service) -> None:
    data = {**sample("order.created"), "CustomerID": "C-NEW", "Customer": sample("customer.created")}
    event = await service.settle(await service.send("order.created", data))
    assert event.status == "done", event.last_error
    state = await service.state()
    assert state["customers"]["C-NEW"]["CUNM"] == "Velo Sport AB"
    [order] = orders_for(state, "SO-1001")
    assert order["head"]["CUNO"] == "C-NEW"


async def test_invalid_mapped_value_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("order.created"), "OrderID": "SO-" + "9" * 30}  # CUOR max_length 20
    event = await service.settle(await service.send("order.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "field CUOR" in (dead.error or "")
    assert not any(s.operation.startswith("OIS100MI/Add") for s in await service.steps(event.id))


async def test_cancelled_order_is_deleted_in_m3(service: Service) -> None:
    assert (await service.settle(await service.send("order.created"))).status == "done"
    orno = orders_for(await service.state(), "SO-1001")[0]["head"]["ORNO"]
    unchanged = await service.settle(
        await service.send("order.updated", {**sample("order.updated"), "OrderStatus": "Picking"})
    )
    assert unchanged.status == "done" and orno in (await service.state())["orders"]
    event = await service.settle(await service.send("order.updated"))  # OrderStatus Cancelled
    assert event.status == "done", event.last_error
    state = await service.state()
    assert orno not in state["orders"] and orno in state["deleted_orders"]


async def test_item_blocked_for_sales_dead_letters_at_once_naming_it(service: Service) -> None:
    """M3's "blocked" is not a record lock: no retries, a dead letter that names the item; after
    the item is released a replay sends only the lines missing from the batch (read back by CUPO)."""
    blocked = {"ITNO": "HELMET-1", "ITDS": "Helmet, size M", "ITTY": "FG", "UNMS": "PCS", "STAT": "50"}
    (await service.sim.control.post("/_sim/seed", json={"items": [blocked]})).raise_for_status()
    event = await service.settle(await service.send("order.created"))
    assert event.status == "dead" and event.attempts == 1
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "blocked"
    assert "Item HELMET-1 is blocked for sales" in (dead.error or "") and "field ITNO" in (dead.error or "")
    assert (await service.sim.stats())["OIS100MI/AddBatchLine"] == 3  # one bulk request, once
    [batch] = (await service.state())["batches"].values()
    assert [line["CUPO"] for line in batch["lines"]] == ["1", "3"]  # a replay sends only line 2


async def test_read_backs_read_past_the_first_page(service: Service) -> None:
    """A customer with 150 orders and 150 open batch heads: M3 answers 100 records when asked
    for none, and ours is after them. The read-backs ask for all (maxrecs=0) and find it."""
    history = [
        {"head": {"ORNO": f"{9000000 + n:010d}", "CUNO": "10001", "CUOR": f"OLD-{n:04d}"}, "lines": []}
        for n in range(150)
    ]
    heads = [{"head": {"ORNO": f"S{n:09d}", "CUNO": "10001", "CUOR": f"OPEN-{n:04d}"}} for n in range(150)]
    seed = {"orders": history, "batches": heads}
    (await service.sim.control.post("/_sim/seed", json=seed)).raise_for_status()
    await service.sim.faults(
        programs=["OIS100MI/AddBatchHead"], gateway_rate=1.0, gateway_status=504, gateway_after=True, limit=1
    )
    event = await service.settle(await service.send("order.created"))
    assert event.status == "done", event.last_error
    assert event.checkpoint["found_by"] == "LstBatchHead"
    state = await service.state()
    [order] = orders_for(state, "SO-1001")
    # An order.updated for it, with the cross-reference forgotten: found by CUOR among 151 orders.
    async with service.sessions.begin() as session:
        await session.execute(delete(CrossReference).where(CrossReference.entity == "order"))
    cancel = await service.settle(await service.send("order.updated"))
    assert cancel.status == "done", cancel.last_error
    assert order["head"]["ORNO"] in (await service.state())["deleted_orders"]


async def test_an_order_costs_four_round_trips_whatever_its_lines(service: Service) -> None:
    """Items, head, lines, Confirm: with M3's bulk request the lines do not add round trips."""
    assert (await service.settle(await service.send("order.created"))).status == "done"  # warms metadata
    lines = [{"SKU": "TUBE-26", "Quantity": "1"} for _ in range(40)]
    before = (await service.sim.stats())["mi_calls"]
    big = {**sample("order.created"), "OrderID": "SO-BIG", "Lines": lines}
    event = await service.settle(await service.send("order.created", big))
    assert event.status == "done", event.last_error
    assert (await service.sim.stats())["mi_calls"] - before == 4
    [order] = orders_for(await service.state(), "SO-BIG")
    assert [line["CUPO"] for line in order["lines"]] == [str(n) for n in range(1, 41)]
