"""Mapping suggestions in the studio, in a real browser against the real app and the M3
simulator's metadata: an admin asks for the head call's suggestions, sees a field it leaves
empty with its best path and the reasons, accepts it, and finds it in the working copy's table
and YAML (not saved: a draft is still a person's decision); a pasted payload is read next."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_dashboard import Watch, log_in
from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_admin_accepts_one_suggestion_into_the_working_copy(ops: Ops, page: Page) -> None:
    watch = Watch(page)
    base = ops.server.base_url
    await page.goto(f"{base}/ui#/mappings/order_to_cash")
    await log_in(page, ADMIN)

    head = page.locator("#field-tables [data-call=head]")
    await expect(head.locator("tr[data-field=ORDT]")).to_be_visible()
    await expect(head.locator("tr[data-field=CUDT]")).to_have_count(0)
    await head.locator("button.suggest-fields").click()

    # "Customers purchase order date": the order's date, converted to yyyyMMdd, with the reasons.
    cudt = head.locator("li.suggestion[data-field=CUDT]")
    await expect(cudt.locator(".suggested-path")).to_have_text("OrderDate")
    await expect(cudt.locator(".reasons")).to_contain_text("yyyyMMdd")
    await expect(head.locator("li.suggestion[data-field=ORDT]")).to_have_count(0)  # filled already
    ARTIFACTS.mkdir(exist_ok=True)
    await head.screenshot(path=str(ARTIFACTS / "mapping-studio-suggestions.png"))
    await cudt.locator("button.accept-suggestion").click()

    row = head.locator("tr[data-field=CUDT]")
    await expect(row).to_contain_text("OrderDate")
    await expect(row).to_contain_text("as date")
    await expect(page.locator("#working-state")).to_have_text("edited: not saved")
    await expect(page.locator("#yaml-editor")).to_have_value(
        re.compile(r"CUDT: \{from: OrderDate, type: date\}")
    )
    # Accepted: gone from the list, which stays for the next one.
    await expect(head.locator("li.suggestion[data-field=CUDT]")).to_have_count(0)
    await expect(head.locator("li.suggestion").first).to_be_visible()

    # A pasted payload (the preview's) is what the next suggestions read.
    pasted = {"OrderID": "SO-9", "OrderDate": "2026-11-24", "DeliveryDate": "2026-12-01", "Lines": []}
    await page.fill("#preview-sample", json.dumps(pasted))
    await head.locator("button.suggest-fields").click()
    rldt = head.locator("li.suggestion[data-field=RLDT]")
    await expect(rldt.locator(".suggested-path")).to_have_text("DeliveryDate")
    await expect(head.locator(".suggestions li").first).to_contain_text("from the pasted sample")
    assert watch.errors == []
