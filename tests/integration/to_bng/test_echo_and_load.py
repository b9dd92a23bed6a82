"""Echo suppression both ways, a BNG 429 storm, and the inventory poller, end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import load_mappings
from m3bng.poller import InventoryPoller
from m3bng.store.models import Event
from tests.conftest import LiveServer
from tests.integration.to_bng.conftest import Outbound
from tests.support.bng import BngSim
from tests.support.bods import item_master, party
from tests.support.webhooks import TEST_SECRET, post_event


async def _webhook(outbound: Outbound, event_type: str, data: dict[str, Any], msg_id: str) -> Event:
    body = {"type": event_type, "timestamp": "2026-11-25T10:00:00Z", "data": data}
    response = await post_event(outbound.client, body, msg_id)
    assert response.status_code == 202, response.text
    return await outbound.settle(int(response.json()["event_id"]))


async def _next_event(outbound: Outbound, source: str, after: int, timeout: float = 15) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in await outbound.events(source) if e.id > after]
        if events:
            return await outbound.settle(events[0].id)
        assert time.monotonic() < deadline, f"no {source} event arrived"
        await asyncio.sleep(0.05)


async def test_m3_announcing_m3bngs_own_write_is_not_sent_back_to_bng(outbound: Outbound) -> None:
    created = await _webhook(outbound, "customer.created", sample("customer.created"), "c-echo-1")
    assert created.status == "done", created.last_error
    m3 = (await outbound.state())["customers"]["C-2001"]
    # M3 publishes the customer m3bng just wrote (values as M3 holds them: upper-cased, cut).
    bod = party(
        "CustomerPartyMaster",
        "C-2001",
        name=m3["CUNM"],
        line1=m3["CUA1"],
        city=m3["TOWN"],
        country=m3["CSCD"],
        email=m3["MAIL"],
        phone=m3["PHNO"],
        status=m3["STAT"],
        currency=m3["CUCD"],
    )
    echo = await outbound.apply(bod)
    assert (echo.status, echo.error_class) == ("skipped", "echo"), echo.last_error
    assert await outbound.bng_writes("customers") == []
    # A real change in M3 afterwards does go to BNG.
    changed = await outbound.apply(
        party(
            "CustomerPartyMaster",
            "C-2001",
            name=m3["CUNM"],
            line1=m3["CUA1"],
            city="Uppsala",
            country="SE",
            email=m3["MAIL"],
            phone=m3["PHNO"],
            variation=2,
            minutes=5,
        )
    )
    assert changed.status == "done", changed.last_error
    assert (await outbound.bng.state())["customers"]["C-2001"]["BillingAddress"]["City"] == "Uppsala"


async def test_bng_announcing_m3bngs_own_write_is_not_written_to_m3(outbound: Outbound) -> None:
    await outbound.bng.webhooks(url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True)
    applied = await outbound.apply(
        party("CustomerPartyMaster", "10055", name="Born in M3 AB", email="m3@born.example")
    )
    assert applied.status == "done", applied.last_error
    # BNG announces the customer m3bng just wrote to it, as BNG does for every change.
    echo = await _next_event(outbound, "bng", after=0)
    assert echo.event_type == "customer.updated"
    assert (echo.status, echo.error_class) == ("skipped", "echo"), echo.last_error
    assert await outbound.m3_calls("CRS610MI") == 0
    # A real change made in BNG afterwards is written to M3.
    held = (await outbound.bng.state())["customers"]["10055"]
    real = await _webhook(outbound, "customer.updated", {**held, "Phone": "+46 70 000 0000"}, "c-real-1")
    assert real.status == "done", real.last_error
    assert await outbound.m3_calls("CRS610MI") > 0


async def test_429_storm_loses_nothing_and_keeps_to_the_rate(
    bng_sim: BngSim,
    m3_sim: Any,
    outbound_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Any,
) -> None:
    # BNG allows 3 requests a second; m3bng is configured for 6, so BNG pushes back with 429s.
    await bng_sim.faults(rate_limit_per_second=3, retry_after=0.3)
    settings = outbound_settings(bng_rate_limit=6.0, bng_max_inline_wait=1.0, retry_schedule=[0.2] * 20)
    server = live_server(settings, run_workers=True)
    async with server, server.client() as client:
        outbound = Outbound(client, m3_sim, sessions, bng=bng_sim, base_url=server.base_url)
        ids = [
            await outbound.post_bod(item_master(f"ITEM-{n:02}", name=f"Item {n}"), message_id=f"storm-{n}")
            for n in range(12)
        ]
        events = [await outbound.settle(i, timeout=60) for i in ids]
    assert [e.status for e in events] == ["done"] * 12, [e.last_error for e in events if e.status != "done"]
    products = (await bng_sim.state())["products"]
    assert sorted(products) == [f"ITEM-{n:02}" for n in range(12)]
    calls = await bng_sim.calls()
    stats = await bng_sim.stats()
    assert any(c["status"] == 429 for c in calls), stats  # the storm happened
    applied = [c for c in calls if c.get("applied")]
    assert len(applied) == 12  # each product applied once, whatever was retried
    # m3bng never sent more than its configured 6 requests in any one-second window.
    times = sorted(c["time"] for c in calls)
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 6


async def test_poller_sends_only_changes_and_a_restart_sends_nothing_new(
    outbound: Outbound, outbound_settings: Callable[..., Settings]
) -> None:
    settings = outbound_settings(inventory_poll_seconds=5, inventory_poll_warehouses=["100"])
    mapping = load_mappings(settings.mappings_folder)["inventory_poll"]
    m3 = M3Client.from_settings(settings)
    try:
        poller = InventoryPoller(settings, outbound.sessions, m3, mapping)
        first = await poller.poll_once()
        assert first.rows == first.changed == 4  # the simulator's seed: four items in warehouse 100
        for event in await outbound.events("poller"):
            assert (await outbound.settle(event.id)).status == "done"
        inventory = (await outbound.bng.state())["inventory"]
        assert inventory["100/BIKE-200"]["OnHand"] == 8 and inventory["100/TUBE-26"]["Available"] == 400
        assert (await poller.poll_once()).changed == 0

        # Stock moves in M3 (here through m3bng's own BNG → M3 flow), then the process restarts.
        adjusted = {"SKU": "BIKE-200", "Warehouse": "100", "Quantity": -3, "Reason": "damaged"}
        moved = await _webhook(outbound, "inventory.adjusted", adjusted, "adj-1")
        assert moved.status == "done", moved.last_error
        restarted = InventoryPoller(settings, outbound.sessions, m3, mapping)
        assert (await restarted.poll_once()).changed == 1
        new = (await outbound.events("poller"))[-1]
        assert (await outbound.settle(new.id)).status == "done"
        assert (await outbound.bng.state())["inventory"]["100/BIKE-200"]["OnHand"] == 5
        assert len(await outbound.bng_writes("inventory")) == 5

        # Two processes asking for the poller's turn at the same moment: one gets it.
        turns = await asyncio.gather(poller._take_turn(), restarted._take_turn())
        assert sorted(turns) == [False, True]
    finally:
        await m3.aclose()
