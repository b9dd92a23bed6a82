"""Alerts end to end: the real app and workers make the conditions (dead letters, a backlog of
unprocessed orders), a real HTTP receiver stands in for Slack, Teams or any webhook.

Throttling and resolving are driven through ``Alerter.check(now=...)`` with a chosen clock while
another "process" holds the alerts lease (so the server's own loop stays out of the way); one test
runs the live loop of the server at a one-second interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import select

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.protection import CircuitBreaker
from m3bng.ops.alerts import Alerter
from m3bng.ops.controls import set_paused
from m3bng.store import queue, sql
from m3bng.store.models import Alert, SchedulerLease
from m3bng.store.sql import utcnow
from tests.conftest import AsgiServer, LiveServer, free_port
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, Sessions, ops_settings
from tests.support.ops import ADMIN, READ, REPLAY, bearer


class Receiver:
    """The alert webhook: records every POST body; answers ``status`` (503 = receiver broken)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            self.posts.append(await request.json())
            return Response("ok" if self.status == 200 else "unavailable", status_code=self.status)

        self.server = AsgiServer(app)
        self.url = f"{self.server.base_url}/hook"

    def texts(self) -> list[str]:
        return [post["text"] for post in self.posts]

    async def wait_for(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count:
            assert time.monotonic() < deadline, f"receiver got {self.texts()}, expected {count} posts"
            await asyncio.sleep(0.05)
        return self.texts()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    async with hook.server:
        yield hook


async def hold_alerts_lease(sessions: Sessions) -> None:
    """Another process runs the alerter: the server under test never gets the lease."""
    far = utcnow() + timedelta(days=1)
    async with sessions.begin() as session:
        row = {"name": "alerts", "owner": "another-process", "expires_at": far, "last_run_at": far}
        await session.execute(sql.upsert(session, SchedulerLease.__table__, ["name"], row))


@dataclass
class AlertOps(Ops):
    settings: Settings  # the server's (no webhook URL: the tests' own Alerter sends)


def alerter(ops: AlertOps, url: str, **settings: Any) -> Alerter:
    values = {"alert_webhook_url": url, "alert_repeat_minutes": 60.0, "alert_order_sla_minutes": 600.0}
    return Alerter(ops.settings.model_copy(update={**values, **settings}), ops.sessions)


async def alerts(ops: Ops, state: str = "all") -> dict[str, dict[str, Any]]:
    response = await ops.read.get("/api/v1/alerts", params={"state": state})
    assert response.status_code == 200, response.text
    return {item["key"]: item for item in response.json()["items"]}


@asynccontextmanager
async def serve(
    settings: Settings,
    live_server: Callable[..., LiveServer],
    sim: SimHandle,
    sessions: Sessions,
    workers: bool,
) -> AsyncIterator[AlertOps]:
    server = live_server(settings, run_workers=workers)
    async with server:
        plain, admin, replay, read = clients = [server.client() for _ in range(4)]
        for client, token in ((admin, ADMIN), (replay, REPLAY), (read, READ)):
            client.headers.update(bearer(token))
        try:
            yield AlertOps(server, plain, admin, replay, read, sim=sim, sessions=sessions, settings=settings)
        finally:
            for client in clients:
                await client.aclose()


@pytest.fixture
async def quiet_ops(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
) -> AsyncIterator[AlertOps]:
    """The app with workers, sending no alerts itself (no URL, and the lease held elsewhere)."""
    await hold_alerts_lease(sessions)
    async with serve(ops_settings(make_settings, m3_sim), live_server, m3_sim, sessions, True) as ops:
        yield ops


async def discard(ops: Ops, event_id: int) -> None:
    response = await ops.replay.post(
        f"/api/v1/transactions/{event_id}/discard", json={"reason": "customer closed, order cancelled"}
    )
    assert response.status_code == 200, response.text


async def test_dead_letter_fires_once_is_repeated_after_the_window_and_resolves(
    quiet_ops: AlertOps, receiver: Receiver
) -> None:
    ops = quiet_ops
    dead_id = await ops.dead_order("SO-ALERT-1")
    check = alerter(ops, receiver.url).check
    t0 = utcnow()

    first = await check(now=t0)
    assert first.firing == ["dead_letters:order.created"]
    [text] = receiver.texts()
    assert text.startswith("[FIRING] Flow order.created has 1 unresolved dead letter. Latest: event ")
    assert f"event {dead_id}, permanent_error (missing_reference): customer missing: BNG customer" in text

    # Still firing: nothing within the repeat window, one reminder after it.
    assert (await check(now=t0 + timedelta(minutes=30))).sent == []
    assert len(receiver.posts) == 1
    await check(now=t0 + timedelta(minutes=61))
    assert receiver.texts()[1].startswith("[STILL FIRING] Flow order.created has 1 unresolved")
    assert (await check(now=t0 + timedelta(minutes=62))).sent == []

    listed = await alerts(ops, "firing")
    assert listed["dead_letters:order.created"]["notified_state"] == "firing"
    assert listed["dead_letters:order.created"]["detail"]["count"] == 1
    assert listed["dead_letters:order.created"]["detail"]["latest"]["event_id"] == dead_id

    await discard(ops, dead_id)  # fixed: the order is not wanted after all
    resolved = await check(now=t0 + timedelta(minutes=63))
    assert resolved.resolved == ["dead_letters:order.created"]
    assert receiver.texts()[2] == (
        "[RESOLVED] Flow order.created has no unresolved dead letters left (replayed or discarded)."
    )
    assert (await check(now=t0 + timedelta(minutes=200))).sent == []
    assert len(receiver.posts) == 3
    assert await alerts(ops, "firing") == {}
    row = (await alerts(ops, "resolved"))["dead_letters:order.created"]
    assert row["notified_state"] == "resolved" and row["resolved_at"] is not None

    # The same flow dead-letters again later: a new episode, heard as "firing" again.
    await ops.dead_order("SO-ALERT-2")
    await check(now=t0 + timedelta(minutes=300))
    assert receiver.texts()[3].startswith("[FIRING] Flow order.created has 1 unresolved dead letter.")


async def test_a_receiver_that_is_down_hears_everything_later(
    quiet_ops: AlertOps, receiver: Receiver
) -> None:
    ops = quiet_ops
    dead_id = await ops.dead_order("SO-ALERT-DOWN")
    t0 = utcnow()

    receiver.status = 503  # the receiver answers, but refuses
    failed = await alerter(ops, receiver.url).check(now=t0)
    assert [n.key for n in failed.failed] == ["dead_letters:order.created"] and failed.sent == []
    assert (await alerts(ops))["dead_letters:order.created"]["notified_state"] is None

    # Nothing listens at all (connection refused), and the dead letter is discarded meanwhile.
    unreachable = alerter(ops, f"http://127.0.0.1:{free_port()}/hook", alert_timeout=2.0)
    assert [n.key for n in (await unreachable.check(now=t0 + timedelta(minutes=1))).failed] == [
        "dead_letters:order.created"
    ]
    await discard(ops, dead_id)
    gone = await unreachable.check(now=t0 + timedelta(minutes=2))
    assert gone.resolved == ["dead_letters:order.created"] and gone.sent == []

    # Back up: the firing was never heard, so the resolved message says what happened.
    receiver.status = 200
    back = await alerter(ops, receiver.url).check(now=t0 + timedelta(minutes=3))
    assert [(n.key, n.state) for n in back.sent] == [("dead_letters:order.created", "resolved")]
    assert receiver.posts[-1]["text"].startswith("[RESOLVED] Flow order.created has no unresolved")
    assert "firing since" in receiver.posts[-1]["blocks"][-1]["elements"][0]["text"]
    assert (await alerter(ops, receiver.url).check(now=t0 + timedelta(minutes=4))).sent == []
    assert len(receiver.posts) == 2  # the refused firing attempt, and the resolved message


async def test_no_webhook_url_tracks_alerts_without_sending(quiet_ops: AlertOps, receiver: Receiver) -> None:
    ops = quiet_ops
    await ops.dead_order("SO-ALERT-QUIET")
    result = await Alerter(ops.settings, ops.sessions).check()
    assert result.firing == ["dead_letters:order.created"] and result.sent == result.failed == []
    assert (await alerts(ops, "firing"))["dead_letters:order.created"]["notified_state"] is None
    assert receiver.posts == []


async def test_circuit_alert_follows_the_breakers(
    make_settings: Callable[..., Settings], sessions: Sessions, receiver: Receiver
) -> None:
    m3 = CircuitBreaker("m3", failure_threshold=2, reset_seconds=30)
    settings = make_settings(alert_webhook_url=receiver.url, alert_format="generic")
    check = Alerter(settings, sessions, breakers=lambda: {"m3": m3}).check
    m3.record_failure()
    m3.record_failure()  # M3 keeps failing: the circuit opens
    await check()
    [firing] = receiver.posts
    assert firing["alert"] == "circuit:m3" and firing["state"] == "firing"
    assert firing["detail"]["target"] == "m3" and firing["detail"]["state"] == "open"
    assert firing["summary"].startswith("Circuit to m3 is open")
    m3.record_success()  # the probe went through
    await check()
    assert receiver.posts[-1]["state"] == "resolved"
    assert receiver.posts[-1]["summary"] == "Circuit to m3 is closed again: calls go through."


async def test_backlog_and_order_sla_fire_while_no_worker_runs_and_resolve_when_drained(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
    receiver: Receiver,
) -> None:
    await hold_alerts_lease(sessions)
    settings = ops_settings(make_settings, m3_sim)
    # Workers are down: the webhooks are stored and acknowledged, and nothing processes them.
    async with serve(settings, live_server, m3_sim, sessions, workers=False) as ops:
        late = await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-LATE-1"})
        bad = {**sample("order.created"), "OrderID": "SO-LATE-2", "CustomerID": "C-MISSING"}
        stuck = await ops.send("order.created", bad)
    check = alerter(ops, receiver.url, alert_order_sla_minutes=30.0, alert_format="teams").check
    t0 = utcnow()
    assert (await check(now=t0 + timedelta(minutes=10))).firing == []
    fired = await check(now=t0 + timedelta(minutes=31))
    assert fired.firing == ["backlog:order.created", "order_sla"]
    cards = {card["title"]: card for card in receiver.posts}
    backlog = cards["m3bng alert firing: backlog:order.created"]
    assert backlog["text"].startswith(
        "Backlog in flow order.created: the oldest of 2 open events has waited 31 min"
    )
    sla = cards["m3bng alert firing: order_sla"]
    assert sla["text"] == "2 orders are not in M3 after 30 min: SO-LATE-1, SO-LATE-2."
    assert sla["@type"] == "MessageCard"

    # Workers are back: the backlog drains; one order is in M3, the other is dead (still late).
    async with serve(settings, live_server, m3_sim, sessions, workers=True) as ops:
        assert (await ops.settle(late)).status == "done"
        assert (await ops.settle(stuck)).status == "dead"
        partly = await check(now=t0 + timedelta(minutes=32))
        assert partly.resolved == ["backlog:order.created"]
        assert "order_sla" in partly.firing and "dead_letters:order.created" in partly.firing
        row = (await alerts(ops, "firing"))["order_sla"]
        assert [o["order_id"] for o in row["detail"]["orders"]] == ["SO-LATE-2"]
        await discard(ops, stuck)
        done = await check(now=t0 + timedelta(minutes=33))
    assert sorted(done.resolved) == ["dead_letters:order.created", "order_sla"]
    titles = [card["title"] for card in receiver.posts]
    assert titles.count("m3bng alert resolved: backlog:order.created") == 1
    assert titles.count("m3bng alert resolved: order_sla") == 1
    assert receiver.posts[-1]["themeColor"] == "2E7D32"


async def test_backlog_of_a_paused_flow_says_so(
    make_settings: Callable[..., Settings], sessions: Sessions, receiver: Receiver
) -> None:
    # The alerter reads only the store: a paused flow's event simply stays open.
    async with sessions.begin() as session:
        await set_paused(session, "flow", "customer.created", paused=True, reason="check", actor="t")
        await queue.insert_event_once(
            session,
            queue.NewEvent("bng", "paused-1", "customer.created", {"data": {}}, "customer:9", "c-1"),
        )
    check = Alerter(make_settings(alert_webhook_url=receiver.url), sessions).check
    result = await check(now=utcnow() + timedelta(minutes=16))
    assert result.firing == ["backlog:customer.created"]
    assert receiver.texts()[0].endswith("(limit 15 min); the flow or its target is paused.")


async def test_the_live_loop_fires_and_resolves(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
    receiver: Receiver,
) -> None:
    settings = ops_settings(make_settings, m3_sim, alert_webhook_url=receiver.url, alert_check_seconds=1)
    async with serve(settings, live_server, m3_sim, sessions, workers=True) as ops:
        dead_id = await ops.dead_order("SO-LIVE-1")
        [firing] = await receiver.wait_for(1)
        assert firing.startswith("[FIRING] Flow order.created has 1 unresolved dead letter.")
        await discard(ops, dead_id)
        texts = await receiver.wait_for(2)
        assert texts[1].startswith("[RESOLVED] Flow order.created has no unresolved dead letters left")
    async with sessions() as session:
        row = (
            await session.execute(select(Alert).where(Alert.key == "dead_letters:order.created"))
        ).scalar_one()
        lease = await session.get(SchedulerLease, "alerts")
    assert row.state == row.notified_state == "resolved"
    assert lease is not None and lease.owner is not None and lease.owner.startswith("alerts-")


async def test_alerts_need_a_token_and_a_valid_state(quiet_ops: AlertOps) -> None:
    ops = quiet_ops
    assert (await ops.client.get("/api/v1/alerts")).status_code == 401
    response = await ops.read.get("/api/v1/alerts", params={"state": "open"})
    assert response.status_code == 422 and "state" in response.json()["error"]["message"]
    assert (await ops.read.get("/api/v1/alerts")).json() == {"items": []}
