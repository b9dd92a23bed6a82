"""Initial load (``m3bng sync``): M3's customers and items, read page by page from the M3
simulator, enqueued for the flows their BODs run and applied by the workers to the BNG
simulator, all over real HTTP. Cut short and run again: complete, nothing twice; once more:
nothing at all."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import Mapping
from m3bng.store import limits
from m3bng.store.models import DeadLetter, Event, EventStatus, SyncRun
from m3bng.sync import run_sync
from tests.conftest import LiveServer
from tests.integration.to_bng.conftest import Outbound, cli_env, m3bng_cli, settled, sync_events, wait_for
from tests.support.ops import OPS_TOKEN_ENTRIES, READ, bearer

CUSTOMERS = 230
ITEMS = 120


def customer(n: int) -> dict[str, str]:
    return {
        "CUNO": f"S{n:05d}",
        "CUNM": f"Loaded customer {n}",
        "CUA1": f"Street {n}",
        "TOWN": "Stockholm",
        "PONO": "11122",
        "CSCD": "SE",
        "PHNO": f"+46 8 {n:06d}",
        "MAIL": f"c{n}@example.test",
        "CUCD": "SEK",
        "STAT": "20",
    }


def item(n: int) -> dict[str, str]:
    return {"ITNO": f"L-{n:04d}", "ITDS": f"Loaded item {n}", "UNMS": "EA", "ITGR": "WIDGETS", "STAT": "20"}


@pytest.fixture
async def loaded(outbound: Outbound) -> AsyncIterator[Outbound]:
    async with httpx.AsyncClient(base_url=outbound.sim.server.base_url, timeout=10) as control:
        seed = {
            "customers": [customer(n) for n in range(CUSTOMERS)],
            "items": [item(n) for n in range(ITEMS)],
        }
        (await control.post("/_sim/seed", json=seed)).raise_for_status()
    yield outbound


async def test_customers_load_completes_after_a_cut_and_a_third_run_writes_nothing(
    loaded: Outbound, m3: M3Client, mappings: dict[str, Mapping]
) -> None:
    first = await run_sync(loaded.sessions, m3, mappings, "customers", page_size=100, max_pages=1)
    assert first.counts["read"] == 100 and first.cursor is not None  # cut short after one page
    second = await run_sync(loaded.sessions, m3, mappings, "customers", page_size=100)
    assert second.run_id == first.run_id  # the same run, continued
    await wait_for(lambda: settled(loaded), timeout=120)
    events = await sync_events(loaded, "SyncCustomerPartyMaster")
    keys = Counter(e.payload["sync"]["key"] for e in events)
    seeded = {f"S{n:05d}" for n in range(CUSTOMERS)}
    assert seeded <= set(keys) and max(keys.values()) == 1  # every customer once, none twice
    assert all(e.status == EventStatus.DONE.value for e in events), [e.last_error for e in events][:3]
    held = (await loaded.bng.state())["customers"]
    for n in (0, 99, 100, CUSTOMERS - 1):  # field for field, as the BOD flow would write them
        got = held[f"S{n:05d}"]
        assert got["CompanyName"] == f"Loaded customer {n}" and got["Email"] == f"c{n}@example.test"
        assert got["Phone"] == f"+46 8 {n:06d}" and got["BillingAddress"]["City"] == "Stockholm"
        assert got["Currency"] == "SEK" and got["M3CustomerNumber"] == f"S{n:05d}"
    writes = Counter(c["path"] for c in await loaded.bng_writes("customers"))
    assert max(writes.values()) == 1
    third = await run_sync(loaded.sessions, m3, mappings, "customers", page_size=100)
    assert third.run_id != first.run_id
    counts = third.counts
    assert (counts["new"], counts["changed"], counts["same"]) == (0, 0, counts["read"])
    assert len(await sync_events(loaded, "SyncCustomerPartyMaster")) == len(events)


async def test_a_changed_item_is_sent_again_and_a_refused_one_is_a_dead_letter(
    loaded: Outbound, m3: M3Client, mappings: dict[str, Mapping]
) -> None:
    dry = await run_sync(loaded.sessions, m3, mappings, "items", page_size=50, dry_run=True)
    assert dry.counts["new"] >= ITEMS and dry.counts["changed"] == 0
    assert await sync_events(loaded, "SyncItemMaster") == []  # a dry run enqueues nothing
    done = await run_sync(loaded.sessions, m3, mappings, "items", page_size=50)
    assert done.counts["new"] == dry.counts["new"] and done.counts["pages"] >= 3
    await wait_for(lambda: settled(loaded), timeout=120)
    async with httpx.AsyncClient(base_url=loaded.sim.server.base_url, timeout=10) as control:
        changed = {**item(7), "ITDS": "Renamed item 7"}
        nameless = {**item(8), "ITDS": ""}  # product_to_bng requires a name
        (await control.post("/_sim/seed", json={"items": [changed, nameless]})).raise_for_status()
    again = await run_sync(loaded.sessions, m3, mappings, "items", page_size=50)
    assert (again.counts["changed"], again.counts["refused"], again.counts["new"]) == (1, 1, 0)
    assert again.refusals[0]["key"] == "L-0008" and "Name" in again.refusals[0]["reason"]
    await wait_for(lambda: settled(loaded), timeout=60)
    assert (await loaded.bng.state())["products"]["L-0007"]["Name"] == "Renamed item 7"
    async with loaded.sessions() as session:
        dead = await session.scalar(
            select(Event).join(DeadLetter, DeadLetter.event_id == Event.id).where(Event.source == "sync")
        )
    assert dead is not None and dead.payload["sync"]["key"] == "L-0008"


# CLI processes: PostgreSQL only (suite time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_ops_api_lists_the_runs_and_the_cli_loads_with_a_summary(
    loaded: Outbound, outbound_settings: Callable[..., Any], live_server: Callable[..., LiveServer]
) -> None:
    """``m3bng sync`` as an operator runs it (a process of its own, the same store), then the run
    in ``GET /api/v1/sync/runs``."""
    env = cli_env(outbound_settings())
    code, out, err = await m3bng_cli(env, "sync", "items", "--to", "bng", "--dry-run", "--page-size", "40")
    assert code == 0, err
    assert "would enqueue" in out and "refused" in out, out
    code, _, err = await m3bng_cli(env, "sync", "orders")
    assert code == 2 and "unknown entity 'orders'" in err, err
    server = live_server(outbound_settings(ops_tokens=OPS_TOKEN_ENTRIES))
    async with server, server.client() as client:
        response = await client.get("/api/v1/sync/runs", headers=bearer(READ))
    assert response.status_code == 200, response.text
    [run] = response.json()["items"]
    assert run["entity"] == "items" and run["dry_run"] is True and run["status"] == "done"
    assert run["instance"] == "default"
    assert run["counts"]["new"] >= ITEMS and run["counts"]["pages"] >= 3


# CLI processes: PostgreSQL only (suite time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_load_killed_mid_run_is_completed_by_the_next_run_with_nothing_twice(
    loaded: Outbound, outbound_settings: Callable[..., Any]
) -> None:
    """SIGKILL while ``m3bng sync`` is between pages (M3 answering slowly), then the same command
    again: every customer enqueued exactly once, and the run continued, not started over."""
    env = cli_env(outbound_settings())
    await loaded.sim.faults(latency_ms=150, programs=["CRS610MI"])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "m3bng", "sync", "customers", "--page-size", "20",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip

    async def some_pages_stored() -> bool:
        return len(await sync_events(loaded, "SyncCustomerPartyMaster")) >= 40

    await wait_for(some_pages_stored, timeout=60)
    process.kill()  # SIGKILL: no handler runs, the page in flight is rolled back with its transaction
    await process.wait()
    cut = len(await sync_events(loaded, "SyncCustomerPartyMaster"))
    assert cut < CUSTOMERS  # killed mid-run
    await loaded.sim.faults()
    code, out, err = await m3bng_cli(env, "sync", "customers", "--page-size", "20")
    assert code == 0, err
    events = await sync_events(loaded, "SyncCustomerPartyMaster")
    keys = Counter(e.payload["sync"]["key"] for e in events)
    assert {f"S{n:05d}" for n in range(CUSTOMERS)} <= set(keys) and max(keys.values()) == 1
    async with loaded.sessions() as session:
        runs = (await session.scalars(select(SyncRun).order_by(SyncRun.id))).all()
    assert [(r.status, r.dry_run) for r in runs] == [("done", False)], out  # continued, not restarted
    # read as key ranges side by side (M3BNG_SYNC_READERS, 4 by default), each continued
    assert len(runs[0].segments) > 1 and all(s["done"] for s in runs[0].segments)
    await wait_for(lambda: settled(loaded), timeout=120)
    assert len((await loaded.bng.state())["customers"]) >= CUSTOMERS


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_load_reads_its_ranges_within_its_share_of_the_installations_m3_cap(
    loaded: Outbound, outbound_settings: Callable[..., Any]
) -> None:
    """On PostgreSQL ``m3bng sync`` takes a share of M3BNG_M3_MAX_CONCURRENCY (8) like the
    serving processes do: beside the server's share and another process holding 3 slots, its
    share is at most 3 (8 shared by three: 3, 3 and 2), so its 4 readers make at most 3 calls at
    once, and the load completes."""
    async with loaded.sessions() as session, session.begin():
        other = {"name": "m3.concurrency", "holder": "another-process", "slots": 3, "ttl": 600.0}
        await session.execute(limits._SHARE_PUT, other)
    await loaded.sim.faults(latency_ms=100, programs=["CRS610MI"])
    env = cli_env(outbound_settings())
    code, out, err = await m3bng_cli(env, "sync", "customers", "--page-size", "20", "--readers", "4")
    assert code == 0, err
    assert f"{CUSTOMERS + 3} read" in out  # with the simulator's own three
    assert (await loaded.sim.stats())["max_in_flight"] <= 3
    async with loaded.sessions() as session:
        [run] = (await session.scalars(select(SyncRun))).all()
        holders = set((await session.execute(text("SELECT holder FROM limit_shares"))).scalars())
    assert len(run.segments) > 1  # read as ranges all the same
    assert not any(h.startswith("cli-") for h in holders)  # its share given back at its end
