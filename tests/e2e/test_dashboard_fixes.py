"""Fix suggestions in a real browser: an order with a mistyped SKU dead-letters, the detail
suggests the item meant first, "Use this" prepares it (a dry run: the diff, nothing replayed),
and the ops person's confirmation replays the order into the M3 simulator."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from m3bng.connectors.bng.samples import sample
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN, READ

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_a_mistyped_sku_is_fixed_from_the_suggestion(ops: Ops, page: Page) -> None:
    data = {**sample("order.created"), "OrderID": "SO-UI-TYPO"}
    data["Lines"] = [{**data["Lines"][0], "SKU": "BIKE-10O"}, *data["Lines"][1:]]
    event = await ops.settle(await ops.send("order.created", data))
    assert event.status == "dead", event.last_error
    watch = Watch(page)
    base = ops.server.base_url

    await page.goto(f"{base}/ui#/tx/{event.id}")
    await log_in(page, ADMIN)
    await expect(page.locator("#tx-status")).to_have_text("dead")
    await expect(page.locator("#fix-cause")).to_contain_text("missing_item")
    first = page.locator("#fix-list li.fix").first
    await expect(first.locator(".fix-title")).to_contain_text("Use item BIKE-100")
    await expect(first.locator(".fix-why")).to_contain_text("ITNO BIKE-100")
    await expect(first.locator(".fix-edit")).to_contain_text("data.Lines[0].SKU: BIKE-10O → BIKE-100")
    await expect(page.locator("#fix-list li.fix[data-kind=create_item]")).to_have_count(1)

    await first.get_by_role("button", name="Use this").click()
    await expect(page.locator("#fix-diff")).to_contain_text('data.Lines[0].SKU: "BIKE-10O" → "BIKE-100"')
    await expect(page.locator("#fix-prepared-note")).to_contain_text("nothing replayed yet")
    assert await page.is_checked("#edit-payload")
    assert '"SKU": "BIKE-100"' in await page.locator("#payload-editor").input_value()
    assert "fix suggestion 1" in await page.locator("#action-reason").input_value()
    await expect(page.locator("#tx-status")).to_have_text("dead")  # prepared, not replayed
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-fix-suggestions.png"), full_page=True)

    await page.click("#replay-start")  # ops confirm
    await expect(page.locator("#notice")).to_contain_text("1 field(s) edited")
    await expect(page.locator("#tx-status")).to_have_text("done", timeout=20_000)
    state = await ops.sim.state()
    [order] = [o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-UI-TYPO"]
    assert [line["ITNO"] for line in order["lines"]] == ["BIKE-100", "HELMET-1", "TUBE-26"]
    assert watch.errors == []


async def test_a_read_token_sees_suggestions_without_use(ops: Ops, page: Page) -> None:
    dead_id = await ops.dead_order("SO-UI-FIXREAD", "1O001")
    await page.goto(f"{ops.server.base_url}/ui#/tx/{dead_id}")
    await log_in(page, READ)
    await expect(page.locator("#fix-list .fix-title").first).to_contain_text("Use customer 10001")
    await expect(page.locator("button.use-fix")).to_have_count(0)
