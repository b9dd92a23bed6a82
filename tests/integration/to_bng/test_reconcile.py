"""Reconciliation of orders end to end: the BNG simulator loses some of its webhooks (the
``drop_rate`` fault), ``reconcile_orders`` finds exactly those, ``fix`` takes them in, M3 ends
with each order once, and a webhook delivered late afterwards changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from m3bng.connectors import Connectors
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.client import M3Client
from m3bng.ops.alerts import reconcile_conditions
from m3bng.reconcile import reconcile_orders, scheduled_job
from m3bng.runtime import build_connectors
from m3bng.store.sql import utcnow
from tests.conftest import LiveServer
from tests.integration.to_bng.conftest import Outbound, cli_env, m3bng_cli, settled, wait_for
from tests.support.ops import OPS_TOKEN_ENTRIES, READ, bearer
from tests.support.webhooks import TEST_SECRET

ORDERS = 12


def order(n: int, **changes: Any) -> dict[str, Any]:
    return {**sample("order.created"), "OrderID": f"SO-REC-{n:03d}", **changes}


def m3_orders(state: dict[str, Any], cuor: str) -> int:
    return sum(1 for o in state["orders"].values() if o["head"].get("CUOR") == cuor)


@pytest.fixture
async def clients(outbound: Outbound, outbound_settings: Callable[..., Any]) -> Any:
    settings = outbound_settings()
    bng, m3 = BngClient.from_settings(settings), M3Client.from_settings(settings)
    yield bng, m3
    await bng.aclose()
    await m3.aclose()


async def test_lost_webhooks_are_found_taken_in_once_and_a_late_one_changes_nothing(
    outbound: Outbound, clients: tuple[BngClient, M3Client]
) -> None:
    bng, m3 = clients
    since = utcnow() - timedelta(minutes=1)
    await outbound.bng.webhooks(
        url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True, drop_rate=0.5
    )
    delivered: dict[str, str] = {}
    for n in range(ORDERS):
        answer = await outbound.bng._json("POST", "/_sim/orders/place", order(n))
        delivered[answer["order"]] = answer["webhook"]
    lost = {oid for oid, how in delivered.items() if how == "dropped"}
    listed = await bng.changed_since("orders", since, page_size=5)  # three pages of BNG's list
    assert sorted(o["OrderID"] for o in listed) == sorted(delivered) and all(o["UpdatedAt"] for o in listed)
    assert 0 < len(lost) < ORDERS, delivered  # the fault took some, not all
    await wait_for(lambda: settled(outbound))

    found = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0))
    by_class = {f["key"]: f["finding"] for f in found.findings}
    assert {k for k, v in by_class.items() if v == "never_arrived"} == lost
    assert found.counts["matching"] == ORDERS - len(lost) and found.counts["different"] == 0
    assert found.m3_calls == ORDERS - len(lost) + 1  # one LstLine per order in M3, LstHead of the customer

    fixed = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0), fix=True)
    assert fixed.fixed == len(lost)
    again = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0), fix=True)
    assert again.fixed == 0  # taken in once, whatever the number of runs
    await wait_for(lambda: settled(outbound))

    late = sorted(lost)[0]  # BNG's retry finally gets through
    await outbound.bng.webhooks(url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, drop_rate=0)
    response = await outbound.bng.send_webhook(type="order.created", data=order(int(late[-3:])))
    assert response.status_code in (200, 202), response.text
    await wait_for(lambda: settled(outbound))
    state = await outbound.sim.state()
    assert all(m3_orders(state, oid) == 1 for oid in delivered), {o: m3_orders(state, o) for o in delivered}

    after = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0))
    assert after.counts["matching"] == ORDERS and after.findings == []


async def test_a_changed_quantity_is_different_and_a_dead_letter_is_stuck(
    outbound: Outbound, clients: tuple[BngClient, M3Client]
) -> None:
    bng, m3 = clients
    since = utcnow() - timedelta(minutes=1)
    await outbound.bng.webhooks(url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True)
    await outbound.bng._json("POST", "/_sim/orders/place", order(1))
    await outbound.bng._json("POST", "/_sim/orders/place", order(2, CustomerID="C-NOBODY"))
    await wait_for(lambda: settled(outbound))
    changed = order(1)
    changed["Lines"] = [{**changed["Lines"][0], "Quantity": "5"}, *changed["Lines"][1:]]
    await outbound.bng.webhooks(url=None, enabled=False)  # the change's webhook is not sent
    await outbound.bng.seed({"orders": {"SO-REC-001": changed}})

    found = await reconcile_orders(outbound.sessions, bng, m3, since=since, grace=timedelta(0))
    by_key = {f["key"]: f for f in found.findings}
    assert by_key["SO-REC-001"]["finding"] == "different"
    assert by_key["SO-REC-001"]["detail"]["problems"] == ["line 1: quantity 2 in M3, 5 in BNG"]
    assert by_key["SO-REC-002"]["finding"] == "stuck"
    assert by_key["SO-REC-002"]["detail"]["status"] == "dead"


# CLI processes: PostgreSQL only (suite time)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_cli_reports_and_the_ops_api_lists_runs_and_findings(
    outbound: Outbound, outbound_settings: Callable[..., Any], live_server: Callable[..., LiveServer]
) -> None:
    await outbound.bng.webhooks(
        url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True, drop_rate=1.0
    )
    await outbound.bng._json("POST", "/_sim/orders/place", order(7))  # its webhook is lost
    env = cli_env(outbound_settings())
    code, out, err = await m3bng_cli(env, "reconcile", "orders", "--since", "1h", "--grace", "0s")
    assert code == 1, err  # something never arrived, and nothing was fixed
    assert "1 never_arrived" in out and "SO-REC-007" in out, out
    code, _, err = await m3bng_cli(env, "reconcile", "orders", "--since", "soon")
    assert code == 2 and "--since 'soon'" in err, err
    code, _, err = await m3bng_cli(env, "reconcile", "orders", "--tolerance", "1")
    assert code == 2 and "--tolerance is for stock" in err, err
    server = live_server(outbound_settings(ops_tokens=OPS_TOKEN_ENTRIES))
    async with server, server.client() as client:
        runs = (await client.get("/api/v1/reconcile/runs", headers=bearer(READ))).json()["items"]
        assert runs[0]["kind"] == "orders" and runs[0]["counts"]["never_arrived"] == 1
        assert runs[0]["instance"] == "default"
        answer = await client.get(
            f"/api/v1/reconcile/runs/{runs[0]['id']}/findings?finding=never_arrived", headers=bearer(READ)
        )
        assert [f["key"] for f in answer.json()["items"]] == ["SO-REC-007"]
        missing = await client.get("/api/v1/reconcile/runs/999999/findings", headers=bearer(READ))
        assert missing.status_code == 404


async def test_the_scheduled_run_raises_the_alert_and_its_fix_resolves_it(
    outbound: Outbound, outbound_settings: Callable[..., Any]
) -> None:
    await outbound.bng.webhooks(
        url=f"{outbound.base_url}/webhooks/bng", secret=TEST_SECRET, enabled=True, drop_rate=1.0
    )
    await outbound.bng._json("POST", "/_sim/orders/place", order(9))  # its webhook is lost
    assert scheduled_job(outbound_settings(), outbound.sessions, Connectors()) is None  # off by default
    settings = outbound_settings(
        reconcile_orders_seconds=60, reconcile_orders_window_hours=1, reconcile_grace_minutes=0
    )
    connectors = build_connectors(settings, outbound.sessions)
    try:
        job = scheduled_job(settings, outbound.sessions, connectors)
        assert job is not None and await job.take_turn()
        await job.work()
        async with outbound.sessions() as session:
            [condition] = await reconcile_conditions(session)
        assert condition.key == "reconcile:orders" and "SO-REC-009" in condition.summary
        assert condition.detail["counts"] == {"never_arrived": 1}

        fixing = scheduled_job(
            settings.model_copy(update={"reconcile_orders_fix": True}), outbound.sessions, connectors
        )
        assert fixing is not None
        await fixing.work()
        async with outbound.sessions() as session:
            assert await reconcile_conditions(session) == []  # taken in: nothing left for a person
    finally:
        await connectors.aclose()
    await wait_for(lambda: settled(outbound))
    assert m3_orders(await outbound.sim.state(), "SO-REC-009") == 1
