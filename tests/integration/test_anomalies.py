"""The anomaly rules against a generated history with planted anomalies (issue 20 §2).

300 normal orders over 40 SKUs and 30 customers, with a realistic spread (each SKU its typical
quantity and price, quantities varying about ±35 % log-normally, prices ±4 % and an occasional
price change, customers' baskets of 1–5 lines) go straight into ``order_history`` by SQL; then
200 new normal orders and the planted anomalies are judged against that store, as the guard
step judges them. Every planted one must be held by its rule; of the normal orders at most
``MAX_NORMAL_FLAGGED`` may be caught by any rule (measured: docs/assist.md).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.flows.runtime import anomalies
from m3bng.flows.runtime.anomalies import Finding, Line, Order, judge, judge_order
from m3bng.mapping.schema import AnomalySpec, PriceRule, StatisticalRule
from m3bng.ops import retention
from m3bng.store import anomalies as store
from m3bng.store.models import Event
from m3bng.store.queue import NewEvent, insert_event_once

FLOW, INSTANCE = "order_to_cash", "default"
MAX_NORMAL_FLAGGED = 0.02  # the bound docs/assist.md states; measured 0–0.5 % (printed by the test)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HOLD_ALL = AnomalySpec.model_validate(
    {
        "rules": {
            "quantity": {"action": "hold"},
            "price": {"action": "hold"},
            "amount": {"action": "hold"},
            "new_customer": {"action": "hold", "max_amount": 20000},
            "near_duplicate": {"action": "hold", "window_minutes": 10},
        }
    }
)


class Shop:
    """A deterministic generator of normal orders."""

    def __init__(self, seed: int = 20) -> None:
        self.rng = random.Random(seed)
        self.skus = {
            f"SKU-{n:03d}": (
                max(1.0, round(math.exp(self.rng.uniform(0, 3)))),  # typical quantity 1..20
                round(math.exp(self.rng.uniform(math.log(5), math.log(800))), 2),  # price 5..800
            )
            for n in range(40)
        }
        self.customers = [f"C{n:04d}" for n in range(30)]
        self.favourites = {c: self.rng.sample(sorted(self.skus), 8) for c in self.customers}
        self.serial = 0

    def order(self, customer: str | None = None) -> Order:
        rng = self.rng
        customer = customer or rng.choice(self.customers)
        self.serial += 1
        lines = []
        for sku in rng.sample(self.favourites[customer], rng.randint(1, 5)):
            typical, price = self.skus[sku]
            quantity = max(1.0, round(typical * math.exp(rng.gauss(0, 0.35))))
            lines.append(Line(sku, quantity, round(price * math.exp(rng.gauss(0, 0.04)), 2)))
        return Order(f"SO-{self.serial:05d}", customer, tuple(lines))


def history_rows(order: Order, at: datetime) -> list[dict[str, Any]]:
    return anomalies.history_rows(order, instance=INSTANCE, flow=FLOW, event_id=None, at=at)


async def fill(sessions: async_sessionmaker[AsyncSession], shop: Shop, count: int) -> list[Order]:
    orders = [shop.order() for _ in range(count)]
    rows = []
    for index, order in enumerate(orders):  # spread over the last 30 days, oldest first
        rows += history_rows(order, NOW - timedelta(days=30) + timedelta(minutes=144 * index))
    async with sessions.begin() as session:
        await store.add_history(session, rows)
    return orders


async def judged(sessions: async_sessionmaker[AsyncSession], order: Order) -> list[Finding]:
    return await judge_order(sessions, FLOW, INSTANCE, order, HOLD_ALL, now=NOW)


async def test_planted_anomalies_are_held_and_normal_orders_rarely_flagged(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    shop = Shop(seed=20)
    history = await fill(sessions, shop, 300)

    # Normal orders: new draws from the same shop.
    flagged = []
    normal = 200
    for _ in range(normal):
        findings = await judged(sessions, shop.order())
        if findings:
            flagged.append(findings)
    share = len(flagged) / normal
    print(f"normal orders flagged: {len(flagged)}/{normal} = {share:.1%}")
    assert share <= MAX_NORMAL_FLAGGED, [f.summary for fs in flagged for f in fs]

    def planted(base: Order, **change: Any) -> Order:
        shop.serial += 1
        return Order(f"SO-P{shop.serial}", base.customer, change.get("lines", base.lines))

    # Quantity × 20 on one line of an ordinary order.
    base = shop.order()
    first = base.lines[0]
    order = planted(base, lines=(Line(first.sku, first.quantity * 20, first.unit_price), *base.lines[1:]))
    assert _rules(await judged(sessions, order)) >= {"quantity"}
    [finding] = [f for f in await judged(sessions, order) if f.rule == "quantity"]
    assert finding.action == "hold"
    figures = finding.detail
    assert figures["value"] == first.quantity * 20 and figures["sku"] == first.sku
    assert figures["history_size"] >= 8 and figures["median"] > 0 and figures["ratio"] >= 4
    assert {"mad_log", "robust_z", "max_z", "min_ratio", "min_history", "history"} <= set(figures)

    # Unit price × 0.1.
    base = shop.order()
    first = base.lines[0]
    order = planted(base, lines=(Line(first.sku, first.quantity, round((first.unit_price or 0) * 0.1, 2)),))
    assert "price" in _rules(await judged(sessions, order))

    # A new customer's huge first order.
    sku = "SKU-001"
    huge = Order("SO-NEW-1", "C9999", (Line(sku, shop.skus[sku][0], 25000.0),))
    findings = await judged(sessions, huge)
    assert "new_customer" in _rules(findings)

    # A near-duplicate: the same customer and lines as an order entered 3 minutes ago.
    original = shop.order()
    async with sessions.begin() as session:
        await store.add_history(session, history_rows(original, NOW - timedelta(minutes=3)))
    twin = Order("SO-TWIN", original.customer, tuple(reversed(original.lines)))
    findings = await judged(sessions, twin)
    [duplicate] = [f for f in findings if f.rule == "near_duplicate"]
    assert duplicate.detail["history"][0]["order_id"] == original.order_id
    # ... and the same order id again is not its own near-duplicate (a redelivery, or a replay).
    assert "near_duplicate" not in _rules(await judged(sessions, original))

    # An amount far above the customer's usual orders: 50 times their median order, in lines of
    # their usual SKUs at the usual prices.
    customer = max(shop.customers, key=lambda c: sum(o.customer == c for o in history))
    usual = statistics.median(o.amount for o in history if o.customer == customer)
    skus = shop.favourites[customer][:3]
    unit = {sku: shop.skus[sku][1] for sku in skus}
    lines = tuple(Line(sku, round(50 * usual / 3 / unit[sku]) or 1.0, unit[sku]) for sku in skus)
    findings = await judged(sessions, Order("SO-BIG", customer, lines))
    [big] = [f for f in findings if f.rule == "amount"]
    assert big.detail["ratio"] >= 5 and big.detail["history_size"] >= 8
    assert history  # the generated history was used


def _rules(findings: list[Finding]) -> set[str]:
    assert all(f.action == "hold" for f in findings)
    return {f.rule for f in findings}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_reads_are_bounded_to_the_last_rows_of_each_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    shop = Shop(seed=7)
    await fill(sessions, shop, 300)
    async with sessions() as session:
        history = await store.read_history(
            session, flow=FLOW, instance=INSTANCE, skus=sorted(shop.skus), customer="C0001", limit=5
        )
    assert all(len(rows) <= 5 for rows in history.by_sku.values()) and len(history.customer_orders) <= 5
    assert all(r.customer == "C0001" for r in history.customer_orders)
    newest = [rows[0].at for rows in history.by_sku.values()]
    assert all(at.tzinfo is not None for at in newest)


def test_small_tight_histories_are_not_called_anomalous() -> None:
    rule = StatisticalRule()
    ones = [1.0] * 12
    assert judge(2.0, ones, rule) is not None and not judge(2.0, ones, rule).anomalous  # type: ignore[union-attr]
    assert judge(20.0, ones, rule).anomalous  # type: ignore[union-attr]
    assert judge(20.0, ones[:5], rule) is None  # below min_history: not judged


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_retention_deletes_history_older_than_its_days(
    sessions: async_sessionmaker[AsyncSession], make_settings: Callable[..., Settings]
) -> None:
    shop = Shop(seed=3)
    now = datetime.now(UTC)
    old, recent = shop.order(), shop.order()
    async with sessions.begin() as session:
        await store.add_history(session, history_rows(old, now - timedelta(days=200)))
        await store.add_history(session, history_rows(recent, now - timedelta(days=10)))
    settings = make_settings(retention_order_history_days=180)
    dry = await retention.purge(sessions, settings, dry_run=True)
    assert dry.order_history == len(old.lines) + 1
    assert (await retention.purge(sessions, settings)).order_history == len(old.lines) + 1
    async with sessions() as session:
        history = await store.read_history(
            session, flow=FLOW, instance=INSTANCE, skus=[], customer=recent.customer, limit=10
        )
    assert [row.order_id for row in history.customer_orders] == [recent.order_id]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_retention_keeps_a_held_event_and_its_payload(
    sessions: async_sessionmaker[AsyncSession], make_settings: Callable[..., Settings]
) -> None:
    """A held event waits for a person: however old, its payload (which a release sends) and its
    row stay, where a discarded one of the same age goes."""
    long_ago = datetime.now(UTC) - timedelta(days=500)
    ids = {}
    async with sessions.begin() as session:
        for status in ("held", "discarded"):
            new = NewEvent("bng", f"msg-{status}", "order.created", {"data": {}}, f"order:{status}", "c")
            event_id, _ = await insert_event_once(session, new)
            await session.execute(
                update(Event).where(Event.id == event_id).values(status=status, finished_at=long_ago)
            )
            ids[status] = event_id
    settings = make_settings(retention_payload_days=1, retention_dead_letter_days=1, retention_key_days=2)
    assert (await retention.purge(sessions, settings)).events == 1
    async with sessions() as session:
        left = {e.id: e for e in (await session.execute(select(Event))).scalars()}
    assert list(left) == [ids["held"]] and left[ids["held"]].payload == {"data": {}}


def test_zero_prices_are_judged_and_stay_json() -> None:
    """A free line against a SKU sold at 50: flagged, and its figures stay valid JSON (no ∞)."""
    rule = PriceRule()
    judged = judge(0.0, [50.0] * 10, rule)
    assert judged is not None and judged.anomalous
    figures = judged.figures(rule)
    assert figures["ratio"] is None
    json.dumps(figures, allow_nan=False)
