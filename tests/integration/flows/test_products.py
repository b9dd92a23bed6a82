"""product.created/updated → MMS200MI: one item per SKU whatever is delivered twice or lost."""

from __future__ import annotations

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def ops(steps: list[Step], prefix: str = "MMS200MI") -> list[str]:
    return [s.operation for s in steps if s.operation.startswith(prefix)]


async def test_new_product_becomes_an_item(service: Service) -> None:
    event = await service.settle(await service.send("product.created"))
    assert event.status == "done", event.last_error
    item = (await service.state())["items"]["BIKE-500"]
    assert item["ITDS"] == "Trail bike 500"
    assert item["FUDS"] == "Aluminium trail bike, 29 inch wheels"
    assert item["ITCL"] == "BIK" and item["UNMS"] == "PCS" and item["STAT"] == "20"
    assert item["ITTY"] == "FG" and item["RESP"] == "M3BNG" and item["MABU"] == "2"
    assert ops(await service.steps(event.id)) == ["MMS200MI/GetItmBasic", "MMS200MI/AddItmBasic"]
    async with service.sessions() as session:
        assert await documents.get_xref(session, "item", "BIKE-500") == "BIKE-500"


async def test_update_changes_the_existing_item(service: Service) -> None:
    data = {**sample("product.updated"), "SKU": "bike-100", "Name": "City bike 8-speed", "Status": "Inactive"}
    event = await service.settle(await service.send("product.updated", data))
    assert event.status == "done", event.last_error
    item = (await service.state())["items"]["BIKE-100"]
    assert item["ITDS"] == "City bike 8-speed" and item["STAT"] == "90" and item["ITCL"] == "BIK"
    assert ops(await service.steps(event.id)) == ["MMS200MI/GetItmBasic", "MMS200MI/UpdItmBasic"]


async def test_unknown_category_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("product.created"), "ProductCategory": "Scooters"}
    event = await service.settle(await service.send("product.created", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "ITCL" in (dead.error or "") and "Scooters" in (dead.error or "")
    assert "BIKE-500" not in (await service.state())["items"]
    assert "MMS200MI/AddItmBasic" not in ops(await service.steps(event.id))


async def test_duplicate_delivery_makes_one_item_and_updates_it(service: Service) -> None:
    first = await service.settle(await service.send("product.created", msg_id="msg_p1"))
    renamed = {**sample("product.created"), "Name": "Roadster 500 (2027)"}
    again = await service.settle(await service.send("product.created", renamed, msg_id="msg_p1_resent"))
    assert first.status == again.status == "done"
    assert ops(await service.steps(again.id)) == ["MMS200MI/GetItmBasic", "MMS200MI/UpdItmBasic"]
    same = await service.settle(await service.send("product.created", renamed, msg_id="msg_p1_again"))
    assert (same.status, same.error_class, await service.steps(same.id)) == ("skipped", "echo", [])
    items = (await service.state())["items"]
    assert [k for k in items if k == "BIKE-500"] == ["BIKE-500"]


async def test_lost_add_answer_finds_the_item_and_updates_it(service: Service) -> None:
    await service.sim.faults(
        programs=["MMS200MI/AddItmBasic"], drop_response_rate=1.0, drop_seconds=3, limit=1
    )
    event = await service.settle(await service.send("product.created"))
    assert event.status == "done", event.last_error
    assert (await service.state())["items"]["BIKE-500"]["ITDS"] == "Trail bike 500"
    steps = await service.steps(event.id)
    assert [s.error_class for s in steps if s.operation == "MMS200MI/AddItmBasic"] == ["unknown_outcome"]
    assert ops(steps)[-2:] == ["MMS200MI/GetItmBasic", "MMS200MI/UpdItmBasic"]  # never added twice


async def test_transient_error_on_update_retries_it(service: Service) -> None:
    await service.sim.faults(programs=["MMS200MI/UpdItmBasic"], error_rate=1.0, limit=3)
    event = await service.settle(await service.send("product.updated"))  # BIKE-500: new, so added
    assert event.status == "done", event.last_error
    data = {**sample("product.updated"), "Name": "Trail bike 500 v2"}
    event = await service.settle(await service.send("product.updated", data))
    assert event.status == "done", event.last_error
    assert (await service.state())["items"]["BIKE-500"]["ITDS"] == "Trail bike 500 v2"
    steps = await service.steps(event.id)
    assert any(s.operation == "MMS200MI/UpdItmBasic" and s.status == "failed" for s in steps)
