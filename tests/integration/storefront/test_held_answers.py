"""Held price answers end to end (storefront/answers.py): a repeated warm read is answered from
the held bytes, which are the normal path's bytes, and never once a BOD, the TTL or another
customer's read would make the normal path answer something else.

No assertion rests on a fixed sleep or on timing: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest

from m3bng.store import documents
from tests.integration.storefront.conftest import Shop
from tests.integration.storefront.test_storefront import ShopFactory, item_master, until

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

AGES = re.compile(rb'"age_seconds":[0-9.e+-]+')
SERVED = re.compile(r'^m3bng_storefront_cache_total\{kind="price",outcome="answer"\} (\S+)$', re.M)


def body_of(customer: str, *items: str | tuple[str, str]) -> dict[str, Any]:
    lines = [{"item": i} if isinstance(i, str) else {"item": i[0], "quantity": i[1]} for i in items]
    return {"customer": customer, "items": lines}


async def post(s: Shop, raw: bytes, **params: str) -> httpx.Response:
    return await s.api.post(
        "/api/v1/storefront/prices",
        content=raw,
        params=params,
        headers={"Content-Type": "application/json"},
    )


async def served(s: Shop) -> float:
    """Price answers served as held so far (the counter is the process's, so compare counts)."""
    found = SERVED.search((await s.api.get("/metrics")).text)
    return float(found.group(1)) if found else 0.0


def masked(content: bytes) -> bytes:
    return AGES.sub(b'"age_seconds":0', content)


def net(response: httpx.Response, item: str) -> Decimal:
    assert response.status_code == 200, response.text
    return Decimal(next(p["net_price"] for p in response.json()["prices"] if p["item"] == item))


async def test_a_held_answer_is_the_normal_paths_bytes_with_only_the_ages_moving(shop: ShopFactory) -> None:
    content = body_of("BNG-NORDIC", "BIKE-100", ("HELMET-1", "2.50"), ("BIKE-100", "10"))
    raw = json.dumps(content).encode()
    same_request = json.dumps(content, indent=1).encode()  # other bytes: not held yet
    async with shop() as s:
        first = await post(s, raw)
        count = await served(s)
        held = await post(s, raw)
        assert await served(s) == count + 1
        normal = await post(s, same_request)
        assert await served(s) == count + 1
        assert masked(held.content) == masked(normal.content) == masked(first.content)
        assert held.headers["content-type"] == normal.headers["content-type"] == "application/json"
        assert held.json()["prices"][1]["quantity"] == "2.50"  # as the request gave it
        assert not held.json()["stale"] and all(p["age_seconds"] >= 0 for p in held.json()["prices"])

        # What the body is read for is checked on every read: the token, the instance.
        unknown = await post(s, raw, instance="nowhere")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_instance"
        anonymous = await s.api.post(
            "/api/v1/storefront/prices", content=raw, headers={"Authorization": "Bearer wrong"}
        )
        assert anonymous.status_code == 401


async def test_a_bod_ends_a_held_answer_at_once(shop: ShopFactory) -> None:
    raw = json.dumps(body_of("BNG-NORDIC", "BIKE-100", "HELMET-1")).encode()
    async with shop() as s:
        await post(s, raw)
        count = await served(s)
        assert net(await post(s, raw), "BIKE-100") == Decimal("4491")
        assert await served(s) == count + 1
        await s.seed(
            {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 5500}]}
        )
        await s.post_bod(item_master("BIKE-100", 21))
        calls = await s.mi_calls()
        after = await post(s, raw)
        assert net(after, "BIKE-100") == Decimal("4950")  # 5500 − 10 %, at the first read after
        assert await s.mi_calls() == calls + 1 and await served(s) == count + 1
        again = await post(s, raw)  # held again, with the new price
        assert net(again, "BIKE-100") == Decimal("4950") and await served(s) == count + 2


async def test_past_the_ttl_a_held_answer_gives_way_to_new_prices_and_links(shop: ShopFactory) -> None:
    raw = json.dumps(body_of("BNG-NORDIC", "BIKE-100")).encode()
    async with shop(storefront_price_ttl_seconds=0.5) as s:
        await post(s, raw)
        await s.seed(
            {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 6000}]}
        )  # no BOD: only the TTL ends the cached price

        async def new_price() -> bool:
            response = await post(s, raw)
            return net(response, "BIKE-100") == Decimal("5400") and not response.json()["stale"]

        await until(new_price, "the new price past the TTL")
        async with s.sessions() as session, session.begin():
            await documents.put_xref(session, "customer", "BNG-NORDIC", "10002")  # relinked

        async def relinked() -> bool:
            currency: str = (await post(s, raw)).json()["prices"][0]["currency"]
            return currency == "NOK"

        await until(relinked, "the new customer link past the TTL")


async def test_customers_sharing_items_never_see_each_others_held_prices(shop: ShopFactory) -> None:
    nordic = json.dumps(body_of("BNG-NORDIC", "BIKE-100", "HELMET-1")).encode()
    fjord = json.dumps(body_of("BNG-FJORD", "BIKE-100", "HELMET-1")).encode()
    async with shop() as s:
        count = await served(s)
        for _ in range(3):
            for raw, currency, price in ((nordic, "SEK", "4491"), (fjord, "NOK", "4930.5")):
                response = await post(s, raw)
                assert net(response, "BIKE-100") == Decimal(price)
                assert response.json()["customer"] == json.loads(raw)["customer"]
                assert {p["currency"] for p in response.json()["prices"]} == {currency}
        assert await served(s) == count + 4  # the second and third read of each


async def test_an_answer_with_an_item_error_is_not_held(shop: ShopFactory) -> None:
    raw = json.dumps(body_of("BNG-NORDIC", "BIKE-100", "NO-SUCH-ITEM")).encode()
    async with shop() as s:
        await post(s, raw)
        count, calls = await served(s), await s.mi_calls()
        again = await post(s, raw)
        assert again.status_code == 200 and again.json()["prices"][1]["error"]["code"] == "not_found"
        assert await served(s) == count and await s.mi_calls() == calls + 1  # M3 was asked again
