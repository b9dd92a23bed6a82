"""Receiving BODs over real HTTP: IMS v3/v2 and /ion/bod, the stored shape, dedup, hostile input, auth."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from tests.conftest import LiveServer
from tests.integration.ion.conftest import (
    BEARER,
    TOKEN,
    bod_post,
    ims_post,
    ion_events,
    message_ids,
)
from tests.unit.ion.bods import bod

ORDER = bod("SyncSalesOrder.xml")
ORDER_V2 = bod("SyncSalesOrder_v2.xml")
ORDER_V3 = bod("SyncSalesOrder_v3.xml")
ORDER_BODID = "infor-nid:ACME_PRD:770_AAA::1000123:?SalesOrder&verb=Sync&variationID=1"


async def test_ims_protocol_endpoints(ion_server: Callable[..., LiveServer]) -> None:
    async with ion_server() as server, server.client() as client:
        ping = await client.get("/ion/service/ping", headers=BEARER)
        assert (ping.status_code, ping.json()) == (200, {"status": "ok"})
        protocol = await client.get("/ion/service/protocol", headers=BEARER)
        assert protocol.json() == {
            "version": "v3",
            "messageMethod": "multipartMessage",
            "hasDiscovery": False,
        }
        versions = await client.get("/ion/service/versions", headers=BEARER)
        assert versions.json() == ["v2", "v3"]


async def test_bods_are_stored_in_the_contract_shape(
    ion_server: Callable[..., LiveServer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with ion_server() as server, server.client() as client:
        plain = await ims_post(client, ORDER, "msg-plain")
        assert plain.status_code == 202, plain.text
        assert plain.json() == {
            "status": "accepted",
            "event_id": plain.json()["event_id"],
            "bod_type": "SyncSalesOrder",
            "supported": True,
        }
        for name, deflate in (("v2", "zlib"), ("v3", "raw")):
            response = await ims_post(
                client, bod(f"SyncSalesOrder_{name}.xml"), f"msg-{name}", deflate=deflate
            )
            assert response.status_code == 202, response.text
        alias = await ims_post(
            client,
            bod("SyncInvoice.xml"),
            "msg-alias",
            path="/ion/service/v3/message/multipart",
            deflate="base64",
        )
        assert alias.status_code == 202, alias.text
        v2 = await ims_post(
            client,
            bod("SyncItemMaster.xml"),
            "msg-ims-v2",
            path="/ion/service/v2/multipartMessage",
            swap_names=True,
        )
        assert v2.status_code == 201, v2.text
        raw = await bod_post(client, bod("SyncCustomerPartyMaster.xml"), message_id="script-1")
        assert (raw.status_code, raw.json()["bod_type"]) == (202, "SyncCustomerPartyMaster")
        unknown = await bod_post(client, bod("SyncCarrierParty.xml"))
        assert unknown.status_code == 202 and unknown.json()["supported"] is False
        ln = await bod_post(
            client, bod("SyncPurchaseOrder_LN.xml"), **{"Content-Type": "text/xml; charset=utf-8"}
        )
        assert ln.status_code == 202 and ln.json()["supported"] is False

    events = await ion_events(sessions)
    assert [e.event_type for e in events] == [
        "SyncSalesOrder",
        "SyncSalesOrder",
        "SyncSalesOrder",
        "SyncInvoice",
        "SyncItemMaster",
        "SyncCustomerPartyMaster",
        "SyncCarrierParty",
        "SyncPurchaseOrder",
    ]
    first = events[0]
    assert first.id == plain.json()["event_id"]
    assert first.status == "pending"
    assert first.external_id == ORDER_BODID
    assert first.business_key == "SalesOrder:770_AAA:1000123"
    assert {e.business_key for e in events[:3]} == {"SalesOrder:770_AAA:1000123"}
    payload = first.payload
    assert set(payload) == {"bod", "data", "ims", "xml"}
    assert payload["bod"]["bodid"] == ORDER_BODID
    assert payload["bod"]["creation_datetime"] == "2026-11-20T08:15:02+00:00"
    assert (payload["bod"]["cono"], payload["bod"]["divi"], payload["bod"]["variation_id"]) == (770, "AAA", 1)
    assert (
        payload["data"]["SalesOrderHeader"]["CustomerPurchaseOrderReference"]["DocumentID"]["ID"]
        == "BNG-1001"
    )
    assert payload["ims"] == {
        "documentName": "SyncSalesOrder",
        "fromLogicalId": "lid://infor.m3.m3",
        "toLogicalId": "lid://infor.m3bng.m3bng",
        "messageId": "msg-plain",
        "document": {"characterSet": "UTF-8", "encoding": "NONE"},
        "accountingEntity": "770_AAA",
    }
    assert payload["xml"] == ORDER.decode()
    assert events[1].payload["ims"]["document"]["encoding"] == "DEFLATE"
    assert events[2].payload["bod"]["variation_id"] == 3
    assert events[2].payload["xml"] == ORDER_V3.decode()  # inflated before storing
    assert events[5].payload["ims"] is None
    assert events[6].business_key == "CarrierParty:770:DHL"
    assert await message_ids(sessions) == {
        "msg-plain": events[0].id,
        "msg-v2": events[1].id,
        "msg-v3": events[2].id,
        "msg-alias": events[3].id,
        "msg-ims-v2": events[4].id,
        "script-1": events[5].id,
    }


async def test_duplicates_by_message_id_and_by_bodid(
    ion_server: Callable[..., LiveServer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with ion_server() as server, server.client() as client:
        first = await ims_post(client, ORDER, "msg-1")
        assert first.status_code == 202
        event_id = first.json()["event_id"]
        # ION retries under the same messageId (even if the document were different): duplicate.
        same_message = await ims_post(client, ORDER_V2, "msg-1")
        # The same BOD under a new messageId, and through /ion/bod: duplicate.
        same_bodid = await ims_post(client, ORDER, "msg-2", deflate="zlib")
        raw_again = await bod_post(client, ORDER, message_id="other")
        for response in (same_message, same_bodid, raw_again):
            assert response.status_code == 200, response.text
            assert response.json() == {
                "status": "duplicate",
                "event_id": event_id,
                "bod_type": response.json()["bod_type"],
                "supported": True,
            }
        # ION's at-least-once burst: five identical deliveries at once.
        burst = await asyncio.gather(*(ims_post(client, ORDER_V3, "msg-burst") for _ in range(5)))
        assert sorted(r.status_code for r in burst) == [200, 200, 200, 200, 202], [r.text for r in burst]
        assert len({r.json()["event_id"] for r in burst}) == 1
        # Racing deliveries of one messageId with different BODIDs: one wins, nothing half-stored.
        race = await asyncio.gather(
            *(ims_post(client, bod(name), "msg-race") for name in ("SyncInvoice.xml", "SyncItemMaster.xml"))
        )
        assert sorted(r.status_code for r in race) == [200, 202], [r.text for r in race]
        assert len({r.json()["event_id"] for r in race}) == 1
    events = await ion_events(sessions)
    assert len(events) == 3
    assert set(await message_ids(sessions)) == {"msg-1", "msg-burst", "msg-race"}


async def test_bad_and_hostile_input_stores_nothing(
    ion_server: Callable[..., LiveServer], sessions: async_sessionmaker[AsyncSession]
) -> None:
    hostile = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "bods" / "hostile").glob("*.xml"))
    hostile = [p for p in hostile if p.name != "xinclude.xml"]  # no DOCTYPE: stored, and inert
    deep = ORDER.replace(b"<SalesOrderLine>", b"<SalesOrderLine>" + b"<A>" * 150 + b"</A>" * 150, 1)
    async with ion_server(ion_max_bod_bytes=64 * 1024) as server, server.client() as client:
        for path in hostile:
            for response in (
                await ims_post(client, path.read_bytes(), f"msg-{path.name}"),
                await ims_post(client, path.read_bytes(), f"msg-d-{path.name}", deflate="zlib"),
                await bod_post(client, path.read_bytes(), message_id=f"raw-{path.name}"),
            ):
                assert response.status_code == 400, (path.name, response.text)
                assert response.json()["error"]["code"] == "forbidden_xml"
                assert "DOCTYPE is not allowed" in response.json()["error"]["message"]
                assert "root:" not in response.text
        bomb = b"<" + b"A" * 10_000_000
        files_cases = [
            (deep, "document nested deeper than 100 levels", 400),
            (b"<SyncSalesOrder", "not well-formed XML", 400),
            (b"<Foo/>", "not an OAGIS BOD", 400),
            (
                ORDER.replace(b"<BODID>", b"<X>").replace(b"</BODID>", b"</X>"),
                "ApplicationArea/BODID missing",
                400,
            ),
            (ORDER + b" " * 70_000, "the limit is 65536", 413),
        ]
        for xml, problem, status in files_cases:
            for response in (await ims_post(client, xml, "msg-bad"), await bod_post(client, xml)):
                assert response.status_code == status, response.text
                assert problem in response.json()["error"]["message"], response.text
        zipped = await ims_post(client, bomb, "msg-bomb", deflate="zlib")
        assert zipped.status_code == 413
        assert "inflated payload exceeds the limit of 65536 bytes" in zipped.json()["error"]["message"]
        multipart_cases: list[tuple[dict[str, Any], str]] = [
            ({"MessagePayload": ("m", ORDER)}, "no ParameterRequest"),
            ({"ParameterRequest": (None, b"{bad json")}, "ParameterRequest is not a JSON object"),
            ({"ParameterRequest": (None, json.dumps({"messageId": "x"}).encode())}, "no payload"),
            (
                {
                    "ParameterRequest": (None, json.dumps({"document": {"encoding": "DEFLATE"}}).encode()),
                    "MessagePayload": ("m", b"\x01\x02garbage"),
                },
                "could not be inflated",
            ),
        ]
        for files, problem in multipart_cases:
            response = await client.post("/ion/service/v3/multipartMessage", files=files, headers=BEARER)
            assert response.status_code == 400, response.text
            assert problem in response.json()["error"]["message"], response.text
        not_multipart = await client.post(
            "/ion/service/v3/multipartMessage",
            content=ORDER,
            headers={**BEARER, "Content-Type": "application/xml"},
        )
        assert not_multipart.status_code == 415
        not_xml = await client.post("/ion/bod", json={"a": 1}, headers=BEARER)
        assert not_xml.status_code == 415 and "application/xml" in not_xml.json()["error"]["message"]
        too_big = await bod_post(client, b"<a>" + b"x" * 70_000 + b"</a>")
        assert too_big.status_code == 413
        # The same messageId, now valid, is new: nothing was stored for the bad attempts.
        assert (await ims_post(client, ORDER, "msg-bad")).status_code == 202
    assert len(await ion_events(sessions)) == 1


async def test_inbound_authentication(
    ion_server: Callable[..., LiveServer],
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    basic = "Basic " + base64.b64encode(b"ion:s3cret-pass").decode()
    async with (
        ion_server(ion_inbound_username="ion", ion_inbound_password="s3cret-pass") as server,
        server.client() as client,
    ):
        assert (await client.get("/ion/service/ping", headers=BEARER)).status_code == 200
        assert (await client.get("/ion/service/ping", headers={"Authorization": basic})).status_code == 200
        wrong = [
            {},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": "Basic " + base64.b64encode(b"ion:wrong").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"other:s3cret-pass").decode()},
            {"Authorization": "Basic !!!"},
            {"Authorization": TOKEN},
        ]
        for headers in wrong:
            response = await client.get("/ion/service/ping", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers.get_list("www-authenticate") == [
                'Bearer realm="m3bng-ion"',
                'Basic realm="m3bng-ion", charset="UTF-8"',
            ]
        refused = await ims_post(client, ORDER, "msg-noauth", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        refused_raw = await bod_post(client, ORDER, Authorization="Bearer nope")
        assert refused_raw.status_code == 401
    async with ion_server(ion_inbound_token=None) as server, server.client() as client:
        assert (await client.get("/ion/service/ping")).status_code == 200  # sandbox: open
    ionapi = tmp_path / "real.ionapi"
    ionapi.write_text(
        json.dumps(
            {
                "ti": "T",
                "ci": "c",
                "cs": "s",
                "iu": "http://127.0.0.1:1",
                "pu": "http://127.0.0.1:1/as/",
                "ot": "token.oauth2",
                "saak": "a",
                "sask": "b",
            }
        )
    )
    async with live_server(make_settings(ionapi_file=ionapi)) as server, server.client() as client:
        response = await client.get("/ion/service/ping")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "ion_inbound_not_configured"
        assert "M3BNG_ION_INBOUND_TOKEN" in response.json()["error"]["message"]
        assert (await bod_post(client, ORDER)).status_code == 503
