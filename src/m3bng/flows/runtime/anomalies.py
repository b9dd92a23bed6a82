"""Anomaly rules: an order far outside its own history is flagged, or held for a person, before
anything is sent to M3 (docs/assist.md, "Anomaly holds").

The rules (per flow, ``anomalies:`` in the mapping; ``mapping/schema.py``):

* ``quantity``: a line's quantity against the last quantities of its SKU;
* ``price``: a line's unit price against the SKU's recent unit prices;
* ``amount``: the order's amount against the customer's last orders;
* ``new_customer``: a customer's first order (nothing in the history) above ``max_amount``;
* ``near_duplicate``: the same customer and the same lines entered under another order id
  within ``window_minutes``.

The statistical three use the median and the MAD (median absolute deviation), which a few
earlier outliers do not drag along as they drag a mean and a standard deviation. Quantities,
prices and amounts vary by factors, not by fixed steps (a basket of 2 or of 20, a SKU at 5 or at
800), so they are compared on the log scale: the robust z-score is
``|ln x - median(ln h)| / (1.4826 * MAD(ln h))`` (1.4826 makes the MAD estimate the standard
deviation of normal data). A value is anomalous when that exceeds ``max_z`` *and* it is at least
``min_ratio`` times away from the median on the side the rule judges (``direction``: above the
median for quantities and amounts, both ways for prices). A history shorter than ``min_history`` is
not judged. MAD 0 (every past value the same) leaves only the ratio test, as does a value of 0
or below (no logarithm).

Every finding carries its figures (the value, median, MAD, z, ratio, thresholds, history size)
and the history it was computed from, so whoever looks at a hold sees why, offline.

The guard step ``hold_if_anomalous`` runs once per event, before the flow (``guards.py``): it
marks ``anomalies_checked`` in the checkpoint (stored with the hold, or with the flow's first
write), so a retry after a transient error does not judge the order again, and a released event
(which keeps that mark, and gains ``anomaly_release``: who, when) goes through. A replay
``from_start`` clears the checkpoint: the order is judged again. The
history is written when the order is entered in M3 (``record_order``, called by the flow).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import jmespath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.errors import Held
from m3bng.flows.runtime.context import FlowContext
from m3bng.mapping.schema import AnomalySpec, StatisticalRule
from m3bng.observability import metrics
from m3bng.store import anomalies as store
from m3bng.store.anomalies import History, HistoryRow
from m3bng.store.db import single_statement
from m3bng.store.sql import utcnow

MAD_TO_SIGMA = 1.4826
SHOWN_HISTORY = 20  # history values kept in a finding's detail (the newest)
SHOWN_TWINS = 5  # a near-duplicate's earlier copies kept in its detail (the newest; ``twins`` counts all)
CHECKED = "anomalies_checked"
RELEASE = "anomaly_release"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: float
    unit_price: float | None


@dataclass(frozen=True)
class Order:
    order_id: str
    customer: str
    lines: tuple[Line, ...]

    @property
    def amount(self) -> float:
        return round(sum(line.quantity * (line.unit_price or 0.0) for line in self.lines), 6)

    @property
    def digest(self) -> str:
        """The lines as a set of (SKU, quantity): what a near-duplicate repeats."""
        canonical = sorted((line.sku, round(line.quantity, 6)) for line in self.lines)
        return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


@dataclass(frozen=True)
class Finding:
    rule: str
    action: str  # flag, hold
    summary: str
    detail: dict[str, Any]

    def as_row(self) -> dict[str, Any]:
        return {"rule": self.rule, "action": self.action, "summary": self.summary, "detail": self.detail}


# -- reading the order ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return None
    return number if math.isfinite(number) else None


@functools.lru_cache(maxsize=64)
def _path(expression: str) -> Any:
    """A field path, compiled once (the mapping's load checked it)."""
    return jmespath.compile(expression)


def order_from(data: Any, spec: AnomalySpec) -> Order | None:
    """The order the rules judge, or None when the data has no order id, customer or lines
    (nothing to judge: the flow's own checks answer such data)."""
    if not isinstance(data, dict):
        return None
    f = spec.fields
    order_id, customer, lines = (_path(p).search(data) for p in (f.order_id, f.customer, f.lines))
    if order_id in (None, "") or customer in (None, "") or not isinstance(lines, list):
        return None
    parsed = []
    for raw in lines:
        if not isinstance(raw, dict):
            continue
        sku, quantity = _path(f.sku).search(raw), _number(_path(f.quantity).search(raw))
        if sku in (None, "") or quantity is None:
            continue
        parsed.append(Line(str(sku).strip().upper(), quantity, _number(_path(f.unit_price).search(raw))))
    return Order(str(order_id), str(customer), tuple(parsed)) if parsed else None


# -- the statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    value: float
    median: float  # of the history's values
    mad_log: float  # MAD of the history's natural logarithms
    z: float | None  # the robust z on the log scale; None when the MAD is 0
    ratio: float
    history_size: int
    anomalous: bool

    def figures(self, rule: StatisticalRule) -> dict[str, Any]:
        return {
            "value": self.value,
            "median": self.median,
            "mad_log": round(self.mad_log, 4),
            "robust_z": None if self.z is None else round(self.z, 2),
            # None when infinite (a value or median of 0): JSON, and PostgreSQL's jsonb, have no ∞
            "ratio": round(self.ratio, 2) if math.isfinite(self.ratio) else None,
            "max_z": rule.max_z,
            "min_ratio": rule.min_ratio,
            "history_size": self.history_size,
            "min_history": rule.min_history,
            "direction": rule.direction,
        }


def judge(value: float, history: Sequence[float], rule: StatisticalRule) -> Judgement | None:
    """The robust judgement of ``value`` against ``history`` (module docstring); None when the
    history is too short to say anything."""
    if len(history) < rule.min_history:
        return None
    median = statistics.median(history)
    ratio = _ratio(value, median)
    if (rule.direction == "above" and value <= median) or (rule.direction == "below" and value >= median):
        ratio = 1.0  # on the side the rule does not judge: not anomalous, whatever the distance
    positive = [math.log(x) for x in history if x > 0]
    if value <= 0 or len(positive) < rule.min_history:
        # Zero or negative figures (a free line, a credit) have no log: the ratio alone judges.
        return Judgement(value, median, 0.0, None, ratio, len(history), ratio >= rule.min_ratio)
    centre = statistics.median(positive)
    mad = statistics.median(abs(x - centre) for x in positive)
    z = abs(math.log(value) - centre) / (MAD_TO_SIGMA * mad) if mad > 0 else None
    anomalous = ratio >= rule.min_ratio and (z is None or z > rule.max_z)
    return Judgement(value, median, mad, z, ratio, len(history), anomalous)


def _ratio(value: float, median: float) -> float:
    """How many times ``value`` is away from ``median``, up or down (>= 1)."""
    if value <= 0 or median <= 0:
        return math.inf if value != median else 1.0
    return max(value / median, median / value)


# -- the rules --------------------------------------------------------------------------------------


def evaluate(
    order: Order, history: History, spec: AnomalySpec, *, flow_orders: int, now: datetime
) -> list[Finding]:
    """Every rule that fires for ``order`` (rules whose action is ``off`` are not evaluated)."""
    rules = spec.rules
    findings: list[Finding] = []
    if rules.quantity.action != "off":
        findings += _per_line(order, history, rules.quantity, "quantity")
    if rules.price.action != "off":
        findings += _per_line(order, history, rules.price, "price")
    past_orders = [row for row in history.customer_orders if row.order_id != order.order_id]
    if rules.amount.action != "off":
        values = [row.amount for row in past_orders]
        judged = judge(order.amount, values, rules.amount)
        if judged is not None and judged.anomalous:
            findings.append(
                Finding(
                    "amount",
                    rules.amount.action,
                    f"order {order.order_id}: amount {order.amount:g} against customer "
                    f"{order.customer}'s median {judged.median:g} ({_how(judged)}, {len(values)} orders)",
                    {
                        **judged.figures(rules.amount),
                        "customer": order.customer,
                        "history": _shown(
                            past_orders, lambda r: {"order_id": r.order_id, "amount": r.amount}
                        ),
                    },
                )
            )
    rule = rules.new_customer
    if rule.action != "off" and not past_orders and order.amount > rule.max_amount and flow_orders > 0:
        findings.append(
            Finding(
                "new_customer",
                rule.action,
                f"order {order.order_id}: first order of customer {order.customer}, amount "
                f"{order.amount:g} above {rule.max_amount:g}",
                {
                    "value": order.amount,
                    "max_amount": rule.max_amount,
                    "customer": order.customer,
                    "history_size": 0,
                    "flow_orders_seen": flow_orders,
                },
            )
        )
    duplicate = rules.near_duplicate
    if duplicate.action != "off":
        since = now - timedelta(minutes=duplicate.window_minutes)
        digest = order.digest
        twins = [r for r in past_orders if r.digest == digest and r.at >= since]
        if twins:
            twin = twins[0]
            minutes = (now - twin.at).total_seconds() / 60
            findings.append(
                Finding(
                    "near_duplicate",
                    duplicate.action,
                    f"order {order.order_id}: customer {order.customer} ordered the same lines "
                    f"{minutes:.1f} min ago as order {twin.order_id}",
                    {
                        "customer": order.customer,
                        "window_minutes": duplicate.window_minutes,
                        "minutes_apart": round(minutes, 2),
                        "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order.lines],
                        "history_size": len(past_orders),
                        "twins": len(twins),
                        "history": [
                            {"order_id": r.order_id, "amount": r.amount, "at": r.at.isoformat()}
                            for r in twins[:SHOWN_TWINS]
                        ],
                    },
                )
            )
    return findings


def _per_line(order: Order, history: History, rule: StatisticalRule, name: str) -> list[Finding]:
    findings = []
    for number, line in enumerate(order.lines, start=1):
        rows = [r for r in history.by_sku.get(line.sku, []) if r.order_id != order.order_id]
        if name == "quantity":
            value: float | None = line.quantity
            values = [r.quantity for r in rows]
        else:
            value = line.unit_price
            values = [r.unit_price for r in rows if r.unit_price is not None]
        if value is None:
            continue
        judged = judge(value, values, rule)
        if judged is None or not judged.anomalous:
            continue
        what = "quantity" if name == "quantity" else "unit price"
        findings.append(
            Finding(
                name,
                rule.action,
                f"order {order.order_id} line {number}: {what} {value:g} of SKU {line.sku} against "
                f"its median {judged.median:g} ({_how(judged)}, {len(values)} lines)",
                {
                    **judged.figures(rule),
                    "line": number,
                    "sku": line.sku,
                    "history": _shown(
                        rows,
                        lambda r: {
                            "order_id": r.order_id,
                            "quantity": r.quantity,
                            "unit_price": r.unit_price,
                        },
                    ),
                },
            )
        )
    return findings


def _how(judged: Judgement) -> str:
    z = "MAD 0" if judged.z is None else f"robust z {judged.z:.1f}"
    ratio = f"{judged.ratio:.1f}x" if math.isfinite(judged.ratio) else "from or to 0"
    return f"{ratio}, {z}"


def _shown(rows: Iterable[HistoryRow], shape: Any) -> list[dict[str, Any]]:
    return [{**shape(r), "at": r.at.isoformat()} for r in list(rows)[:SHOWN_HISTORY]]


# -- the guard step and the history write -----------------------------------------------------------


async def judge_order(
    sessions: async_sessionmaker[AsyncSession],
    flow: str,
    instance: str,
    order: Order,
    spec: AnomalySpec,
    *,
    now: datetime,
) -> list[Finding]:
    """Read the bounded history the order needs and run the rules: one read (the SKUs' and the
    customer's last rows), and a bounded count only for a large first order of a customer."""
    async with single_statement(sessions) as session:
        history = await store.read_history(
            session,
            flow=flow,
            instance=instance,
            skus=[line.sku for line in order.lines],
            customer=order.customer,
            limit=spec.history,
        )
    flow_orders = 0
    rule = spec.rules.new_customer
    if rule.action != "off" and not history.customer_orders and order.amount > rule.max_amount:
        async with single_statement(sessions) as session:
            flow_orders = await store.count_orders(session, flow=flow, instance=instance, at_most=1000)
    return evaluate(order, history, spec, flow_orders=flow_orders, now=now)


async def hold_if_anomalous(ctx: FlowContext, flow: str, spec: AnomalySpec) -> None:
    """The named guard step: judge the order once, before the flow's first M3 call. Flags are
    stored with the flow's next write and the order goes on; a hold raises ``Held`` (the worker
    stores the event as ``held`` with every finding)."""
    if ctx.checkpoints.get(CHECKED):
        return
    data = ctx.payload.get("data") if isinstance(ctx.payload, dict) else None
    order = order_from(data, spec)
    if order is None:
        return
    findings = await judge_order(ctx.sessions, flow, ctx.event.instance, order, spec, now=utcnow())
    for finding in findings:
        metrics.ANOMALIES.labels(flow, finding.rule, finding.action).inc()
    ctx.note(**{CHECKED: True})  # stored with the hold, or with the flow's first write
    holds = [f.summary for f in findings if f.action == "hold"]
    if holds:
        raise Held("; ".join(holds), flow=flow, findings=[f.as_row() for f in findings])
    if findings:
        rows = [f.as_row() for f in findings]
        event_id = ctx.event.id
        ctx.defer(store.deferred_findings(event_id, flow, rows))


def record_order(ctx: FlowContext, flow: str, spec: AnomalySpec | None) -> None:
    """Write the order to the history, with the event's outcome: called by the flow once the
    order is entered in M3 (never for an order found there already)."""
    if spec is None:
        return
    data = ctx.payload.get("data") if isinstance(ctx.payload, dict) else None
    order = order_from(data, spec)
    if order is None:
        return
    rows = history_rows(order, instance=ctx.event.instance, flow=flow, event_id=ctx.event.id, at=utcnow())
    if rows:
        ctx.defer(store.deferred_history(rows))


def history_rows(
    order: Order, *, instance: str, flow: str, event_id: int | None, at: datetime
) -> list[dict[str, Any]]:
    """The ``order_history`` rows of one order: one per line, and one for the order as a whole
    (``sku`` None) with its amount and the digest of its lines."""
    common = {
        "instance": instance,
        "flow": flow,
        "event_id": event_id,
        "order_id": order.order_id,
        "customer": order.customer,
        "at": at,
    }
    rows = [
        {
            **common,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "amount": round(line.quantity * (line.unit_price or 0.0), 6),
            "digest": None,
        }
        for line in order.lines
    ]
    rows.append(
        {
            **common,
            "sku": None,
            "quantity": sum(line.quantity for line in order.lines),
            "unit_price": None,
            "amount": order.amount,
            "digest": order.digest,
        }
    )
    return rows
