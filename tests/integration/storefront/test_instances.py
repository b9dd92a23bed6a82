"""The storefront of several BNG instances (``?instance=``): each instance reads its own M3
company with its own customer links and keeps its own cache; a BOD of one company invalidates
that company's cached prices only; an unknown instance is a 404 naming it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from m3bng.store import documents
from tests.integration.storefront.test_storefront import ShopFactory, item_master

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

US_PRICE = {"PRRF": "B2B-US", "CUCD": "USD", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 700}


@pytest.fixture
def two_companies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings of two instances: default in company 100, ``us`` in company 200."""
    instances = tmp_path / "instances.yaml"
    instances.write_text(
        "instances:\n"
        "  default:\n"
        "    cono: 100\n"
        "    divi: AAA\n"
        "  us:\n"
        "    bng_base_url: http://bng-us.invalid\n"
        "    cono: 200\n"
        "    divi: BBB\n"
    )
    monkeypatch.setenv("M3BNG_INSTANCE_US_WEBHOOK_SECRETS", "whsec_VVNpbnN0YW5jZXNlY3JldDAxMjM0NTY3")
    monkeypatch.setenv("M3BNG_INSTANCE_US_BNG_API_KEY", "us-key")
    return {"instances_file": instances}


async def test_each_instance_reads_its_own_company_and_links(
    shop: ShopFactory, two_companies: dict[str, Any]
) -> None:
    async with shop(**two_companies) as s:
        await s.seed(
            {
                "company": "200",
                "divi": "BBB",
                "customers": [
                    {"CUNO": "20001", "CUNM": "US Bikes", "STAT": "20", "CUCD": "USD", "PRRF": "B2B-US"}
                ],
                "items": [{"ITNO": "BIKE-100", "ITDS": "Bike", "STAT": "20", "UNMS": "EA"}],
                "prices": [US_PRICE],
            }
        )
        # The same BNG customer id in both shops, linked to a different M3 customer in each.
        async with s.sessions() as session, session.begin():
            await documents.put_xref(session, "customer", "BNG-NORDIC", "20001", instance="us")

        default = await s.price_map("BNG-NORDIC", "BIKE-100")
        response = await s.api.post(
            "/api/v1/storefront/prices",
            params={"instance": "us"},
            json={"customer": "BNG-NORDIC", "items": [{"item": "BIKE-100"}]},
        )
        assert response.status_code == 200, response.text
        [us] = response.json()["prices"]
        assert Decimal(default["BIKE-100"]["net_price"]) == Decimal("4491")  # company 100: 4990 − 10 %
        assert default["BIKE-100"]["currency"] == "SEK"
        assert Decimal(us["net_price"]) == Decimal("700") and us["currency"] == "USD"  # company 200
        company_calls = [c.get("cono") for c in await s.sim.calls() if "GetPriceLine" in str(c)]
        assert {"100", "200"} <= {str(c) for c in company_calls}, company_calls

        # A customer linked in default only is unknown in us.
        fjord = await s.api.post(
            "/api/v1/storefront/prices",
            params={"instance": "us"},
            json={"customer": "BNG-FJORD", "items": [{"item": "BIKE-100"}]},
        )
        assert fjord.status_code == 404 and fjord.json()["error"]["code"] == "unknown_customer", fjord.text

        # A price BOD of company 200 invalidates us's cache, not default's.
        await s.seed({"company": "200", "prices": [{**US_PRICE, "SAPR": 750}]})
        await s.seed(
            {"prices": [{"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": "BIKE-100", "QTLB": 1, "SAPR": 5500}]}
        )
        await s.post_bod(
            item_master("BIKE-100", 21)
            .replace('accountingEntity="770"', 'accountingEntity="200_BBB"')
            .replace(
                "<AccountingEntityID>770</AccountingEntityID>",
                "<AccountingEntityID>200_BBB</AccountingEntityID>",
            )
        )
        us_after = await s.api.post(
            "/api/v1/storefront/prices",
            params={"instance": "us"},
            json={"customer": "BNG-NORDIC", "items": [{"item": "BIKE-100"}]},
        )
        assert Decimal(us_after.json()["prices"][0]["net_price"]) == Decimal("750")
        still = await s.price_map("BNG-NORDIC", "BIKE-100")
        assert Decimal(still["BIKE-100"]["net_price"]) == Decimal("4491")  # company 100: still cached

        # Every route takes the instance; an unknown one is a 404 naming it.
        for method, path in (
            ("POST", "/api/v1/storefront/prices"),
            ("GET", "/api/v1/storefront/availability?items=BIKE-100&warehouses=100"),
            ("GET", "/api/v1/storefront/customers/BNG-NORDIC/orders"),
            ("GET", "/api/v1/storefront/customers/BNG-NORDIC/invoices"),
        ):
            body = {"customer": "BNG-NORDIC", "items": [{"item": "BIKE-100"}]} if method == "POST" else None
            sep = "&" if "?" in path else "?"
            answer = await s.api.request(method, f"{path}{sep}instance=mars", json=body)
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["error"]["code"] == "unknown_instance" and "'mars'" in answer.text
        stock = await s.api.get(
            "/api/v1/storefront/availability",
            params={"items": "BIKE-100", "warehouses": "100", "instance": "us"},
        )
        assert stock.status_code == 200, stock.text
