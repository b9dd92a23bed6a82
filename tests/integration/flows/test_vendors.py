"""vendor.created/updated → CRS620MI: one supplier per VendorID whatever is delivered twice or lost."""

from __future__ import annotations

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def ops(steps: list[Step]) -> list[str]:
    return [s.operation for s in steps if s.operation.startswith("CRS620MI")]


async def test_new_vendor_becomes_a_supplier(service: Service) -> None:
    event = await service.settle(await service.send("vendor.created"))
    assert event.status == "done", event.last_error
    supplier = (await service.state())["suppliers"]["V-300"]
    assert supplier["SUNM"] == "Nordic Parts Oy" and supplier["SUTY"] == "0"
    assert supplier["CSCD"] == "FI" and supplier["LNCD"] == "GB" and supplier["CUCD"] == "EUR"
    assert supplier["TEPY"] == "30" and supplier["STAT"] == "20"
    assert supplier["PHNO"] and "SUA1" not in supplier and "MAIL" not in supplier  # no such inputs
    assert ops(await service.steps(event.id)) == ["CRS620MI/GetBasicData", "CRS620MI/AddSupplier"]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "supplier", "V-300") == "V-300"


async def test_update_changes_the_supplier(service: Service) -> None:
    assert (await service.settle(await service.send("vendor.created"))).status == "done"
    event = await service.settle(await service.send("vendor.updated"))  # PaymentTerms 45
    assert event.status == "done", event.last_error
    assert (await service.state())["suppliers"]["V-300"]["TEPY"] == "45"
    assert ops(await service.steps(event.id)) == ["CRS620MI/GetBasicData", "CRS620MI/UpdSupplier"]


async def test_too_long_vendor_id_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("vendor.created"), "VendorID": "V-1234567890"}  # SUNO is 10 characters
    event = await service.settle(await service.send("vendor.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "SUNO" in (dead.error or "")
    assert ops(await service.steps(event.id)) == []


async def test_duplicate_delivery_makes_one_supplier(service: Service) -> None:
    first = await service.settle(await service.send("vendor.created", msg_id="msg_v1"))
    changed = {**sample("vendor.created"), "Phone": "+46 31 999 999"}
    again = await service.settle(await service.send("vendor.created", changed, msg_id="msg_v1_resent"))
    assert first.status == again.status == "done"
    assert ops(await service.steps(again.id)) == ["CRS620MI/GetBasicData", "CRS620MI/UpdSupplier"]
    assert sorted((await service.state())["suppliers"]) == ["S1001", "V-300"]


async def test_lost_add_answer_finds_the_supplier(service: Service) -> None:
    await service.sim.faults(
        programs=["CRS620MI/AddSupplier"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("vendor.created"))
    assert event.status == "done", event.last_error
    assert sorted((await service.state())["suppliers"]) == ["S1001", "V-300"]
    steps = await service.steps(event.id)
    assert [s.error_class for s in steps if s.operation == "CRS620MI/AddSupplier"] == ["unknown_outcome"]
    assert ops(steps)[-2:] == ["CRS620MI/GetBasicData", "CRS620MI/UpdSupplier"]


async def test_transient_error_on_add_retries_it(service: Service) -> None:
    await service.sim.faults(programs=["CRS620MI/AddSupplier"], error_rate=1.0, limit=3)
    event = await service.settle(await service.send("vendor.created"))
    assert event.status == "done", event.last_error
    assert (await service.state())["suppliers"]["V-300"]["SUNM"] == "Nordic Parts Oy"
    steps = await service.steps(event.id)
    assert any(s.operation == "CRS620MI/AddSupplier" and s.status == "failed" for s in steps)
