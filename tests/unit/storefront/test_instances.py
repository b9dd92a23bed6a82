"""Which storefronts a BOD invalidates: those of the BOD's company (storefront/bods.py), and
each instance's storefront reads in its own company on the one storefront lane."""

from __future__ import annotations

from typing import Any

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from m3bng.instances import Instance, Instances
from m3bng.storefront.bods import invalidate_in
from m3bng.storefront.cache import Entry
from m3bng.storefront.service import PriceKey, Storefront, storefront_for


def _settings() -> Settings:
    return Settings(database_url="sqlite+aiosqlite:///:memory:")


def _with_price(storefront: Storefront, itno: str) -> Storefront:
    key = PriceKey("10001", itno, "1", "", "20261207")
    value: Any = object()
    storefront.prices._entries[key] = Entry(value=value, fetched_at=0.0, fetched_wall=0.0)
    storefront.prices._by_item.setdefault(itno, set()).add(key)
    return storefront


def test_a_bod_invalidates_the_storefronts_of_its_company_only() -> None:
    settings = _settings()
    m3 = M3Client(M3ClientConfig(base_url="http://127.0.0.1:9", max_concurrency=8))
    eu = _with_price(Storefront(settings, None, m3.for_company(100, "AAA")), "BIKE-100")  # type: ignore[arg-type]
    us = _with_price(Storefront(settings, None, m3.for_company(200, "BBB"), instance="us"), "BIKE-100")  # type: ignore[arg-type]
    anyone = _with_price(Storefront(settings, None, m3), "BIKE-100")  # type: ignore[arg-type]  # no cono
    data = {"ItemMasterHeader": {"ItemID": {"ID": "BIKE-100"}}}
    assert invalidate_in([eu, us, anyone], "ItemMaster", data, None, "200_BBB") == 2  # us, anyone
    assert eu.prices._entries and all(not e.valid for e in us.prices._entries.values())
    assert invalidate_in([eu], "ItemMaster", data, None, "0100") == 1  # CONO alone, leading zero
    again = _with_price(Storefront(settings, None, m3.for_company(200, "BBB")), "BIKE-100")  # type: ignore[arg-type]
    assert invalidate_in([again], "ItemMaster", data, None, None) == 1  # no company: every one


def test_each_instance_reads_in_its_company_on_the_one_lane() -> None:
    settings = _settings()
    m3 = M3Client(M3ClientConfig(base_url="http://127.0.0.1:9", max_concurrency=8))
    lane = m3.split_lane(2)
    us_settings = settings.model_copy(update={"m3_cono": 200, "m3_divi": "BBB"})
    instances = Instances(
        {
            "default": Instance(id="default", webhook_secrets=(), settings=settings),
            "us": Instance(id="us", webhook_secrets=(), settings=us_settings),
        }
    )
    connectors = Connectors(m3=m3, m3_storefront=lane, instances=instances)
    us = storefront_for(settings, None, connectors, "us")  # type: ignore[arg-type]
    assert us.m3 is not None and us.m3.gate is lane.gate and us.cono == 200
    assert us.m3.config.divi == "BBB" and us.instance == "us"
    default = storefront_for(settings, None, connectors)  # type: ignore[arg-type]
    assert default.m3 is lane
