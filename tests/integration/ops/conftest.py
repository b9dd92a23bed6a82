"""The ops API end to end: the real app (uvicorn, in-process workers) with the M3 simulator over
real HTTP, tokens for each scope, and helpers to make transactions and dead letters to look at."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.store.models import Event
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.support.ops import ADMIN, OPS_TOKEN_ENTRIES, READ, REPLAY, bearer
from tests.support.webhooks import post_event

Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Ops:
    """The service under test, and one API client per scope (``admin``, ``replay``, ``read``)."""

    server: LiveServer
    client: httpx.AsyncClient  # no token: webhooks, /metrics, and 401 checks
    admin: httpx.AsyncClient
    replay: httpx.AsyncClient
    read: httpx.AsyncClient
    sim: SimHandle
    sessions: Sessions

    async def send(
        self, event_type: str, data: dict[str, Any] | None = None, msg_id: str | None = None
    ) -> int:
        """Post a signed webhook as BNG would; returns the stored event id."""
        body = {"type": event_type, "timestamp": "2026-11-24T10:00:00Z", "data": data or sample(event_type)}
        response = await post_event(self.client, body, msg_id or f"msg_{time.monotonic_ns()}")
        assert response.status_code in (200, 202), response.text
        return int(response.json()["event_id"])

    async def settle(self, event_id: int, timeout: float = 30) -> Event:
        """Wait until the event is done, dead, skipped, discarded or held."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.sessions() as session:
                event = (await session.execute(select(Event).where(Event.id == event_id))).scalar_one()
            if event.status in ("done", "dead", "skipped", "discarded", "held"):
                return event
            assert time.monotonic() < deadline, f"event {event_id} still {event.status}: {event.last_error}"
            await asyncio.sleep(0.05)

    async def dead_order(self, order_id: str = "SO-DEAD-1", customer: str = "C-MISSING") -> int:
        """An order for a customer M3 does not have: dead-lettered as missing_reference."""
        data = {**sample("order.created"), "OrderID": order_id, "CustomerID": customer}
        event = await self.settle(await self.send("order.created", data))
        assert event.status == "dead", event.last_error
        return event.id

    async def add_customer(self, customer_id: str) -> None:
        """The fix for a missing customer: BNG sends it, m3bng creates it in M3."""
        data = {**sample("customer.created"), "CustomerID": customer_id}
        event = await self.settle(await self.send("customer.created", data))
        assert event.status == "done", event.last_error


def ops_settings(make_settings: Callable[..., Settings], m3_sim: SimHandle, **overrides: Any) -> Settings:  # noqa: F811
    values: dict[str, Any] = {
        "ionapi_file": m3_sim.ionapi,
        "m3_timeout": 1.0,
        "m3_max_inline_wait": 0.2,
        "retry_schedule": [0.05] * 3,
        "worker_poll_interval": 0.05,
        "ops_tokens": OPS_TOKEN_ENTRIES,
        "retention_run_seconds": 0,
    }
    values.update(overrides)
    return make_settings(**values)


@pytest.fixture
async def ops(
    m3_sim: SimHandle,  # noqa: F811
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
) -> AsyncIterator[Ops]:
    server = live_server(ops_settings(make_settings, m3_sim), run_workers=True)
    async with running_ops(server, m3_sim, sessions) as ops:
        yield ops


@contextlib.asynccontextmanager
async def running_ops(server: LiveServer, m3_sim: SimHandle, sessions: Sessions) -> AsyncIterator[Ops]:  # noqa: F811
    """The server started, with a client per token (none, admin, replay, read)."""
    async with server:
        plain, admin, replay, read = clients = [server.client() for _ in range(4)]
        for client, token in ((admin, ADMIN), (replay, REPLAY), (read, READ)):
            client.headers.update(bearer(token))
        try:
            yield Ops(server, plain, admin, replay, read, sim=m3_sim, sessions=sessions)
        finally:
            for client in clients:
                await client.aclose()
