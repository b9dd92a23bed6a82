"""purchase_order.created → PPS370MI entry: exactly one M3 purchase order per BNG PO."""

from __future__ import annotations

from typing import Any

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def pos_for(state: dict[str, Any], po_id: str) -> list[dict[str, Any]]:
    return [po for po in state["purchase_orders"].values() if po["head"].get("YRE1") == po_id]


def calls(steps: list[Step], operation: str) -> int:
    return sum(1 for s in steps if s.operation == operation)


async def test_purchase_order_becomes_one_m3_po(service: Service) -> None:
    event = await service.settle(await service.send("purchase_order.created"))
    assert event.status == "done", event.last_error
    [po] = pos_for(await service.state(), "PO-7001")
    head = po["head"]
    assert head["SUNO"] == "S1001" and head["WHLO"] == "100" and head["FACI"] == "A01"
    assert head["DWDT"] == "20261205" and head["PUST"] == "20"
    assert [(line["ITNO"], line["ORQA"], line["PUPR"]) for line in po["lines"]] == [
        ("BIKE-100", "10", "310"),
        ("TUBE-26", "50", "7.25"),
    ]
    assert event.checkpoint["PUNO"] == head["PUNO"]
    steps = await service.steps(event.id)
    assert [s.operation for s in steps if s.operation.startswith("PPS370MI")] == [
        "PPS370MI/StartEntry",
        "PPS370MI/AddHead",
        "PPS370MI/AddLine",
        "PPS370MI/AddLine",
        "PPS370MI/FinishEntry",
    ]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "purchase_order", "PO-7001") == head["PUNO"]


async def test_missing_supplier_dead_letters_naming_the_vendor(service: Service) -> None:
    data = {**sample("purchase_order.created"), "VendorID": "V-NOPE"}
    event = await service.settle(await service.send("purchase_order.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference" and "'V-NOPE'" in (dead.error or "")
    assert calls(await service.steps(event.id), "PPS370MI/StartEntry") == 0


async def test_missing_item_dead_letters_naming_the_sku(service: Service) -> None:
    data = sample("purchase_order.created")
    data["Lines"][1]["SKU"] = "NO-SUCH-SKU"
    event = await service.settle(await service.send("purchase_order.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference" and "SKU 'NO-SUCH-SKU' (line 2" in (dead.error or "")
    assert (await service.state())["po_entries"] == {}


async def test_supplier_found_through_the_vendor_cross_reference(service: Service) -> None:
    assert (await service.settle(await service.send("vendor.created"))).status == "done"  # V-300
    data = {**sample("purchase_order.created"), "VendorID": "V-300"}
    event = await service.settle(await service.send("purchase_order.created", data))
    assert event.status == "done", event.last_error
    assert pos_for(await service.state(), "PO-7001")[0]["head"]["SUNO"] == "V-300"


async def test_duplicate_deliveries_make_one_po(service: Service) -> None:
    first = await service.settle(await service.send("purchase_order.created", msg_id="msg_po"))
    again = await service.settle(await service.send("purchase_order.created", msg_id="msg_po_resent"))
    assert first.status == "done" and again.status == "done"
    assert again.checkpoint.get("already_in_m3") is True
    assert len(pos_for(await service.state(), "PO-7001")) == 1


async def test_lost_finish_answer_still_makes_one_po(service: Service) -> None:
    await service.sim.faults(
        programs=["PPS370MI/FinishEntry"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("purchase_order.created"))
    assert event.status == "done", event.last_error
    assert len(pos_for(await service.state(), "PO-7001")) == 1
    steps = await service.steps(event.id)
    assert [s.error_class for s in steps if s.operation == "PPS370MI/FinishEntry"] == ["unknown_outcome"]
    assert event.checkpoint["found_by"] == "PPS200MI/GetHead"


async def test_lost_line_answer_starts_a_new_entry(service: Service) -> None:
    await service.sim.faults(programs=["PPS370MI/AddLine"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("purchase_order.created"))
    assert event.status == "done", event.last_error
    state = await service.state()
    [po] = pos_for(state, "PO-7001")
    assert [line["ITNO"] for line in po["lines"]] == ["BIKE-100", "TUBE-26"]
    assert [e["finished"] for e in state["po_entries"].values()] == [True]  # the uncertain one deleted
    steps = await service.steps(event.id)
    assert calls(steps, "PPS370MI/StartEntry") == 2 and calls(steps, "PPS370MI/DeleteEntry") == 1


async def test_server_error_on_a_line_is_settled_by_a_new_entry(service: Service) -> None:
    """A 500 on a write may come after M3 committed it: each uncertain entry is deleted."""
    await service.sim.faults(programs=["PPS370MI/AddLine"], error_rate=1.0, limit=3)
    event = await service.settle(await service.send("purchase_order.created"))
    assert event.status == "done", event.last_error
    steps = await service.steps(event.id)
    assert calls(steps, "PPS370MI/StartEntry") == 4 and calls(steps, "PPS370MI/DeleteEntry") == 3
    assert [s.error_class for s in steps if s.status == "failed"] == ["unknown_outcome"] * 3
    [po] = pos_for(await service.state(), "PO-7001")
    assert len(po["lines"]) == 2
