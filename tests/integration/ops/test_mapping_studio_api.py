"""The studio's tools through the API, against the real app, workers and M3 simulator: form
edits of the text, a preview of a recorded order (draft beside live, values judged by the
tenant's metadata), the metadata search, and the dead letters a published version could fix."""

from __future__ import annotations

from typing import Any

import pytest

from m3bng.connectors.bng.samples import sample
from tests.integration.ops.conftest import Ops

ORDER = "order_to_cash"
URL = f"/api/v1/mappings/{ORDER}"


async def live_text(ops: Ops) -> str:
    return str((await ops.read.get(f"{URL}/versions/1")).json()["text"])


async def edit(ops: Ops, text: str, **change: Any) -> str:
    response = await ops.admin.post(f"{URL}/edit", json={"text": text, **change})
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


def head_of(calls: list[dict[str, Any]]) -> dict[str, Any]:
    [head] = [c for c in calls if c["call"] == "head"]
    return head


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_edit_search_and_preview_a_recorded_order(ops: Ops) -> None:
    order = {**sample("order.created"), "OrderID": "SO-PREVIEW-1"}
    event = await ops.settle(await ops.send("order.created", order))
    assert event.status == "done", event.last_error

    # The metadata search finds "Reference at customer" by words of its description.
    found = await ops.read.get(
        "/api/v1/mappings/m3-fields/OIS100MI/AddBatchHead", params={"q": "reference", "exclude": ["CUOR"]}
    )
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["metadata"] == "tenant"
    names = [f["name"] for f in body["items"]]
    assert {"YREF", "NREF"} <= set(names) and "CUOR" not in names  # OREF: "Our referens"
    yref = next(f for f in body["items"] if f["name"] == "YREF")
    assert (yref["description"], yref["type"], yref["length"]) == ("Reference at customer", "A", 30)
    assert (
        await ops.read.get("/api/v1/mappings/m3-fields/OIS100MI/AddBatchHead", params={"q": "YREF"})
    ).json()["items"][0]["name"] == "YREF"

    # Two form edits: the warehouse default, and the field the search found.
    text = await live_text(ops)
    text = await edit(
        ops, text, call="head", field="WHLO", rule={"from": "Warehouse", "default": {"value": "200"}}
    )
    text = await edit(ops, text, call="head", field="YREF", rule={"from": "CustomerID", "max_length": 30})
    assert "      WHLO: {from: Warehouse, default: {value: '200'}}" in text
    assert "      YREF: {from: CustomerID, max_length: 30}" in text
    both = await ops.admin.post(
        f"{URL}/edit", json={"text": text, "base": await live_text(ops), "var": "order_type", "value": "A02"}
    )
    assert [line for line in both.json()["diff"].splitlines() if line[:2] in ("+ ", "- ")] == [
        '-  order_type: "A01"          # ORTP',
        '+  order_type: "A02"          # ORTP',
        "-      WHLO: {from: Warehouse, default: {var: warehouse}}",
        "+      WHLO: {from: Warehouse, default: {value: '200'}}",
        "+      YREF: {from: CustomerID, max_length: 30}",
    ]

    # The working copy as the field table, each rule as the YAML writes it (what the form edits).
    table = await ops.read.post(f"{URL}/fields", json={"text": text})
    assert table.status_code == 200, table.text
    assert table.json()["version"] is None
    [head_call] = [c for c in table.json()["calls"] if c["call"] == "head"]
    rules = {f["field"]: f for f in head_call["fields"]}
    assert rules["YREF"]["spec"] == {"from": "CustomerID", "max_length": 30}
    assert rules["YREF"]["m3"]["description"] == "Reference at customer"
    assert rules["WHLO"]["spec"] == {"from": "Warehouse", "default": {"value": "200"}}

    # The path picker: the recorded order's paths and values, a line's as _line.…, and what the
    # flow had found as _ctx.….
    paths = await ops.read.post(f"{URL}/paths", json={"event_id": event.id, "call": "line"})
    assert paths.status_code == 200, paths.text
    found_paths = {p["path"]: p["example"] for p in paths.json()["paths"]}
    assert found_paths["OrderID"] == "SO-PREVIEW-1" and found_paths["Lines"] == "a list of 3"
    assert found_paths["Lines[0].SKU"] == found_paths["_line.SKU"] == "BIKE-100"
    assert found_paths["_ctx.CUNO"] == "10001"

    # The preview of the recorded order: the order names warehouse 100, so only YREF differs;
    # the customer comes from the event's checkpoint, not a placeholder.
    preview = await ops.read.post(f"{URL}/preview", json={"text": text, "event_id": event.id})
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["input"] == {
        "kind": "event",
        "event_id": event.id,
        "event_type": "order.created",
        "business_key": "order:SO-PREVIEW-1",
        "status": "done",
    }
    live, draft = head_of(shown["live"]["calls"]), head_of(shown["draft"]["calls"])
    assert shown["live"]["version"] == 1 and shown["draft"]["version"] is None
    assert live["record"]["CUNO"] == draft["record"]["CUNO"] == "10001"
    assert "YREF" not in live["record"] and draft["record"]["YREF"] == "10001"
    assert draft["changed"] == ["YREF"] and draft["problems"] == [] and draft["metadata"] == "tenant"
    assert shown["differing_calls"] == 1

    # Without the order's warehouse, the new default shows; a field M3 does not have is named.
    bad = await edit(ops, text, call="head", field="ZZZZ", rule={"value": "1"})
    no_warehouse = {k: v for k, v in order.items() if k != "Warehouse"}
    preview = await ops.read.post(f"{URL}/preview", json={"text": bad, "sample": {"data": no_warehouse}})
    assert preview.status_code == 200, preview.text
    head = head_of(preview.json()["draft"]["calls"])
    assert (
        head["record"]["WHLO"] == "200"
        and head_of(preview.json()["live"]["calls"])["record"]["WHLO"] == "100"
    )
    assert head["problems"] == [
        {"field": "ZZZZ", "problem": "is not an input field of OIS100MI/AddBatchHead"}
    ]
    assert {"WHLO", "YREF", "ZZZZ"} <= set(head["changed"])
    assert head["record"]["CUNO"] == "<CUNO>"  # only a running flow knows it: shown, not judged

    # No payload named: the shipped sample of the trigger.
    plain = (await ops.read.post(f"{URL}/preview", json={})).json()
    assert plain["input"]["kind"] == "shipped_sample" and plain["draft"] is None
    assert [c["call"] for c in plain["live"]["calls"]].count("line") == 3

    # What the text does not take is refused, naming the part; a read token may not edit.
    for change, where, words in (
        ({"call": "nope", "field": "WHLO", "rule": {"from": "X"}}, "call", "no call 'nope'"),
        ({"call": "head", "field": "WHLO", "rule": {"from": "X", "var": "w"}}, "rule", "exactly one of"),
        ({"call": "head", "field": "ORTP", "rule": {"var": "nope"}}, "text", "unknown var 'nope'"),
        ({"var": "warehouse"}, "value", "needs a value"),
    ):
        refused = await ops.admin.post(f"{URL}/edit", json={"text": text, **change})
        assert refused.status_code == 422, refused.text
        [problem] = refused.json()["error"]["fields"]
        assert problem["field"] == where and words in problem["problem"], problem
    assert (
        await ops.read.post(f"{URL}/edit", json={"text": text, "var": "w", "value": 1})
    ).status_code == 403
    other = await ops.read.post(f"{URL}/preview", json={"event_id": 10**12})
    assert other.status_code == 404, other.text


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_after_a_publish_the_dead_letters_it_could_fix_are_offered_and_replayed(ops: Ops) -> None:
    """On PostgreSQL, whose dead letters (and the failed step they name) are written by the
    one-statement outcome; the Playwright test covers SQLite."""
    # Dead under version 1: an order naming a warehouse M3 does not have, and one for a
    # customer M3 does not have (it failed creating the customer: a call of another mapping).
    lost_warehouse = {**sample("order.created"), "OrderID": "SO-WH-999", "Warehouse": "999"}
    fixable = await ops.settle(await ops.send("order.created", lost_warehouse))
    assert fixable.status == "dead", fixable.last_error
    unfixable = await ops.dead_order("SO-NO-CUSTOMER")
    # ... and one for an item M3 does not have: its failed call (the item check) is the same
    # under either version.
    no_item = {**sample("order.created"), "OrderID": "SO-NO-ITEM"}
    no_item["Lines"] = [{**no_item["Lines"][0], "SKU": "NOPE-1"}]
    assert (await ops.settle(await ops.send("order.created", no_item))).status == "dead"

    # Version 2 always ships from the installation's warehouse.
    text = await live_text(ops)
    text = await edit(ops, text, call="head", field="WHLO", rule={"var": "warehouse"})
    text = await edit(ops, text, call="line", field="WHLO", rule={"var": "warehouse"})
    draft = await ops.admin.post(f"{URL}/drafts", json={"text": text, "comment": "one warehouse"})
    assert draft.status_code == 201, draft.text
    published = await ops.admin.post(f"{URL}/versions/2/publish", json={"comment": "one warehouse"})
    assert published.status_code == 200, published.text

    dry = await ops.read.get(f"{URL}/replay-candidates")
    assert dry.status_code == 200, dry.text
    offer = dry.json()
    assert offer["live_version"] == 2 and offer["dead"] == 3
    assert [c["event_id"] for c in offer["fixable"]] == [fixable.id]
    assert offer["fixable"][0]["failed_with"] == 1
    assert (offer["unchanged"], offer["elsewhere"], offer["not_compared"]) == (1, 1, 0), offer

    # Replaying needs ops:replay; ids the dry run does not offer are not replayed.
    body = {"event_ids": [fixable.id, unfixable], "reason": "warehouse rule fixed"}
    assert (await ops.read.post(f"{URL}/replay-candidates", json=body)).status_code == 403
    done = await ops.replay.post(f"{URL}/replay-candidates", json=body)
    assert done.status_code == 200, done.text
    assert done.json() == {"replayed": [fixable.id], "not_candidates": [unfixable]}
    replayed = await ops.settle(fixable.id)
    assert replayed.status == "done", replayed.last_error
    state = await ops.sim.state()
    [entered] = [o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-WH-999"]
    assert entered["head"]["WHLO"] == "100"
    audit = (await ops.admin.get("/api/v1/audit")).json()["items"]
    assert any(a["action"].startswith("replay") and a["target_id"] == str(fixable.id) for a in audit), audit

    # Replayed and done: no longer offered.
    assert (await ops.read.get(f"{URL}/replay-candidates")).json()["fixable"] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_poller_polls_with_a_version_published_after_it_started(ops: Ops) -> None:
    """The poller and the scheduled reconciliations are built once per process; they ask the
    process for the live versions at each run, so a studio publication reaches them too."""
    runtime = ops.server.app.state.runtime
    runtime.settings = runtime.settings.model_copy(update={"inventory_poll_seconds": 60})
    poller = runtime.new_poller()
    assert poller is not None
    text = str((await ops.read.get("/api/v1/mappings/inventory_poll/versions/1")).json()["text"])
    changed = await ops.admin.post(
        "/api/v1/mappings/inventory_poll/edit",
        json={"text": text, "call": "balance", "field": "Allocated", "remove": True},
    )
    assert changed.status_code == 200, changed.text
    draft = await ops.admin.post(
        "/api/v1/mappings/inventory_poll/drafts", json={"text": changed.json()["text"]}
    )
    assert draft.status_code == 201, draft.text
    before = poller.mapping.content_hash
    published = await ops.admin.post(
        f"/api/v1/mappings/inventory_poll/versions/{draft.json()['version']}/publish", json={"comment": "x"}
    )
    assert published.status_code == 200, published.text
    assert poller.mapping.content_hash == published.json()["content_hash"] != before
    assert "Allocated" not in poller.mapping.bng_call("balance").fields


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_previews_and_paths_mask_personal_data_without_ops_admin(ops: Ops) -> None:
    """The preview and the path picker show payload values: a read token sees them masked, as in
    the transaction detail; an admin sees them as they are sent."""
    url = "/api/v1/mappings/customer_sync"
    email = sample("customer.created")["Email"]
    for client, expected in ((ops.read, "a***@v***.example"), (ops.admin, email)):
        preview = await client.post(f"{url}/preview", json={})
        assert preview.status_code == 200, preview.text
        mails = {c["record"]["MAIL"] for c in preview.json()["live"]["calls"] if "MAIL" in c["record"]}
        assert mails == {expected}
        paths = (await client.post(f"{url}/paths", json={})).json()["paths"]
        assert {p["path"]: p["example"] for p in paths}["Email"] == expected
