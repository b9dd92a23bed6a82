"""M3 → BNG end to end: BODs go into the real app (IMS multipart or raw XML, over HTTP), the
workers apply them to the BNG simulator (a real server), and the test reads what BNG holds.

The M3 simulator is there too: it is where ConfirmBODs arrive (its ION messaging endpoint),
what the poller reads, and what BNG → M3 flows write to in the echo tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import Mapping, load_mappings
from m3bng.sim.bng import DEFAULT_API_KEY
from m3bng.store.models import Event
from tests.conftest import LiveServer
from tests.integration.flows.conftest import Service
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.support.bng import BngSim, running_bng_sim
from tests.support.bods import ims_parts

ION_TOKEN = "ion-test-token-0123456789"
ION = {"Authorization": f"Bearer {ION_TOKEN}"}


@dataclass
class Outbound(Service):
    bng: BngSim = None  # type: ignore[assignment]
    base_url: str = ""

    async def post_bod(
        self, xml: bytes, *, raw: bool = False, deflate: bool = False, message_id: str | None = None
    ) -> int:
        """Deliver a BOD as ION does (IMS v3 multipart), or raw to /ion/bod; the stored event id."""
        if raw:
            headers = {**ION, "Content-Type": "application/xml"}
            if message_id:
                headers["X-Message-Id"] = message_id
            response = await self.client.post("/ion/bod", content=xml, headers=headers)
        else:
            response = await self.client.post(
                "/ion/service/v3/multipartMessage",
                files=ims_parts(xml, message_id=message_id, deflate=deflate),
                headers=ION,
            )
        assert response.status_code in (200, 201, 202), response.text
        return int(response.json()["event_id"])

    async def apply(self, xml: bytes, **kw: Any) -> Event:
        return await self.settle(await self.post_bod(xml, **kw))

    async def events(self, source: str) -> list[Event]:
        async with self.sessions() as session:
            rows = await session.execute(select(Event).where(Event.source == source).order_by(Event.id))
            return list(rows.scalars())

    async def bng_writes(self, collection: str) -> list[dict[str, Any]]:
        """BNG API writes to one collection (the simulator's request log)."""
        return [
            c
            for c in await self.bng.calls()
            if c.get("method") in ("PUT", "PATCH", "POST") and f"/api/v1/{collection}" in c.get("path", "")
        ]

    async def m3_calls(self, program: str) -> int:
        """MI calls made to one program (``CRS610MI``) or transaction (``CRS610MI/Add``)."""
        stats = await self.sim.stats()
        return sum(int(n) for name, n in stats.items() if "/" in name and name.startswith(program))


@pytest.fixture
async def bng_sim() -> AsyncIterator[BngSim]:
    async with running_bng_sim() as sim:
        yield sim


@pytest.fixture
def outbound_settings(
    m3_sim: SimHandle,  # noqa: F811
    bng_sim: BngSim,
    make_settings: Callable[..., Settings],
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "ionapi_file": m3_sim.ionapi,
            "m3_timeout": 2.0,
            "m3_max_inline_wait": 0.2,
            "bng_base_url": bng_sim.url,
            "bng_api_key": SecretStr(DEFAULT_API_KEY),
            "bng_timeout": 2.0,
            "bng_max_inline_wait": 0.5,
            "bng_rate_limit": 0.0,
            "ion_inbound_token": SecretStr(ION_TOKEN),
            "retry_schedule": [0.05] * 6,
            "worker_poll_interval": 0.05,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
async def outbound(
    m3_sim: SimHandle,  # noqa: F811
    bng_sim: BngSim,
    outbound_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Any,
) -> AsyncIterator[Outbound]:
    server = live_server(outbound_settings(), run_workers=True)
    async with server, server.client() as client:
        yield Outbound(client, m3_sim, sessions, bng=bng_sim, base_url=server.base_url)


def order(order_id: str, **extra: Any) -> dict[str, Any]:
    """A BNG order as the simulator holds it (the webhook shape)."""
    return {
        "OrderID": order_id,
        "CustomerID": "10001",
        "OrderDate": "2026-11-24",
        "OrderStatus": "Placed",
        "Lines": [{"SKU": "BIKE-001", "Quantity": 2}],
        **extra,
    }


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment of an ``m3bng`` command run by an operator beside this installation."""
    env = {
        **os.environ,
        "M3BNG_DATABASE_URL": settings.database_url,
        "M3BNG_IONAPI_FILE": str(settings.ionapi_file),
        "M3BNG_MAPPINGS_DIR": str(settings.mappings_folder),
        "M3BNG_BNG_BASE_URL": str(settings.bng_base_url or ""),
    }
    if settings.bng_api_key is not None:
        env["M3BNG_BNG_API_KEY"] = settings.bng_api_key.get_secret_value()
    return env


async def m3bng_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The command in a process of its own, without blocking this loop (the in-process server
    and its workers share the SQLite file with it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "m3bng", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return int(process.returncode or 0), out.decode(), err.decode()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    """Until ``condition`` holds, with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not done within {timeout} s"
        await asyncio.sleep(0.1)


async def settled(service: Outbound) -> bool:
    """No event pending or processing: the workers have applied everything taken in."""
    async with service.sessions() as session:
        waiting = await session.scalar(
            select(func.count()).select_from(Event).where(Event.status.in_(["pending", "processing"]))
        )
    return waiting == 0


@pytest.fixture
async def m3(outbound_settings: Callable[..., Settings]) -> AsyncIterator[M3Client]:
    """An M3 client of the simulator, for loads run in this process (``run_sync``)."""
    client = M3Client.from_settings(outbound_settings())
    yield client
    await client.aclose()


@pytest.fixture
def mappings(outbound_settings: Callable[..., Settings]) -> dict[str, Mapping]:
    return load_mappings(outbound_settings().mappings_folder)


async def sync_events(service: Outbound, event_type: str) -> list[Event]:
    """The events the initial load enqueued of one type, oldest first."""
    async with service.sessions() as session:
        rows = await session.scalars(
            select(Event).where(Event.source == "sync", Event.event_type == event_type).order_by(Event.id)
        )
        return list(rows)
