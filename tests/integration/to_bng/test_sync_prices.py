"""The catalog price push (``m3bng sync prices --to bng``): M3's items (MMS200MI LstItmByItm)
priced for the reference customer through the storefront's read (OIS320MI GetPriceLine in bulk)
and written to BNG's products (``PATCH /api/v1/products/{SKU}``), all over real HTTP against the
M3 and BNG simulators. Only changes are written; a dry run writes nothing; a run cut short is
continued by the next one."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.m3.client import M3Client
from m3bng.instances import load_instances
from m3bng.mapping import Mapping, load_mappings
from m3bng.runtime import build_connectors
from m3bng.sim.bng import DEFAULT_API_KEY
from m3bng.store import documents
from m3bng.storefront.service import Storefront, storefront_for
from m3bng.sync import Progress, SyncError, run_sync
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle
from tests.integration.to_bng.conftest import cli_env, m3bng_cli, wait_for
from tests.support.bng import BngSim, running_bng_sim
from tests.support.ops import OPS_TOKEN_ENTRIES, READ, bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

Sessions = async_sessionmaker[AsyncSession]
# The seed's items with a price in customer 10001's list (B2B-SE, 10 % dealer discount).
NET = {"BIKE-100": "4491", "BIKE-200": "8091", "HELMET-1": "539.1", "TUBE-26": "80.1"}


async def catalog(bng_sim: BngSim, sessions: Sessions) -> None:
    """BNG's catalog: every seeded item but TEMPLATE-ITEM, BIKE-200 under a SKU of its own
    (linked by product_to_bng's cross-reference)."""
    products = {sku: {"SKU": sku, "Name": sku} for sku in ("BIKE-100", "BK-200", "HELMET-1", "TUBE-26")}
    await bng_sim.seed({"products": products})
    async with sessions() as session, session.begin():
        await documents.put_xref(session, "item", "BK-200", "BIKE-200")


@pytest.fixture
async def push(
    outbound_settings: Callable[..., Settings], bng_sim: BngSim, sessions: Sessions
) -> AsyncIterator[Callable[..., Any]]:
    """``await push(**options)``: one ``run_sync(... "prices")`` with reference customer 10001
    over the ``catalog``."""
    settings = outbound_settings(storefront_catalog_customer="10001")
    await catalog(bng_sim, sessions)
    m3 = M3Client.from_settings(settings)
    bng = BngClient.from_settings(settings)
    mappings: dict[str, Mapping] = load_mappings(settings.mappings_folder)

    async def run(**options: Any) -> Progress:
        # A storefront (and cache) per run, as each ``m3bng sync prices`` is a process of its own.
        storefront = storefront_for(settings, sessions, Connectors(m3=m3))
        try:
            return await run_sync(sessions, m3, mappings, "prices", bng=bng, storefront=storefront, **options)
        finally:
            await storefront.aclose()

    yield run
    await bng.aclose()
    await m3.aclose()


async def price_writes(bng_sim: BngSim) -> list[dict[str, Any]]:
    return [
        c
        for c in await bng_sim.calls()
        if c.get("method") == "PATCH" and "/api/v1/products/" in c.get("path", "")
    ]


async def test_prices_are_written_once_and_only_changes_after(
    push: Callable[..., Any], bng_sim: BngSim, m3_sim: SimHandle
) -> None:
    dry = await push(dry_run=True, page_size=2)
    assert (dry.counts["new"], dry.counts["refused"]) == (4, 1) and dry.counts["pages"] >= 3
    assert await price_writes(bng_sim) == []  # a dry run writes nothing

    first = await push(page_size=2)
    assert (first.counts["new"], first.counts["refused"], first.counts["same"]) == (4, 1, 0)
    [refused] = first.refusals
    assert refused["key"] == "TEMPLATE-ITEM" and "GetPriceLine" in refused["reason"]
    held = (await bng_sim.state())["products"]
    got = {sku: Decimal(str(held[sku]["Price"])) for sku in ("BIKE-100", "BK-200", "HELMET-1", "TUBE-26")}
    assert got == {
        "BIKE-100": Decimal(NET["BIKE-100"]),
        "BK-200": Decimal(NET["BIKE-200"]),  # the linked SKU, not the item number
        "HELMET-1": Decimal(NET["HELMET-1"]),
        "TUBE-26": Decimal(NET["TUBE-26"]),
    }
    assert held["HELMET-1"]["Name"] == "HELMET-1"  # a PATCH: the rest of the product is kept
    writes = len(await price_writes(bng_sim))
    assert writes == 4

    second = await push(page_size=2)
    assert (second.counts["new"], second.counts["changed"]) == (0, 0)
    assert second.counts["same"] == second.counts["read"] == 5
    assert len(await price_writes(bng_sim)) == writes  # nothing written

    seeded = {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "HELMET-1", "QTLB": 1, "SAPR": 650}]}
    (await m3_sim.control.post("/_sim/seed", json=seeded)).raise_for_status()
    third = await push(page_size=2)
    assert (third.counts["changed"], third.counts["new"], third.counts["same"]) == (1, 0, 4)
    calls = await price_writes(bng_sim)
    assert len(calls) == writes + 1 and calls[-1]["path"].endswith("/HELMET-1")
    assert Decimal(str((await bng_sim.state())["products"]["HELMET-1"]["Price"])) == Decimal("585")


async def test_a_run_cut_short_is_continued_and_a_product_bng_lacks_is_refused(
    push: Callable[..., Any], bng_sim: BngSim, m3_sim: SimHandle
) -> None:
    seeded = {
        "items": [{"ITNO": "ZZ-NEW", "ITDS": "Not in the catalog", "UNMS": "PCS", "STAT": "20"}],
        "prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "ZZ-NEW", "QTLB": 1, "SAPR": 10}],
    }
    (await m3_sim.control.post("/_sim/seed", json=seeded)).raise_for_status()
    cut = await push(page_size=2, max_pages=1)  # BIKE-100, BIKE-200
    assert cut.counts["read"] == 2 and cut.cursor == "BIKE-200"
    rest = await push(page_size=2)
    assert rest.run_id == cut.run_id and rest.counts["read"] == 6
    assert (rest.counts["new"], rest.counts["refused"]) == (4, 2)
    assert {r["key"]: r["reason"] for r in rest.refusals}["ZZ-NEW"].startswith("BNG holds no product")
    paths = Counter(c["path"] for c in await price_writes(bng_sim))
    assert len(paths) == 5 and max(paths.values()) == 1  # each once, none twice (ZZ-NEW: a 404)
    again = await push(page_size=2)  # the product BNG lacks is tried again, the rest is unchanged
    assert (again.counts["same"], again.counts["refused"]) == (5, 1)


async def test_no_reference_customer_is_refused_and_the_cli_dry_runs(
    outbound_settings: Callable[..., Settings], sessions: Sessions, bng_sim: BngSim
) -> None:
    settings = outbound_settings()
    m3 = M3Client.from_settings(settings)
    storefront = Storefront(settings, sessions, m3)
    mappings = load_mappings(settings.mappings_folder)
    with pytest.raises(SyncError, match="M3BNG_STOREFRONT_CATALOG_CUSTOMER"):
        await run_sync(sessions, m3, mappings, "prices", bng=bng_sim.client(), storefront=storefront)
    await m3.aclose()
    env = {**cli_env(settings), "M3BNG_STOREFRONT_CATALOG_CUSTOMER": "10001"}
    code, out, err = await m3bng_cli(env, "sync", "prices", "--to", "bng", "--dry-run")
    assert code == 0, err
    assert "would write 4 new" in out and "refused TEMPLATE-ITEM" in out, out
    assert await price_writes(bng_sim) == []


async def test_the_scheduled_push_writes_the_prices_and_the_ops_api_lists_its_run(
    outbound_settings: Callable[..., Settings],
    bng_sim: BngSim,
    sessions: Sessions,
    live_server: Callable[..., LiveServer],
) -> None:
    """``M3BNG_SYNC_PRICES_SECONDS``: the push as a scheduled job of the service's workers."""
    await catalog(bng_sim, sessions)
    settings = outbound_settings(
        storefront_catalog_customer="10001", sync_prices_seconds=60, ops_tokens=OPS_TOKEN_ENTRIES
    )

    async def priced() -> bool:
        return all("Price" in p for p in (await bng_sim.state())["products"].values())

    server = live_server(settings, run_workers=True)
    async with server, server.client() as client:
        await wait_for(priced, timeout=20)
        response = await client.get("/api/v1/sync/runs", params={"entity": "prices"}, headers=bearer(READ))
    assert response.status_code == 200, response.text
    [run] = response.json()["items"]
    assert run["entity"] == "prices" and run["counts"]["new"] == 4 and run["counts"]["refused"] == 1
    assert Decimal(str((await bng_sim.state())["products"]["BK-200"]["Price"])) == Decimal(NET["BIKE-200"])


async def test_each_instance_pushes_its_own_companys_prices_to_its_own_bng(
    outbound_settings: Callable[..., Settings],
    bng_sim: BngSim,
    sessions: Sessions,
    m3_sim: SimHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--instance us``: us's catalog customer in us's company (200), written to us's BNG; the
    default instance's push is its own (company 100, its BNG, its digests)."""
    seeded = await m3_sim.control.post(
        "/_sim/seed",
        json={
            "company": "200",
            "divi": "BBB",
            "customers": [{"CUNO": "US-LIST", "CUNM": "US list", "STAT": "20", "CUCD": "USD", "PRRF": "US"}],
            "items": [{"ITNO": "BIKE-100", "ITDS": "Bike", "STAT": "20", "UNMS": "EA"}],
            "prices": [{"PRRF": "US", "CUCD": "USD", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 700}],
        },
    )
    assert seeded.status_code == 200, seeded.text
    await catalog(bng_sim, sessions)
    async with running_bng_sim() as us_bng:
        await us_bng.seed({"products": {"BIKE-100": {"SKU": "BIKE-100", "Name": "Bike"}}})
        instances = tmp_path / "instances.yaml"
        instances.write_text(
            "instances:\n"
            "  default:\n"
            "    cono: 100\n"
            "  us:\n"
            f"    bng_base_url: {us_bng.url}\n"
            "    cono: 200\n"
            "    divi: BBB\n"
            "    catalog_customer: US-LIST\n"
        )
        monkeypatch.setenv("M3BNG_INSTANCE_US_WEBHOOK_SECRETS", "whsec_VVNpbnN0YW5jZXNlY3JldDAxMjM0NTY3")
        monkeypatch.setenv("M3BNG_INSTANCE_US_BNG_API_KEY", DEFAULT_API_KEY)
        settings = outbound_settings(storefront_catalog_customer="10001", instances_file=instances)
        connectors = build_connectors(settings, sessions, load_instances(settings))
        mappings = load_mappings(settings.mappings_folder)

        async def push(instance: str) -> Progress:
            view = connectors.for_instance(instance)
            storefront = storefront_for(settings, sessions, connectors, instance)
            try:
                return await run_sync(
                    sessions,
                    view.m3,
                    mappings,
                    "prices",
                    bng=view.bng,
                    storefront=storefront,
                    instance=instance,
                )
            finally:
                await storefront.aclose()

        try:
            us = await push("us")
            assert (us.counts["read"], us.counts["new"]) == (1, 1)  # company 200's one item
            assert Decimal(str((await us_bng.state())["products"]["BIKE-100"]["Price"])) == 700
            assert "Price" not in (await bng_sim.state())["products"]["BIKE-100"]  # not default's BNG
            default = await push("default")  # its own digests: company 100's items, all new
            assert (default.counts["new"], default.counts["refused"]) == (4, 1)
            assert Decimal(str((await bng_sim.state())["products"]["BIKE-100"]["Price"])) == Decimal("4491")
            assert (await push("us")).counts["same"] == 1  # us's second run writes nothing
        finally:
            await connectors.aclose()
