"""The ops API with several BNG instances (issue 18, §7): every transaction and dead letter says
its instance, lists and bulk replay filter by it, ``GET /instances`` lists them (never a
secret), an instance pauses and resumes like a flow (audited; an unknown id is a 422), and the
event metrics carry the ``bng_instance`` label."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.store.models import AuditEntry, DeadLetter, Event
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.integration.ops.conftest import Ops, Sessions, ops_settings, running_ops
from tests.support.webhooks import signed_headers

EU_SECRET = "whsec_RVVpbnN0YW5jZXNlY3JldDAxMjM0NTY3"
EU_API_KEY = "eu-bng-api-key-0123456789abcdef"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
async def ops(
    m3_sim: SimHandle,  # noqa: F811
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Ops]:
    """The ops API of an installation with the instances default and eu; no workers, so the
    events put in stay as they are."""
    instances = tmp_path / "instances.yaml"
    instances.write_text(
        "instances:\n  eu:\n    description: EU webshop\n    bng_base_url: https://eu.shop.example/api\n"
    )
    monkeypatch.setenv("M3BNG_INSTANCE_EU_WEBHOOK_SECRETS", EU_SECRET)
    monkeypatch.setenv("M3BNG_INSTANCE_EU_BNG_API_KEY", EU_API_KEY)
    server = live_server(ops_settings(make_settings, m3_sim, instances_file=instances), run_workers=False)
    async with running_ops(server, m3_sim, sessions) as ops:
        yield ops


async def put_events(sessions: Sessions) -> dict[str, int]:
    """eu: one pending, one dead (with its dead letter); default: one pending."""

    def event(name: str, instance: str, status: str) -> Event:
        return Event(
            instance=instance,
            source="bng",
            external_id=f"msg_{name}",
            event_type="order.created",
            business_key=f"order:{name}",
            payload={"name": name},
            correlation_id=f"corr-{name}",
            status=status,
            attempts=1 if status == "dead" else 0,
            next_attempt_at=NOW,
            received_at=NOW,
            updated_at=NOW,
            checkpoint={},
        )

    async with sessions() as session, session.begin():
        events = {
            "eu_pending": event("SO-EU-1", "eu", "pending"),
            "eu_dead": event("SO-EU-2", "eu", "dead"),
            "default_pending": event("SO-DE-1", "default", "pending"),
        }
        session.add_all(events.values())
        await session.flush()
        session.add(
            DeadLetter(event_id=events["eu_dead"].id, reason="permanent_error", attempts=1, created_at=NOW)
        )
    return {name: e.id for name, e in events.items()}


async def test_lists_search_detail_and_bulk_replay_carry_and_filter_the_instance(ops: Ops) -> None:
    ids = await put_events(ops.sessions)

    everything = (await ops.read.get("/api/v1/transactions")).json()["items"]
    assert {(tx["id"], tx["instance"]) for tx in everything} == {
        (ids["eu_pending"], "eu"),
        (ids["eu_dead"], "eu"),
        (ids["default_pending"], "default"),
    }
    eu = (await ops.read.get("/api/v1/transactions", params={"instance": "eu"})).json()["items"]
    assert sorted(tx["id"] for tx in eu) == sorted([ids["eu_pending"], ids["eu_dead"]])
    found = await ops.read.get("/api/v1/transactions", params={"q": "SO-EU-1", "instance": "default"})
    assert found.json()["items"] == []
    detail = (await ops.read.get(f"/api/v1/transactions/{ids['eu_dead']}")).json()
    assert detail["instance"] == "eu"

    [dead] = (await ops.read.get("/api/v1/dead-letters", params={"instance": "eu"})).json()["items"]
    assert (dead["event_id"], dead["instance"]) == (ids["eu_dead"], "eu")
    assert (await ops.read.get("/api/v1/dead-letters", params={"instance": "default"})).json()["items"] == []
    summary = await ops.read.get("/api/v1/dead-letters/summary", params={"instance": "default"})
    assert summary.json()["total"] == 0
    for instance, (pending, dead, letters) in (("eu", (1, 1, 1)), ("default", (1, 0, 0)), (None, (2, 1, 1))):
        stats = (
            await ops.read.get("/api/v1/stats", params={"instance": instance} if instance else {})
        ).json()
        counts = stats["status_counts"]
        assert (counts["pending"], counts["dead"], stats["dead_letters"]) == (pending, dead, letters), (
            instance
        )

    for instance, matched in (("default", 0), ("eu", 1)):
        body = {"filter": {"instance": instance}, "dry_run": True}
        answer = await ops.replay.post("/api/v1/replays/bulk", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"matched": matched}, instance

    listed = await ops.read.get("/api/v1/instances")
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == [
        {
            "id": "default",
            "description": "",
            "bng_host": None,
            "paused": False,
            "reason": None,
            "pending": 1,
            "dead": 0,
        },
        {
            "id": "eu",
            "description": "EU webshop",
            "bng_host": "eu.shop.example",
            "paused": False,
            "reason": None,
            "pending": 1,
            "dead": 1,
        },
    ]
    assert EU_SECRET not in listed.text and EU_API_KEY not in listed.text
    assert (await ops.client.get("/api/v1/instances")).status_code == 401

    metrics = (await ops.client.get("/metrics")).text
    assert (
        'm3bng_backlog_events{bng_instance="eu",event_type="order.created",source="bng",status="pending"} 1.0'
        in (metrics)
    )
    assert 'm3bng_dead_letters{bng_instance="eu",event_type="order.created",source="bng"} 1.0' in metrics


async def test_an_instance_pauses_and_resumes_audited_and_received_events_are_labelled(ops: Ops) -> None:
    unknown = await ops.admin.post("/api/v1/control/pause", json={"kind": "instance", "name": "nope"})
    assert unknown.status_code == 422, unknown.text
    error = unknown.json()["error"]
    assert error["fields"] == [{"field": "name", "problem": "unknown instance 'nope'"}]
    assert "default, eu" in error["message"]
    forbidden = await ops.read.post("/api/v1/control/pause", json={"kind": "instance", "name": "eu"})
    assert forbidden.status_code == 403

    paused = await ops.admin.post(
        "/api/v1/control/pause", json={"kind": "instance", "name": "eu", "reason": "EU shop migration"}
    )
    assert paused.status_code == 200, paused.text
    assert (paused.json()["kind"], paused.json()["paused"]) == ("instance", True)
    [eu] = [i for i in (await ops.read.get("/api/v1/instances")).json()["items"] if i["id"] == "eu"]
    assert (eu["paused"], eu["reason"]) == (True, "EU shop migration")
    assert 'm3bng_paused{kind="instance",name="eu"} 1.0' in (await ops.client.get("/metrics")).text

    resumed = await ops.admin.post("/api/v1/control/resume", json={"kind": "instance", "name": "eu"})
    assert resumed.status_code == 200, resumed.text
    async with ops.sessions() as session:
        audited = (
            await session.execute(
                select(AuditEntry.action, AuditEntry.target_id)
                .where(AuditEntry.target_type == "instance")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [tuple(row) for row in audited] == [("pause", "eu"), ("resume", "eu")]

    content = json.dumps(
        {"type": "customer.created", "timestamp": "2026-11-24T10:00:00Z", "data": sample("customer.created")}
    ).encode()
    received = await ops.client.post(
        "/webhooks/bng/eu",
        content=content,
        headers=signed_headers(content, "msg_eu_metric", secret=EU_SECRET),
    )
    assert received.status_code == 202, received.text
    metrics = (await ops.client.get("/metrics")).text
    assert (
        'm3bng_events_received_total{bng_instance="eu",event_type="customer.created",source="bng"}' in metrics
    )
