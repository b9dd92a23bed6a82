"""The production M3 client pointed at the M3 simulator over real HTTP, via a written .ionapi."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client
from m3bng.sim.m3 import M3SimConfig, create_app, write_ionapi
from tests.conftest import AsgiServer
from tests.support.webhooks import TEST_SECRET


class SimHandle:
    def __init__(self, server: AsgiServer, ionapi: Path) -> None:
        self.server = server
        self.ionapi = ionapi
        self.control = httpx.AsyncClient(base_url=server.base_url, timeout=10)

    async def reset(self) -> None:
        """As a new simulator: seed data only, no faults, no calls, stats from zero."""
        (await self.control.post("/_sim/reset")).raise_for_status()

    async def faults(self, **faults: Any) -> None:
        (await self.control.put("/_sim/faults", json=faults)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self.control.get("/_sim/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def calls(self) -> list[dict[str, Any]]:
        """Every MI transaction the simulator ran (or refused), oldest first."""
        response = await self.control.get("/_sim/calls")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def state(self) -> dict[str, Any]:
        response = await self.control.get("/_sim/state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@asynccontextmanager
async def running_sim(directory: Path) -> AsyncIterator[SimHandle]:
    """A new simulator behind uvicorn, its .ionapi written into ``directory``."""
    config = M3SimConfig()
    async with AsgiServer(create_app(config)) as server:
        ionapi = directory / "sim.ionapi"
        write_ionapi(ionapi, server.base_url, config)
        handle = SimHandle(server, ionapi)
        yield handle
        await handle.control.aclose()


@pytest.fixture
async def m3_sim(tmp_path: Path) -> AsyncIterator[SimHandle]:
    async with running_sim(tmp_path) as handle:
        yield handle


@pytest.fixture(scope="module")
async def module_m3_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimHandle]:
    """One simulator for a module's tests in this process; a test using it starts with
    ``reset()`` (see tests/integration/flows/test_write_faults.py)."""
    async with running_sim(tmp_path_factory.mktemp("m3sim")) as handle:
        yield handle


@pytest.fixture
async def m3_client(m3_sim: SimHandle) -> AsyncIterator[Callable[..., M3Client]]:
    clients: list[M3Client] = []

    def make(**overrides: Any) -> M3Client:
        values: dict[str, Any] = {
            "ionapi_file": m3_sim.ionapi,
            "m3_max_inline_wait": 0.5,
            "m3_timeout": 2,
            "webhook_secrets": [TEST_SECRET],
        }
        values.update(overrides)
        client = M3Client.from_settings(Settings(**values))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
