"""BNG → M3 end to end: the real app (uvicorn, in-process workers) and the M3 simulator, both
over real HTTP; webhooks go in signed, and what M3 ends up holding is read from the simulator."""

from __future__ import annotations

import asyncio
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
from m3bng.store.models import DeadLetter, Event, Step
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle, m3_sim  # noqa: F401  (fixture)
from tests.support.webhooks import post_event

Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Service:
    client: httpx.AsyncClient
    sim: SimHandle
    sessions: Sessions

    async def send(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        msg_id: str | None = None,
        *,
        timestamp: str | None = "2026-11-24T10:00:00Z",
    ) -> int:
        """Post a signed webhook; returns the stored event id."""
        body: dict[str, Any] = {"type": event_type, "data": data or sample(event_type)}
        if timestamp is not None:
            body["timestamp"] = timestamp
        response = await post_event(self.client, body, msg_id or f"msg_{time.monotonic_ns()}")
        assert response.status_code in (200, 202), response.text
        return int(response.json()["event_id"])

    async def settle(self, event_id: int, timeout: float = 30) -> Event:
        """Wait until the event is done, dead, skipped or held (the workers run inside the app)."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.sessions() as session:
                event = (await session.execute(select(Event).where(Event.id == event_id))).scalar_one()
            if event.status in ("done", "dead", "skipped", "held"):
                return event
            assert time.monotonic() < deadline, f"event {event_id} still {event.status}: {event.last_error}"
            await asyncio.sleep(0.05)

    async def steps(self, event_id: int) -> list[Step]:
        async with self.sessions() as session:
            rows = await session.execute(select(Step).where(Step.event_id == event_id).order_by(Step.id))
            return list(rows.scalars())

    async def dead_letter(self, event_id: int) -> DeadLetter:
        async with self.sessions() as session:
            return (
                await session.execute(select(DeadLetter).where(DeadLetter.event_id == event_id))
            ).scalar_one()

    async def state(self) -> dict[str, Any]:
        return await self.sim.state()


@pytest.fixture
async def service(
    m3_sim: SimHandle,  # noqa: F811
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Sessions,
) -> AsyncIterator[Service]:
    settings = make_settings(
        ionapi_file=m3_sim.ionapi,
        m3_timeout=1.0,
        m3_max_inline_wait=0.2,
        retry_schedule=[0.05] * 6,
        worker_poll_interval=0.05,
    )
    server = live_server(settings, run_workers=True)
    async with server, server.client() as client:
        yield Service(client, m3_sim, sessions)
