"""``/metrics`` on the real app: counters from ingest and the workers, outbound latency by M3
program and transaction, replays, and the gauges read from the store at scrape time (backlog,
oldest age, dead letters, paused), which follow the store down to 0 and survive a broken or
slow database (``m3bng_store_up 0``, the rest still served)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from m3bng.api import metrics as metrics_endpoint
from m3bng.connectors.bng.samples import sample
from tests.integration.ops.conftest import Ops

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(ops: Ops) -> Samples:
    response = await ops.client.get("/metrics")  # no token: Prometheus scrapes without one
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def delta(before: Samples, after: Samples, metric: str, /, **labels: str) -> float:
    return (value(after, metric, **labels) or 0.0) - (value(before, metric, **labels) or 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


def store_up(samples: Samples, ops: Ops) -> float | None:
    """``m3bng_store_up`` of this test's backend (the gauge is labelled sqlite/postgresql)."""
    backend = ops.sessions.kw["bind"].dialect.name
    return value(samples, "m3bng_store_up", backend=backend)


async def test_counters_and_gauges_after_a_done_order_a_dead_letter_and_a_replay(ops: Ops) -> None:
    before = await scrape(ops)  # counters are per process: compare against this
    done = await ops.settle(await ops.send("order.created"))
    assert done.status == "done", done.last_error
    dead_id = await ops.dead_order()
    after = await scrape(ops)

    order = {"bng_instance": "default", "source": "bng", "event_type": "order.created"}
    assert delta(before, after, "m3bng_events_received_total", **order) == 2
    assert delta(before, after, "m3bng_events_finished_total", **order, outcome="done") == 1
    assert delta(before, after, "m3bng_events_finished_total", **order, outcome="dead") == 1
    assert (
        delta(
            before,
            after,
            "m3bng_attempt_errors_total",
            event_type="order.created",
            error_class="missing_reference",
        )
        == 1
    )
    confirm = {"target": "m3", "program": "OIS100MI", "transaction": "Confirm", "status": "ok"}
    assert delta(before, after, "m3bng_outbound_call_duration_seconds_count", **confirm) == 1
    assert delta(before, after, "m3bng_outbound_call_duration_seconds_sum", **confirm) > 0
    lookups = {"target": "m3", "program": "CRS610MI", "transaction": "GetBasicData"}
    assert delta(before, after, "m3bng_outbound_call_duration_seconds_count", **lookups, status="ok") >= 1
    assert delta(before, after, "m3bng_outbound_call_duration_seconds_count", **lookups, status="failed") >= 1

    # gauges from the store: every registered flow present, idle ones at 0
    assert store_up(after, ops) == 1
    assert value(after, "m3bng_dead_letters", **order) == 1
    assert (
        value(
            after, "m3bng_dead_letters", bng_instance="default", source="bng", event_type="customer.created"
        )
        == 0
    )
    assert value(after, "m3bng_backlog_events", **order, status="pending") == 0
    assert value(after, "m3bng_backlog_events", **order, status="processing") == 0
    assert value(after, "m3bng_backlog_oldest_age_seconds", **order) == 0
    assert (
        value(
            after,
            "m3bng_backlog_events",
            bng_instance="default",
            source="ion",
            event_type="SyncSalesOrder",
            status="pending",
        )
        == 0
    )
    assert value(after, "m3bng_paused", kind="flow", name="order.created") == 0
    assert value(after, "m3bng_paused", kind="target", name="m3") == 0
    assert value(after, "m3bng_circuit_open", target="m3") == 0

    # the fix, then a replay: counted, and the dead letter gauge drops back to 0
    await ops.add_customer("C-MISSING")
    response = await ops.replay.post(
        f"/api/v1/transactions/{dead_id}/replay", json={"mode": "from_failed_step"}
    )
    assert response.status_code == 202, response.text
    replayed = await ops.settle(dead_id)
    assert replayed.status == "done", replayed.last_error
    last = await scrape(ops)
    assert delta(after, last, "m3bng_replays_total", mode="from_failed_step", kind="single") == 1
    assert value(last, "m3bng_dead_letters", **order) == 0
    assert delta(after, last, "m3bng_events_finished_total", **order, outcome="done") == 1


async def test_backlog_and_paused_gauges_follow_the_store_back_to_zero(ops: Ops) -> None:
    customer = {"bng_instance": "default", "source": "bng", "event_type": "customer.created"}
    pause = {"kind": "flow", "name": "customer.created", "reason": "metrics test"}
    assert (await ops.admin.post("/api/v1/control/pause", json=pause)).status_code == 200
    event_id = await ops.send("customer.created", {**sample("customer.created"), "CustomerID": "C-GAUGE"})

    held = await scrape(ops)
    assert value(held, "m3bng_backlog_events", **customer, status="pending") == 1
    assert value(held, "m3bng_backlog_events", **customer, status="processing") == 0
    age = value(held, "m3bng_backlog_oldest_age_seconds", **customer)
    assert age is not None and age >= 0
    assert value(held, "m3bng_paused", kind="flow", name="customer.created") == 1

    assert (await ops.admin.post("/api/v1/control/resume", json=pause)).status_code == 200
    event = await ops.settle(event_id)
    assert event.status == "done", event.last_error

    drained = await scrape(ops)
    assert value(drained, "m3bng_backlog_events", **customer, status="pending") == 0
    assert value(drained, "m3bng_backlog_oldest_age_seconds", **customer) == 0
    assert value(drained, "m3bng_paused", kind="flow", name="customer.created") == 0


async def test_a_broken_store_costs_only_the_store_gauges(ops: Ops) -> None:
    assert store_up(await scrape(ops), ops) == 1
    async with ops.sessions.begin() as session:
        await session.execute(text("ALTER TABLE dead_letters RENAME TO dead_letters_away"))
    try:
        broken = await scrape(ops)
    finally:
        async with ops.sessions.begin() as session:
            await session.execute(text("ALTER TABLE dead_letters_away RENAME TO dead_letters"))
    assert store_up(broken, ops) == 0
    assert not names(broken) & {"m3bng_backlog_events", "m3bng_dead_letters", "m3bng_paused"}
    assert value(broken, "m3bng_circuit_open", target="m3") == 0  # the rest is still served
    assert "m3bng_store_scrape_duration_seconds" in names(broken)

    healed = await scrape(ops)
    assert store_up(healed, ops) == 1
    assert (
        value(healed, "m3bng_dead_letters", bng_instance="default", source="bng", event_type="order.created")
        == 0
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_slow_store_does_not_hold_the_scrape(ops: Ops, monkeypatch: Any) -> None:
    """A table lock makes the gauge query wait; the scrape answers after the timeout anyway."""
    monkeypatch.setattr(metrics_endpoint, "STORE_TIMEOUT_SECONDS", 0.5)
    async with ops.sessions.begin() as session:
        await session.execute(text("LOCK TABLE dead_letters IN ACCESS EXCLUSIVE MODE"))
        slow = await scrape(ops)
    assert store_up(slow, ops) == 0
    assert "m3bng_dead_letters" not in names(slow)
    assert value(slow, "m3bng_circuit_open", target="m3") == 0

    assert store_up(await scrape(ops), ops) == 1
