"""customer.created / customer.updated → CRS610MI Add or ChgBasicData, with the cross-reference kept."""

from __future__ import annotations

from m3bng.connectors.bng.samples import sample
from m3bng.store import documents
from tests.integration.flows.conftest import Service


async def test_created_then_updated(service: Service) -> None:
    created = await service.settle(await service.send("customer.created"))
    assert created.status == "done", created.last_error
    customer = (await service.state())["customers"]["C-2001"]
    assert customer["CUNM"] == "Velo Sport AB" and customer["CUA1"] == "Storgatan 1"
    assert customer["TOWN"] == "Stockholm" and customer["CSCD"] == "SE" and customer["STAT"] == "20"
    assert customer["PHNO"] == "+46 8 123 456" and customer["YREF"] == "Anna Berg"
    async with service.sessions() as session:
        assert await documents.get_xref(session, "customer", "C-2001") == "C-2001"
        assert await documents.get_xref(session, "customer.external", "shop-88123") == "C-2001"
    updated = await service.settle(
        await service.send("customer.updated", {**sample("customer.updated"), "Status": "Blocked"})
    )
    assert updated.status == "done", updated.last_error
    customer = (await service.state())["customers"]["C-2001"]
    assert customer["PHNO"] == "+46 8 999 000" and customer["STAT"] == "90"
    steps = [s.operation for s in await service.steps(updated.id)]
    assert "CRS610MI/ChgBasicData" in steps and "CRS610MI/Add" not in steps


async def test_created_twice_is_one_customer_changed(service: Service) -> None:
    first = await service.settle(await service.send("customer.created", msg_id="c1"))
    changed = {**sample("customer.created"), "Phone": "+46 8 999 999"}
    second = await service.settle(await service.send("customer.created", changed, msg_id="c2"))
    assert first.status == second.status == "done"
    second_ops = [s.operation for s in await service.steps(second.id)]
    assert "CRS610MI/ChgBasicData" in second_ops and "CRS610MI/Add" not in second_ops
    # The same data once more (BNG re-sent it under a new id): nothing new, nothing sent to M3.
    third = await service.settle(await service.send("customer.created", changed, msg_id="c3"))
    assert (third.status, third.error_class) == ("skipped", "echo")
    assert await service.steps(third.id) == []


async def test_lost_add_answer_makes_one_customer(service: Service) -> None:
    await service.sim.faults(programs=["CRS610MI/Add"], drop_response_rate=1.0, drop_seconds=3, limit=1)
    event = await service.settle(await service.send("customer.created"))
    assert event.status == "done", event.last_error
    ops = [(s.operation, s.error_class) for s in await service.steps(event.id)]
    assert ("CRS610MI/Add", "unknown_outcome") in ops
    assert ops.count(("CRS610MI/Add", None)) == 0  # never sent twice: found, then changed
    assert (await service.state())["customers"]["C-2001"]["CUNM"] == "Velo Sport AB"


async def test_long_name_is_truncated_and_missing_address_dead_letters(service: Service) -> None:
    long_name = {**sample("customer.created"), "CustomerID": "C-LONG", "CompanyName": "A" * 60}
    event = await service.settle(await service.send("customer.created", long_name))
    assert event.status == "done", event.last_error
    assert (await service.state())["customers"]["C-LONG"]["CUNM"] == "A" * 36  # M3's CUNM length
    no_address = {**sample("customer.created"), "CustomerID": "C-NOADDR", "BillingAddress": None}
    event = await service.settle(await service.send("customer.created", no_address))
    assert event.status == "dead"
    dead = await service.dead_letter(event.id)
    assert dead.error_class == "mapping" and "field CUA1" in (dead.error or "")
    assert "C-NOADDR" not in (await service.state())["customers"]


async def test_an_older_change_delivered_late_is_skipped_as_stale(service: Service) -> None:
    """BNG retries an old delivery after a newer change went through: not applied over it."""
    newer = {**sample("customer.updated"), "Phone": "+46 8 222 222"}
    older = {**sample("customer.updated"), "Phone": "+46 8 111 111"}
    applied = await service.settle(
        await service.send("customer.updated", newer, timestamp="2026-11-24T10:05:00Z")
    )
    assert applied.status == "done", applied.last_error
    late = await service.settle(
        await service.send("customer.updated", older, timestamp="2026-11-24T10:01:00+00:00")
    )
    assert (late.status, late.error_class) == ("skipped", "stale"), late.last_error
    assert "10:05" in (late.last_error or "")
    assert await service.steps(late.id) == []
    assert (await service.state())["customers"]["C-2001"]["PHNO"] == "+46 8 222 222"
    # The same moment, or no timestamp at all: applied, in arrival order.
    same = {**sample("customer.updated"), "Phone": "+46 8 333 333"}
    event = await service.settle(
        await service.send("customer.updated", same, timestamp="2026-11-24T10:05:00Z")
    )
    assert event.status == "done", event.last_error
    untimed = {**sample("customer.updated"), "Phone": "+46 8 444 444"}
    event = await service.settle(await service.send("customer.updated", untimed, timestamp=None))
    assert event.status == "done", event.last_error
    assert (await service.state())["customers"]["C-2001"]["PHNO"] == "+46 8 444 444"


async def test_a_failed_change_does_not_make_older_ones_stale(service: Service) -> None:
    """Only an applied change counts: a newer one that was dead-lettered leaves older ones free."""
    broken = {**sample("customer.updated"), "BillingAddress": None}
    dead = await service.settle(
        await service.send("customer.updated", broken, timestamp="2026-11-24T11:00:00Z")
    )
    assert dead.status == "dead"
    older = await service.settle(await service.send("customer.updated", timestamp="2026-11-24T10:30:00Z"))
    assert older.status == "done", older.last_error
