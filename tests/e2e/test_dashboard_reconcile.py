"""The dashboard's reconciliation panel in a real browser: after real runs against the BNG and M3
simulators, the overview shows the newest run of each kind with its counts and open findings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from playwright.async_api import Page, expect

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import load_mappings
from m3bng.reconcile import reconcile_orders
from m3bng.reconcile_stock import reconcile_stock
from m3bng.store.sql import utcnow
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.ops.conftest import Ops
from tests.support.bng import running_bng_sim
from tests.support.ops import READ

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_the_overview_shows_the_last_run_per_kind_and_its_open_findings(
    ops: Ops, page: Page, make_settings: Callable[..., Settings]
) -> None:
    async with running_bng_sim() as bng_sim:
        settings = make_settings(ionapi_file=ops.sim.ionapi, m3_timeout=2.0)
        bng, m3 = bng_sim.client(), M3Client.from_settings(settings)
        try:
            since = utcnow() - timedelta(minutes=1)
            # No webhook is registered: the order never reaches m3bng.
            await bng_sim._json(
                "POST", "/_sim/orders/place", {**sample("order.created"), "OrderID": "SO-UI-LOST"}
            )
            await reconcile_orders(ops.sessions, bng, None, since=since, grace=timedelta(0))
            inventory: dict[str, Any] = {"OnHand": 3, "Available": 3, "Allocated": 0}
            await bng_sim.seed({"inventory": {"100/BIKE-200": inventory}})
            mapping = load_mappings(settings.mappings_folder)["inventory_poll"]
            await reconcile_stock(ops.sessions, bng, m3, mapping, warehouses=[], tolerance=Decimal(0))
        finally:
            await bng.aclose()
            await m3.aclose()

    watch = Watch(page)
    await page.goto(f"{ops.server.base_url}/ui")
    await log_in(page, READ)
    panel = page.locator("#reconcile")
    orders, stock = panel.locator("tr[data-kind=orders]"), panel.locator("tr[data-kind=stock]")
    await expect(orders).to_contain_text("1 never arrived")
    await expect(orders.locator("li[data-finding=never_arrived]")).to_contain_text("SO-UI-LOST")
    await expect(stock).to_contain_text("1 drift")
    await expect(stock.locator("li[data-finding=drift]")).to_contain_text("100/BIKE-200")
    await expect(stock.locator("li[data-finding=missing_in_bng]")).to_have_count(
        3
    )  # M3's other balances in 100
    await expect(panel.locator("[role=alert]")).to_have_count(0)
    assert any(url.endswith("/api/v1/reconcile/latest") for url in watch.urls), watch.urls
    assert watch.errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    await panel.screenshot(path=str(ARTIFACTS / "dashboard-reconcile.png"))
