"""The real app over real HTTP against the M3 simulator, with a storefront token, two BNG
customers linked to two M3 customers, and helpers to read prices and stock as BNG would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.flows.runtime import FlowRegistry
from m3bng.store import documents
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.support.ops import OPS_TOKEN_ENTRIES, STOREFRONT, bearer

Sessions = async_sessionmaker[AsyncSession]
ION_TOKEN = "ion-inbound-token-0123456789"
# BNG's customer ids and the M3 customers they are linked to (seed.yaml: 10001 SEK, 10002 NOK).
CUSTOMERS = {"BNG-NORDIC": "10001", "BNG-FJORD": "10002"}


@dataclass
class Shop:
    server: LiveServer
    api: httpx.AsyncClient  # with the storefront token
    sim: SimHandle
    sessions: Sessions

    async def prices(self, customer: str, *items: str | tuple[str, float], **extra: Any) -> httpx.Response:
        lines = [{"item": i} if isinstance(i, str) else {"item": i[0], "quantity": i[1]} for i in items]
        return await self.api.post(
            "/api/v1/storefront/prices", json={"customer": customer, "items": lines, **extra}
        )

    async def price_map(self, customer: str, *items: str | tuple[str, float]) -> dict[str, dict[str, Any]]:
        response = await self.prices(customer, *items)
        assert response.status_code == 200, response.text
        return {p["item"]: p for p in response.json()["prices"]}

    async def mi_calls(self) -> int:
        return int((await self.sim.stats())["mi_calls"])

    async def seed(self, data: dict[str, Any]) -> None:
        (await self.sim.control.post("/_sim/seed", json=data)).raise_for_status()

    async def post_bod(self, xml: str) -> None:
        response = await self.api.post(
            "/ion/bod",
            content=xml.encode(),
            headers={"Content-Type": "application/xml", "Authorization": f"Bearer {ION_TOKEN}"},
        )
        assert response.status_code == 202, response.text


def shop_settings(make_settings: Callable[..., Settings], sim: SimHandle, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ionapi_file": sim.ionapi,
        "m3_timeout": 2.0,
        "m3_max_inline_wait": 0.1,
        "m3_call_attempts": 2,
        "ops_tokens": OPS_TOKEN_ENTRIES,
        "ion_inbound_token": ION_TOKEN,
        "retention_run_seconds": 0,
        "storefront_m3_wait_seconds": 1.0,
    }
    values.update(overrides)
    return make_settings(**values)


async def link_customers(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        for bng_id, cuno in CUSTOMERS.items():
            await documents.put_xref(session, "customer", bng_id, cuno)


@pytest.fixture
def shop(
    m3_sim: SimHandle,  # noqa: F811
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
) -> Callable[..., contextlib.AbstractAsyncContextManager[Shop]]:
    """``async with shop(**settings) as s``: the service with those settings, customers linked."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Shop]:
        await link_customers(sessions)
        # No flows: BODs are stored (and invalidate the cache) but not run, and the start skips
        # importing the mapping files.
        server = live_server(shop_settings(make_settings, m3_sim, **overrides), FlowRegistry())
        async with server, server.client() as api:
            api.headers.update(bearer(STOREFRONT))
            yield Shop(server, api, m3_sim, sessions)

    return start
