"""The real app over real HTTP with ION inbound credentials, and helpers to post BODs to it."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.flows.runtime import FlowContext, FlowRegistry
from m3bng.store.models import Event, IonMessage
from tests.conftest import LiveServer
from tests.integration.m3 import conftest as m3_fixtures

# The M3 simulator over real HTTP (it also plays ION messaging): the fixture the M3 tests use.
m3_sim = m3_fixtures.m3_sim

TOKEN = "ion-inbound-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SUPPORTED = ("SyncSalesOrder", "SyncCustomerPartyMaster", "SyncItemMaster", "SyncInvoice")


async def _noop(_ctx: FlowContext) -> None:
    return None


def registry() -> FlowRegistry:
    """Flows for some nouns only, so that "supported" is decided by this test, not by mappings/."""
    flows = FlowRegistry()
    for bod_type in SUPPORTED:
        flows.register(bod_type, _noop, source="ion")
    return flows


@pytest.fixture
def ion_server(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> Callable[..., LiveServer]:
    def make(**overrides: Any) -> LiveServer:
        values: dict[str, Any] = {"ion_inbound_token": TOKEN, **overrides}
        return live_server(make_settings(**values), registry())

    return make


def parameters(message_id: str, *, encoding: str = "NONE", **extra: Any) -> dict[str, Any]:
    return {
        "documentName": "SyncSalesOrder",
        "fromLogicalId": "lid://infor.m3.m3",
        "toLogicalId": "lid://infor.m3bng.m3bng",
        "messageId": message_id,
        "document": {"characterSet": "UTF-8", "encoding": encoding},
        "accountingEntity": "770_AAA",
        **extra,
    }


def ims_post(
    client: httpx.AsyncClient,
    xml: bytes,
    message_id: str,
    *,
    path: str = "/ion/service/v3/multipartMessage",
    deflate: str | None = None,
    swap_names: bool = False,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST one IMS message; ``deflate`` is "zlib", "raw" or "base64" (base64 of zlib)."""
    payload = xml
    if deflate == "zlib":
        payload = zlib.compress(xml)
    elif deflate == "raw":
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = packer.compress(xml) + packer.flush()
    elif deflate == "base64":
        payload = base64.b64encode(zlib.compress(xml))
    params = json.dumps(parameters(message_id, encoding="DEFLATE" if deflate else "NONE"))
    names = ("MessagePayload", "ParameterRequest") if swap_names else ("ParameterRequest", "MessagePayload")
    files = {
        names[0]: (None, params.encode(), "application/json"),
        names[1]: ("message", payload, "application/octet-stream"),
    }
    return client.post(path, files=files, headers={**BEARER, "X-TenantId": "ACME_PRD", **(headers or {})})


def bod_post(client: httpx.AsyncClient, xml: bytes, *, message_id: str | None = None, **headers: str) -> Any:
    sent = {**BEARER, "Content-Type": "application/xml", **headers}
    if message_id:
        sent["X-Message-Id"] = message_id
    return client.post("/ion/bod", content=xml, headers=sent)


async def ion_events(sessions: async_sessionmaker[AsyncSession]) -> list[Event]:
    async with sessions() as session:
        return list(
            (await session.execute(select(Event).where(Event.source == "ion").order_by(Event.id))).scalars()
        )


async def message_ids(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(select(IonMessage.message_id, IonMessage.event_id))
        return {message_id: event_id for message_id, event_id in rows.all()}
