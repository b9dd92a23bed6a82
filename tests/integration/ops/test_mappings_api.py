"""``/api/v1/mappings`` end to end: the real app with in-process workers and the M3 simulator.
A published version is what the next order runs with, a rollback brings the old rule back, and
a read token changes nothing."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.runtime import Runtime
from tests.conftest import REPO_ROOT, LiveServer
from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN, OPS_TOKEN_ENTRIES, READ, bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ORDER = "order_to_cash"


def order(order_id: str) -> dict[str, Any]:
    """An order naming no warehouse: the mapping's default (var ``warehouse``) decides."""
    data = {k: v for k, v in sample("order.created").items() if k != "Warehouse"}
    return {**data, "OrderID": order_id, "Lines": data["Lines"][:1]}  # BIKE-100 is in 100 and 200


async def warehouse_of(ops: Ops, order_id: str) -> str:
    event = await ops.settle(await ops.send("order.created", order(order_id)))
    assert event.status == "done", event.last_error
    state = await ops.sim.state()
    [found] = [o for o in state["orders"].values() if o["head"].get("CUOR") == order_id]
    return str(found["head"]["WHLO"])


async def test_read_token_sees_mappings_but_cannot_change_them(ops: Ops) -> None:
    listed = (await ops.read.get("/api/v1/mappings")).json()["items"]
    [flow] = [f for f in listed if f["flow"] == ORDER]
    assert flow["live"]["version"] == 1 and flow["live"]["source"] == "file" and flow["conflict"] is None
    text = (await ops.read.get(flow["live"]["url"])).json()["text"]
    for method, url, body in (
        ("POST", f"/api/v1/mappings/{ORDER}/drafts", {"text": text}),
        ("POST", f"/api/v1/mappings/{ORDER}/versions/1/publish", {"comment": "x"}),
        ("POST", f"/api/v1/mappings/{ORDER}/versions/1/rollback", {"comment": "x"}),
        ("GET", "/api/v1/mappings/bundle", None),
        ("POST", "/api/v1/mappings/bundle", {}),
    ):
        response = await ops.read.request(method, url, json=body)
        assert response.status_code == 403, (method, url, response.text)
        assert "ops:admin" in response.json()["error"]["message"]
    versions = (await ops.read.get(f"/api/v1/mappings/{ORDER}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1]


async def test_a_version_as_field_tables(ops: Ops) -> None:
    """What the studio's flow page shows: each call's target fields and the rule filling them."""
    response = await ops.read.get(f"/api/v1/mappings/{ORDER}/versions/1/fields")
    assert response.status_code == 200, response.text
    table = response.json()
    assert table["vars"]["warehouse"] == "100" and table["trigger"] == ["order.created"]
    calls = {c["call"]: c for c in table["calls"]}
    assert calls["head"]["operation"] == "OIS100MI/AddBatchHead" and calls["line"]["for_each"] == "Lines"
    fields = {f["field"]: f for f in calls["head"]["fields"]}
    assert fields["WHLO"]["source"] == "path" and fields["WHLO"]["path"] == "Warehouse"
    assert fields["WHLO"]["default"] == "var `warehouse` (`100`)"
    assert fields["ORDT"]["conversion"] == "as date" and fields["ORDT"]["required"] is True
    assert fields["ORTP"]["source"] == "var" and fields["ORTP"]["var"] == "order_type = A01"
    assert (await ops.read.get(f"/api/v1/mappings/{ORDER}/versions/99/fields")).status_code == 404
    # Beside each M3 field, the tenant's metadata (the simulator serves Infor's published lists).
    assert calls["head"]["metadata"] == "tenant" and calls["head"]["unknown_fields"] == []
    whlo = fields["WHLO"]["m3"]
    assert whlo["name"] == "WHLO" and whlo["type"] == "A" and whlo["length"] == 3 and whlo["description"]
    assert fields["CUNO"]["m3"]["mandatory"] is True
    assert calls["head"]["missing_mandatory"] == []  # the shipped mapping fills every mandatory field


async def test_field_tables_flag_what_m3_does_not_have(ops: Ops) -> None:
    """A field M3's transaction has no input for, and a mandatory one left out, are named."""
    text = (await ops.admin.get(f"/api/v1/mappings/{ORDER}/versions/1")).json()["text"]
    cuno = "      CUNO: {from: _ctx.CUNO, required: true}\n"
    edited = text.replace(cuno, "      XXNO: {from: OrderID}\n", 1)
    assert edited != text
    draft = await ops.admin.post(f"/api/v1/mappings/{ORDER}/drafts", json={"text": edited})
    assert draft.status_code in (200, 201), draft.text
    version = draft.json()["version"]
    table = (await ops.read.get(f"/api/v1/mappings/{ORDER}/versions/{version}/fields")).json()
    head = {c["call"]: c for c in table["calls"]}["head"]
    assert head["unknown_fields"] == ["XXNO"]
    assert "CUNO" in [f["name"] for f in head["missing_mandatory"]]
    assert {f["field"]: f for f in head["fields"]}["XXNO"]["m3"] is None


async def test_publish_runs_the_new_version_and_rollback_the_old(
    ops: Ops, make_settings: Callable[..., Settings]
) -> None:
    assert await warehouse_of(ops, "SO-MV-1") == "100"
    v1 = (await ops.read.get(f"/api/v1/mappings/{ORDER}/versions/1")).json()

    bad = await ops.admin.post(
        f"/api/v1/mappings/{ORDER}/drafts",
        json={"text": v1["text"].replace("{var: order_type}", "{var: nope}")},
    )
    assert bad.status_code == 422, bad.text
    assert "order_to_cash.yaml:" in bad.text and "calls.head.fields.ORTP: unknown var 'nope'" in bad.text

    changed = v1["text"].replace('warehouse: "100"', 'warehouse: "200"')
    draft = await ops.admin.post(
        f"/api/v1/mappings/{ORDER}/drafts", json={"text": changed, "comment": "wh 200"}
    )
    assert draft.status_code == 201, draft.text
    assert (draft.json()["version"], draft.json()["state"]) == (2, "draft")
    assert await warehouse_of(ops, "SO-MV-2") == "100"  # a draft runs nowhere

    # A worker-only process (another Runtime on the same store) follows the publication too.
    other = Runtime.build(make_settings(mappings_refresh_seconds=0.1, ops_tokens=[]))
    await other.start(workers=False)
    try:
        published = await ops.admin.post(
            f"/api/v1/mappings/{ORDER}/versions/2/publish", json={"comment": "wh 200"}
        )
        assert published.status_code == 200, published.text
        assert published.json()["state"] == "live"
        assert await warehouse_of(ops, "SO-MV-3") == "200"
        deadline = time.monotonic() + 10
        while other.mappings[ORDER].spec.vars["warehouse"] != "200":
            assert time.monotonic() < deadline, "the other process never ran the published version"
            await asyncio.sleep(0.05)
    finally:
        await other.stop()

    event_id = await ops.send("order.created", order("SO-MV-4"))
    await ops.settle(event_id)
    detail = (await ops.read.get(f"/api/v1/transactions/{event_id}")).json()
    assert detail["mapping"]["version"] == 2
    assert detail["mapping"]["url"] == f"/api/v1/mappings/{ORDER}/versions/2"
    assert 'warehouse: "200"' in (await ops.read.get(detail["mapping"]["url"])).json()["text"]

    back = await ops.admin.post(f"/api/v1/mappings/{ORDER}/versions/1/rollback", json={"comment": "back"})
    assert back.status_code == 200, back.text
    assert (back.json()["version"], back.json()["based_on"]) == (3, 1)
    assert await warehouse_of(ops, "SO-MV-5") == "100"

    patch = (await ops.read.get(f"/api/v1/mappings/{ORDER}/diff", params={"from": 1, "to": 2})).json()["diff"]
    assert '+  warehouse: "200"' in patch
    audit = (await ops.admin.get("/api/v1/audit")).json()["items"]
    actions = [(a["action"], a["target_id"]) for a in audit if a["action"].startswith("mapping.")]
    assert sorted(actions) == [
        ("mapping.draft", f"{ORDER}/2"),
        ("mapping.publish", f"{ORDER}/2"),
        ("mapping.rollback", f"{ORDER}/3"),
    ]


async def test_bundle_export_and_import_through_the_api(ops: Ops) -> None:
    bundle = await ops.admin.get("/api/v1/mappings/bundle", params={"flow": ORDER})
    assert bundle.status_code == 200, bundle.text
    manifest = bundle.json()["manifest"]
    assert [f["flow"] for f in manifest["flows"]] == [ORDER] and manifest["m3bng_version"]
    landed = await ops.admin.post("/api/v1/mappings/bundle", json=bundle.json())
    assert landed.status_code == 201, landed.text
    [draft] = landed.json()["drafts"]
    assert (draft["flow"], draft["state"], draft["source"]) == (ORDER, "draft", "bundle")
    broken = {**bundle.json(), "texts": {ORDER: "flow: order_to_cash\n"}}
    refused = await ops.admin.post("/api/v1/mappings/bundle", json=broken)
    assert refused.status_code == 422 and "sha256" in refused.text
    missing = await ops.admin.get("/api/v1/mappings/bundle", params={"flow": "nope"})
    assert missing.status_code == 404 and "nope" in missing.text


async def test_a_file_changed_after_a_publish_is_reported_and_the_live_version_stays(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", folder)
    settings = make_settings(mappings_dir=folder, ops_tokens=OPS_TOKEN_ENTRIES, retention_run_seconds=0)
    async with live_server(settings) as server, server.client() as client:
        client.headers.update(bearer(ADMIN))
        text = (await client.get(f"/api/v1/mappings/{ORDER}/versions/1")).json()["text"]
        draft = await client.post(
            f"/api/v1/mappings/{ORDER}/drafts", json={"text": text.replace('"A01"', '"A05"')}
        )
        assert draft.status_code == 201, draft.text
        published = await client.post(f"/api/v1/mappings/{ORDER}/versions/2/publish", json={"comment": "A05"})
        assert published.status_code == 200, published.text

    path = folder / "order_to_cash.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('warehouse: "100"', 'warehouse: "300"'), encoding="utf-8"
    )
    async with live_server(settings) as server, server.client() as client:
        client.headers.update(bearer(READ))
        [flow] = [f for f in (await client.get("/api/v1/mappings")).json()["items"] if f["flow"] == ORDER]
        assert flow["live"]["version"] == 2 and flow["live"]["source"] == "studio"
        assert flow["conflict"]["file_name"] == "order_to_cash.yaml"
        assert (flow["conflict"]["live_version"], flow["conflict"]["file_version"]) == (2, 1)
        runtime = server.app.state.runtime
        assert runtime.mappings[ORDER].spec.vars == {"order_type": "A05", "warehouse": "100"}
