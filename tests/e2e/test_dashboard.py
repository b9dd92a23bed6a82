"""The dashboard in a real browser against the real app: log in, read the overview, find an order,
open its step timeline, fix the cause of a dead letter and replay it, watch it become done."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Page, Request, expect
from sqlalchemy import select

from m3bng.connectors.bng.samples import sample
from m3bng.store.models import Event
from tests.e2e.conftest import ARTIFACTS
from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN, READ, REPLAY

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

DONE_ORDER = "SO-UI-1001"
DEAD_ORDER = "SO-UI-DEAD-7"
MISSING_CUSTOMER = "C-UIMISS"  # CUNO: at most 10 characters
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Watch:
    """What the page did behind the scenes: every request it made and every error it logged
    (a Content-Security-Policy violation is logged as a console error)."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)


async def log_in(page: Page, token: str) -> None:
    await expect(page.locator("#login-form")).to_be_visible()
    await page.fill("#token", token)
    await page.click("#login-form button[type=submit]")


async def test_find_an_order_and_replay_its_dead_letter(ops: Ops, page: Page) -> None:
    done = await ops.settle(
        await ops.send("order.created", {**sample("order.created"), "OrderID": DONE_ORDER})
    )
    assert done.status == "done", done.last_error
    dead_id = await ops.dead_order(DEAD_ORDER, MISSING_CUSTOMER)
    watch = Watch(page)
    base = ops.server.base_url

    response = await page.goto(f"{base}/ui")
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp

    await log_in(page, REPLAY)
    await expect(page.locator("#user-name")).to_have_text("replay-user")
    await expect(page.locator("#user-scope")).to_have_text("ops:replay")
    assert await page.evaluate("sessionStorage.getItem('m3bng.ops.token')") == REPLAY

    # Overview: counters, both charts drawn from /stats, the control and alert panels filled.
    await expect(page.locator("#count-dead-letters")).to_have_text("1")
    await expect(page.locator("#count-backlog")).to_have_text("0")
    await expect(page.locator("#count-done")).to_have_text("1")
    await expect(page.locator("#svg-throughput polyline")).to_have_count(3)
    await expect(page.locator("#svg-errors rect.bar")).to_have_count(1)  # the bucket with the dead order
    await expect(page.locator("#flows tr[data-flow='order.created']")).to_be_visible()
    await expect(page.locator("#targets tr[data-target='m3']")).to_be_visible()
    await expect(page.locator("#dlq-groups")).to_contain_text("order.created")
    await expect(page.locator("#alerts")).not_to_be_empty()
    await expect(page.locator("#instances-panel")).to_be_hidden()  # the default instance alone
    await expect(page.locator("#overview-view [role=alert]")).to_have_count(0)  # every panel loaded
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == PNG_MAGIC

    # Search by the BNG order id and open the done order's step timeline.
    await page.click("#nav a[data-nav=tx]")
    await page.fill("#q", DONE_ORDER)
    await page.click("#search-form button[type=submit]")
    rows = page.locator("#tx-rows tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("done")
    await rows.first.locator("a").first.click()
    await expect(page).to_have_url(f"{base}/ui#/tx/{done.id}")
    await expect(page.locator("#tx-status")).to_have_text("done")
    steps = page.locator("#steps > li")
    assert await steps.count() >= 2
    await expect(page.locator("#steps")).to_contain_text("OIS100MI/AddBatchHead")
    await steps.first.locator("summary").click()
    await expect(steps.first.locator("pre").first).to_be_visible()  # the request, expanded
    await expect(page.locator("#replay-failed")).to_have_count(0)  # a done order is not replayable

    # The dead order: its dead letter and failing step; fix the cause, replay, see it done.
    await page.click("#nav a[data-nav=tx]")
    await page.fill("#q", DEAD_ORDER)
    await page.click("#search-form button[type=submit]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("dead")
    await rows.first.locator("a").first.click()
    await expect(page.locator("#tx-status")).to_have_text("dead")
    await expect(page.locator("#dead-letter")).to_contain_text("missing_reference")
    await expect(page.locator("#steps > li.step-failed").first).to_be_visible()
    await expect(page.locator("#payload")).to_contain_text(DEAD_ORDER)
    stray = "[...document.getElementById('detail').childNodes].filter((n) => n.nodeType === 3).length"
    assert await page.evaluate(stray) == 0  # no "null" printed for an absent panel
    await page.screenshot(path=str(ARTIFACTS / "dashboard-dead-letter.png"), full_page=True)

    await ops.add_customer(MISSING_CUSTOMER)
    await page.fill("#action-reason", "customer created in M3")
    await page.click("#replay-failed")
    await expect(page.locator("#notice")).to_contain_text("queued")
    await expect(page.locator("#tx-status")).to_have_text("done", timeout=20_000)
    await expect(page.locator("#replay-failed")).to_have_count(0)
    await expect(page.locator("#dead-letter")).to_contain_text("resolved")
    async with ops.sessions() as session:
        status = await session.scalar(select(Event.status).where(Event.id == dead_id))
    assert status == "done"

    assert watch.errors == []
    assert watch.urls and all(url.startswith(base + "/") for url in watch.urls)


async def test_admin_edits_a_payload_discards_and_pauses(ops: Ops, page: Page) -> None:
    edit_id = await ops.dead_order("SO-UI-EDIT-1", "C-UIWRONG")
    discard_id = await ops.dead_order("SO-UI-GONE-2", "C-UIGONE")
    base = ops.server.base_url
    await page.goto(f"{base}/ui#/tx/{edit_id}")
    await log_in(page, ADMIN)
    await expect(page.locator("#tx-status")).to_have_text("dead")

    # The order named the wrong customer: fix it in the payload and replay.
    await page.check("#edit-payload")
    editor = page.locator("#payload-editor")
    await editor.fill("{not json")
    await page.click("#replay-start")
    await expect(page.locator("#error")).to_contain_text("not valid JSON")
    original = (await ops.admin.get(f"/api/v1/transactions/{edit_id}")).json()
    assert original["status"] == "dead"  # nothing was sent
    payload = original["payload"]
    payload["data"]["CustomerID"] = sample("order.created")["CustomerID"]
    await editor.fill(json.dumps(payload, indent=2))
    await page.fill("#action-reason", "wrong customer on the order")
    await page.click("#replay-start")
    await expect(page.locator("#notice")).to_contain_text("1 field(s) edited")
    await expect(page.locator("#tx-status")).to_have_text("done", timeout=20_000)

    # Discard needs a reason.
    await page.goto(f"{base}/ui#/tx/{discard_id}")
    await expect(page.locator("#tx-status")).to_have_text("dead")
    await page.click("#discard")
    await expect(page.locator("#error")).to_contain_text("reason")
    await page.fill("#action-reason", "line removed in BNG, re-sent as SO-UI-GONE-3")
    await page.click("#discard")
    await expect(page.locator("#tx-status")).to_have_text("discarded")
    await expect(page.locator("#dead-letter")).to_contain_text("discarded")

    # Pause and resume a flow from the overview (the reason is asked in a prompt).
    await page.click("#nav a[data-nav=overview]")
    row = page.locator("#flows tr[data-flow='order.created']")
    page.once("dialog", lambda dialog: dialog.accept("investigating duplicates"))
    await row.get_by_role("button", name="Pause").click()
    await expect(row).to_contain_text("paused")
    await expect(row).to_contain_text("investigating duplicates")
    await row.get_by_role("button", name="Resume").click()
    await expect(row).to_contain_text("running")


async def test_read_token_sees_no_replay_and_api_errors_are_shown(ops: Ops, page: Page) -> None:
    dead_id = await ops.dead_order()
    base = ops.server.base_url

    # A link to a transaction works: log in first, then land where the link pointed.
    await page.goto(f"{base}/ui#/tx/{dead_id}")
    await log_in(page, READ)
    await expect(page.locator("#user-scope")).to_have_text("ops:read")
    await expect(page.locator("#tx-status")).to_have_text("dead")
    await expect(page.locator("#dead-letter")).to_be_visible()
    await expect(page.locator("#actions")).to_have_count(0)
    await expect(page.locator("#replay-failed")).to_have_count(0)
    await expect(page.locator("#discard")).to_have_count(0)

    await page.goto(f"{base}/ui#/tx/999999")
    error = page.locator("#detail [role=alert]")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("not_found")

    await page.click("#logout")
    await expect(page.locator("#login-form")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('m3bng.ops.token')") is None


async def test_wrong_token_is_refused_with_a_message(ops: Ops, page: Page) -> None:
    await page.goto(f"{ops.server.base_url}/ui")
    await log_in(page, "m3bng_ops_not-a-real-token")
    message = page.locator("#login-error")
    await expect(message).to_be_visible()
    await expect(message).to_contain_text("not valid")
    await expect(page.locator("#overview-view")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('m3bng.ops.token')") is None
