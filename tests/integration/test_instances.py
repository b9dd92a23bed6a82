"""Several BNG instances in one installation (issue 18's proof), end to end over real HTTP: the
app with its workers, the M3 simulator with two companies, a BNG simulator per instance.

Two instances send an order with the same OrderID (and even the same webhook id): two M3
orders, each in its instance's company with its instance's warehouse and order type; the M3
status BOD of each order goes back to the instance it came from, and only there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from m3bng.config import Settings
from m3bng.instances import load_instances
from m3bng.mapping import load_mappings
from m3bng.reconcile import run_kind
from m3bng.runtime import build_connectors
from m3bng.sim.bng import DEFAULT_API_KEY
from m3bng.store.models import CrossReference, Event, InventorySnapshot
from m3bng.sync import Progress, run_sync
from tests.conftest import LiveServer
from tests.integration.flows.conftest import Service
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.integration.to_bng.conftest import ION, order, wait_for
from tests.support.bng import BngSim, running_bng_sim
from tests.support.bods import ims_parts, sales_order
from tests.support.ops import OPS_TOKEN_ENTRIES, READ, bearer
from tests.support.webhooks import TEST_SECRET, signed_headers

US_SECRET = "whsec_VVNpbnN0YW5jZXNlY3JldDAxMjM0NTY3"
US_ION_TOKEN = "ion-test-token-0123456789"
ITEMS = [{"ITNO": "BIKE-100", "ITDS": "Bike", "STAT": "20", "UNMS": "EA"}]


@pytest.fixture
async def two_bngs() -> AsyncIterator[tuple[BngSim, BngSim]]:
    async with running_bng_sim() as eu, running_bng_sim() as us:
        yield eu, us


@pytest.fixture
async def settings(
    m3_sim: SimHandle,  # noqa: F811
    two_bngs: tuple[BngSim, BngSim],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The instances default (BNG ``eu``, company 100) and ``us`` (its own BNG, company 200)."""
    eu, us = two_bngs
    # Company 200 holds its own customer and item (M3 data is per company).
    seeded = await m3_sim.control.post(
        "/_sim/seed",
        json={
            "company": "200",
            "divi": "BBB",
            "customers": [{"CUNO": "10001", "CUNM": "US Bikes", "STAT": "20"}],
            "items": ITEMS,
            "warehouses": [{"WHLO": "200", "WHNM": "US"}],
            "stock": [{"WHLO": "200", "ITNO": "BIKE-100", "STQT": 7, "ALQT": 0}],
        },
    )
    assert seeded.status_code == 200, seeded.text
    instances = tmp_path / "instances.yaml"
    instances.write_text(
        "instances:\n"
        "  us:\n"
        f"    bng_base_url: {us.url}\n"
        "    cono: 200\n"
        "    divi: BBB\n"
        '    vars: {warehouse: "200", order_type: "A02"}\n'
    )
    monkeypatch.setenv("M3BNG_INSTANCE_US_WEBHOOK_SECRETS", US_SECRET)
    monkeypatch.setenv("M3BNG_INSTANCE_US_BNG_API_KEY", DEFAULT_API_KEY)
    return make_settings(
        ionapi_file=m3_sim.ionapi,
        m3_timeout=2.0,
        m3_max_inline_wait=0.2,
        bng_base_url=eu.url,
        bng_api_key=SecretStr(DEFAULT_API_KEY),
        bng_rate_limit=0.0,
        ion_inbound_token=SecretStr(US_ION_TOKEN),
        retry_schedule=[0.05] * 6,
        worker_poll_interval=0.05,
        instances_file=instances,
        ops_tokens=OPS_TOKEN_ENTRIES,
    )


@pytest.fixture
async def service(
    m3_sim: SimHandle,  # noqa: F811
    settings: Settings,
    live_server: Callable[..., LiveServer],
    sessions: Any,
) -> AsyncIterator[Service]:
    server = live_server(settings, run_workers=True)
    async with server, server.client() as client:
        yield Service(client, m3_sim, sessions)


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any], msg_id: str, secret: str) -> Any:
    content = httpx.Request("POST", "/", json=body).content
    return await client.post(path, content=content, headers=signed_headers(content, msg_id, secret=secret))


async def test_two_instances_same_order_id_make_two_orders_and_statuses_go_home(
    service: Service,
    two_bngs: tuple[BngSim, BngSim],
    m3_sim: SimHandle,  # noqa: F811
) -> None:
    eu, us = two_bngs
    body = {
        "type": "order.created",
        "timestamp": "2026-12-07T10:00:00Z",
        "data": {
            "OrderID": "SO-1",
            "CustomerID": "10001",
            "OrderDate": "2026-12-07",
            "Currency": "EUR",
            "Lines": [{"SKU": "BIKE-100", "Quantity": 2, "UnitPrice": 100}],
        },
    }
    msg = f"msg_{time.monotonic_ns()}"
    first = await _post(service.client, "/webhooks/bng", body, msg, TEST_SECRET)
    second = await _post(service.client, "/webhooks/bng/us", body, msg, US_SECRET)
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.json()["event_id"] != second.json()["event_id"]  # the same webhook id, two instances
    # Each instance's secret only: the US secret does not sign for the default instance.
    wrong = await _post(service.client, "/webhooks/bng", body, "msg_wrong", US_SECRET)
    assert wrong.status_code == 401
    unknown = await _post(service.client, "/webhooks/bng/nowhere", body, "msg_x", US_SECRET)
    assert unknown.status_code == 404 and "nowhere" in unknown.text

    for response in (first, second):
        event = await service.settle(response.json()["event_id"])
        assert event.status == "done", event.last_error

    default_orders = [o for o in (await m3_sim.state())["orders"].values() if o["head"]["CUOR"] == "SO-1"]
    us_state = (await m3_sim.control.get("/_sim/state", params={"company": "200"})).json()
    us_orders = [o for o in us_state["orders"].values() if o["head"]["CUOR"] == "SO-1"]
    assert len(default_orders) == len(us_orders) == 1
    eu_head, us_head = default_orders[0]["head"], us_orders[0]["head"]
    assert (eu_head["WHLO"], eu_head["ORTP"]) == ("100", "A01")  # the mapping's own vars
    assert (us_head["WHLO"], us_head["ORTP"]) == ("200", "A02")  # the instance's vars
    assert all(line["WHLO"] == "200" for line in us_orders[0]["lines"])

    async with service.sessions() as session:
        links = {
            row.instance: row.m3_key
            for row in await session.scalars(select(CrossReference).where(CrossReference.entity == "order"))
        }
    assert set(links) == {"default", "us"}
    assert links["default"] == eu_head["ORNO"] and links["us"] == us_head["ORNO"]

    # M3's status of each order goes back to the instance it came from, and only there.
    await eu.seed({"orders": {"SO-1": order("SO-1")}})
    await us.seed({"orders": {"SO-1": order("SO-1")}})
    for orno, entity in ((us_head["ORNO"], "200_BBB"), (eu_head["ORNO"], "100_AAA")):
        xml = sales_order(
            orno, cuor="SO-1", status="22" if entity == "200_BBB" else "66", accounting_entity=entity
        )
        response = await service.client.post(
            "/ion/service/v3/multipartMessage",
            files=ims_parts(xml),
            headers=ION | {"Authorization": f"Bearer {US_ION_TOKEN}"},
        )
        assert response.status_code in (200, 201, 202), response.text

    async def statuses_arrived() -> bool:
        async with service.sessions() as session:
            rows = list(await session.scalars(select(Event).where(Event.source == "ion")))
        return len(rows) == 2 and all(e.status in ("done", "dead", "skipped") for e in rows)

    await wait_for(statuses_arrived, timeout=30)
    async with service.sessions() as session:
        bods = {e.instance: e for e in await session.scalars(select(Event).where(Event.source == "ion"))}
    assert set(bods) == {"default", "us"}
    assert all(e.status == "done" for e in bods.values()), [e.last_error for e in bods.values()]
    assert (await us.state())["orders"]["SO-1"]["M3Status"] == "22"
    assert (await eu.state())["orders"]["SO-1"]["M3Status"] == "66"
    us_writes = [c for c in await us.calls() if c.get("method") == "PATCH"]
    eu_writes = [c for c in await eu.calls() if c.get("method") == "PATCH"]
    assert len(us_writes) == len(eu_writes) == 1


# One store is enough for the per-instance keys (suite time); test_migrations checks both schemas.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_sync_and_reconcile_per_instance(
    service: Service,
    settings: Settings,
    two_bngs: tuple[BngSim, BngSim],
) -> None:
    """``m3bng sync items --instance us`` loads company 200's items into us's BNG only, with digests
    of its own (a second run writes nothing, the default instance's load still loads everything),
    and ``sync stock --instance us`` likewise, leaving the poller's snapshots alone;
    ``m3bng reconcile items --instance us`` compares us's BNG, and the ops API shows the instance."""
    eu, us = two_bngs
    mappings = load_mappings(settings.mappings_folder)
    connectors = build_connectors(settings, service.sessions, load_instances(settings))
    view = connectors.for_instance("us")

    async def sync(instance: str) -> Progress:
        on = connectors.for_instance(instance)
        return await run_sync(service.sessions, on.m3, mappings, "items", bng=on.bng, instance=instance)

    async def sync_events(instance: str) -> list[Event]:
        async with service.sessions() as session:
            query = select(Event).where(Event.source == "sync", Event.instance == instance)
            return list(await session.scalars(query))

    async def applied(instance: str) -> bool:
        events = await sync_events(instance)
        return bool(events) and all(e.status in ("done", "dead", "skipped") for e in events)

    try:
        first = await sync("us")
        assert (first.counts["read"], first.counts["new"]) == (1, 1)  # company 200's one item
        await wait_for(lambda: applied("us"), timeout=30)
        [event] = await sync_events("us")
        assert event.status == "done", event.last_error
        assert (await us.state())["products"]["BIKE-100"]["Name"] == "Bike"
        assert "BIKE-100" not in (await eu.state())["products"]
        again = await sync("us")
        assert again.run_id != first.run_id and again.counts["same"] == 1 and again.counts["new"] == 0
        assert len(await sync_events("us")) == 1

        report = await run_kind("items", settings, service.sessions, connectors, mappings, instance="us")
        assert report.counts["matching"] == 1 and report.counts["missing_in_bng"] == 0, report.findings

        # Stock of company 200's warehouse to us's BNG, with digests of its own: the poller's
        # snapshots (shared by every instance) are neither read nor written.
        on = connectors.for_instance("us")
        stock = await run_sync(
            service.sessions, on.m3, mappings, "stock", bng=on.bng, warehouses=["200"], instance="us"
        )
        assert (stock.counts["read"], stock.counts["new"]) == (1, 1)
        await wait_for(lambda: applied("us"), timeout=30)
        assert (await us.state())["inventory"]["200/BIKE-100"]["Available"] == 7
        assert "200/BIKE-100" not in (await eu.state()).get("inventory", {})
        async with service.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(InventorySnapshot)) == 0
        stock_again = await run_sync(
            service.sessions, on.m3, mappings, "stock", bng=on.bng, warehouses=["200"], instance="us"
        )
        assert (stock_again.counts["same"], stock_again.counts["new"]) == (1, 0)

        default = await sync("default")  # its own digests: company 100's items, all new
        assert default.counts["new"] == default.counts["read"] >= 4
        assert {e.instance for e in await sync_events("default")} == {"default"}
        assert view.bng is not None and view.bng is not connectors.bng
    finally:
        await connectors.aclose()
    runs = await service.client.get("/api/v1/sync/runs", headers=bearer(READ))
    assert [r["instance"] for r in runs.json()["items"]] == ["default", "us", "us", "us", "us"]
    latest = await service.client.get(
        "/api/v1/reconcile/latest", params={"instance": "us"}, headers=bearer(READ)
    )
    [item] = latest.json()["items"]
    assert (item["run"]["instance"], item["run"]["kind"]) == ("us", "items")
