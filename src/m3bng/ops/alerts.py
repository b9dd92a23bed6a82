"""Alerts: conditions that need a person, sent to a Slack or Teams incoming webhook (or any URL
taking JSON), and resolved by themselves when the condition clears.

Conditions (evaluated from the store every ``M3BNG_ALERT_CHECK_SECONDS``, so they hold whichever
process evaluates them):

* ``dead_letters:<flow>``: the flow has unresolved dead letters (retries exhausted, permanent
  error, no flow), counted per BNG instance in the detail (``instances``); resolves
  ("recovered", Svix's word) when none is left, replayed or discarded.
* ``circuit:<target>``: the circuit breaker toward M3 or BNG is open. Breakers live in each
  process; this is the view of the process running the alerter (the one holding the lease).
* ``backlog:<flow>``: the flow's oldest open event (pending or processing) waits longer than
  ``M3BNG_ALERT_BACKLOG_MINUTES``: a paused flow or instance, a target that is down, a stuck
  worker; the detail counts the open events per BNG instance (``instances``).
* ``order_sla``: BNG orders received more than ``M3BNG_ALERT_ORDER_SLA_MINUTES`` ago that are
  not in M3 yet (neither done, nor skipped, nor discarded: held ones count); lists the order ids.
* ``anomaly:hold:<flow>``: the flow has events held by an anomaly rule (docs/assist.md), waiting
  for a person to release or discard them; names the newest hold's event, rule and figures'
  summary. Fires with the first hold, resolves when none is left.
* ``reconcile:orders``: the newest order reconciliation found orders that never arrived (and
  were not taken in) or are stuck (``reconcile.py``); lists the order ids.
* ``reconcile:stock``: the newest stock reconciliation found balances that drifted beyond its
  tolerance or are missing in BNG, and did not correct them (``reconcile_stock.py``).

Each alert is one row in ``alerts``. The webhook hears "firing" once, a reminder at most every
``M3BNG_ALERT_REPEAT_MINUTES`` while it keeps firing, and "resolved" once. ``notified_state`` and
``last_notified_at`` move only when a delivery succeeded (2xx), so a receiver that is down hears
everything at a later check; nothing is lost and nothing is sent twice on purpose.

Alert texts carry ids, counts, error classes and the start of the latest error (masked by
``ops/masking.py``); never payload content. The webhook URL is a
secret (whoever has it can post to the channel) and is never logged.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.protection import CircuitBreaker, CircuitState
from m3bng.flows.runtime import FlowRegistry
from m3bng.ops.controls import paused_event_types
from m3bng.ops.masking import mask_text
from m3bng.ops.scheduler import ScheduledJob
from m3bng.store import alerts as alert_store
from m3bng.store import anomalies as anomaly_store
from m3bng.store import control as control_store
from m3bng.store import reconcile as reconcile_store
from m3bng.store.alerts import FIRING as FIRING  # the alert states, re-exported for the API
from m3bng.store.alerts import RESOLVED as RESOLVED
from m3bng.store.models import DEFAULT_INSTANCE, OPEN_STATUSES, Alert, EventStatus
from m3bng.store.sql import utcnow

log = structlog.get_logger(__name__)

JOB = "alerts"
ORDER_EVENT = "order.created"
MAX_LISTED_ORDERS = 20
# A firing message that never got through is made up for by its "resolved" message, unless the
# alert resolved longer ago than this (e.g. a webhook URL configured after months without one).
CATCH_UP = timedelta(hours=24)
FORMATS = ("slack", "teams", "teams_workflow", "generic")
ERROR_CHARS = 200  # of the latest dead letter's error, masked (ops/masking.py)


@dataclass(frozen=True)
class Condition:
    """A condition that holds now: the alert ``key`` is firing with this summary and detail."""

    key: str
    kind: str
    summary: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Notice:
    """One message to the webhook."""

    key: str
    kind: str
    state: str  # firing, resolved
    summary: str
    detail: dict[str, Any]
    fired_at: datetime
    resolved_at: datetime | None = None
    repeat: bool = False  # a reminder of an alert the receiver has already heard


@dataclass
class CheckResult:
    firing: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # resolved by this check
    sent: list[Notice] = field(default_factory=list)
    failed: list[Notice] = field(default_factory=list)  # to be tried again at the next check


Breakers = Callable[[], Mapping[str, CircuitBreaker]]


class Alerter:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        breakers: Breakers | None = None,
        registry: FlowRegistry | None = None,
    ) -> None:
        self.settings, self.sessions, self.registry = settings, sessions, registry
        self.breakers: Breakers = breakers or dict

    def job(self) -> ScheduledJob:
        return ScheduledJob(JOB, self.settings.alert_check_seconds, self.sessions, self.check)

    async def check(self, now: datetime | None = None) -> CheckResult:
        """Evaluate every condition, move the alert rows, and send what the webhook has not heard."""
        now = now or utcnow()
        async with self.sessions() as session:
            conditions = await evaluate(session, self.settings, self.breakers(), now, self.registry)
        result = CheckResult(firing=[c.key for c in conditions])
        async with self.sessions.begin() as session:
            result.resolved, notices = await _record(session, conditions, now, self._due_window(now))
        if self.settings.alert_webhook_url and notices:
            await self._deliver(notices, now, result)
        return result

    def _due_window(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(repeat firing alerts last heard before, catch up resolved alerts after) or None: no URL."""
        if not self.settings.alert_webhook_url:
            return None
        return now - timedelta(minutes=self.settings.alert_repeat_minutes), now - CATCH_UP

    async def _deliver(self, notices: list[Notice], now: datetime, result: CheckResult) -> None:
        url = str(self.settings.alert_webhook_url)
        timeout = httpx.Timeout(self.settings.alert_timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            for index, notice in enumerate(notices):
                body = render(notice, self.settings.alert_format)
                try:
                    response = await client.post(url, json=body)
                except httpx.HTTPError as exc:
                    # Receiver unreachable: the rest would wait for the same timeout. All of
                    # them stay due and go at the next check.
                    log.warning("alert.delivery_failed", alert=notice.key, error=type(exc).__name__)
                    result.failed.extend(notices[index:])
                    return
                if not response.is_success:
                    log.warning("alert.delivery_refused", alert=notice.key, status=response.status_code)
                    result.failed.append(notice)
                    continue
                async with self.sessions.begin() as session:
                    await alert_store.mark_notified(session, notice.key, notice.state, now)
                log.info("alert.sent", alert=notice.key, state=notice.state, repeat=notice.repeat)
                result.sent.append(notice)


# --- conditions ------------------------------------------------------------------------------


async def evaluate(
    session: AsyncSession,
    settings: Settings,
    breakers: Mapping[str, CircuitBreaker],
    now: datetime,
    registry: FlowRegistry | None = None,
) -> list[Condition]:
    return [
        *await dead_letter_conditions(session),
        *circuit_conditions(breakers),
        *await backlog_conditions(session, now, settings.alert_backlog_minutes, registry),
        *await order_sla_conditions(session, now, settings.alert_order_sla_minutes),
        *await reconcile_conditions(session),
        *await hold_conditions(session),
    ]


async def hold_conditions(session: AsyncSession) -> list[Condition]:
    """Per flow: events held by an anomaly rule, waiting for a release or a discard."""
    conditions = []
    for group in await anomaly_store.open_holds_by_flow(session):
        held = "event is" if group.count == 1 else "events are"
        summary = (
            f"Flow {group.flow}: {group.count} {held} held by an anomaly rule, waiting for review. "
            f"Newest: event {group.latest_event_id}, rule {group.latest_rule}: "
            f"{error_excerpt(group.latest_summary)}"
        )
        detail = {
            "flow": group.flow,
            "count": group.count,
            "latest": {
                "event_id": group.latest_event_id,
                "rule": group.latest_rule,
                "summary": error_excerpt(group.latest_summary),
                "held_at": group.latest_at.isoformat(),
            },
        }
        conditions.append(Condition(f"anomaly:hold:{group.flow}", "anomaly_hold", summary, detail))
    return conditions


async def dead_letter_conditions(session: AsyncSession) -> list[Condition]:
    """Per flow: unresolved dead letters of events that are still dead.

    Both checks, so a replay or discard that reopens or closes the event clears the alert even
    if the dead letter row were left unresolved.
    """
    conditions = []
    for group in await alert_store.dead_letters_by_flow(session):
        flow, count, dead = group.flow, group.count, group.latest
        letters = "dead letter" if count == 1 else "dead letters"
        error = error_excerpt(dead.error)
        summary = (
            f"Flow {flow} has {count} unresolved {letters}. Latest: event {dead.event_id}, "
            f"{dead.reason}"
            + (f" ({dead.error_class})" if dead.error_class else "")
            + (f": {error}" if error else ".")
            + _in_instances(group.instances)
        )
        detail = {
            "flow": flow,
            "count": count,
            "instances": dict(group.instances),
            "latest": {
                "event_id": dead.event_id,
                "dead_letter_id": dead.id,
                "reason": dead.reason,
                "error_class": dead.error_class,
                "error": error,
                "created_at": dead.created_at.isoformat(),
            },
        }
        conditions.append(Condition(f"dead_letters:{flow}", "dead_letters", summary, detail))
    return conditions


def _in_instances(counts: Mapping[str, int]) -> str:
    """The BNG instances concerned (`` Instances: eu 3, us 1.``); nothing when it is only the
    default one, so an installation without an instances file reads as before."""
    if not counts or set(counts) == {DEFAULT_INSTANCE}:
        return ""
    return " Instances: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) + "."


def error_excerpt(error: str | None) -> str | None:
    """The start of an error text, with personal data masked (e-mail addresses in M3 messages)."""
    if not error:
        return None
    text = " ".join(mask_text(error).split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def circuit_conditions(breakers: Mapping[str, CircuitBreaker]) -> list[Condition]:
    conditions = []
    for target, breaker in sorted(breakers.items()):
        if breaker.state is CircuitState.CLOSED:
            continue
        summary = (
            f"Circuit to {target} is {breaker.state.value.replace('_', '-')}: {target} keeps failing, "
            "calls are held back and events wait (nothing is dead-lettered for an outage)."
        )
        detail = {"target": target, "state": breaker.state.value, "observed_by": _process()}
        conditions.append(Condition(f"circuit:{target}", "circuit", summary, detail))
    return conditions


async def backlog_conditions(
    session: AsyncSession, now: datetime, minutes: float, registry: FlowRegistry | None
) -> list[Condition]:
    limit = now - timedelta(minutes=minutes)
    groups = await alert_store.open_events_by_flow(session)
    late = [
        (g.flow, g.count, g.oldest_received_at, g.instances) for g in groups if g.oldest_received_at < limit
    ]
    if not late:
        return []
    paused = await _paused_flows(session, registry)
    conditions = []
    for flow, count, oldest, instances in late:
        age = (now - oldest).total_seconds() / 60
        is_paused = flow in paused
        summary = (
            f"Backlog in flow {flow}: the oldest of {count} open events has waited {age:.0f} min "
            f"(limit {minutes:g} min)"
            + ("; the flow or its target is paused." if is_paused else ".")
            + _in_instances(instances)
        )
        detail = {
            "flow": flow,
            "open": count,
            "instances": dict(instances),
            "oldest_received_at": oldest.isoformat(),
            "oldest_age_minutes": round(age, 1),
            "limit_minutes": minutes,
            "paused": is_paused,
        }
        conditions.append(Condition(f"backlog:{flow}", "backlog", summary, detail))
    return conditions


async def order_sla_conditions(session: AsyncSession, now: datetime, minutes: float) -> list[Condition]:
    """BNG orders not in M3 ``minutes`` after their webhook: pending, processing, dead or held."""
    late = await alert_store.late_events(
        session,
        event_type=ORDER_EVENT,
        statuses=(*OPEN_STATUSES, EventStatus.DEAD.value, EventStatus.HELD.value),
        received_before=now - timedelta(minutes=minutes),
        limit=MAX_LISTED_ORDERS,
    )
    count = late.count
    if not count:
        return []
    orders: list[dict[str, Any]] = [
        {
            "order_id": _order_id(row.business_key) or f"event {row.id}",
            "event_id": row.id,
            "status": row.status,
            "received_at": row.received_at.isoformat(),
        }
        for row in late.first
    ]
    listed = ", ".join(o["order_id"] for o in orders)
    more = f" (+{count - len(orders)} more)" if count > len(orders) else ""
    orders_are = "order is" if count == 1 else "orders are"
    summary = f"{count} {orders_are} not in M3 after {minutes:g} min: {listed}{more}."
    detail = {"count": count, "sla_minutes": minutes, "orders": orders}
    return [Condition("order_sla", "order_sla", summary, detail)]


# Per kind that alerts: the classes that fire it, and what its findings are called.
RECONCILE_ALERTS = {
    "orders": (("never_arrived", "stuck"), "orders", "order_id"),
    "stock": (("drift", "missing_in_bng"), "balances", "balance"),
}


async def reconcile_conditions(session: AsyncSession) -> list[Condition]:
    """The newest finished order reconciliation found orders that never arrived (and were not
    taken in) or are stuck; the newest stock reconciliation found balances that drifted beyond
    its tolerance or are missing in BNG and were not corrected. Each resolves when a later run
    of its kind finds none. Per BNG instance: each instance's newest run of the kind."""
    conditions = []
    for kind, (classes, listed_as, key_name) in RECONCILE_ALERTS.items():
        for instance in await reconcile_store.run_instances(session, kind):
            latest = await reconcile_store.latest_open_findings(session, kind, classes, instance=instance)
            if latest is not None and latest.findings:
                conditions.append(_reconcile_condition(kind, instance, latest, listed_as, key_name))
    return conditions


def _reconcile_condition(
    kind: str, instance: str, latest: reconcile_store.OpenFindings, listed_as: str, key_name: str
) -> Condition:
    counts: dict[str, int] = {}
    for finding in latest.findings:
        counts[finding.finding] = counts.get(finding.finding, 0) + 1
    shown = latest.findings[:MAX_LISTED_ORDERS]
    listed = ", ".join(f.key for f in shown)
    more = len(latest.findings) - MAX_LISTED_ORDERS
    what = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in sorted(counts.items()))
    title = "Reconciliation" if kind == "orders" else f"{kind.capitalize()} reconciliation"
    if instance != DEFAULT_INSTANCE:
        title += f" of instance {instance}"
    summary = f"{title} run {latest.run_id}: {what}: {listed}{f' (+{more} more)' if more > 0 else ''}."
    detail: dict[str, Any] = {
        "run_id": latest.run_id,
        "counts": counts,
        listed_as: [{key_name: f.key, "finding": f.finding} for f in shown],
    }
    if instance == DEFAULT_INSTANCE:
        return Condition(f"reconcile:{kind}", "reconcile", summary, detail)
    return Condition(f"reconcile:{kind}:{instance}", "reconcile", summary, {**detail, "instance": instance})


def _order_id(business_key: str | None) -> str | None:
    if business_key and business_key.startswith("order:"):
        return business_key.removeprefix("order:")
    return business_key


async def _paused_flows(session: AsyncSession, registry: FlowRegistry | None) -> set[str]:
    if registry is not None:
        return await paused_event_types(session, registry)
    return {name for kind, name in await control_store.paused_switches(session) if kind == "flow"}


def _process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- state -----------------------------------------------------------------------------------


async def _record(
    session: AsyncSession,
    conditions: Sequence[Condition],
    now: datetime,
    due: tuple[datetime, datetime] | None,
) -> tuple[list[str], list[Notice]]:
    """Move the rows to what holds now; return (keys resolved now, notices due)."""
    recorded = await alert_store.record_conditions(session, conditions, now)
    if due is None:
        return recorded.resolved, []
    repeat_before, catch_up_after = due
    notices = []
    for row in sorted(recorded.rows, key=lambda r: (r.first_fired_at, r.key)):
        notice = Notice(row.key, row.kind, row.state, row.summary, row.detail or {}, row.first_fired_at)
        if row.state == FIRING:
            if row.notified_state != FIRING:
                notices.append(notice)
            elif row.last_notified_at is None or row.last_notified_at <= repeat_before:
                notices.append(replace(notice, repeat=True))
        elif row.notified_state == FIRING or (
            row.notified_state is None and row.resolved_at is not None and row.resolved_at >= catch_up_after
        ):
            notices.append(replace(notice, resolved_at=row.resolved_at, summary=resolved_summary(row)))
    return recorded.resolved, notices


def resolved_summary(row: Alert | Notice) -> str:
    detail = row.detail or {}
    if row.kind == "dead_letters":
        return f"Flow {detail.get('flow')} has no unresolved dead letters left (replayed or discarded)."
    if row.kind == "circuit":
        return f"Circuit to {detail.get('target')} is closed again: calls go through."
    if row.kind == "backlog":
        return f"Backlog in flow {detail.get('flow')} is back under {detail.get('limit_minutes'):g} min."
    if row.kind == "order_sla":
        return (
            f"Every order received more than {detail.get('sla_minutes'):g} min ago is in M3 (or was closed)."
        )
    if row.kind == "anomaly_hold":
        return f"Flow {detail.get('flow')} has no held events left (released or discarded)."
    if row.kind == "reconcile" and row.key == "reconcile:stock":
        return "The newest stock reconciliation run found no uncorrected drift or missing balance."
    if row.kind == "reconcile":
        return "The newest reconciliation run found no lost or stuck orders."
    return f"{row.key} cleared."


# --- formats ---------------------------------------------------------------------------------


def headline(notice: Notice) -> str:
    label = "RESOLVED" if notice.state == RESOLVED else ("STILL FIRING" if notice.repeat else "FIRING")
    return f"[{label}] {notice.summary}"


def render(notice: Notice, fmt: str) -> dict[str, Any]:
    """The JSON body for the receiver: ``slack``, ``teams`` (MessageCard, for the retiring Office 365
    connectors), ``teams_workflow`` (an Adaptive Card, for a Teams Workflows webhook) or ``generic``."""
    if fmt == "slack":
        return slack_message(notice)
    if fmt == "teams":
        return teams_message(notice)
    if fmt == "teams_workflow":
        return adaptive_card_message(notice)
    if fmt == "generic":
        return generic_message(notice)
    raise ValueError(f"alert format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def generic_message(notice: Notice) -> dict[str, Any]:
    return {
        "alert": notice.key,
        "kind": notice.kind,
        "state": notice.state,
        "repeat": notice.repeat,
        "summary": notice.summary,
        "detail": notice.detail,
        "fired_at": notice.fired_at.isoformat(),
        "resolved_at": notice.resolved_at.isoformat() if notice.resolved_at else None,
    }


def slack_message(notice: Notice) -> dict[str, Any]:
    """Slack incoming webhook: ``text`` (notifications, clients without blocks) plus blocks."""
    facts = _facts(notice)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(headline(notice))[:3000]}},
    ]
    if facts:
        fields = [
            {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"[:2000]} for name, value in facts
        ]
        blocks.append({"type": "section", "fields": fields[:10]})  # Slack allows 10 fields
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(_footer(notice))}]}
    )
    return {"text": headline(notice), "blocks": blocks}


def teams_message(notice: Notice) -> dict[str, Any]:
    """Teams incoming webhook (Office 365 connector): a legacy MessageCard."""
    label = "resolved" if notice.state == RESOLVED else ("still firing" if notice.repeat else "firing")
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "themeColor": "2E7D32" if notice.state == RESOLVED else "C62828",
        "summary": headline(notice)[:200],
        "title": f"m3bng alert {label}: {notice.key}",
        "text": notice.summary,
        "sections": [
            {
                "facts": [{"name": n, "value": v} for n, v in _facts(notice)]
                + [{"name": "Alert", "value": _footer(notice)}]
            }
        ],
    }


def adaptive_card_message(notice: Notice) -> dict[str, Any]:
    """Teams Workflows ("When a Teams webhook request is received" + "Post card in a chat or
    channel"): a message with one Adaptive Card attachment; Workflows take no MessageCard."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": headline(notice),
                "weight": "Bolder",
                "wrap": True,
                "color": "Good" if notice.state == RESOLVED else "Attention",
            },
            {"type": "FactSet", "facts": [{"title": n, "value": v} for n, v in _facts(notice)]},
            {"type": "TextBlock", "text": _footer(notice), "isSubtle": True, "size": "Small", "wrap": True},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _facts(notice: Notice) -> list[tuple[str, str]]:
    """Top-level detail values worth a line of their own (lists and nested objects shortened)."""
    facts = []
    for name, value in notice.detail.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
        elif isinstance(value, list):
            text = f"{len(value)} listed"
        else:
            text = str(value)
        facts.append((name.replace("_", " ").capitalize(), text[:500]))
    return facts


def _footer(notice: Notice) -> str:
    times = f"firing since {notice.fired_at:%Y-%m-%d %H:%M} UTC"
    if notice.resolved_at is not None:
        times += f", resolved {notice.resolved_at:%Y-%m-%d %H:%M} UTC"
    return f"m3bng alert {notice.key}, {times}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
