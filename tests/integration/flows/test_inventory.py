"""inventory.adjusted → MMS850MI AddAdjust: applied at most once, settled by the stock balance."""

from __future__ import annotations

import asyncio
import time

from m3bng.connectors.bng.samples import sample
from m3bng.store.models import Step
from tests.integration.flows.conftest import Service


def adjust_steps(steps: list[Step]) -> list[Step]:
    return [s for s in steps if s.operation == "MMS850MI/AddAdjust"]


async def test_adjustment_changes_the_on_hand_balance(service: Service) -> None:
    event = await service.settle(await service.send("inventory.adjusted"))  # BIKE-100 in 100: -2
    assert event.status == "done", event.last_error
    state = await service.state()
    assert state["stock"]["100/BIKE-100"]["STQT"] == "23"
    [adjustment] = state["adjustments"]
    assert adjustment["QLQT"] == "-2" and adjustment["ITNO"] == "BIKE-100" and adjustment["WHLO"] == "100"
    assert adjustment["PRFL"] == "*EXE" and adjustment["E0PA"] == "BNG"
    assert event.checkpoint["balance_before"] == "25" and event.checkpoint["adjusted"] is True


async def test_invalid_warehouse_dead_letters_before_sending(service: Service) -> None:
    data = {**sample("inventory.adjusted"), "Warehouse": "1000"}  # WHLO is 3 characters
    event = await service.settle(await service.send("inventory.adjusted", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "WHLO" in (dead.error or "")
    assert await service.steps(event.id) == []


async def test_missing_item_dead_letters_naming_the_sku(service: Service) -> None:
    data = {**sample("inventory.adjusted"), "SKU": "NO-SUCH-SKU"}
    event = await service.settle(await service.send("inventory.adjusted", data))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "missing_reference" and "'NO-SUCH-SKU'" in (dead.error or "")
    assert (await service.state())["adjustments"] == []


async def test_duplicate_deliveries_adjust_once(service: Service) -> None:
    first = await service.send("inventory.adjusted", msg_id="msg_inv")
    assert await service.send("inventory.adjusted", msg_id="msg_inv") == first
    assert (await service.settle(first)).status == "done"
    data = {**sample("inventory.adjusted"), "AdjustmentID": "ADJ-1"}
    assert (await service.settle(await service.send("inventory.adjusted", data))).status == "done"
    resent = await service.settle(await service.send("inventory.adjusted", data, msg_id="msg_adj_1_again"))
    assert resent.status == "done" and resent.checkpoint.get("already_in_m3") is True
    state = await service.state()
    assert len(state["adjustments"]) == 2 and state["stock"]["100/BIKE-100"]["STQT"] == "21"


async def test_lost_answer_of_an_applied_adjustment_is_not_resent(service: Service) -> None:
    await service.sim.faults(programs=["MMS850MI/AddAdjust"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("inventory.adjusted"))
    assert event.status == "done", event.last_error
    state = await service.state()
    assert len(state["adjustments"]) == 1 and state["stock"]["100/BIKE-100"]["STQT"] == "23"
    steps = await service.steps(event.id)
    assert [s.error_class for s in adjust_steps(steps)] == ["unknown_outcome"]
    assert event.checkpoint["found_by"] == "balance"


async def test_lost_answer_of_an_adjustment_not_applied_sends_it_again(service: Service) -> None:
    await service.sim.faults(programs=["MMS850MI/AddAdjust"], timeout_rate=1.0, timeout_seconds=2, limit=1)
    event = await service.settle(await service.send("inventory.adjusted"))
    assert event.status == "done", event.last_error
    state = await service.state()
    assert len(state["adjustments"]) == 1 and state["stock"]["100/BIKE-100"]["STQT"] == "23"
    steps = await service.steps(event.id)
    *lost, sent = adjust_steps(steps)  # the fault may catch a second try while the first sleeps
    assert lost and {s.error_class for s in lost} == {"unknown_outcome"} and sent.status == "ok"
    assert any(s.name == "recheck_balance" for s in steps)


async def test_lost_answer_with_stock_moved_meanwhile_dead_letters(service: Service) -> None:
    await service.sim.faults(programs=["MMS850MI/AddAdjust"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event_id = await service.send("inventory.adjusted")
    deadline = time.monotonic() + 5
    while not (await service.state())["adjustments"]:  # applied; its answer is being held back
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await service.sim.control.post(
        "/_sim/seed", json={"stock": [{"WHLO": "100", "ITNO": "BIKE-100", "STQT": 30, "ALQT": 0}]}
    )  # someone else moved the stock before m3bng could look
    event = await service.settle(event_id)
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "unknown_outcome" and "check" in (dead.error or "")
    assert len((await service.state())["adjustments"]) == 1
