"""GET /api/v1/transactions and /transactions/{id} on the real app: paging, every filter, search
by business key ("where is order X"), the detail of a transaction, personal data masking."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import insert, update

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.store.models import DeadLetter, Event, Replay, Step
from m3bng.store.sql import utcnow
from tests.conftest import LiveServer
from tests.integration.ion.conftest import BEARER as ION_BEARER
from tests.integration.ion.conftest import TOKEN as ION_TOKEN
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, Sessions, ops_settings
from tests.support.ops import READ, bearer
from tests.unit.ion.bods import bod

URL = "/api/v1/transactions"


async def ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def detail(client: httpx.AsyncClient, event_id: int) -> dict[str, Any]:
    response = await client.get(f"{URL}/{event_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: httpx.Response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


async def test_pages_walk_every_id_once_newest_first_and_new_events_do_not_shift_them(ops: Ops) -> None:
    sent = [
        await ops.send("customer.created", {**sample("customer.created"), "CustomerID": f"C-P{i}"})
        for i in range(7)
    ]
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        response = await ops.read.get(URL, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        if pages == 1:  # arrives mid-walk: newer than every cursor, so it never enters these pages
            late = await ops.send("customer.created", {**sample("customer.created"), "CustomerID": "C-LATE"})
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 3
    assert pages == 3
    assert seen == sorted(sent, reverse=True)
    assert (await ids(ops.read, limit=3))[0] == late  # the next first page starts with it


async def test_every_filter(ops: Ops) -> None:
    order = (await ops.settle(await ops.send("order.created"))).id
    customer = (await ops.settle(await ops.send("customer.created"))).id
    dead = await ops.dead_order()

    assert await ids(ops.read) == [dead, customer, order]
    assert await ids(ops.read, status="dead") == [dead]
    assert await ids(ops.read, status=["done", "dead"]) == [dead, customer, order]
    assert await ids(ops.read, status="pending") == []
    assert await ids(ops.read, event_type="customer.created") == [customer]
    assert await ids(ops.read, event_type=["order.created", "customer.created"]) == [dead, customer, order]
    assert await ids(ops.read, source="bng") == [dead, customer, order]
    assert await ids(ops.read, source="ion") == []
    assert await ids(ops.read, error_class="missing_reference") == [dead]
    # M3 program: the events with a step calling it (the dead order never got past the customer).
    assert await ids(ops.read, program="OIS100MI") == [order]
    assert await ids(ops.read, program="ois100mi/confirm") == [order]
    assert await ids(ops.read, program="CRS610MI/Add") == [customer]
    assert await ids(ops.read, program="CRS610MI") == [dead, customer, order]
    # Filters combine with AND.
    assert await ids(ops.read, event_type="order.created", status="done") == [order]

    # Time range on received_at: since inclusive, until exclusive, any ISO 8601 form.
    received = (await detail(ops.read, customer))["received_at"]
    assert await ids(ops.read, since=received) == [dead, customer]
    assert await ids(ops.read, until=received) == [order]
    assert await ids(ops.read, since="2000-01-01", until="2999-01-01T00:00:00+02:00") == [
        dead,
        customer,
        order,
    ]

    for params, name in (
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"status": "broken"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),  # M3BNG_OPS_PAGE_SIZE_MAX is 200 by default
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        response = await ops.read.get(URL, params=params)
        assert name in error_of(response), params
        assert any(name in field["field"] for field in response.json()["error"]["fields"])


async def test_search_by_every_business_key(ops: Ops) -> None:
    order = await ops.settle(await ops.send("order.created"))  # SO-1001 for M3 customer 10001
    customer = await ops.settle(await ops.send("customer.created"))  # C-2001
    assert (order.status, customer.status) == ("done", "done")
    order_detail = await detail(ops.read, order.id)
    # The real ORNO is what OIS100MI/Confirm answers (the batch ORNO was temporary), checkpointed.
    [confirm] = [s for s in order_detail["steps"] if s["operation"] == "OIS100MI/Confirm"]
    orno = confirm["response"][0]["ORNO"]
    assert order_detail["checkpoint"]["ORNO"] == orno

    for q in ("SO-1001", "so-1001", "  SO-1001 ", orno, "10001", "order:SO-1001", order.external_id):
        assert await ids(ops.read, q=q) == [order.id], q
    for q in ("C-2001", "c-2001", customer.checkpoint["CUNO"]):
        assert await ids(ops.read, q=q) == [customer.id], q
    assert await ids(ops.read, q="SO-9999") == []
    assert await ids(ops.read, q="SO-1001", status="dead") == []
    kinds = {key["value"]: key["kind"] for key in order_detail["keys"]}
    assert kinds["so-1001"] == "order_id" and kinds[orno.casefold()] == "orno"


async def test_bods_are_found_by_bodid_while_pending_and_once_finished(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
) -> None:
    # No BNG configured: a customer BOD waits for it (pending); a carrier BOD no flow handles is
    # closed as skipped, and its keys are indexed with that outcome.
    settings = ops_settings(make_settings, m3_sim, ion_inbound_token=ION_TOKEN)
    async with live_server(settings, run_workers=True) as server, server.client() as client:
        client.headers.update(bearer(READ))

        async def post(name: str) -> int:
            response = await client.post(
                "/ion/bod", content=bod(name), headers={**ION_BEARER, "Content-Type": "application/xml"}
            )
            assert response.status_code == 202, response.text
            return int(response.json()["event_id"])

        waiting = await post("SyncCustomerPartyMaster.xml")
        bodid = "infor-nid:ACME_PRD:770_AAA::10001:?CustomerPartyMaster&verb=Sync&variationID=7"
        assert await ids(client, q=bodid) == [waiting]
        waiting_detail = await detail(client, waiting)
        # Its keys are indexed with its first outcome: none yet, or (once the worker put it back
        # to wait for BNG) the BODID's; either way the search above found it by its BODID.
        assert waiting_detail["status"] in ("pending", "processing")
        business_key = "CustomerPartyMaster:770_AAA:10001"  # indexed too (ops/keys.py)
        assert {k["value"] for k in waiting_detail["keys"]} <= {
            bodid.casefold(),
            "10001",
            business_key.casefold(),
        }

        skipped = await post("SyncCarrierParty.xml")
        deadline = time.monotonic() + 30
        while (await detail(client, skipped))["status"] != "skipped":
            assert time.monotonic() < deadline, "the carrier BOD was never closed"
            await asyncio.sleep(0.05)
        carrier_bodid = "infor-nid:ACME_PRD:770::DHL:?CarrierParty&verb=Sync&variationID=1"
        assert await ids(client, q=carrier_bodid) == [skipped]
        assert await ids(client, q=carrier_bodid.upper()) == [skipped]  # indexed: case-insensitive
        assert await ids(client, source="ion", status="skipped") == [skipped]
        keys = {key["value"]: key["kind"] for key in (await detail(client, skipped))["keys"]}
        assert keys[carrier_bodid.casefold()] == "bodid"


async def test_detail_shows_the_whole_story(ops: Ops) -> None:
    data = sample("order.created")
    order = await ops.settle(await ops.send("order.created", data))
    body = await detail(ops.read, order.id)
    assert body["payload"]["data"] == data and body["purged_at"] is None
    assert body["status"] == "done" and body["attempts"] == 1 and body["finished_at"]
    assert body["mapping"]["name"] == "order_to_cash"
    assert body["mapping"]["hash"] == body["mapping"]["current_hash"] == body["mapping_hash"]
    assert body["mapping"]["changed"] is False
    operations = [step["operation"] for step in body["steps"]]
    assert operations[-1] == "OIS100MI/Confirm" and "OIS100MI/AddBatchHead" in operations
    assert [step["id"] for step in body["steps"]] == sorted(step["id"] for step in body["steps"])
    head = body["steps"][operations.index("OIS100MI/AddBatchHead")]
    assert head["request"]["CUOR"] == "SO-1001" and head["response"][0]["ORNO"]
    assert head["status"] == "ok" and head["attempt"] == 1 and head["duration_ms"] >= 0
    assert body["dead_letter"] is None and body["replays"] == []

    dead_id = await ops.dead_order()
    dead = await detail(ops.read, dead_id)
    letter = dead["dead_letter"]
    assert (letter["reason"], letter["error_class"], letter["resolved_at"]) == (
        "permanent_error",
        "missing_reference",
        None,
    )
    failed = [step for step in dead["steps"] if step["status"] == "failed"]
    assert letter["failed_step_id"] == failed[-1]["id"] and failed[-1]["error"]
    assert dead["last_error"] == letter["error"]

    # What other parts of the service write later: a replay, a changed mapping, a purged payload.
    async with ops.sessions.begin() as session:
        await session.execute(
            insert(Replay).values(
                event_id=dead_id,
                mode="from_start",
                requested_by="replay-user",
                edited_payload={"data": {}},
                from_status="dead",
                created_at=utcnow(),
            )
        )
        await session.execute(
            update(Event)
            .where(Event.id == dead_id)
            .values(mapping_hash="0" * 64, payload=None, purged_at=utcnow())
        )
    dead = await detail(ops.read, dead_id)
    assert [(r["mode"], r["requested_by"], r["edited"]) for r in dead["replays"]] == [
        ("from_start", "replay-user", True)
    ]
    assert dead["mapping"]["hash"] == "0" * 64 and dead["mapping"]["changed"] is True
    assert dead["mapping"]["current_hash"] == body["mapping"]["current_hash"]
    assert dead["payload"] is None and dead["purged_at"] is not None

    missing = await ops.read.get(f"{URL}/987654")
    assert "987654" in error_of(missing, 404) and missing.json()["error"]["code"] == "not_found"
    assert "event_id" in error_of(await ops.read.get(f"{URL}/abc"))
    assert (await ops.client.get(f"{URL}/{order.id}")).status_code == 401
    assert (await ops.client.get(URL)).status_code == 401


async def test_personal_data_is_masked_unless_admin(ops: Ops) -> None:
    data = sample("customer.created")
    customer = await ops.settle(await ops.send("customer.created", data))
    assert customer.status == "done", customer.last_error
    dead_id = await ops.dead_order()
    # An M3 message that echoes the value it refused (as real MI errors can).
    echoed = "MAIL anna.berg@velosport.example is not valid"
    async with ops.sessions.begin() as session:
        await session.execute(update(Event).where(Event.id == dead_id).values(last_error=echoed))
        await session.execute(update(DeadLetter).where(DeadLetter.event_id == dead_id).values(error=echoed))
        await session.execute(update(Step).where(Step.event_id == dead_id).values(error=echoed))

    read = await detail(ops.read, customer.id)
    assert read["personal_data_masked"] is True
    shown = read["payload"]["data"]
    assert (shown["Email"], shown["Phone"]) == ("a***@v***.example", "***56")
    assert shown["BillingAddress"] == {"Line1": "S***", "City": "S***", "PostalCode": "1***", "Country": "SE"}
    assert shown["CompanyName"] == "Velo Sport AB" and shown["CustomerID"] == "C-2001"
    [add] = [step for step in read["steps"] if step["operation"] == "CRS610MI/Add"]
    assert {k: add["request"][k] for k in ("MAIL", "PHNO", "CUA1", "TOWN", "PONO", "CSCD", "CUNO")} == {
        "MAIL": "a***@v***.example",
        "PHNO": "***56",
        "CUA1": "S***",
        "TOWN": "S***",
        "PONO": "1***",
        "CSCD": "SE",
        "CUNO": "C-2001",
    }
    text = json.dumps(read)
    for secret in ("anna.berg@velosport.example", "Storgatan", "123 456", "11122", "Stockholm"):
        assert secret not in text, secret

    admin = await detail(ops.admin, customer.id)
    assert admin["personal_data_masked"] is False
    assert admin["payload"]["data"] == data
    [add] = [step for step in admin["steps"] if step["operation"] == "CRS610MI/Add"]
    assert (add["request"]["MAIL"], add["request"]["PHNO"]) == (data["Email"], data["Phone"])

    masked_error = "MAIL a***@v***.example is not valid"
    dead_read = await detail(ops.read, dead_id)
    assert dead_read["last_error"] == dead_read["dead_letter"]["error"] == masked_error
    assert {step["error"] for step in dead_read["steps"]} == {masked_error}
    listed = (await ops.read.get(URL, params={"status": "dead"})).json()["items"]
    assert listed[0]["last_error"] == masked_error
    dead_admin = await detail(ops.admin, dead_id)
    assert dead_admin["last_error"] == dead_admin["dead_letter"]["error"] == echoed

    # The discard answer is the same summary, masked the same way for an ops:replay token.
    discarded = await ops.replay.post(f"{URL}/{dead_id}/discard", json={"reason": "customer gone"})
    assert discarded.status_code == 200, discarded.text
    assert discarded.json()["status"] == "discarded"
    assert discarded.json()["last_error"] == masked_error


async def test_openapi_documents_the_read_api(ops: Ops) -> None:
    schema = (await ops.client.get("/openapi.json")).json()
    for path in (
        "/api/v1/transactions",
        "/api/v1/transactions/{event_id}",
        "/api/v1/dead-letters",
        "/api/v1/dead-letters/summary",
        "/api/v1/audit",
    ):
        assert "get" in schema["paths"][path], path
    models = schema["components"]["schemas"]
    assert not [name for name in models if "__" in name], "two models share a name"
    for name in ("TxDetail", "TxPage", "StepOut", "MappingVersion", "DeadLetterPage", "AuditPage"):
        assert name in models, name
    summary = models[models["TxPage"]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert {"id", "status", "business_key", "last_error", "received_at"} <= set(summary["properties"])
    detail_fields = set(models["TxDetail"]["properties"])
    assert {"steps", "payload", "mapping", "dead_letter", "replays", "keys"} <= detail_fields
    params = {p["name"]: p for p in schema["paths"]["/api/v1/transactions"]["get"]["parameters"]}
    expected = {"status", "event_type", "source", "since", "until", "error_class", "program", "q", "limit"}
    assert expected | {"cursor"} <= set(params)
