"""The dashboard and an anomaly hold, in a real browser against the real app: the overview lists
the held order, its page shows the rule, the figures and the history, and Release sends it on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from tests.conftest import LiveServer
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.flows.test_anomaly_holds import holding_duplicates
from tests.integration.flows.test_orders import orders_for
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, Sessions, ops_settings, running_ops
from tests.support.ops import REPLAY

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def ops(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
    tmp_path: Path,
) -> AsyncIterator[Ops]:
    settings = ops_settings(make_settings, m3_sim, mappings_dir=holding_duplicates(tmp_path))
    async with running_ops(live_server(settings, run_workers=True), m3_sim, sessions) as ops:
        yield ops


async def test_release_a_held_order_from_the_dashboard(ops: Ops, page: Page) -> None:
    first = await ops.settle(
        await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-UI-1"})
    )
    assert first.status == "done", first.last_error
    held = await ops.settle(
        await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-UI-2"})
    )
    assert held.status == "held", held.last_error
    watch = Watch(page)
    base = ops.server.base_url

    await page.goto(f"{base}/ui")
    await log_in(page, REPLAY)
    await expect(page.locator("#count-held")).to_have_text("1")
    row = page.locator(f"#holds-table tr[data-event='{held.id}']")
    await expect(row).to_contain_text("near duplicate")
    await expect(row).to_contain_text("SO-UI-1")
    await row.locator("a").first.click()
    await expect(page).to_have_url(f"{base}/ui#/tx/{held.id}")
    await expect(page.locator("#tx-status")).to_have_text("held")
    finding = page.locator("#anomalies .anomaly[data-rule='near_duplicate']")
    await expect(finding).to_contain_text("hold")
    await expect(finding.locator("[data-figure='window_minutes']")).to_contain_text("10")
    await finding.locator("summary").click()
    await expect(finding.locator("pre")).to_contain_text("SO-UI-1")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-hold.png"), full_page=True)
    assert orders_for(await ops.sim.state(), "SO-UI-2") == []

    await page.fill("#hold-reason", "two genuine orders")
    await page.click("#release-hold")
    await expect(page.locator("#notice")).to_contain_text("released")
    await expect(page.locator("#tx-status")).to_have_text("done", timeout=20_000)
    await expect(page.locator("#anomalies")).to_contain_text("released by replay-user")
    assert len(orders_for(await ops.sim.state(), "SO-UI-2")) == 1
    await page.click("#nav a[data-nav=overview]")
    await expect(page.locator("#count-held")).to_have_text("0")
    await expect(page.locator("#holds")).to_contain_text("No transaction is held")
    assert watch.errors == []
