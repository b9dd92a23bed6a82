"""Initial load of the other entities (``m3bng sync``): stock balances and suppliers from the M3
simulator into the BNG simulator, and customers from the BNG simulator into the M3 simulator
where the mapping declares BNG their master. Real stores, simulators over real HTTP, workers
applying the events; each load is cut short and continued, and run once more to write nothing.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import Mapping, load_mappings
from m3bng.poller import InventoryPoller
from m3bng.store.models import DeadLetter, Event, EventStatus
from m3bng.sync import Progress, SyncError, format_duration, progress_line, run_sync
from tests.integration.to_bng.conftest import Outbound, cli_env, m3bng_cli, settled, sync_events, wait_for

WAREHOUSES = {"A10": 30, "B20": 20, "C30": 0}  # C30 holds nothing: a page with no records
SUPPLIERS = 25
BNG_CUSTOMERS = 12


def balance(warehouse: str, n: int) -> dict[str, Any]:
    return {"WHLO": warehouse, "ITNO": f"STK-{n:03d}", "STQT": 10 + n, "ALQT": n % 3}


def supplier(n: int) -> dict[str, str]:
    return {
        "SUNO": f"V{n:04d}",
        "SUNM": f"Supplier {n}",
        "PHNO": f"+46 31 {n:04d}",
        "CSCD": "SE",
        "STAT": "20",
    }


def bng_customer(n: int) -> dict[str, Any]:
    return {
        "CustomerID": f"web-{n:03d}",
        "CompanyName": f"Web shop customer {n}",
        "Email": f"w{n}@example.test",
        "Phone": f"+46 8 555 {n:03d}",
        "BillingAddress": {
            "Line1": f"Webgatan {n}",
            "City": "Uppsala",
            "PostalCode": "75320",
            "Country": "SE",
        },
    }


@pytest.fixture
async def bng(outbound_settings: Callable[..., Any]) -> AsyncIterator[BngClient]:
    client = BngClient.from_settings(outbound_settings())
    yield client
    await client.aclose()


@pytest.fixture
def bng_master(tmp_path: Path, outbound_settings: Callable[..., Any]) -> Path:
    """A copy of the mappings where customer_sync.yaml declares BNG the master of customers."""
    folder = tmp_path / "mappings"
    shutil.copytree(outbound_settings().mappings_folder, folder)
    path = folder / "customer_sync.yaml"
    path.write_text(path.read_text().replace("\ntarget: m3\n", "\ntarget: m3\nmaster: bng\n"))
    return folder


async def seed_m3(outbound: Outbound, data: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=outbound.sim.server.base_url, timeout=10) as control:
        (await control.post("/_sim/seed", json=data)).raise_for_status()


async def dead_keys(service: Outbound) -> list[str]:
    async with service.sessions() as session:
        rows = await session.scalars(
            select(Event).join(DeadLetter, DeadLetter.event_id == Event.id).where(Event.source == "sync")
        )
        return [str(e.business_key) for e in rows]


async def test_stock_loads_per_warehouse_continues_after_a_cut_and_shares_the_pollers_state(
    outbound: Outbound, m3: M3Client, mappings: dict[str, Mapping], outbound_settings: Callable[..., Any]
) -> None:
    items = [
        {"ITNO": f"STK-{n:03d}", "ITDS": f"Stock item {n}", "UNMS": "EA", "STAT": "20"} for n in range(30)
    ]
    stock = [balance(w, n) for w, count in WAREHOUSES.items() for n in range(count)]
    await seed_m3(outbound, {"items": items, "stock": stock})
    warehouses = list(WAREHOUSES)
    with pytest.raises(SyncError, match=r"give --warehouse WHLO .* or set M3BNG_INVENTORY_POLL_WAREHOUSES"):
        await run_sync(outbound.sessions, m3, mappings, "stock")
    with pytest.raises(SyncError, match="stock load only --to bng"):
        await run_sync(outbound.sessions, m3, mappings, "stock", target="m3", warehouses=warehouses)
    dry = await run_sync(outbound.sessions, m3, mappings, "stock", warehouses=warehouses, dry_run=True)
    assert (dry.counts["new"], dry.counts["pages"]) == (50, 2)
    assert await sync_events(outbound, "inventory.balance") == []  # a dry run enqueues nothing
    first = await run_sync(outbound.sessions, m3, mappings, "stock", warehouses=warehouses, max_pages=1)
    assert (first.cursor, first.counts["read"]) == ("A10", 30)  # cut short after one warehouse
    second = await run_sync(outbound.sessions, m3, mappings, "stock", warehouses=warehouses)
    assert (
        second.run_id == first.run_id and second.counts["new"] == 50 and second.expected == 50
    )  # the dry run's
    events = await sync_events(outbound, "inventory.balance")
    assert len(events) == 50 and max(Counter(e.business_key for e in events).values()) == 1
    await wait_for(lambda: settled(outbound), timeout=120)
    assert all(e.status == EventStatus.DONE.value for e in await sync_events(outbound, "inventory.balance"))
    held = (await outbound.bng.state())["inventory"]
    for warehouse, n in (("A10", 0), ("A10", 29), ("B20", 19)):  # as the poller's balances are
        got = held[f"{warehouse}/STK-{n:03d}"]
        assert (got["OnHand"], got["Allocated"], got["Available"]) == (10 + n, n % 3, 10 + n - n % 3), got
    third = await run_sync(outbound.sessions, m3, mappings, "stock", warehouses=warehouses)
    assert (third.counts["same"], third.counts["new"], third.counts["changed"]) == (50, 0, 0)
    settings = outbound_settings(inventory_poll_warehouses=warehouses)
    poller = InventoryPoller(settings, outbound.sessions, m3, mappings["inventory_poll"])
    assert (await poller.poll_once()).changed == 0  # what the load sent, the poller does not resend
    assert len(await sync_events(outbound, "inventory.balance")) == 50


async def test_suppliers_load_field_for_field_and_a_nameless_one_is_refused(
    outbound: Outbound, m3: M3Client, mappings: dict[str, Mapping]
) -> None:
    nameless = {**supplier(SUPPLIERS), "SUNM": ""}  # vendor_to_bng requires CompanyName
    await seed_m3(outbound, {"suppliers": [*(supplier(n) for n in range(SUPPLIERS)), nameless]})
    dry = await run_sync(outbound.sessions, m3, mappings, "suppliers", page_size=10, dry_run=True)
    assert dry.counts["refused"] == 1 and dry.counts["new"] >= SUPPLIERS  # the seed's supplier too
    assert await sync_events(outbound, "SyncSupplierPartyMaster") == []
    first = await run_sync(outbound.sessions, m3, mappings, "suppliers", page_size=10, max_pages=1)
    assert first.counts["read"] == 10 and first.cursor is not None
    second = await run_sync(outbound.sessions, m3, mappings, "suppliers", page_size=10)
    assert second.run_id == first.run_id and second.counts["refused"] == 1
    assert second.refusals[0]["key"] == f"V{SUPPLIERS:04d}" and "CompanyName" in second.refusals[0]["reason"]
    events = await sync_events(outbound, "SyncSupplierPartyMaster")
    keys = Counter(e.payload["sync"]["key"] for e in events)
    assert {f"V{n:04d}" for n in range(SUPPLIERS + 1)} <= set(keys) and max(keys.values()) == 1
    await wait_for(lambda: settled(outbound), timeout=120)
    held = (await outbound.bng.state())["vendors"]
    for n in (0, 9, 10, SUPPLIERS - 1):
        got = held[f"V{n:04d}"]
        assert (got["CompanyName"], got["Phone"], got["Status"]) == (
            f"Supplier {n}",
            f"+46 31 {n:04d}",
            "Active",
        )
        assert got["Address"]["Country"] == "SE" and got["M3SupplierNumber"] == f"V{n:04d}"
    assert f"V{SUPPLIERS:04d}" not in held
    assert len(await dead_keys(outbound)) == 1  # the refused one: a dead letter, replayable
    third = await run_sync(outbound.sessions, m3, mappings, "suppliers", page_size=10)
    assert (third.counts["same"], third.counts["new"], third.counts["changed"]) == (
        third.counts["read"],
        0,
        0,
    )
    assert third.expected == second.counts["read"]


async def test_customers_load_into_m3_only_where_bng_is_their_master(
    outbound: Outbound, bng: BngClient, mappings: dict[str, Mapping], bng_master: Path
) -> None:
    with pytest.raises(SyncError, match="does not declare BNG the master of customers"):
        await run_sync(outbound.sessions, None, mappings, "customers", target="m3", bng=bng)
    with pytest.raises(SyncError, match="items load only --to bng"):
        await run_sync(outbound.sessions, None, mappings, "items", target="m3", bng=bng)
    customers = {c["CustomerID"]: c for c in map(bng_customer, range(BNG_CUSTOMERS))}
    customers["web-bad"] = {**bng_customer(99), "CustomerID": "web-bad", "Email": "not an address"}
    await outbound.bng.seed({"customers": customers})
    master = load_mappings(bng_master)
    dry = await run_sync(outbound.sessions, None, master, "customers", target="m3", bng=bng, dry_run=True)
    assert (dry.counts["new"], dry.counts["refused"]) == (BNG_CUSTOMERS, 1)
    assert await sync_events(outbound, "customer.updated") == []
    first = await run_sync(
        outbound.sessions, None, master, "customers", target="m3", bng=bng, page_size=5, max_pages=1
    )
    assert first.counts["read"] == 5
    second = await run_sync(outbound.sessions, None, master, "customers", target="m3", bng=bng, page_size=5)
    assert second.run_id == first.run_id and second.counts["refused"] == 1
    assert second.refusals[0]["key"] == "web-bad" and "data.Email" in second.refusals[0]["reason"]
    events = await sync_events(outbound, "customer.updated")
    keys = Counter(e.payload["sync"]["key"] for e in events)
    assert set(keys) == set(customers) and max(keys.values()) == 1
    assert events[0].business_key == "customer:web-000" and events[0].payload["timestamp"]
    await wait_for(lambda: settled(outbound), timeout=120)
    held = (await outbound.sim.state())["customers"]
    for n in (0, 5, BNG_CUSTOMERS - 1):  # what the customer.updated webhook would have written
        got = held[f"WEB-{n:03d}"]
        assert (got["CUNM"], got["MAIL"], got["PHNO"]) == (
            f"Web shop customer {n}",
            f"w{n}@example.test",
            f"+46 8 555 {n:03d}",
        )
        assert (got["CUA1"], got["TOWN"], got["PONO"], got["CSCD"]) == (
            f"Webgatan {n}",
            "Uppsala",
            "75320",
            "SE",
        )
    assert "WEB-BAD" not in held and await dead_keys(outbound) == ["customer:web-bad"]  # replayable
    third = await run_sync(outbound.sessions, None, master, "customers", target="m3", bng=bng, page_size=5)
    assert (third.counts["same"], third.counts["new"], third.counts["changed"]) == (
        third.counts["read"],
        0,
        0,
    )
    assert len(await sync_events(outbound, "customer.updated")) == len(events)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_cli_loads_stock_suppliers_and_bng_customers(
    outbound: Outbound, outbound_settings: Callable[..., Any], bng_master: Path
) -> None:
    """One smoke per new entity, as an operator runs them (a process of its own, the same store)."""
    await seed_m3(outbound, {"suppliers": [supplier(n) for n in range(3)]})
    await outbound.bng.seed({"customers": {"web-001": bng_customer(1)}})
    env = cli_env(outbound_settings())
    code, out, err = await m3bng_cli(env, "sync", "stock", "--warehouse", "100")
    assert code == 0 and "sync stock --to bng run" in out and "enqueued" in out, err
    code, out, err = await m3bng_cli(env, "sync", "suppliers", "--to", "bng")
    assert code == 0 and re.search(r"(\d+) read, enqueued \1 new", out), (out, err)  # the seed's and these
    code, _, err = await m3bng_cli(env, "sync", "suppliers", "--warehouse", "100")
    assert code == 2 and "--warehouse: only sync stock reads warehouses" in err, err
    code, _, err = await m3bng_cli(env, "sync", "customers", "--to", "m3")
    assert code == 2 and "master: bng" in err, err
    code, out, err = await m3bng_cli(
        {**env, "M3BNG_MAPPINGS_DIR": str(bng_master)}, "sync", "customers", "--to", "m3"
    )
    assert code == 0 and "1 new" in out, (out, err)


def test_the_progress_line_shows_the_rate_and_an_eta_estimated_from_the_last_run() -> None:
    assert [format_duration(s) for s in (0.4, 45, 185, 7620)] == ["0s", "45s", "3m 05s", "2h 07m"]
    progress = Progress(run_id=1, expected=1000, cursor="C0400")
    progress.counts.update(read=400, new=400, pages=4)
    progress.started -= 4.0  # 400 read in 4 s: 100/s, 600 left
    line = progress_line("customers", progress)
    assert "400 read of ≈1,000 (the last complete run's count)" in line and "100/s" in line
    assert "ETA ≈6s" in line and line.endswith("at C0400"), line
    first = Progress(run_id=2, cursor="C0400")  # a first run: no total to estimate from
    first.counts.update(read=400)
    assert "ETA" not in progress_line("customers", first) and "≈" not in progress_line("customers", first)
    resumed = Progress(run_id=3, expected=1000, resumed_read=300)  # 300 read before a kill
    resumed.counts.update(read=400)
    resumed.started -= 1.0
    assert 95 < resumed.rate < 105 and resumed.eta is not None and 5 < resumed.eta < 7
    past = Progress(run_id=4, expected=300)
    past.counts.update(read=400)
    assert past.eta is None  # more than last time: the estimate says nothing any more
