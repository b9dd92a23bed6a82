"""The storefront routes fuzzed from their own OpenAPI schema with a storefront token: whatever
BNG sends, never a 5xx (bad input is a 4xx naming the field, an unknown customer a 404), and the
service still answers prices afterwards. Uses the ops fuzz harness (tests/integration/ops)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.integration.ops.test_schemathesis import fuzz
from tests.integration.storefront.conftest import Shop
from tests.support.ops import STOREFRONT

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_no_server_errors_whatever_bng_sends(shop: Any) -> None:
    s: Shop
    async with shop() as s:
        raw: dict[str, Any] = (await s.api.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(raw).include(path_regex=r"^/api/v1/storefront/")
        problems = await asyncio.to_thread(
            fuzz,
            schema,
            s.server.base_url,
            token=STOREFRONT,
            modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            max_examples=15,
        )
        assert not problems, "\n".join(problems)
        prices = await s.price_map("BNG-NORDIC", "BIKE-100")
        assert prices["BIKE-100"]["error"] is None
