"""Reconciliation of stock, customers and items, and the orders M3 has that BNG does not, end to
end against both simulators over HTTP and the real workers: each class is found, ``fix`` corrects
BNG from M3 through the ordinary flows, and a run afterwards finds everything matching."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from m3bng.connectors import Connectors
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import Mapping, load_mappings
from m3bng.ops.alerts import reconcile_conditions
from m3bng.reconcile import Report, reconcile_orders, scheduled_jobs
from m3bng.reconcile_master import reconcile_master
from m3bng.reconcile_stock import reconcile_stock
from m3bng.runtime import build_connectors
from m3bng.store.sql import utcnow
from tests.conftest import LiveServer
from tests.integration.to_bng.conftest import Outbound, cli_env, m3bng_cli, settled, wait_for
from tests.support.ops import OPS_TOKEN_ENTRIES, READ, bearer
from tests.support.webhooks import TEST_SECRET


@pytest.fixture
async def clients(outbound: Outbound, outbound_settings: Callable[..., Any]) -> Any:
    settings = outbound_settings()
    bng, m3 = BngClient.from_settings(settings), M3Client.from_settings(settings)
    yield bng, m3, load_mappings(settings.mappings_folder)
    await bng.aclose()
    await m3.aclose()


def balance(on_hand: int, allocated: int = 0) -> dict[str, Any]:
    return {"OnHand": on_hand, "Available": on_hand - allocated, "Allocated": allocated}


def classes(report: Any) -> dict[str, str]:
    return {f["key"]: f["finding"] for f in report.findings}


async def test_stock_drift_and_missing_balances_are_corrected_from_m3(
    outbound: Outbound, clients: tuple[BngClient, M3Client, dict[str, Mapping]]
) -> None:
    bng, m3, mappings = clients
    mapping = mappings["inventory_poll"]
    await outbound.bng.seed(
        {
            "inventory": {
                "100/BIKE-100": balance(25),  # as in M3
                "100/BIKE-200": balance(3),  # M3: 8
                "100/HELMET-1": balance(121),  # M3: 120, within a tolerance of 1
                "100/GHOST-9": balance(4),  # M3 has no such balance
            }
        }
    )
    # Warehouse 200 only from the setting (BNG has nothing there); 100 because BNG holds it.
    found = await reconcile_stock(
        outbound.sessions, bng, m3, mapping, warehouses=["200"], tolerance=Decimal(1)
    )
    assert classes(found) == {
        "100/BIKE-200": "drift",
        "100/TUBE-26": "missing_in_bng",
        "200/BIKE-100": "missing_in_bng",
        "100/GHOST-9": "unknown_in_m3",
    }
    assert found.counts["matching"] == 2 and found.m3_calls == 2  # one LstItemWarehous per warehouse
    [drift] = [f for f in found.findings if f["finding"] == "drift"]
    assert {"field": "OnHand", "m3": "8", "bng": "3"} in drift["detail"]["differences"]
    strict = await reconcile_stock(outbound.sessions, bng, m3, mapping, warehouses=["200"])
    assert classes(strict)["100/HELMET-1"] == "drift"  # no tolerance: one off is drift

    fixed = await reconcile_stock(outbound.sessions, bng, m3, mapping, warehouses=["200"], fix=True)
    assert fixed.fixed == 4  # BIKE-200, HELMET-1, TUBE-26, 200/BIKE-100; never GHOST-9
    assert all(f["event_id"] for f in fixed.findings if f["finding"] != "unknown_in_m3")
    await wait_for(lambda: settled(outbound))
    held = (await outbound.bng.state())["inventory"]
    assert Decimal(str(held["100/BIKE-200"]["OnHand"])) == 8
    assert Decimal(str(held["200/BIKE-100"]["OnHand"])) == 5
    events = await outbound.events("reconcile")
    assert {e.event_type for e in events} == {"inventory.balance"} and {e.status for e in events} == {"done"}

    after = await reconcile_stock(outbound.sessions, bng, m3, mapping, warehouses=["200"])
    assert classes(after) == {"100/GHOST-9": "unknown_in_m3"} and after.counts["matching"] == 5


async def test_customers_and_items_missing_different_and_unknown(
    outbound: Outbound, clients: tuple[BngClient, M3Client, dict[str, Mapping]]
) -> None:
    bng, m3, mappings = clients
    state = await outbound.sim.state()
    m3_customers, m3_items = set(state["customers"]), set(state["items"])
    found = await reconcile_master(outbound.sessions, bng, m3, mappings, "customers", page_size=2)
    assert set(classes(found)) == m3_customers and set(classes(found).values()) == {"missing_in_bng"}
    assert found.m3_calls == 3  # two a page, from the last key: 10001 10002 | 10002 TEMPLATE | TEMPLATE

    for kind in ("customers", "items"):
        await reconcile_master(outbound.sessions, bng, m3, mappings, kind, fix=True)
    await wait_for(lambda: settled(outbound))
    items = await reconcile_master(outbound.sessions, bng, m3, mappings, "items")
    assert items.findings == [] and items.counts["matching"] == len(m3_items)

    # BNG changed behind m3bng's back (no webhook), and a customer BNG alone has.
    customer = (await outbound.bng.state())["customers"]["10002"]
    await outbound.bng.seed(
        {
            "customers": {
                "10002": {**customer, "CompanyName": "Changed in BNG"},
                "C-BNGONLY": {"CompanyName": "X"},
            }
        }
    )
    found = await reconcile_master(outbound.sessions, bng, m3, mappings, "customers")
    assert classes(found) == {"10002": "different", "C-BNGONLY": "unknown_in_m3"}
    [different] = [f for f in found.findings if f["finding"] == "different"]
    assert different["detail"]["fields"] == [
        {"field": "CompanyName", "m3": "Fjord Cycles AS", "bng": "Changed in BNG"}
    ]

    fixed = await reconcile_master(outbound.sessions, bng, m3, mappings, "customers", fix=True)
    assert fixed.fixed == 1  # the different one; never the one M3 does not have
    await wait_for(lambda: settled(outbound))
    assert (await outbound.bng.state())["customers"]["10002"]["CompanyName"] == "Fjord Cycles AS"
    after = await reconcile_master(outbound.sessions, bng, m3, mappings, "customers")
    assert classes(after) == {"C-BNGONLY": "unknown_in_m3"}


async def test_an_m3_order_whose_cuor_names_no_bng_order_is_unknown_in_bng(
    outbound: Outbound, clients: tuple[BngClient, M3Client, dict[str, Mapping]]
) -> None:
    bng, m3, _ = clients
    since = utcnow() - timedelta(minutes=1)
    today = utcnow().strftime("%Y%m%d")
    line = {"ITNO": "BIKE-100", "ORQT": "1", "CUPO": "1"}
    await outbound.sim.control.post(
        "/_sim/seed",
        json={
            "orders": [
                {
                    "head": {"ORNO": "0000990001", "CUNO": "10001", "CUOR": "SO-GHOST-1", "ORDT": today},
                    "lines": [line],
                },
                {"head": {"ORNO": "0000990002", "CUNO": "10001", "CUOR": "SO-GHOST-0", "ORDT": "20200101"}},
                {"head": {"ORNO": "0000990003", "CUNO": "10001", "CUOR": "", "ORDT": today}},  # no BNG id
            ]
        },
    )
    await outbound.bng.webhooks(url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True)
    await outbound.bng._json(
        "POST", "/_sim/orders/place", {**sample("order.created"), "OrderID": "SO-KNOWN-1"}
    )
    await wait_for(lambda: settled(outbound))

    found = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0))
    assert classes(found) == {"SO-GHOST-1": "unknown_in_bng"}  # SO-GHOST-0's order date is before the window
    [ghost] = found.findings
    assert ghost["detail"] == {"orno": "0000990001", "cuno": "10001", "order_date": today}
    assert found.counts["matching"] == 1 and found.m3_calls == 2  # LstLine of SO-KNOWN-1, LstHead of 10001


# CLI processes: PostgreSQL only (suite time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_cli_scheduled_jobs_and_the_ops_api(
    outbound: Outbound, outbound_settings: Callable[..., Any], live_server: Callable[..., LiveServer]
) -> None:
    await outbound.bng.seed({"inventory": {"100/BIKE-200": balance(3)}})
    env = cli_env(outbound_settings())
    code, out, err = await m3bng_cli(env, "reconcile", "stock", "--tolerance", "0")
    assert code == 1, err  # drift and missing, nothing fixed
    assert "1 drift" in out and "3 missing_in_bng" in out and "1 M3 calls" in out, out
    async with outbound.sessions() as session:
        [alert] = await reconcile_conditions(session)
    assert alert.key == "reconcile:stock" and alert.detail["counts"] == {"drift": 1, "missing_in_bng": 3}
    assert "100/BIKE-200" in alert.summary
    code, _, err = await m3bng_cli(env, "reconcile", "stock", "--since", "1d")
    assert code == 2 and "--since is for orders" in err, err
    code, _, err = await m3bng_cli(env, "reconcile", "warehouses")
    assert code == 2 and "the kinds are orders, stock, customers, items" in err, err

    assert scheduled_jobs(outbound_settings(), outbound.sessions, Connectors(), {}) == []  # all off
    settings = outbound_settings(
        reconcile_stock_seconds=60, reconcile_stock_fix=True, reconcile_items_seconds=60
    )
    connectors = build_connectors(settings, outbound.sessions)
    try:
        jobs = {job.name: job for job in scheduled_jobs(settings, outbound.sessions, connectors, {
            "inventory_poll": load_mappings(settings.mappings_folder)["inventory_poll"]})}  # fmt: skip
        assert set(jobs) == {"reconcile_stock", "reconcile_items"}
        assert await jobs["reconcile_stock"].take_turn()
        report = await jobs["reconcile_stock"].work()
        assert isinstance(report, Report) and report.fixed == 4  # the job's auto-fix
        async with outbound.sessions() as session:
            assert await reconcile_conditions(session) == []  # corrected: the alert resolves
    finally:
        await connectors.aclose()
    await wait_for(lambda: settled(outbound))

    server = live_server(outbound_settings(ops_tokens=OPS_TOKEN_ENTRIES))
    async with server, server.client() as client:
        latest = (await client.get("/api/v1/reconcile/latest", headers=bearer(READ))).json()["items"]
        [stock] = [entry for entry in latest if entry["run"]["kind"] == "stock"]
        assert stock["run"]["fix"] and stock["open"] == []  # the job fixed everything it found
        runs = (await client.get("/api/v1/reconcile/runs?kind=stock", headers=bearer(READ))).json()["items"]
        assert len(runs) == 2 and runs[1]["counts"]["drift"] == 1 and runs[1]["counts"]["m3_calls"] == 1
        first = f"/api/v1/reconcile/runs/{runs[1]['id']}/findings"
        answer = await client.get(f"{first}?finding=drift&key=100/BIKE-200", headers=bearer(READ))
        assert [f["key"] for f in answer.json()["items"]] == ["100/BIKE-200"]
        for bad, field in (
            ("/api/v1/reconcile/runs?kind=bogus", "kind"),
            (f"{first}?finding=bogus", "finding"),
            (f"{first}?key=a%01b", "key"),
            ("/api/v1/reconcile/latest?kind=x", "kind"),
            ("/api/v1/reconcile/runs?instance=NO%20SUCH", "instance"),
        ):
            refused = await client.get(bad, headers=bearer(READ))
            assert refused.status_code == 422 and field in refused.text, (bad, refused.text)

    code, out, err = await m3bng_cli(env, "reconcile")  # no kind: each in turn
    assert code == 1, err  # customers and items are not in BNG
    assert [line.split(" run ")[0] for line in out.splitlines() if " run " in line] == [
        "reconcile orders",
        "reconcile stock",
        "reconcile customers",
        "reconcile items",
    ], out
