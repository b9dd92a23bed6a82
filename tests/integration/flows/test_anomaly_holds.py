"""Anomaly holds end to end: the real app, its workers and the M3 simulator over HTTP. A held
order sends nothing to M3; a release enters it exactly once; a discard closes it unsent."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.ops import alerts
from tests.conftest import LiveServer
from tests.integration.flows.conftest import Service, Sessions
from tests.integration.flows.test_orders import orders_for
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.integration.ops.test_cli import Run, m3bng_ops
from tests.support.ops import ADMIN, OPS_TOKEN_ENTRIES, READ, REPLAY, bearer

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


def holding_duplicates(tmp_path: Path) -> Path:
    """A copy of the mappings whose order_to_cash holds near-duplicates (and flags the rest)."""
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    path = folder / "order_to_cash.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["anomalies"] = {"rules": {"near_duplicate": {"action": "hold", "window_minutes": 10}}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture
async def service(
    m3_sim: SimHandle,  # noqa: F811
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
    tmp_path: Path,
) -> AsyncIterator[Service]:
    """The flows' service, with order_to_cash holding near-duplicates (and flagging the rest)."""
    folder = holding_duplicates(tmp_path)
    settings = make_settings(
        ionapi_file=m3_sim.ionapi,
        mappings_dir=folder,
        ops_tokens=OPS_TOKEN_ENTRIES,
        m3_timeout=1.0,
        retry_schedule=[0.05] * 6,
        worker_poll_interval=0.05,
        retention_run_seconds=0,
    )
    server = live_server(settings, run_workers=True)
    async with server, server.client() as client:
        yield Service(client, m3_sim, sessions)


def order(order_id: str) -> dict[str, Any]:
    return {**sample("order.created"), "OrderID": order_id}


async def test_a_held_order_reaches_m3_only_when_released_and_then_once(service: Service) -> None:
    first = await service.settle(await service.send("order.created", order("SO-1001")))
    assert first.status == "done", first.last_error

    # The same customer and lines under another order id, a moment later: held before any M3 call.
    twin_id = await service.send("order.created", order("SO-1002"))
    twin = await service.settle(twin_id)
    assert twin.status == "held" and twin.error_class == "anomaly", twin.last_error
    assert "SO-1001" in (twin.last_error or "")
    assert not [s for s in await service.steps(twin_id) if s.target == "m3"]
    assert orders_for(await service.state(), "SO-1002") == []

    holds = (await service.client.get("/api/v1/holds", headers=bearer(READ))).json()["items"]
    [hold] = [h for h in holds if h["event_id"] == twin_id]
    assert hold["rules"] == ["near_duplicate"] and hold["flow"] == "order_to_cash"
    [finding] = hold["findings"]
    assert finding["detail"]["history"][0]["order_id"] == "SO-1001"
    assert finding["detail"]["window_minutes"] == 10
    detail = (await service.client.get(f"/api/v1/transactions/{twin_id}", headers=bearer(READ))).json()
    assert detail["status"] == "held" and detail["anomalies"][0]["rule"] == "near_duplicate"
    listed = await service.client.get("/api/v1/transactions?status=held", headers=bearer(READ))
    assert [t["id"] for t in listed.json()["items"]] == [twin_id]

    async with service.sessions() as session:
        [alert] = await alerts.hold_conditions(session)
    assert alert.key == "anomaly:hold:order_to_cash" and alert.detail["latest"]["event_id"] == twin_id
    assert alert.detail["latest"]["rule"] == "near_duplicate" and alert.detail["count"] == 1
    async with service.sessions() as session:  # a held order is not in M3: the SLA counts it
        [sla] = await alerts.order_sla_conditions(session, datetime.now(UTC) + timedelta(hours=1), 30)
    assert [o["event_id"] for o in sla.detail["orders"]] == [twin_id]

    # Reading scope may not release; a generic replay points at the hold.
    refused = await service.client.post(f"/api/v1/holds/{twin_id}/release", headers=bearer(READ))
    assert refused.status_code == 403
    replayed = await service.client.post(f"/api/v1/transactions/{twin_id}/replay", headers=bearer(REPLAY))
    assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "held"
    generic = await service.client.post(
        f"/api/v1/transactions/{twin_id}/discard", json={"reason": "not here"}, headers=bearer(REPLAY)
    )
    assert generic.status_code == 409 and "holds" in generic.json()["error"]["message"]

    released = await service.client.post(
        f"/api/v1/holds/{twin_id}/release", json={"reason": "two real orders"}, headers=bearer(REPLAY)
    )
    assert released.status_code == 200, released.text
    assert released.json() == {"event_id": twin_id, "resolution": "released", "status": "pending"}
    done = await service.settle(twin_id)
    assert done.status == "done", done.last_error
    assert done.checkpoint["anomaly_release"]["by"] == "replay-user"
    assert len(orders_for(await service.state(), "SO-1002")) == 1
    again = await service.client.post(f"/api/v1/holds/{twin_id}/release", headers=bearer(REPLAY))
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_held"
    detail = (await service.client.get(f"/api/v1/transactions/{twin_id}", headers=bearer(READ))).json()
    assert detail["anomalies"][0]["resolution"] == "released"
    assert detail["anomalies"][0]["resolved_by"] == "replay-user"

    # A third copy is held and discarded: closed, never sent.
    third_id = await service.send("order.created", order("SO-1003"))
    assert (await service.settle(third_id)).status == "held"
    short = await service.client.post(
        f"/api/v1/holds/{third_id}/discard", json={"reason": ""}, headers=bearer(REPLAY)
    )
    assert short.status_code == 422 and "reason" in short.text
    discarded = await service.client.post(
        f"/api/v1/holds/{third_id}/discard", json={"reason": "double-clicked"}, headers=bearer(REPLAY)
    )
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert orders_for(await service.state(), "SO-1003") == []
    assert (await service.client.get("/api/v1/holds", headers=bearer(READ))).json()["items"] == []
    async with service.sessions() as session:
        assert await alerts.hold_conditions(session) == []  # the alert resolves

    audit = (await service.client.get("/api/v1/audit", headers=bearer(ADMIN))).json()["items"]
    assert {(a["action"], a["target_id"]) for a in audit} >= {
        ("release_hold", str(twin_id)),
        ("discard_hold", str(third_id)),
    }
    metrics = (await service.client.get("/metrics")).text
    assert 'm3bng_anomalies_total{action="hold",flow="order_to_cash",rule="near_duplicate"}' in metrics


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_cli_lists_releases_and_discards_holds(service: Service, tmp_path: Path) -> None:
    async def cli(token: str, *args: str) -> Run:
        return await m3bng_ops(*args, url=str(service.client.base_url), token=token, cwd=tmp_path)

    assert (await service.settle(await service.send("order.created", order("SO-2001")))).status == "done"
    held = [await service.settle(await service.send("order.created", order(f"SO-200{n}"))) for n in (2, 3)]
    assert [e.status for e in held] == ["held", "held"]

    listed = await cli(READ, "holds", "list", "--rule", "near_duplicate", "-v")
    assert listed.code == 0, listed.stderr
    assert "near_duplicate" in listed.stdout and "as order SO-2001" in listed.stdout
    assert f"transaction {held[0].id}:" in listed.stdout and "history:" in listed.stdout
    assert {item["event_id"] for item in (await cli(READ, "holds", "list", "--json")).json()["items"]} == {
        e.id for e in held
    }
    refused = await cli(READ, "holds", "release", str(held[0].id))
    assert refused.code == 1 and "ops:replay" in refused.stderr
    released = await cli(REPLAY, "holds", "release", str(held[0].id), "--reason", "genuine")
    assert released.code == 0 and "released" in released.stdout, released.stderr
    discarded = await cli(REPLAY, "holds", "discard", str(held[1].id), "--reason", "duplicate click")
    assert discarded.code == 0 and "discarded" in discarded.stdout, discarded.stderr
    assert (await service.settle(held[0].id)).status == "done"
    shown = await cli(READ, "tx", "show", str(held[0].id))
    assert "anomaly near_duplicate: hold (released by replay-user)" in shown.stdout
    assert len(orders_for(await service.state(), "SO-2002")) == 1
    assert orders_for(await service.state(), "SO-2003") == []
