"""The mapping studio's pages in a real browser against the real app: an admin opens
order_to_cash, sees its fields, YAML and history, changes the warehouse default in the YAML
(a broken edit is refused inline, naming line and field), saves the draft, publishes it, and the
next order reaches the M3 simulator with the new warehouse; a rollback brings the old one back.
A read token sees the same pages without any edit control."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.ops.conftest import Ops
from tests.integration.ops.test_mappings_api import warehouse_of
from tests.support.ops import ADMIN, READ

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

FLOW = "order_to_cash"


async def test_admin_edits_publishes_and_rolls_back_a_mapping(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    base = ops.server.base_url
    await page.goto(f"{base}/ui#/mappings")
    await log_in(page, ADMIN)

    # The flows with their live version, drafts and conflict flag.
    row = page.locator(f"#mapping-flow-table tr[data-flow='{FLOW}']")
    await expect(row.locator(".live-version")).to_have_text("1")
    await expect(row).to_contain_text("file")
    await expect(row).to_contain_text("none")  # no conflict
    await row.get_by_role("link", name=FLOW).click()
    await expect(page).to_have_url(f"{base}/ui#/mappings/{FLOW}")

    # The live version as a table per call, its YAML, its history.
    await expect(page.locator("#live-version")).to_have_text("live: version 1")
    whlo = page.locator("#field-tables [data-call=head] tr[data-field=WHLO]")
    await expect(whlo).to_contain_text("Warehouse")  # the path
    await expect(whlo.locator(".default-cell")).to_have_text("var `warehouse` (`100`)")
    await expect(whlo.locator(".m3-cell")).to_contain_text("A3")  # the tenant's metadata: type, length
    await expect(page.locator("#field-tables [data-call=line] h3")).to_contain_text("for each Lines")
    await expect(page.locator("#live-yaml")).to_contain_text('warehouse: "100"')
    await expect(page.locator("#history-table tbody tr")).to_have_count(1)

    # A broken edit: the 422 is shown beside the editor, naming the line and the field.
    editor = page.locator("#yaml-editor")
    text = await editor.input_value()
    await editor.fill(text.replace("{var: order_type}", "{var: nope}"))
    await page.click("#save-draft")
    problem = page.locator("#draft-error")
    await expect(problem).to_contain_text("order_to_cash.yaml:")
    await expect(problem).to_contain_text("calls.head.fields.ORTP: unknown var 'nope'")

    # The warehouse default changed, saved as a draft, published with a comment.
    await editor.fill(text.replace('warehouse: "100"', 'warehouse: "200"'))
    await page.fill("#draft-comment", "webshop orders ship from 200")
    await page.click("#save-draft")
    await expect(page.locator("#notice")).to_contain_text("Draft version 2")
    draft = page.locator("#history-table tr[data-version='2']")
    await expect(draft).to_have_attribute("data-state", "draft")
    await expect(page.locator("#live-version")).to_have_text("live: version 1")
    await page.fill("#version-comment", "warehouse 200 for webshop orders")
    await draft.get_by_role("button", name="Publish").click()
    await expect(page.locator("#notice")).to_contain_text("Version 2 of order_to_cash is live")
    await expect(page.locator("#live-version")).to_have_text("live: version 2")
    live = page.locator("#history-table tr[data-version='2']")
    await expect(live).to_have_attribute("data-state", "live")
    await expect(live).to_contain_text("warehouse 200 for webshop orders")
    await expect(live).to_contain_text("studio")
    await expect(page.locator("#history-table tr[data-version='1']")).to_have_attribute(
        "data-state", "superseded"
    )
    await expect(whlo.locator(".default-cell")).to_have_text("var `warehouse` (`200`)")

    # The diff between the two versions.
    await page.select_option("#diff-from", "1")
    await page.select_option("#diff-to", "2")
    await page.click("#diff-show")
    await expect(page.locator("#diff .del")).to_contain_text('warehouse: "100"')
    await expect(page.locator("#diff .add")).to_contain_text('warehouse: "200"')
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "mapping-studio-flow.png"), full_page=True)
    await page.locator("#history").screenshot(path=str(ARTIFACTS / "mapping-studio-history.png"))

    # The next order reaches M3 with the new default.
    assert await warehouse_of(ops, "SO-STUDIO-1") == "200"

    # Roll back to version 1: a new version 3 copies it, and orders use 100 again.
    await page.fill("#version-comment", "back to 100")
    await (
        page.locator("#history-table tr[data-version='1']")
        .get_by_role("button", name="Roll back to this")
        .click()
    )
    await expect(page.locator("#live-version")).to_have_text("live: version 3")
    rolled = page.locator("#history-table tr[data-version='3']")
    await expect(rolled).to_have_attribute("data-state", "live")
    await expect(rolled).to_contain_text("copy of 1")
    await expect(rolled).to_contain_text("back to 100")
    await expect(page.locator("#history-table tr[data-version='2']")).to_have_attribute(
        "data-state", "superseded"
    )
    await expect(whlo.locator(".default-cell")).to_have_text("var `warehouse` (`100`)")
    assert await warehouse_of(ops, "SO-STUDIO-2") == "100"

    # A read token sees the pages, not the controls.
    await page.click("#logout")
    await log_in(page, READ)
    await page.goto(f"{base}/ui#/mappings/{FLOW}")
    await expect(page.locator("#live-version")).to_have_text("live: version 3")
    await expect(page.locator("#history-table tbody tr")).to_have_count(3)
    await expect(page.locator("#field-tables")).to_be_visible()
    await expect(page.locator("#editor")).to_have_count(0)
    await expect(page.locator("#version-comment")).to_have_count(0)
    await expect(page.locator("#history-table button")).to_have_count(0)

    # The browser logs the refused draft's answer; nothing else went wrong.
    assert [e for e in watch.errors if "status of 422" not in e] == []
    assert len(watch.errors) == 1
    assert watch.urls and all(url.startswith(base + "/") for url in watch.urls)
