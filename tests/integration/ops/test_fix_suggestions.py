"""Fix suggestions against the real app and the M3 simulator: a mistyped SKU, a customer known
to M3 under another number, a value longer than M3's field, a known M3 message; preparing one is
a dry run (nothing replayed or audited) and its payload then replays the event for real."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.store.models import AuditEntry, Replay
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, ops_settings, running_ops

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


async def dead(ops: Ops, data: dict[str, Any]) -> int:
    event = await ops.settle(await ops.send("order.created", data))
    assert event.status == "dead", event.last_error
    return event.id


async def suggestions(ops: Ops, event_id: int, client: str = "read") -> dict[str, Any]:
    response = await getattr(ops, client).get(f"/api/v1/transactions/{event_id}/fix-suggestions")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def counts(ops: Ops, event_id: int) -> tuple[int, int]:
    async with ops.sessions() as session:
        replays = await session.scalar(
            select(func.count()).select_from(Replay).where(Replay.event_id == event_id)
        )
        audits = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.target_id == str(event_id))
        )
    return int(replays or 0), int(audits or 0)


async def test_mistyped_sku_suggests_the_item_and_the_prepared_payload_replays(ops: Ops) -> None:
    data = {**sample("order.created"), "OrderID": "SO-TYPO"}
    data["Lines"] = [{**data["Lines"][0], "SKU": "BIKE-10O"}, *data["Lines"][1:]]
    event_id = await dead(ops, data)

    found = await suggestions(ops, event_id)
    assert found["cause"]["kind"] == "missing_item" and found["cause"]["value"] == "BIKE-10O"
    first = found["suggestions"][0]
    assert first["kind"] == "replace_item" and first["title"].startswith("Use item BIKE-100")
    assert first["edit"] == [{"path": "data.Lines[0].SKU", "before": "BIKE-10O", "after": "BIKE-100"}]
    assert first["matched"]["ITNO"] > 0.9 and "MMS200MI/LstItmByItm" in first["why"]
    assert any(s["kind"] == "create_item" for s in found["suggestions"])  # product_sync is loaded

    # prepare: a dry run (read-only tokens may not)
    assert (
        await ops.read.post(f"/api/v1/transactions/{event_id}/fix-suggestions/1/prepare")
    ).status_code == 403
    before = await counts(ops, event_id)
    response = await ops.admin.post(f"/api/v1/transactions/{event_id}/fix-suggestions/1/prepare")
    assert response.status_code == 200, response.text
    prepared = response.json()
    assert prepared["dry_run"] is True and prepared["status"] == "dead" and prepared["mode"] == "from_start"
    assert prepared["diff"] == [
        {"path": "data.Lines[0].SKU", "before": "BIKE-10O", "after": "BIKE-100", "change": "changed"}
    ]
    assert await counts(ops, event_id) == before  # nothing replayed, nothing audited
    assert (await ops.settle(event_id)).status == "dead"

    # ops confirm: the replay request as prepared
    replay = prepared["replay"]
    response = await ops.admin.post(replay["path"], json=replay["body"])
    assert response.status_code == 202, response.text
    event = await ops.settle(event_id)
    assert event.status == "done", event.last_error
    state = await ops.sim.state()
    [order] = [o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-TYPO"]
    assert order["lines"][0]["ITNO"] == "BIKE-100"
    settled = await suggestions(ops, event_id)  # the dead letter is resolved: nothing to fix
    assert settled["cause"]["kind"] == "none" and "replayed" in settled["cause"]["message"]


async def test_replay_dry_run_checks_and_writes_nothing(ops: Ops) -> None:
    event_id = await ops.dead_order("SO-DRY", customer="C-DRY")
    before = await counts(ops, event_id)
    bad = await ops.replay.post(
        f"/api/v1/transactions/{event_id}/replay",
        json={"dry_run": True, "payload": {"type": "order.created", "timestamp": "x", "data": {}}},
    )
    assert bad.status_code == 422 and "payload." in bad.text
    good = await ops.replay.post(f"/api/v1/transactions/{event_id}/replay", json={"dry_run": True})
    assert good.status_code == 200, good.text
    assert good.json() == {
        "event_id": event_id,
        "replay_id": None,
        "mode": "from_failed_step",
        "status": "dead",
        "diff": [],
        "dry_run": True,
    }
    assert await counts(ops, event_id) == before


async def test_missing_customer_by_number_and_not_a_dead_letter(ops: Ops) -> None:
    event_id = await ops.dead_order("SO-CUST", customer="1O001")
    found = await suggestions(ops, event_id)
    assert found["cause"]["kind"] == "missing_customer"
    first = found["suggestions"][0]
    assert first["kind"] == "use_customer" and first["title"].startswith("Use customer 10001")
    assert first["edit"] == [{"path": "data.CustomerID", "before": "1O001", "after": "10001"}]
    done = await ops.settle(await ops.send("order.created", {**sample("order.created"), "OrderID": "SO-OK"}))
    none = await suggestions(ops, done.id)
    assert none["cause"]["kind"] == "none" and none["suggestions"] == []
    missing = await ops.read.get("/api/v1/transactions/999999/fix-suggestions")
    assert missing.status_code == 404
    beyond = await ops.replay.post(f"/api/v1/transactions/{event_id}/fix-suggestions/99/prepare")
    assert beyond.status_code == 404 and "no number 99" in beyond.text


async def test_value_too_long_is_cut_to_m3s_field_length(ops: Ops) -> None:
    event_id = await dead(ops, {**sample("order.created"), "OrderID": "SO-LONG", "Warehouse": "1000"})
    found = await suggestions(ops, event_id)
    assert found["cause"]["kind"] == "too_long" and found["cause"]["field"] == "WHLO"
    [cut] = [s for s in found["suggestions"] if s["kind"] == "truncate"]
    assert cut["edit"] == [{"path": "data.Warehouse", "before": "1000", "after": "100"}]
    assert "OIS100MI/AddBatchHead" in cut["why"]
    assert any(s["kind"] == "remedy" for s in found["suggestions"])  # the mapping-error remedy


async def test_known_m3_message_gets_its_remedy(ops: Ops) -> None:
    await ops.sim.faults()
    seed = await ops.sim.control.post(
        "/_sim/seed", json={"items": [{"ITNO": "BIKE-OLD", "ITDS": "Old bike", "STAT": "90", "UNMS": "PCS"}]}
    )
    seed.raise_for_status()
    data = {
        **sample("order.created"),
        "OrderID": "SO-BLOCKED",
        "Lines": [{"SKU": "BIKE-OLD", "Quantity": "1"}],
    }
    event_id = await dead(ops, data)
    found = await suggestions(ops, event_id)
    assert found["cause"]["kind"] == "m3_message" and found["cause"]["code"] == "XBL0001"
    [remedy] = found["suggestions"]
    assert remedy["kind"] == "remedy" and "MMS001" in remedy["action"] and remedy["edit"] == []
    assert "m3bng's own wording" in remedy["why"]
    prepared = (await ops.replay.post(f"/api/v1/transactions/{event_id}/fix-suggestions/1/prepare")).json()
    assert prepared["mode"] == "from_failed_step" and prepared["diff"] == []
    assert "payload" not in prepared["replay"]["body"]


@pytest.fixture
async def no_auto_create(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Any,
    tmp_path: Path,
) -> AsyncIterator[Ops]:
    """The service with an order mapping that does not create customers from the order."""
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, folder)
    path = folder / "order_to_cash.yaml"
    path.write_text(path.read_text().replace("auto_create_customer: true", "auto_create_customer: false"))
    server = live_server(ops_settings(make_settings, m3_sim, mappings_dir=folder), run_workers=True)
    async with running_ops(server, m3_sim, sessions) as ops:
        yield ops


async def test_missing_customer_by_email_and_name(no_auto_create: Ops) -> None:
    ops = no_auto_create
    seed = await ops.sim.control.post(
        "/_sim/seed",
        json={
            "customers": [
                {"CUNO": "30077", "CUNM": "Velo Sport AB", "MAIL": "anna.berg@velosport.example", "CUA1": "x"}
            ]
        },
    )
    seed.raise_for_status()
    customer = sample("customer.created")
    data = {**sample("order.created"), "OrderID": "SO-MAIL", "CustomerID": "C-2001", "Customer": customer}
    event_id = await dead(ops, data)
    found = await suggestions(ops, event_id, client="admin")
    first = found["suggestions"][0]
    assert first["kind"] == "use_customer" and first["title"].startswith("Use customer 30077")
    assert first["matched"]["MAIL"] == 1.0 and first["matched"]["CUNM"] == 1.0 and first["score"] == 1.0
    assert "e-mail identical (MAIL)" in first["why"]
    assert found["suggestions"][-1]["kind"] == "create_customer"
    prepared = (await ops.admin.post(f"/api/v1/transactions/{event_id}/fix-suggestions/1/prepare")).json()
    assert prepared["payload"]["data"]["CustomerID"] == "30077"
    assert prepared["payload"]["data"]["Customer"]["Email"] == "anna.berg@velosport.example"
    # without ops:admin the payload comes masked: the dashboard offers no edit then
    masked = (await ops.replay.post(f"/api/v1/transactions/{event_id}/fix-suggestions/1/prepare")).json()
    assert masked["personal_data_masked"] is True
    assert masked["payload"]["data"]["Customer"]["Email"] != "anna.berg@velosport.example"


async def test_m3_refusing_the_list_read_leaves_a_note(ops: Ops) -> None:
    data = {**sample("order.created"), "OrderID": "SO-M3ERR", "Lines": [{"SKU": "BIKE-10O", "Quantity": "1"}]}
    event_id = await dead(ops, data)
    await ops.sim.faults(programs=["MMS200MI/LstItmByItm"], error_rate=1.0)
    found = await suggestions(ops, event_id)
    await ops.sim.faults()
    assert [s["kind"] for s in found["suggestions"]] == ["create_item"]
    assert found["notes"] and "MMS200MI/LstItmByItm" in found["notes"][0]
