"""supplier_invoice.created → APS450MI: one invoice batch per BNG invoice whatever fails."""

from __future__ import annotations

from typing import Any

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def batches_for(state: dict[str, Any], sino: str) -> list[dict[str, Any]]:
    return [b for b in state["invoice_batches"].values() if b["head"].get("SINO") == sino]


def calls(steps: list[Step], operation: str) -> int:
    return sum(1 for s in steps if s.operation == operation)


async def test_invoice_becomes_one_invoice_batch(service: Service) -> None:
    event = await service.settle(await service.send("supplier_invoice.created"))
    assert event.status == "done", event.last_error
    [batch] = batches_for(await service.state(), "INV-88-2026")
    head = batch["head"]
    assert head["SUNO"] == "S1001" and head["IVDT"] == "20261120" and head["DUDT"] == "20261220"
    assert head["CUCD"] == "EUR" and head["CUAM"] == "3462.5"
    assert [(line["RDTP"], line["NLAM"]) for line in batch["lines"]] == [("8", "3100"), ("8", "362.5")]
    assert head["SPYN"] == "S1001"  # the payee LstInvBySupInv finds it by
    assert event.checkpoint["INBN"] == head["INBN"]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "supplier_invoice", "INV-88-2026") == head["INBN"]


async def test_too_long_invoice_id_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("supplier_invoice.created"), "InvoiceID": "INV-" + "9" * 30}  # SINO: 24
    event = await service.settle(await service.send("supplier_invoice.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "SINO" in (dead.error or "")
    assert calls(await service.steps(event.id), "APS450MI/AddHead") == 0


async def test_missing_supplier_dead_letters_naming_the_vendor(service: Service) -> None:
    data = {**sample("supplier_invoice.created"), "VendorID": "V-NOPE"}
    event = await service.settle(await service.send("supplier_invoice.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference" and "'V-NOPE'" in (dead.error or "")


async def test_duplicate_deliveries_enter_one_invoice(service: Service) -> None:
    first = await service.settle(await service.send("supplier_invoice.created", msg_id="msg_inv"))
    again = await service.settle(await service.send("supplier_invoice.created", msg_id="msg_inv_again"))
    assert first.status == again.status == "done" and again.checkpoint.get("already_in_m3") is True
    assert len(batches_for(await service.state(), "INV-88-2026")) == 1


async def test_another_invoice_with_the_same_number_is_not_taken_for_ours(service: Service) -> None:
    data = {**sample("supplier_invoice.created"), "Amount": "10.00", "Lines": []}
    first = await service.settle(await service.send("supplier_invoice.created", data))
    assert first.status == "done", first.last_error
    async with service.sessions.begin() as session:  # as if entered by hand: m3bng does not know it
        await documents.put_xref(session, "supplier_invoice", "entered-by-hand", first.checkpoint["INBN"])
    event = await service.settle(await service.send("supplier_invoice.created"))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "duplicate" and "'INV-88-2026'" in (dead.error or "")
    assert "is not the one this event entered" in (dead.error or "")
    assert len(batches_for(await service.state(), "INV-88-2026")) == 1


async def test_lost_head_answer_finds_our_invoice(service: Service) -> None:
    await service.sim.faults(programs=["APS450MI/AddHead"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("supplier_invoice.created"))
    assert event.status == "done", event.last_error
    [batch] = batches_for(await service.state(), "INV-88-2026")
    assert len(batch["lines"]) == 2 and event.checkpoint["found_by"] == "LstInvBySupInv"
    steps = await service.steps(event.id)
    assert [s.error_class for s in steps if s.operation == "APS450MI/AddHead"] == ["unknown_outcome"]


async def test_lost_line_answer_is_settled_by_counting_lines(service: Service) -> None:
    await service.sim.faults(programs=["APS450MI/AddLine"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("supplier_invoice.created"))
    assert event.status == "done", event.last_error
    [batch] = batches_for(await service.state(), "INV-88-2026")
    assert [line["NLAM"] for line in batch["lines"]] == ["3100", "362.5"]
    steps = await service.steps(event.id)
    assert calls(steps, "APS450MI/AddLine") == 2 and calls(steps, "APS450MI/LstLines") == 1


async def test_transient_error_resumes_from_the_failed_line(service: Service) -> None:
    await service.sim.faults(programs=["APS450MI/AddLine"], error_rate=1.0, limit=3)
    event = await service.settle(await service.send("supplier_invoice.created"))
    assert event.status == "done", event.last_error
    steps = await service.steps(event.id)
    assert calls(steps, "APS450MI/AddHead") == 1
    assert any(s.operation == "APS450MI/AddLine" and s.status == "failed" for s in steps)
    [batch] = batches_for(await service.state(), "INV-88-2026")
    assert len(batch["lines"]) == 2
