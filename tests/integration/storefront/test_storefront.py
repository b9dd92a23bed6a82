"""Storefront reads end to end: the real app over HTTP, the M3 simulator over HTTP (its
OIS320MI/MMS200MI/OIS100MI/OIS350MI handlers built from the metadata), a storefront token.

No assertion rests on a fixed sleep: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3bng.connectors.ion.bod import parse_bod
from m3bng.connectors.ion.ingest import ingest_bod
from m3bng.store import documents
from tests.support.ops import READ, bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

BODS = Path(__file__).parents[2] / "fixtures" / "bods"
ShopFactory = Callable[..., Any]


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def item_master(itno: str, n: int) -> str:
    xml = (BODS / "SyncItemMaster.xml").read_text()
    return xml.replace("ITM-100", itno).replace("variationID=12", f"variationID={n}")


def inventory_count(itno: str, whlo: str, n: int) -> str:
    xml = (BODS / "SyncInventoryCount.xml").read_text()
    return xml.replace("ITM-100", itno).replace("WH1", whlo).replace("INV-WH1-20261120", f"INV-{n}")


async def test_each_customer_gets_its_own_prices_and_warm_reads_skip_m3(shop: ShopFactory) -> None:
    async with shop() as s:
        before = await s.mi_calls()
        response = await s.prices("BNG-NORDIC", "BIKE-100", "HELMET-1", ("BIKE-100", 10))
        assert await s.mi_calls() == before + 1  # three lines, one bulk MI POST
        nordic = {p["item"]: p for p in response.json()["prices"][:2]}
        assert Decimal(response.json()["prices"][2]["sales_price"]) == Decimal("4590")  # the 10+ break
        fjord = await s.price_map("BNG-FJORD", "BIKE-100", "HELMET-1")
        # The same items, each customer's own list and discount (seed.yaml): never the other's.
        assert nordic["BIKE-100"]["currency"] == "SEK" and fjord["BIKE-100"]["currency"] == "NOK"
        assert Decimal(nordic["BIKE-100"]["net_price"]) == Decimal("4491")  # 4990 − 10 %
        assert Decimal(fjord["BIKE-100"]["net_price"]) == Decimal("4930.5")  # 5190 − 5 %
        assert nordic["BIKE-100"]["price_list"] == "B2B-SE" and fjord["BIKE-100"]["price_list"] == "B2B-NO"
        [discount] = nordic["BIKE-100"]["discounts"]
        assert discount["number"] == 1 and Decimal(discount["percent"]) == 10 and discount["text"] == "Dealer"

        calls = await s.mi_calls()
        again_nordic = await s.price_map("BNG-NORDIC", "BIKE-100", "HELMET-1")
        again_fjord = await s.price_map("BNG-FJORD", "HELMET-1", "BIKE-100")
        assert await s.mi_calls() == calls  # warm: from the cache
        assert again_nordic["BIKE-100"]["net_price"] == nordic["BIKE-100"]["net_price"]
        assert again_fjord["BIKE-100"]["net_price"] == fjord["BIKE-100"]["net_price"]
        assert not again_fjord["BIKE-100"]["stale"] and again_fjord["BIKE-100"]["age_seconds"] >= 0
        metrics = (await s.api.get("/metrics")).text
        assert 'm3bng_storefront_cache_total{kind="price",outcome="hit"}' in metrics


async def test_bad_input_names_the_field_and_an_unknown_item_is_that_items_error(shop: ShopFactory) -> None:
    async with shop(storefront_max_items=3) as s:
        response = await s.prices("BNG-NOBODY", "BIKE-100")
        assert response.status_code == 404 and response.json()["error"]["fields"][0]["field"] == "customer"
        response = await s.prices("BNG-NORDIC", "A", "B", "C", "D")
        assert response.status_code == 422 and "items" in response.json()["error"]["message"]
        response = await s.prices("BNG-NORDIC", "X" * 16)
        assert (
            response.status_code == 422 and response.json()["error"]["fields"][0]["field"] == "items.0.item"
        )
        response = await s.prices("BNG-NORDIC", ("BIKE-100", -1))
        assert response.status_code == 422 and "items.0.quantity" in response.text
        response = await s.api.get("/api/v1/storefront/availability", params={"items": "BIKE-100"})
        assert response.status_code == 422 and "warehouses" in response.text

        prices = await s.price_map("BNG-NORDIC", "BIKE-100", "NO-SUCH-ITEM")
        assert prices["BIKE-100"]["error"] is None
        assert prices["NO-SUCH-ITEM"]["net_price"] is None
        assert prices["NO-SUCH-ITEM"]["error"]["code"] in ("not_found", "data")


async def test_concurrent_misses_make_one_m3_call(shop: ShopFactory) -> None:
    async with shop() as s:
        await s.sim.faults(latency_ms=150)
        before = await s.mi_calls()
        items = ("BIKE-100", "BIKE-200", "HELMET-1", "TUBE-26")
        answers = await asyncio.gather(*(s.price_map("BNG-NORDIC", *items) for _ in range(16)))
        assert await s.mi_calls() == before + 1
        assert all(a["TUBE-26"]["net_price"] == answers[0]["TUBE-26"]["net_price"] for a in answers)


async def test_availability_now_and_on_a_date(shop: ShopFactory) -> None:
    async with shop() as s:
        response = await s.api.get(
            "/api/v1/storefront/availability", params={"items": "BIKE-100,HELMET-1", "warehouses": "100,200"}
        )
        assert response.status_code == 200, response.text
        rows = {(r["item"], r["warehouse"]): r for r in response.json()["availability"]}
        assert Decimal(rows["BIKE-100", "100"]["available"]) == 25
        assert Decimal(rows["BIKE-100", "200"]["on_hand"]) == 5
        assert rows["HELMET-1", "200"]["available"] is None and rows["HELMET-1", "200"]["error"]
        dated = await s.api.get(
            "/api/v1/storefront/availability",
            params={"items": "BIKE-200", "warehouses": "100", "date": "2026-12-24"},
        )
        [row] = dated.json()["availability"]
        assert Decimal(row["available"]) == 8 and row["available_date"] == "20261224"
        calls = [c for c in await s.sim.calls() if c["transaction"] == "GetATP"]
        assert calls and calls[-1]["record"]["DWDT"] == "20261224"


async def test_bods_invalidate_prices_and_stock_end_to_end(shop: ShopFactory) -> None:
    async with shop() as s:
        first = await s.price_map("BNG-NORDIC", "BIKE-100", "HELMET-1")
        assert Decimal(first["BIKE-100"]["net_price"]) == Decimal("4491")
        await s.seed(
            {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 5500}]}
        )
        cached = await s.price_map("BNG-NORDIC", "BIKE-100")
        assert Decimal(cached["BIKE-100"]["net_price"]) == Decimal("4491")  # still the cached value

        await s.post_bod(item_master("BIKE-100", 13))
        calls = await s.mi_calls()
        after = await s.price_map("BNG-NORDIC", "BIKE-100", "HELMET-1")
        assert Decimal(after["BIKE-100"]["net_price"]) == Decimal("4950")  # 5500 − 10 %
        assert after["HELMET-1"]["net_price"] == first["HELMET-1"]["net_price"]
        [call] = [c for c in (await s.sim.calls())[-1:]]
        assert (
            await s.mi_calls() == calls + 1 and call["record"]["ITNO"] == "BIKE-100"
        )  # HELMET-1 stayed cached

        stock = {"items": "BIKE-100", "warehouses": "100,200"}
        rows = (await s.api.get("/api/v1/storefront/availability", params=stock)).json()["availability"]
        assert [Decimal(r["available"]) for r in rows] == [25, 5]
        await s.seed({"stock": [{"WHLO": "100", "ITNO": "BIKE-100", "STQT": 7, "ALQT": 0}]})
        await s.post_bod(inventory_count("BIKE-100", "100", 1))
        calls = await s.mi_calls()
        rows = (await s.api.get("/api/v1/storefront/availability", params=stock)).json()["availability"]
        assert [Decimal(r["available"]) for r in rows] == [7, 5]
        last = (await s.sim.calls())[-1]
        assert await s.mi_calls() == calls + 1 and last["record"] == {"WHLO": "100", "ITNO": "BIKE-100"}


async def test_a_bod_another_process_received_invalidates_this_ones_cache(shop: ShopFactory) -> None:
    async with shop(storefront_bod_follow_seconds=0.1) as s:
        first = await s.price_map("BNG-NORDIC", "BIKE-200")
        assert Decimal(first["BIKE-200"]["net_price"]) == Decimal("8091")  # 8990 − 10 %
        await s.seed(
            {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "BIKE-200", "QTLB": 1, "SAPR": 9990}]}
        )
        # Stored as another m3bng process stores it: straight into the store, not through this one.
        parsed = parse_bod(item_master("BIKE-200", 14).encode(), max_bytes=1_000_000)
        await ingest_bod(s.sessions, parsed, payload=parsed.to_payload(None), message_id=None)

        async def new_price() -> bool:
            prices = await s.price_map("BNG-NORDIC", "BIKE-200")
            return Decimal(prices["BIKE-200"]["net_price"]) == Decimal("8991")

        await until(new_price, "the other process's BOD to reach this cache")


async def test_outage_answers_stale_then_503_past_the_maximum(shop: ShopFactory) -> None:
    settings = {"storefront_price_ttl_seconds": 0.3, "storefront_max_stale_seconds": 2.0}
    async with shop(**settings, m3_circuit_reset_seconds=0.5) as s:
        fresh = await s.price_map("BNG-NORDIC", "BIKE-100", "TUBE-26")
        assert not fresh["BIKE-100"]["stale"]
        await s.sim.faults(outage_seconds=60)

        async def stale() -> dict[str, Any] | None:
            answer = await s.price_map("BNG-NORDIC", "BIKE-100", "TUBE-26")
            return answer if answer["BIKE-100"]["stale"] else None

        answer = await until(stale, "a stale answer")
        assert answer["BIKE-100"]["net_price"] == fresh["BIKE-100"]["net_price"]
        assert answer["TUBE-26"]["stale"] and answer["BIKE-100"]["age_seconds"] >= 0.3

        async def refused() -> httpx.Response | None:
            response = await s.prices("BNG-NORDIC", "BIKE-100", "TUBE-26")
            return response if response.status_code == 503 else None

        response = await until(refused, "503 past the maximum staleness")
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "m3_unavailable"

        await s.sim.faults()  # M3 is back: fresh again

        async def fresh_again() -> bool:
            response = await s.prices("BNG-NORDIC", "BIKE-100")
            return response.status_code == 200 and not response.json()["prices"][0]["stale"]

        await until(fresh_again, "fresh answers after the outage")


async def test_a_slow_m3_with_nothing_cached_is_503_not_an_item_error(shop: ShopFactory) -> None:
    async with shop(storefront_m3_wait_seconds=0.3) as s:
        await s.sim.faults(latency_ms=1500)
        response = await s.prices("BNG-NORDIC", "BIKE-100")
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        await s.sim.faults()


async def test_orders_with_lines_and_deliveries_and_invoices_paged_to_the_end(shop: ShopFactory) -> None:
    async with shop(storefront_list_page=2) as s:
        await s.seed(
            {
                "orders": [
                    {
                        "head": {
                            "ORNO": "1000001",
                            "CUNO": "10001",
                            "CUOR": "PO-1",
                            "ORDT": "20261201",
                            "ORSL": "66",
                            "ORST": "77",
                        },
                        "lines": [
                            {"PONR": "1", "ITNO": "BIKE-100", "ORQA": "2", "NEPR": "4491", "ORST": "77"},
                            {"PONR": "2", "ITNO": "HELMET-1", "ORQA": "2", "NEPR": "539.1", "ORST": "66"},
                        ],
                        "deliveries": [{"PONR": "1", "DLIX": "5000001", "TRQT": "2", "PGRS": "90"}],
                    },
                    {"head": {"ORNO": "1000002", "CUNO": "10002", "CUOR": "PO-X"}, "lines": []},
                ],
                "invoices": [
                    {
                        "YEA4": "2026",
                        "IVNO": str(n),
                        "CUNO": "10001",
                        "IVDT": "20261202",
                        "CUAM": "100",
                        "CUCD": "SEK",
                    }
                    for n in (100002, 100003, 100004, 100005)
                ],
            }
        )
        response = await s.api.get("/api/v1/storefront/customers/BNG-NORDIC/orders")
        assert response.status_code == 200, response.text
        [order] = response.json()["orders"]  # 1000002 is the other customer's
        assert order["order"] == "1000001" and order["status_high"] == "77"
        first, second = order["lines"]
        assert first["deliveries"][0]["delivery"] == "5000001" and second["deliveries"] == []

        response = await s.api.get("/api/v1/storefront/customers/BNG-NORDIC/invoices", params={"year": 2026})
        assert response.status_code == 200, response.text
        numbers = [i["invoice"] for i in response.json()["invoices"]]
        assert numbers == ["100001", "100002", "100003", "100004", "100005"]
        pages = [
            c["record"].get("IVNO") for c in await s.sim.calls() if c["transaction"] == "LstInvHeadByPay"
        ]
        assert pages == [None, "100003", "100005"]  # keyed pages of two, to the end
        fjord = await s.api.get("/api/v1/storefront/customers/BNG-FJORD/invoices", params={"year": 2026})
        assert fjord.json()["invoices"] == []

        # A BNG customer linked to a CUNO M3 does not have: M3's "does not exist", as a 404.
        async with s.sessions() as session, session.begin():
            await documents.put_xref(session, "customer", "BNG-GONE", "99999")
        gone = await s.api.get("/api/v1/storefront/customers/BNG-GONE/orders")
        assert gone.status_code == 404 and "OIS100MI/LstHead" in gone.json()["error"]["message"]


async def test_a_read_flood_keeps_to_its_lane_and_order_entry_keeps_the_rest(shop: ShopFactory) -> None:
    async with shop(m3_max_concurrency=4, storefront_m3_share=0.25, storefront_m3_wait_seconds=10) as s:
        runtime = s.server.app.state.runtime
        lane, main = runtime.connectors.m3_storefront, runtime.connectors.m3
        assert (lane.gate.size, main.gate.size) == (1, 3)
        await s.sim.faults(latency_ms=100)
        # Ten different quantities: ten keys, ten M3 calls, queued one at a time in the lane.
        flood = [asyncio.create_task(s.price_map("BNG-NORDIC", ("TUBE-26", n))) for n in range(1, 11)]
        await until(lambda: _true(lane.gate.in_use == 1), "the flood to reach M3")
        entry = await asyncio.gather(
            *(main.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"}) for _ in range(3))
        )
        assert all(r.record["CUNO"] == "10001" for r in entry)
        assert sum(t.done() for t in flood) < len(flood)  # order entry did not wait for the flood
        await asyncio.gather(*flood)
        stats = await s.sim.stats()
        assert stats["max_in_flight"] <= 4


async def _true(value: bool) -> bool:
    return value


async def test_ops_tokens_do_not_read_the_storefront(shop: ShopFactory) -> None:
    async with shop() as s:
        response = await s.api.post(
            "/api/v1/storefront/prices",
            json={"customer": "BNG-NORDIC", "items": [{"item": "BIKE-100"}]},
            headers=bearer(READ),
        )
        assert response.status_code == 403 and "storefront:read" in response.json()["error"]["message"]
        assert (await s.api.get("/api/v1/transactions")).status_code == 403
