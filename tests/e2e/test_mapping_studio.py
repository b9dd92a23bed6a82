"""The mapping studio in a real browser against the real app, workers and M3 simulator: an
admin opens order_to_cash, sees its fields with the tenant's metadata, changes the warehouse
default and the head's warehouse rule in forms, adds a field found by searching the
transaction's metadata (its path picked from a recorded order), previews the working copy
against that order beside the live version, saves and publishes it; the dead letter the new
version could fix is offered and replayed, the next order reaches M3 with both changes, and a
rollback brings the old rules back. A read token sees the pages and previews, with no edit
control."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page, expect

from m3bng.connectors.bng.samples import sample
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.ops.conftest import Ops
from tests.integration.ops.test_mappings_api import order
from tests.support.ops import ADMIN, READ

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

FLOW = "order_to_cash"


async def head_of(ops: Ops, order_id: str) -> dict[str, Any]:
    """The M3 order head a new order gets (it names no warehouse: the mapping decides)."""
    event = await ops.settle(await ops.send("order.created", order(order_id)))
    assert event.status == "done", event.last_error
    state = await ops.sim.state()
    [found] = [o for o in state["orders"].values() if o["head"].get("CUOR") == order_id]
    return dict(found["head"])


async def test_admin_edits_by_form_previews_publishes_and_rolls_back(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    base = ops.server.base_url
    # Before: a recorded order to preview against, and a dead letter version 2 will fix (an
    # order naming a warehouse M3 does not have: its AddBatchHead was refused).
    recorded = await ops.settle(await ops.send("order.created", order("SO-STUDIO-0")))
    assert recorded.status == "done", recorded.last_error
    stranded = await ops.settle(
        await ops.send(
            "order.created", {**sample("order.created"), "OrderID": "SO-STUDIO-999", "Warehouse": "999"}
        )
    )
    assert stranded.status == "dead", stranded.last_error

    await page.goto(f"{base}/ui#/mappings")
    await log_in(page, ADMIN)

    # The flows with their live version, drafts and conflict flag.
    row = page.locator(f"#mapping-flow-table tr[data-flow='{FLOW}']")
    await expect(row.locator(".live-version")).to_have_text("1")
    await expect(row).to_contain_text("file")
    await expect(row).to_contain_text("none")  # no conflict
    await row.get_by_role("link", name=FLOW).click()
    await expect(page).to_have_url(f"{base}/ui#/mappings/{FLOW}")

    # The live version as a table per call with the tenant's metadata, its YAML, its history.
    await expect(page.locator("#live-version")).to_have_text("live: version 1")
    head = page.locator("#field-tables [data-call=head]")
    whlo = head.locator("tr[data-field=WHLO]")
    await expect(whlo).to_contain_text("Warehouse")  # the path
    await expect(whlo.locator(".default-cell")).to_have_text("var `warehouse` (`100`)")
    await expect(whlo.locator(".m3-cell")).to_contain_text("A3")  # the tenant's metadata: type, length
    await expect(page.locator("#field-tables [data-call=line] h3")).to_contain_text("for each Lines")
    await expect(page.locator("#working-state")).to_have_text("same as the live version")
    editor = page.locator("#yaml-editor")
    await expect(editor).to_have_value(re.compile('warehouse: "100"'))
    await expect(page.locator("#history-table tbody tr")).to_have_count(1)

    # A broken edit in the YAML: the 422 is shown beside the editor, naming the line and field.
    text = await editor.input_value()
    await editor.fill(text.replace("{var: order_type}", "{var: nope}"))
    await page.click("#save-draft")
    problem = page.locator("#draft-error")
    await expect(problem).to_contain_text("order_to_cash.yaml:")
    await expect(problem).to_contain_text("calls.head.fields.ORTP: unknown var 'nope'")
    await editor.fill(text)
    await editor.dispatch_event("change")

    # Form edit 1: the warehouse default (the var every warehouse rule falls back to) → 200.
    await page.click("#mapping-vars [data-var=warehouse]")
    await page.fill("#var-value", "200")
    await page.click("#var-apply")
    await expect(page.locator("#notice")).to_contain_text("var warehouse set to 200")
    await expect(whlo.locator(".default-cell")).to_have_text("var `warehouse` (`200`)")
    await expect(page.locator("#working-state")).to_have_text("edited: not saved")
    await expect(editor).to_have_value(re.compile('warehouse: "200" +# default WHLO'))

    # Form edit 2: the head always ships from that warehouse, whatever the order names.
    await whlo.get_by_role("button", name="Edit").click()
    await page.select_option("#rule-source", "var")
    await page.select_option("#rule-var", "warehouse")
    await page.select_option("#rule-default-kind", "")
    await page.click("#rule-apply")
    await expect(whlo.locator("td").nth(2)).to_have_text("var")
    await expect(editor).to_have_value(re.compile(r"WHLO: \{var: warehouse\}\n"))

    # Form edit 3: a field found by searching the transaction's metadata, its path picked
    # from the recorded order.
    await page.select_option("#preview-input", str(recorded.id))
    await head.locator(".field-search").fill("reference at customer")
    await head.get_by_role("button", name="Search").click()
    await head.locator(".field-results [data-field=YREF] .pick-field").click()
    await expect(page.locator("#rule-m3")).to_contain_text("YREF: Reference at customer · A30")
    await page.click("#rule-pick")
    await expect(page.locator("#path-list")).to_contain_text("order:SO-STUDIO-0")
    await page.locator("#path-list .path-option[data-path=CustomerID]").click()
    await expect(page.locator("#rule-from")).to_have_value("CustomerID")
    await page.fill("#rule-max-length", "30")
    await page.click("#rule-apply")
    yref = head.locator("tr[data-field=YREF]")
    await expect(yref.locator(".m3-cell")).to_contain_text("Reference at customer")
    await expect(editor).to_have_value(re.compile(r"YREF: \{from: CustomerID, max_length: 30\}"))

    # The preview of the recorded order: the working copy beside the live version.
    await page.click("#preview-run")
    await expect(page.locator("#preview-summary")).to_contain_text("order:SO-STUDIO-0")
    # head (WHLO, YREF) and the order's one line (its warehouse falls back to the var)
    await expect(page.locator("#preview-summary")).to_contain_text("2 calls differ")
    preview_head = page.locator(".preview-call[data-call=head]")
    await expect(preview_head.locator("tr[data-field=WHLO] td")).to_have_text(["WHLO", "100", "200"])
    await expect(preview_head.locator("tr[data-field=WHLO] td.changed")).to_have_count(2)
    await expect(preview_head.locator("tr[data-field=YREF] td")).to_have_text(["YREF", "—", "10001"])
    await expect(page.locator(".preview-call[data-call=line] tr[data-field=WHLO] td")).to_have_text(
        ["WHLO", "100", "200"]
    )
    await expect(page.locator("#working-diff .add")).to_contain_text(
        ['warehouse: "200"', "WHLO: {var: warehouse}", "YREF: {from: CustomerID, max_length: 30}"]
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "mapping-studio-edit.png"), full_page=True)
    await page.locator("#preview-panel").screenshot(path=str(ARTIFACTS / "mapping-studio-preview.png"))

    # Saved as a draft, published with a comment.
    await page.fill("#draft-comment", "webshop orders ship from 200, with the customer's reference")
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
    await expect(whlo.locator("td").nth(4)).to_have_text("warehouse = 200")

    # The dead letter version 2 could fix is offered (a dry-run count first), then replayed.
    offer = page.locator("#replay-offer")
    await expect(page.locator("#replay-offer-count")).to_contain_text(
        "1 dead letter of order_to_cash failed under an earlier version"
    )
    await expect(offer).to_contain_text("order:SO-STUDIO-999")
    await expect(offer).to_contain_text("failed with version 1")
    await offer.screenshot(path=str(ARTIFACTS / "mapping-studio-replay-offer.png"))
    await page.click("#replay-fixable")
    await expect(page.locator("#notice")).to_contain_text("1 dead letter replayed with version 2")
    await expect(page.locator("#replay-offer")).to_have_count(0)
    assert (await ops.settle(stranded.id)).status == "done"

    # The diff between the two versions.
    await page.select_option("#diff-from", "1")
    await page.select_option("#diff-to", "2")
    await page.click("#diff-show")
    await expect(page.locator("#diff .del")).to_contain_text(['warehouse: "100"', "WHLO: {from: Warehouse"])
    await expect(page.locator("#diff .add")).to_contain_text(
        ['warehouse: "200"', "WHLO: {var: warehouse}", "YREF: {from: CustomerID, max_length: 30}"]
    )
    await page.screenshot(path=str(ARTIFACTS / "mapping-studio-flow.png"), full_page=True)
    await page.locator("#history").screenshot(path=str(ARTIFACTS / "mapping-studio-history.png"))

    # The next order reaches M3 with both changes, as did the replayed one.
    entered = await head_of(ops, "SO-STUDIO-1")
    assert (entered["WHLO"], entered["YREF"]) == ("200", "10001")
    state = await ops.sim.state()
    [replayed] = [o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-STUDIO-999"]
    assert replayed["head"]["WHLO"] == "200"

    # Roll back to version 1: a new version 3 copies it, and orders use the old rule again.
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
    entered = await head_of(ops, "SO-STUDIO-2")
    assert entered["WHLO"] == "100" and "YREF" not in entered

    # A read token sees the pages and can preview, but has no edit control.
    await page.click("#logout")
    await log_in(page, READ)
    await page.goto(f"{base}/ui#/mappings/{FLOW}")
    await expect(page.locator("#live-version")).to_have_text("live: version 3")
    await expect(page.locator("#history-table tbody tr")).to_have_count(3)
    await expect(page.locator("#field-tables")).to_be_visible()
    await expect(page.locator("#live-yaml")).to_contain_text('warehouse: "100"')
    for control in (
        "#editor",
        "#version-comment",
        "#history-table button",
        ".edit-rule",
        ".field-search",
        ".edit-var",
    ):
        await expect(page.locator(control)).to_have_count(0)
    await page.click("#preview-run")
    await expect(page.locator("#preview-summary")).to_contain_text("the shipped sample of order.created")

    # The browser logs the broken text's two refusals (the table refreshed on leaving the
    # editor, then the draft); nothing else went wrong.
    assert [e for e in watch.errors if "status of 422" not in e] == []
    assert len(watch.errors) == 2
    assert watch.urls and all(url.startswith(base + "/") for url in watch.urls)
